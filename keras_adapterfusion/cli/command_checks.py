"""The per-command checks of the command line (`check_training`, `check_export`, ...), run right after argparse.

Each one checks every argument of its command before TensorFlow, Keras or
`transformers` are imported, with the argument types and value checks of
`cli.checks`; a failure raises `CLIError` (one line, exit code 2). Like
`cli.checks`, this module imports only the standard library and the package's
pure-Python helpers.
"""

import dataclasses
import importlib.util
import os

from keras_adapterfusion.backbones.checkpoint import (
    TOKENIZER_FILE_SETS,
    encoder_kwargs_from_hf_config,
    has_tokenizer,
    max_tokens,
    resolve_checkpoint,
)
from keras_adapterfusion.cli.checks import (
    about,
    adapter_module,
    check_adapter_config,
    check_balanced,
    check_encoder,
    check_file,
    check_max_length,
    check_new_directory,
    check_output_dir,
    check_output_file,
    check_run_dir,
    eval_split,
    fail,
    first_line,
    name_type,
    user_task,
)
from keras_adapterfusion.cli.startup import keras_backend
from keras_adapterfusion.errors import CheckpointError, InvalidNameError, ServingError
from keras_adapterfusion.io.files import read_json


def _target_task(args):
    """The task of a training or tune command: `--task` or `--train-file`, exactly one (as `args.task_obj`)."""
    from keras_adapterfusion.tasks.registry import get_task

    if (args.task is None) == (args.train_file is None):
        fail("pass --task (a registry task) or --train-file (your own data: CSV, TSV, JSON Lines), not "
             + ("both" if args.task is not None else "neither"))
    args.task_obj = user_task(args) or get_task(args.task)
    task = args.task_obj
    return task


def check_training(args):
    task = _target_task(args)
    args.encoder_dir, config = check_encoder(args.encoder)
    args.max_length = check_max_length("--max-length", args.max_length, config, task.layout, args.encoder)
    check_output_dir(args)
    if args.data_dir is not None:
        check_new_directory("--data-dir", args.data_dir)
    args.eval_split_name = eval_split(args, task)
    check_balanced(args, task)
    if args.early_stopping_patience is not None and not task.has_split("validation"):
        fail(f"--early-stopping-patience: task {task.name!r} has no validation split to watch"
             + (" (pass --validation-file)" if task.data is not None else ""))
    if args.log_dir is not None:
        check_new_directory("--log-dir", args.log_dir)
    if args.command == "train-adapter":
        # Blocks with their own weights (ALBERT: its layer groups).
        check_adapter_config(args.adapter_config, encoder_kwargs_from_hf_config(config)["num_layers"])
        args.adapter_name = args.adapter_name or name_type(task.name)
    if args.command == "fuse":
        modules = [adapter_module("--adapters", d) for d in args.adapters]
        if len(modules) < 2:
            fail(f"--adapters {' '.join(args.adapters)}: fusion needs at least two adapters; got {len(modules)}")
        names = [name for _, name in modules]
        for i, name in enumerate(names):
            if name in names[:i]:
                fail(f"--adapters: {args.adapters[names.index(name)]!r} and {args.adapters[i]!r} both hold an "
                     f"adapter named {name!r}; expected distinct adapters")
        args.adapter_dirs = [d for d, _ in modules]


