"""The `keras-adapterfusion` command line.

Bad arguments end with one line on stderr, `keras-adapterfusion: error: ...`,
and exit code 2, never a traceback.
"""

import argparse
import json
import os
import sys


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


def _fail(message):
    raise CLIError(message)


# ------------------------------------------------------------------ export
def cmd_export(args):
    import keras

    if keras.backend.backend() != "tensorflow":
        _fail(f"export needs KERAS_BACKEND=tensorflow (it is {keras.backend.backend()!r})")
    from keras_adapterfusion.export import ExportError, export_saved_model

    if (args.model is None) == (args.run_dir is None):
        _fail("pass exactly one of --model (a .keras file) or --run-dir (a run directory)")
    if args.run_dir is not None:
        model, run = _rebuild(args.run_dir)
        tokenizer = args.tokenizer or run["encoder"]
        from keras_adapterfusion.tasks import get_task

        labels_default = list(get_task(run["task"]).label_names)
    else:
        if not os.path.isfile(args.model) or not args.model.endswith(".keras"):
            _fail(f"--model {args.model!r}: expected an existing .keras file")
        try:
            model = keras.saving.load_model(args.model)
        except Exception as e:  # a corrupt or foreign file
            _fail(f"--model {args.model!r}: cannot be loaded ({type(e).__name__}: {str(e).splitlines()[0]})")
        tokenizer, labels_default = args.tokenizer, None
    labels = args.labels.split(",") if args.labels else labels_default
    try:
        path = export_saved_model(model, args.export_dir, model_name=args.model_name, version=args.version,
                                  tokenizer=tokenizer, label_names=labels, input_dtype=args.input_dtype,
                                  include_fusion_attentions=args.fusion_attentions)
    except (ExportError, ValueError) as e:
        _fail(str(e))
    print(f"exported {args.model or args.run_dir} to {path}")
    print(f"TF Serving config: {os.path.join(args.export_dir, 'models.config')}")
    return 0


# ---------------------------------------------------------------- training
def _check_task(name):
    from keras_adapterfusion.tasks import get_task

    try:
        return get_task(name)
    except ValueError as e:
        _fail(f"--task: {e}")


def _load(args):
    """Encoder, tokenizer and the task; errors become one line."""
    from keras_adapterfusion import CheckpointError, load_encoder, load_tokenizer

    task = _check_task(args.task)
    if os.path.exists(args.output_dir) and os.listdir(args.output_dir) and not args.overwrite:
        _fail(f"--output-dir {args.output_dir!r} is not empty; pass --overwrite to replace its contents")
    try:
        encoder = load_encoder(args.encoder)
        tokenizer = load_tokenizer(args.encoder)
    except (CheckpointError, OSError, ValueError) as e:
        _fail(f"--encoder {args.encoder!r}: {str(e).splitlines()[0]}")
    return task, encoder, tokenizer


def _data(args, task, tokenizer):
    from keras_adapterfusion.experiments import prepare

    try:
        train_enc, train_y = prepare(task, tokenizer, "train", args.max_length, sample=args.train_examples,
                                     seed=args.seed, data_dir=args.data_dir)
        eval_enc, eval_y = prepare(task, tokenizer, args.eval_split, args.max_length, limit=args.eval_examples,
                                   data_dir=args.data_dir)
    except Exception as e:  # no internet for a TFDS download, a broken cache, ...
        _fail(f"--task {task.name!r}: cannot load its data ({type(e).__name__}: {str(e).splitlines()[0][:300]})")
    return (train_enc, train_y), (eval_enc, eval_y)


