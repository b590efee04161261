"""Argument types and checks of the command line: everything is checked before anything heavy runs.

Each command's `check_*` function runs right after argparse, before TensorFlow,
Keras or `transformers` are imported and before anything is loaded or trained.
A failure raises `CLIError`, which `cli.main` prints as one line,
`keras-adapterfusion: error: ...`, naming the flag, the value and what was
expected, with exit code 2. This module imports only the standard library and the
package's pure-Python helpers (numpy at most).
"""

import argparse
import dataclasses
import importlib.util
import json
import math
import os

from keras_adapterfusion.backbones.checkpoint import (
    DEFAULT_ENCODER,
    TOKENIZER_FILE_SETS,
    has_tokenizer,
    max_tokens,
    read_hf_config,
    resolve_checkpoint,
)
from keras_adapterfusion.configs import AdapterConfig, FusionConfig
from keras_adapterfusion.errors import (
    CheckpointError,
    ExportError,
    InputError,
    InvalidNameError,
    SaveError,
    ServingError,
)
from keras_adapterfusion.io.directories import check_destination, saved_directory
from keras_adapterfusion.io.files import read_json
from keras_adapterfusion.io.tensors import weight_files
from keras_adapterfusion.names import check_name

from keras_adapterfusion.cli.startup import keras_backend
from keras_adapterfusion.errors import CLIError

PROG = "keras-adapterfusion"
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
SEED_MAX = 2**32 - 1  # NumPy's seeds are 32-bit
# The package's own errors: raised while loading, they end as one line too.
PACKAGE_ERRORS = (CheckpointError, ExportError, InputError, InvalidNameError, SaveError, ServingError)
#: Added to the "interrupted" line of a training command.
RESUME_NOTE = ("; rerun the same command with --resume to continue from the last finished epoch (a rerun "
               "without --resume discards that saved state and starts over)")

COMMANDS = ("train-adapter", "fuse", "tune", "finetune", "head-only", "evaluate", "demo", "export", "predict")
TRAINING_COMMANDS = ("train-adapter", "fuse", "finetune", "head-only")


def fail(message):
    raise CLIError(message)


def first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def about(value, error):
    """The first line of `error`'s message, without a leading `<value>: ` (the caller names the value)."""
    message = first_line(error)
    for prefix in {os.fspath(value), os.path.abspath(value)} if os.fspath(value) else ():
        if message.startswith(prefix + ": "):
            return message[len(prefix) + 2:]
    return message


# ------------------------------------------------------------------ parsing
class Parser(argparse.ArgumentParser):
    """argparse, with its errors as the one line every other error is."""

    def error(self, message):
        self.exit(2, f"{PROG}: error: {message}\n")