def check_evaluate(args):
    from keras_adapterfusion.io.files import json_field
    from keras_adapterfusion.tasks.registry import get_task
    from keras_adapterfusion.tasks.user_data import DataError, from_files

    run, trained = check_run_dir("--run-dir", args.run_dir)
    check_encoder(run["encoder"], f"--run-dir {args.run_dir!r}: run.json's encoder {run['encoder']!r}")
    if args.train_file is not None:
        fail("--train-file: evaluate reads --test-file or --validation-file (the examples to evaluate on)")
    given = [f for f in (args.test_file, args.validation_file) if f is not None]
    if len(given) > 1:
        fail("pass one of --test-file or --validation-file")
    if given and args.task is not None:
        fail("pass --task or --test-file/--validation-file (your own data), not both")
    if given:  # your file, read with the labels the run was trained with
        flag = "--test-file" if args.test_file else "--validation-file"
        check_file(flag, given[0])
        try:
            task = from_files(given[0], text_column=args.text_column, text_pair_column=args.text_pair_column,
                              label_column=args.label_column, task_kind=args.task_kind or trained.kind,
                              label_names=list(trained.label_names), name=trained.name)
        except (DataError, InvalidNameError) as e:
            fail(f"{flag}: {first_line(e)}")
        args.split = "train"  # the file's examples are the task's only split
    else:
        task = get_task(args.task) if args.task else trained
        if not task.has_split(args.split):
            fail(f"--split {args.split}: task {task.name!r} has no {args.split} split"
                 + (" (pass --test-file)" if task.data is not None else ""))
    if (task.head_kind, task.num_labels) != (trained.head_kind, trained.num_labels):
        fail(f"--task {task.name!r}: has {task.num_labels} labels ({task.head_kind}); expected a task like "
             f"{trained.name!r}, which the run's model was trained on ({trained.num_labels} labels, "
             f"{trained.head_kind})")
    args.task_obj = task
    try:
        json_field(run, "max_length", os.path.join(args.run_dir, "run.json"), int, default=128,
                   check=lambda v: v >= 1, expected="an integer >= 1")
    except CheckpointError as e:
        fail(f"--run-dir {args.run_dir!r}: {first_line(e)}")
    if args.data_dir is not None:
        check_new_directory("--data-dir", args.data_dir)
    split_name = "file" if given else args.split
    args.metrics_name = f"metrics_{task.name}_{split_name}.json"
    check_output_file("--output", args.output or os.path.join(args.run_dir, args.metrics_name))


def check_demo(args):
    from keras_adapterfusion.applications.demo import SIZES

    _, config = check_encoder(args.encoder)
    name = "quick" if args.quick else "full" if args.full else "default"
    if SIZES[name].max_length > max_tokens(config):
        fail(f"--encoder {args.encoder!r}: holds {max_tokens(config)} positions; the demo's {name} size "
             f"tokenizes to {SIZES[name].max_length}; expected an encoder with at least that many")
    check_new_directory("--output-dir", args.output_dir, "demo")
    if args.data_dir is not None:
        check_new_directory("--data-dir", args.data_dir)


def check_export(args):
    backend = keras_backend()
    if backend != "tensorflow":
        fail(f"export needs KERAS_BACKEND=tensorflow (it is {backend!r}); TF Serving runs TensorFlow SavedModels")
    if (args.model is None) == (args.run_dir is None):
        fail("pass exactly one of --model (a .keras file) or --run-dir (a run directory)")
    if args.model is not None:
        import zipfile

        check_file("--model", args.model, ".keras")
        if not zipfile.is_zipfile(args.model):
            fail(f"--model {args.model!r}: is not a .keras archive (not a zip file)")
        args.max_length = args.max_length or 128
    else:
        run, task = check_run_dir("--run-dir", args.run_dir)
        if task.layout == "multiple_choice" and args.text_signatures:
            fail(f"--text-signatures: run {args.run_dir!r} is a multiple-choice task; raw-text signatures take "
                 "single texts or pairs")
        if args.text_pairs and task.layout != "pair":
            fail(f"--text-pairs: run {args.run_dir!r} was trained on {task.layout} texts (run.json); leave the "
                 "flag out, a run records its own layout")
        args.text_pairs = task.layout == "pair"
        if args.max_length is None:
            from keras_adapterfusion.io.files import json_field

            try:
                args.max_length = json_field(run, "max_length", os.path.join(args.run_dir, "run.json"), int,
                                             default=128, check=lambda v: v >= 4, expected="an integer >= 4")
            except CheckpointError as e:
                fail(f"--run-dir {args.run_dir!r}: {first_line(e)}")
        check_encoder(run["encoder"], f"--run-dir {args.run_dir!r}: run.json's encoder {run['encoder']!r}",
                      tokenizer=args.tokenizer is None)
        if args.labels is not None and len(args.labels) != task.num_labels:
            fail(f"--labels {','.join(args.labels)!r}: {len(args.labels)} names; expected {task.num_labels}, "
                 f"one per label of {task.name!r} ({','.join(task.label_names)})")
    if args.tokenizer is not None:
        try:
            directory = resolve_checkpoint(args.tokenizer)
        except CheckpointError as e:
            fail(f"--tokenizer {args.tokenizer!r}: {about(args.tokenizer, e)}")
        if not has_tokenizer(directory):
            fail(f"--tokenizer {args.tokenizer!r}: {directory} holds no tokenizer files; expected "
                 + " or ".join(" + ".join(s) for s in TOKENIZER_FILE_SETS))
    check_new_directory("--export-dir", args.export_dir)
    model_dir = os.path.join(args.export_dir, args.model_name)
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        fail(f"--model-name {args.model_name!r}: {model_dir} exists and is not a directory")
    if args.version is not None:
        version_dir = os.path.join(model_dir, str(args.version))
        if os.path.exists(version_dir) and (not os.path.isdir(version_dir) or os.listdir(version_dir)):
            fail(f"--version {args.version}: {version_dir} exists and is not empty; pick another version "
                 "(or leave --version out for the next free one)")