def _train_and_save(args, stage, build, save, extra_run=None):
    import keras

    from keras_adapterfusion.experiments import dataset, evaluate, fit, write_json

    task, encoder, tokenizer = _load(args)
    (train_enc, train_y), (eval_enc, eval_y) = _data(args, task, tokenizer)
    # Seeded after loading: building a dataset the first time can draw from the global random state.
    keras.utils.set_random_seed(args.seed)
    model = build(task, encoder)
    train = dataset(train_enc, train_y, args.batch_size, shuffle=True, seed=args.seed)
    losses = fit(model, stage, train, args.epochs, args.learning_rate)
    metrics = evaluate(model, task, eval_enc, eval_y)
    from keras_adapterfusion.fileio import atomic_directory

    with atomic_directory(args.output_dir) as tmp:
        save(model, encoder, tmp)
        run = {"stage": stage, "task": task.name, "encoder": args.encoder, "seed": args.seed,
               "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
               "max_length": args.max_length, "train_examples": len(train_y), **(extra_run or {})}
        write_json(os.path.join(tmp, "run.json"), run)
        write_json(os.path.join(tmp, "metrics.json"), {"task": task.name, "split": args.eval_split,
                                                       "examples": int(len(eval_y)), **metrics, "losses": losses})
    print(f"{stage} on {task.name}: {args.eval_split} " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    print(f"wrote {args.output_dir}")
    return 0


def cmd_train_adapter(args):
    from keras_adapterfusion import builders, saving

    name = args.adapter_name or args.task

    def build(task, encoder):
        return builders.build_adapter_model(encoder, name, num_labels=task.num_labels,
                                            adapter_config=args.adapter_config)

    def save(model, encoder, out):
        saving.save_adapter(encoder, name, os.path.join(out, "adapter"))
        saving.save_head(model.head, os.path.join(out, "head"), encoder)

    return _train_and_save(args, "adapter", build, save, {"adapter": name})


def cmd_fuse(args):
    from keras_adapterfusion import CheckpointError, builders, saving

    for d in args.adapters:
        if not os.path.isdir(d):
            _fail(f"--adapters: {d!r} is not a directory")
    names = []

    def adapter_dir(d):
        return os.path.join(d, "adapter") if os.path.isdir(os.path.join(d, "adapter")) else d

    def build(task, encoder):
        try:
            for d in args.adapters:
                names.append(saving.load_adapter(encoder, adapter_dir(d)))
        except CheckpointError as e:
            _fail(f"--adapters: {str(e).splitlines()[0]}")
        if len(names) < 2:
            _fail("--adapters: fusion needs at least two adapters")
        return builders.build_fusion_model(encoder, names, num_labels=task.num_labels,
                                           fusion_config=args.fusion_config)

    def save(model, encoder, out):
        for n in names:
            saving.save_adapter(encoder, n, os.path.join(out, "adapters", n))
        saving.save_fusion(encoder, names, os.path.join(out, "fusion"))
        saving.save_head(model.head, os.path.join(out, "head"), encoder)

    return _train_and_save(args, "fusion", build, save, {"adapters": names})


def cmd_finetune(args):
    from keras_adapterfusion import builders

    def build(task, encoder):
        return builders.build_full_finetune_model(encoder, num_labels=task.num_labels)

    def save(model, encoder, out):
        model.save(os.path.join(out, "model.keras"))

    return _train_and_save(args, "finetune", build, save)


def cmd_head_only(args):
    from keras_adapterfusion import builders, saving

    def build(task, encoder):
        return builders.build_head_only_model(encoder, num_labels=task.num_labels)

    def save(model, encoder, out):
        saving.save_head(model.head, os.path.join(out, "head"), encoder)

    return _train_and_save(args, "head_only", build, save)


def _rebuild(run_dir):
    from keras_adapterfusion import CheckpointError
    from keras_adapterfusion.experiments import rebuild_model

    if not os.path.isfile(os.path.join(run_dir, "run.json")):
        _fail(f"--run-dir {run_dir!r}: not a run directory (no run.json)")
    try:
        return rebuild_model(run_dir)
    except (CheckpointError, OSError, ValueError) as e:
        _fail(f"--run-dir {run_dir!r}: {str(e).splitlines()[0]}")


def cmd_evaluate(args):
    from keras_adapterfusion import load_tokenizer
    from keras_adapterfusion.experiments import evaluate, prepare, write_json

    model, run = _rebuild(args.run_dir)
    task = _check_task(args.task or run["task"])
    tokenizer = load_tokenizer(run["encoder"])
    try:
        enc, y = prepare(task, tokenizer, args.split, run.get("max_length", 128), limit=args.eval_examples,
                         data_dir=args.data_dir)
    except Exception as e:
        _fail(f"--task {task.name!r}: cannot load its data ({type(e).__name__}: {str(e).splitlines()[0][:300]})")
    metrics = evaluate(model, task, enc, y)
    out = {"task": task.name, "split": args.split, "examples": int(len(y)), **metrics}
    write_json(args.output or os.path.join(args.run_dir, f"metrics_{task.name}_{args.split}.json"), out)
    print(json.dumps(out))
    return 0


def cmd_demo(args):
    from keras_adapterfusion.demo import SIZES, run_demo

    size = "quick" if args.quick else "full" if args.full else "default"
    if size not in SIZES:
        _fail(f"unknown demo size {size!r}")
    run_demo(args.output_dir, size=size, encoder_path=args.encoder, data_dir=args.data_dir, seeds=args.seeds,
             target_train=args.target_examples)
    print(f"wrote {args.output_dir}/results.json, report.md and fusion_heatmap.png")
    return 0


# ----------------------------------------------------------------- predict
def cmd_predict(args):
    from keras_adapterfusion.serving import ServingClient, ServingError

    if not os.path.isdir(args.export):
        _fail(f"--export {args.export!r}: expected the exported version directory (it holds assets/)")
    texts = list(args.text)
    if args.file:
        if not os.path.isfile(args.file):
            _fail(f"--file {args.file!r}: no such file")
        with open(args.file, encoding="utf-8") as f:
            texts += [line.rstrip("\n") for line in f if line.strip()]
    if not texts:
        _fail("no text given; pass --text or --file")
    try:
        client = ServingClient.from_export(args.export)
        labels = client.predict_rest(args.server, args.model_name, texts, args.signature, args.version)
    except (ServingError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    for text, label in zip(texts, labels):
        print(f"{label}\t{text}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-adapterfusion",
        description="AdapterFusion for Keras 3: train adapters and fusion, export and serve them.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from keras_adapterfusion.backbones.huggingface import DEFAULT_ENCODER

    def common(p, epochs, learning_rate):
        p.add_argument("--task", required=True, help="a registry task (see docs/data.md), e.g. vader_tweets")
        p.add_argument("--encoder", default=DEFAULT_ENCODER,
                       help=f"checkpoint directory or cached hub id (default: {DEFAULT_ENCODER}, offline)")
        p.add_argument("--output-dir", required=True, help="where the artefacts and metrics.json go")
        p.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--epochs", type=int, default=epochs)
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--learning-rate", type=float, default=learning_rate,
                       help="default: the stage's (see docs/training.md)")
        p.add_argument("--max-length", type=int, default=128)
        p.add_argument("--train-examples", type=int, default=None,
                       help="draw this many training examples at random (low-resource runs)")
        p.add_argument("--eval-split", choices=["validation", "test"], default="validation")
        p.add_argument("--eval-examples", type=int, default=None, help="evaluate on the first N examples")
        p.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory")

    p = sub.add_parser("train-adapter", help="stage 1: train an adapter (ST-A) on a task")
    common(p, 3, None)
    p.add_argument("--adapter-name", default=None, help="default: the task name")
    p.add_argument("--adapter-config", default="seq_bn", help="seq_bn (pfeiffer) or double_seq_bn (houlsby)")
    p.set_defaults(func=cmd_train_adapter)

    p = sub.add_parser("fuse", help="stage 2: train AdapterFusion over trained adapters on a target task")
    common(p, 5, None)
    p.add_argument("--adapters", nargs="+", required=True,
                   help="run directories of train-adapter (or saved adapter directories)")
    p.add_argument("--fusion-config", default="dynamic", help="dynamic or static")
    p.set_defaults(func=cmd_fuse)

    p = sub.add_parser("finetune", help="baseline: fine-tune the whole encoder and a head")
    common(p, 3, None)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("head-only", help="baseline: train a head on the frozen encoder")
    common(p, 3, None)
    p.set_defaults(func=cmd_head_only)

    p = sub.add_parser("evaluate", help="evaluate a run directory on a task split")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--task", default=None, help="default: the run's task")
    p.add_argument("--split", choices=["validation", "test"], default="test")
    p.add_argument("--eval-examples", type=int, default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--output", default=None, help="metrics file (default: in the run directory)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="the end-to-end demo on the offline encoder and tasks")
    p.add_argument("--output-dir", default="demo_output")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a first look (about 4 minutes on 2 CPU cores)")
    size.add_argument("--full", action="store_true", help="the large size, for a GPU")
    p.add_argument("--encoder", default=DEFAULT_ENCODER)
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--target-examples", type=int, default=None)
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("export", help="export a .keras model as a TF Serving SavedModel")
    p.add_argument("--model", default=None, help="a .keras file saved from a builder's model")
    p.add_argument("--run-dir", default=None, help="a run directory written by train-adapter, fuse, head-only or finetune")
    p.add_argument("--export-dir", required=True, help="TF Serving base directory")
    p.add_argument("--model-name", default="model", help="the model's name in TF Serving (default: model)")
    p.add_argument("--version", type=int, default=None, help="version number (default: next free)")
    p.add_argument("--tokenizer", default=None, help="checkpoint directory or cached hub id of the tokenizer")
    p.add_argument("--labels", default=None, help="comma-separated label names")
    p.add_argument("--input-dtype", choices=["int32", "int64"], default="int64")
    p.add_argument("--fusion-attentions", action="store_true", help="also output fusion_attentions")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="label text with a model served by TF Serving (REST)")
    p.add_argument("--server", required=True, help="TF Serving REST address, e.g. http://localhost:8501")
    p.add_argument("--export", required=True, help="the exported version directory (tokenizer and labels)")
    p.add_argument("--model-name", default="model")
    p.add_argument("--signature", default="serving_default")
    p.add_argument("--version", type=int, default=None)
    p.add_argument("--text", action="append", default=[], help="a text to label (repeatable)")
    p.add_argument("--file", default=None, help="a file with one text per line")
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits with 2 and one usage line on bad flags
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except CLIError as e:
        print(f"keras-adapterfusion: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("keras-adapterfusion: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