def integer(minimum, maximum=INT32_MAX):
    """An argparse type: an integer in [minimum, maximum]."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"got {text!r}; expected an integer >= {minimum}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"got {text!r}; expected an integer from {minimum} to {maximum}")
        return value

    return parse


def learning_rate(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a finite number > 0, e.g. 1e-4")
    return value


def name_type(text):
    try:
        return check_name(text, "name")
    except InvalidNameError as e:
        raise argparse.ArgumentTypeError(str(e)[len("name: "):].rstrip(".")) from None


def task_type(text):
    from keras_adapterfusion.tasks.registry import get_task  # numpy, no TensorFlow

    try:
        return get_task(text).name
    except ValueError as e:
        raise argparse.ArgumentTypeError(first_line(e).rstrip(".")) from None


def config_type(cls):
    """An argparse type: a preset name of `cls`, or a JSON file of its fields (loaded and checked)."""

    def parse(text):
        if text in cls.PRESETS:
            return text
        if not os.path.isfile(text):
            raise argparse.ArgumentTypeError(
                f"got {text!r}; expected a preset ({', '.join(sorted(cls.PRESETS))}) or a JSON file of "
                f"{cls.__name__} fields" + (" (no such file)" if text.endswith(".json") else ""))
        try:
            return cls.from_dict(read_json(text, f"{cls.__name__} fields as a JSON object"))
        except CheckpointError as e:
            raise argparse.ArgumentTypeError(first_line(e).rstrip(".")) from None
        except (ValueError, TypeError) as e:
            raise argparse.ArgumentTypeError(f"{text}: {first_line(e).rstrip('.')}") from None

    return parse


def space_type(text):
    """An argparse type: a JSON file of `FusionSearchSpace` fields (read and checked now)."""
    from keras_adapterfusion.tuning import FusionSearchSpace  # pure Python at import

    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a JSON file of search-space fields"
                                         + (" (no such file)" if not os.path.exists(text) else ""))
    try:
        with open(text, encoding="utf-8") as f:
            return FusionSearchSpace.from_json(f.read())
    except (OSError, UnicodeDecodeError) as e:
        raise argparse.ArgumentTypeError(f"{text}: cannot be read ({type(e).__name__})") from None
    except (ValueError, TypeError) as e:
        raise argparse.ArgumentTypeError(f"{text}: {first_line(e).rstrip('.')}") from None


def labels_type(text):
    labels = text.split(",")
    for label in labels:
        if not label.strip():
            raise argparse.ArgumentTypeError(f"got {text!r}, which has an empty label; expected comma-separated "
                                             "label names, e.g. negative,positive")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise argparse.ArgumentTypeError(f"got {text!r}, which repeats {duplicates[0]!r}; expected distinct "
                                         "label names")
    return labels


def server_url(text):
    import urllib.parse

    expected = "expected http://host:port or https://host:port, e.g. http://localhost:8501"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise argparse.ArgumentTypeError(f"got {text!r}, which holds whitespace or control characters; {expected}")
    parts = urllib.parse.urlsplit(text)
    try:
        host, _ = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, or out of range
        raise argparse.ArgumentTypeError(f"got {text!r}, whose port is not a number from 0 to 65535; {expected}") \
            from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise argparse.ArgumentTypeError(f"got {text!r}; {expected}")
    if parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"got {text!r}, which has a query or fragment; {expected}")
    return text


# ----------------------------------------------------------- value checks
def check_encoder(value, where=None, tokenizer=True):
    """`(directory, config)` of an encoder checkpoint, checked without loading it.

    `where` starts the messages (default: `--encoder VALUE`); with `tokenizer`,
    the directory must hold a tokenizer's files too.
    """
    where = where or f"--encoder {value!r}"
    if not isinstance(value, str) or not value.strip():
        fail(f"{where}: expected a checkpoint directory or a cached hub id")
    try:
        directory = resolve_checkpoint(value)
        config = read_hf_config(directory)
    except CheckpointError as e:
        fail(f"{where}: {about(value, e)}")
    files = weight_files(directory, "model")
    if not any(os.path.isfile(os.path.join(directory, f)) for f in files):
        fail(f"{where}: {directory} holds no weights; expected one of {list(files)}")
    if tokenizer and not has_tokenizer(directory):
        expected = " or ".join(" + ".join(s) for s in TOKENIZER_FILE_SETS)
        fail(f"{where}: {directory} holds no tokenizer files; expected {expected} beside config.json")
    return directory, config


def special_tokens(config, layout):
    """How many special tokens the tokenizer adds to one sequence of a task of `layout`."""
    if layout == "single":
        return 2  # [CLS] x [SEP], <s> x </s>
    return 3 if config["model_type"] == "bert" else 4  # [CLS] a [SEP] b [SEP], <s> a </s></s> b </s>


LAYOUT_WORDS = {"single": "single-text", "pair": "text-pair", "multiple_choice": "multiple-choice"}


def check_max_length(flag, value, config, layout, encoder):
    """A token limit that leaves room for text and fits the encoder's position table."""
    limit, least = max_tokens(config), special_tokens(config, layout) + 1
    if value is None:
        return min(128, limit)
    if value < least or value > limit:
        fail(f"{flag} {value}: expected an integer from {least} to {limit} (the encoder {encoder!r} holds "
              f"{limit} positions; {least - 1} go to the special tokens of a "
              f"{LAYOUT_WORDS.get(layout, layout)} task)")
    return value


def check_new_directory(flag, value, kind=None):
    """A directory that exists or can be created (and, with `kind`, may receive a save of that kind)."""
    if kind is not None:
        try:
            return check_destination(value, kind)
        except SaveError as e:
            fail(f"{flag} {value!r}: {about(value, e)}")
    if not value or not value.strip():
        fail(f"{flag} {value!r}: expected a directory")
    path = os.path.abspath(value)
    if os.path.exists(path):
        if not os.path.isdir(path):
            fail(f"{flag} {value!r}: exists and is not a directory; expected a directory")
        return path
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        fail(f"{flag} {value!r}: cannot be created ({parent} is not a writable directory)")
    return path


def check_output_dir(args):
    """A training command's `--output-dir`: a run may go there, and replaces an earlier one only with --overwrite."""
    check_new_directory("--output-dir", args.output_dir, "run")
    existing = saved_directory(args.output_dir)  # a save killed halfway counts as there
    if not args.overwrite and os.path.isdir(existing) and os.listdir(existing):
        fail(f"--output-dir {args.output_dir!r}: is not empty; pass --overwrite to replace an earlier run there")


def check_file(flag, value, suffix=None):
    if not os.path.isfile(value):
        what = "a directory" if os.path.isdir(value) else "missing"
        fail(f"{flag} {value!r}: {what}; expected an existing {suffix + ' ' if suffix else ''}file")
    if suffix and not value.endswith(suffix):
        fail(f"{flag} {value!r}: expected a {suffix} file")
    if not os.access(value, os.R_OK):
        fail(f"{flag} {value!r}: cannot be read")


def check_output_file(flag, value):
    path = os.path.abspath(value)
    if os.path.isdir(path):
        fail(f"{flag} {value!r}: is a directory; expected a file name")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        fail(f"{flag} {value!r}: cannot be written ({parent} is not a writable directory)")