def check_predict(args):
    from keras_adapterfusion.serving.client import _read_label_map, expects_pairs

    if not os.path.isdir(args.export):
        fail(f"--export {args.export!r}: not a directory; expected an exported version directory "
             "(<export-dir>/<model>/<version>, holding assets/)")
    path = os.path.join(args.export, "assets", "label_map.json")
    if not os.path.isfile(path):
        fail(f"--export {args.export!r}: no assets/label_map.json; expected an exported version directory "
             "(<export-dir>/<model>/<version>)")
    try:
        label_map = _read_label_map(path)
    except ServingError as e:
        fail(f"--export {args.export!r}: {first_line(e)}")
    signatures = label_map.get("signatures", {})
    target = signatures.get(args.signature, args.signature)
    if isinstance(target, list) or target not in label_map["tasks"] or args.signature.endswith("_text"):
        known = sorted(s for s in set(signatures) | set(label_map["tasks"])
                       if not isinstance(signatures.get(s, s), list) and not s.endswith("_text"))
        fail(f"--signature {args.signature!r}: expected one of {known} (from {path})")
    if args.server is None:
        if importlib.util.find_spec("tensorflow") is None:
            fail("--export without --server runs the SavedModel in this process, which needs TensorFlow (not "
                 "installed); pass --server URL to ask a running TF Serving instead")
    args.texts = _predict_texts(args)
    expects = expects_pairs(label_map, args.signature)
    given_pairs = isinstance(args.texts[0], tuple)
    if expects is True and not given_pairs:
        fail(f"--export {args.export!r}: the model was trained on sentence pairs; got single texts. Pass "
             "--text A --text-pair B, or --file with --text-column and --text-pair-column")
    if expects is False and given_pairs:
        fail(f"--export {args.export!r}: the model was trained on single texts; got pairs (--text-pair or "
             "--text-pair-column). Pass one text per example")


def _predict_texts(args):
    """The texts of --text/--text-pair and --file: strings, or (text, pair) tuples."""
    from keras_adapterfusion.tasks.user_data import FORMATS, DataError, read_texts

    if args.text_pair and len(args.text_pair) != len(args.text):
        fail(f"--text-pair: given {len(args.text_pair)} times for {len(args.text)} --text; expected one "
             "--text-pair per --text")
    texts = list(zip(args.text, args.text_pair)) if args.text_pair else list(args.text)
    if args.file is not None:
        check_file("--file", args.file)
        if os.path.splitext(args.file)[1].lower() in FORMATS:
            try:
                firsts, seconds = read_texts(args.file, args.text_column, args.text_pair_column)
            except DataError as e:
                fail(f"--file {args.file!r}: {first_line(e)}")
            rows = list(zip(firsts, seconds)) if seconds is not None else firsts
        else:
            if args.text_pair_column is not None:
                fail(f"--text-pair-column: --file {args.file!r} is plain text (one text per line); pairs need a "
                     f"CSV, TSV or JSON Lines file ({', '.join(sorted(FORMATS))})")
            try:
                with open(args.file, encoding="utf-8") as f:
                    rows = [line.rstrip("\r\n") for line in f if line.strip()]
            except UnicodeDecodeError as e:
                fail(f"--file {args.file!r}: is not UTF-8 text (byte {e.start}); expected one text per line")
            except OSError as e:
                fail(f"--file {args.file!r}: cannot be read ({e.strerror or e})")
        if texts and rows and isinstance(texts[0], tuple) != isinstance(rows[0], tuple):
            fail("--file and --text: one gives pairs and the other single texts; expected one kind")
        texts += rows
    if not texts:
        fail("no text given; pass --text TEXT or --file FILE (one text per line, or CSV/TSV/JSON Lines)"
             + (f"; --file {args.file!r} holds no text" if args.file is not None else ""))
    return texts


