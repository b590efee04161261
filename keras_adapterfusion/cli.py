"""The `keras-adapterfusion` command line.

Bad arguments end with one line on stderr, `keras-adapterfusion: error: ...`,
and exit code 2, never a traceback.
"""

import argparse
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

    if not os.path.isfile(args.model) or not args.model.endswith(".keras"):
        _fail(f"--model {args.model!r}: expected an existing .keras file")
    try:
        model = keras.saving.load_model(args.model)
    except Exception as e:  # a corrupt or foreign file
        _fail(f"--model {args.model!r}: cannot be loaded ({type(e).__name__}: {str(e).splitlines()[0]})")
    labels = args.labels.split(",") if args.labels else None
    try:
        path = export_saved_model(model, args.export_dir, model_name=args.model_name, version=args.version,
                                  tokenizer=args.tokenizer, label_names=labels, input_dtype=args.input_dtype,
                                  include_fusion_attentions=args.fusion_attentions)
    except (ExportError, ValueError) as e:
        _fail(str(e))
    print(f"exported {args.model} to {path}")
    print(f"TF Serving config: {os.path.join(args.export_dir, 'models.config')}")
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

    p = sub.add_parser("export", help="export a .keras model as a TF Serving SavedModel")
    p.add_argument("--model", required=True, help="a .keras file saved from a builder's model")
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