def check_run_dir(flag, value):
    """`(run.json, its Task)` of a run directory (its stage, encoder field and task checked)."""
    from keras_adapterfusion.training.runs import read_run, run_task

    if not os.path.isdir(saved_directory(value)):
        fail(f"{flag} {value!r}: no such directory; expected a run directory (train-adapter, fuse, head-only "
              "or finetune wrote it)")
    try:
        run = read_run(value)
    except CheckpointError as e:
        fail(f"{flag} {value!r}: {about(value, e)}")
    try:
        task = run_task(run)
    except (ValueError, TypeError, KeyError) as e:
        fail(f"{flag} {value!r}: run.json names task {run.get('task')!r}: {first_line(e)}")
    return run, task


def adapter_module(flag, value):
    """The saved adapter directory of `value` (a train-adapter run directory or an adapter), and its name."""
    if not os.path.isdir(saved_directory(value)):
        fail(f"{flag}: {value!r} is not a directory; expected a train-adapter run directory or a saved adapter")
    directory = os.path.join(value, "adapter") if os.path.isdir(os.path.join(value, "adapter")) else value
    path = os.path.join(saved_directory(directory), "module.json")
    if not os.path.isfile(path):
        fail(f"{flag}: {value!r} holds no saved adapter (neither adapter/ nor module.json); expected a "
              "train-adapter run directory or a saved adapter")
    try:
        meta = read_json(path, "saved adapter description")
    except CheckpointError as e:
        fail(f"{flag}: {value!r}: {first_line(e)}")
    if meta.get("kind") != "adapter":
        fail(f"{flag}: {value!r} holds a saved {meta.get('kind')!r}; expected an adapter")
    try:
        return directory, check_name(meta.get("name"), "name")
    except InvalidNameError as e:
        fail(f"{flag}: {value!r}: module.json: {first_line(e)}")


def check_adapter_config(spec, num_layers):
    """What `TransformerEncoder.add_adapter` checks against the encoder: `leave_out` and per-block factors."""
    config = AdapterConfig.get(spec)
    where = f"--adapter-config {spec!r}" if isinstance(spec, str) else "--adapter-config"
    beyond = [i for i in config.leave_out if i >= num_layers]
    if beyond:
        fail(f"{where}: leave_out has block {beyond[0]}; expected block indices below {num_layers} (the encoder's "
              "num_hidden_layers)")
    if len(config.leave_out) == num_layers:
        fail(f"{where}: leave_out lists all {num_layers} blocks; expected at least one block with the adapter")
    try:
        for i in range(num_layers):
            config.reduction_for_block(i)
    except ValueError as e:
        fail(f"{where}: {first_line(e)}")


def user_task(args, label_names=None, name=None):
    """The task of `--train-file` and friends (read now: pure Python), or None when they are not given."""
    from keras_adapterfusion.tasks.user_data import DataError, from_files

    if getattr(args, "train_file", None) is None:
        for flag in ("validation_file", "test_file", "text_pair_column", "task_kind"):
            if getattr(args, flag, None) is not None:
                fail(f"--{flag.replace('_', '-')} needs --train-file (your own data); with --task the registry "
                     "task's data is used")
        return None
    for flag in ("train_file", "validation_file", "test_file"):
        value = getattr(args, flag, None)
        if value is not None:
            check_file(f"--{flag.replace('_', '-')}", value)
    try:
        return from_files(args.train_file, args.validation_file, args.test_file, text_column=args.text_column,
                          text_pair_column=args.text_pair_column, label_column=args.label_column,
                          task_kind=args.task_kind, label_names=label_names, name=name)
    except (DataError, InvalidNameError) as e:
        fail(first_line(e))


def eval_split(args, task):
    """`--eval-split`, or by default the validation split, else the test split, else none."""
    if args.eval_split is not None:
        if not task.has_split(args.eval_split):
            fail(f"--eval-split {args.eval_split}: task {task.name!r} has no {args.eval_split} split"
                 + (f" (pass --{args.eval_split}-file)" if task.data is not None else ""))
        return args.eval_split
    return next((s for s in ("validation", "test") if task.has_split(s)), None)


def check_balanced(args, task):
    """`--balanced` shapes the sample that `--train-examples` draws, by class: only then, and only for classes."""
    if not args.balanced:
        return
    if args.train_examples is None:
        fail("--balanced: needs --train-examples (it decides how that sample is drawn)")
    if task.kind != "single_label":
        fail(f"--balanced: task {task.name!r} is {task.kind}; expected a single-label task (one class per example)")


def check_training(args):
    from keras_adapterfusion.tasks.registry import get_task

    if (args.task is None) == (args.train_file is None):
        fail("pass --task (a registry task) or --train-file (your own data: CSV, TSV, JSON Lines), not "
             + ("both" if args.task is not None else "neither"))
    args.task_obj = user_task(args) or get_task(args.task)
    task = args.task_obj
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
        check_adapter_config(args.adapter_config, config["num_hidden_layers"])
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
    from keras_adapterfusion.tasks.registry import get_task

    if (args.task is None) == (args.train_file is None):
        fail("pass --task (a registry task) or --train-file (your own data: CSV, TSV, JSON Lines), not "
             + ("both" if args.task is not None else "neither"))
    args.task_obj = user_task(args) or get_task(args.task)
    task = args.task_obj
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