def _tune_settings(args, task, names):
    """What must stay the same to continue a search (`--max-trials`, the cache and `--data-dir` may change)."""
    return {"command": "tune", "tuner": args.tuner, "encoder": args.encoder,
            "task": task.to_config() if task.data is not None else task.name,
            "adapters": [[n, d] for n, d in zip(names, args.adapters)], "space": args.space.to_dict(),
            "seed": args.seed, "max_length": args.max_length, "train_examples": args.train_examples,
            "balanced": args.balanced, "eval_examples": args.eval_examples, "dtype_policy": args.dtype_policy}


def check_tune_dir(args, settings):
    """`--output-dir` of tune: new or empty, or an earlier tune's (continued with the same arguments, or
    replaced with --overwrite); never a directory holding files of others."""
    from keras_adapterfusion import tuning

    path = check_new_directory("--output-dir", args.output_dir)
    entries = sorted(os.listdir(path)) if os.path.isdir(path) else []
    if not entries:
        return
    settings_path = os.path.join(path, tuning.SETTINGS_FILE)
    if not os.path.isfile(settings_path):
        fail(f"--output-dir {args.output_dir!r}: holds files this package did not write (e.g. {entries[:3]}); "
             "expected a new or empty directory, or an earlier tune's output")
    if args.overwrite:
        return
    try:
        before = read_json(settings_path, "description of a search")
    except CheckpointError as e:
        fail(f"--output-dir {args.output_dir!r}: {first_line(e)}")
    changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
    if changed:
        fail(f"--output-dir {args.output_dir!r}: holds a search with other arguments ({', '.join(changed)}); run "
             "again with the same ones to continue it, or pass --overwrite to start over, or another --output-dir")


def check_tune(args):
    from keras_adapterfusion import tuning

    task = _target_task(args)
    if not task.has_split("validation"):
        fail(f"task {task.name!r} has no validation split; tune measures its objective there"
             + (" (pass --validation-file)" if task.data is not None else ""))
    check_balanced(args, task)
    args.encoder_dir, config = check_encoder(args.encoder)
    args.max_length = check_max_length("--max-length", args.max_length, config, task.layout, args.encoder)
    modules = [adapter_module("--adapters", d) for d in args.adapters]
    names = [name for _, name in modules]
    for i, name in enumerate(names):
        if name in names[:i]:
            fail(f"--adapters: {args.adapters[names.index(name)]!r} and {args.adapters[i]!r} both hold an "
                 f"adapter named {name!r}; expected distinct adapters")
    args.adapter_dirs = [d for d, _ in modules]
    flag = "--space" if args.space is not None else "--adapters"
    space = args.space or tuning.FusionSearchSpace()
    if args.epochs is not None:
        space = dataclasses.replace(space, epochs=(args.epochs,))
    args.space = space
    if space.adapter_subsets is None and len(names) < space.min_adapters:
        fail(f"--adapters {' '.join(args.adapters)}: a fusion search needs at least {space.min_adapters} adapters "
             f"(the space's min_adapters); got {len(names)}")
    try:
        space.subsets(names)
    except ValueError as e:
        fail(f"{flag}: {first_line(e).rstrip('.')} (--adapters gives {len(names)}: {', '.join(names)})")
    if args.data_dir is not None:
        check_new_directory("--data-dir", args.data_dir)
    if args.compilation_cache is not None:
        check_new_directory("--compilation-cache", args.compilation_cache)
    try:
        args.role = tuning.role()
    except ValueError as e:
        fail(first_line(e))
    args.tune_settings = _tune_settings(args, task, names)
    check_tune_dir(args, args.tune_settings)
