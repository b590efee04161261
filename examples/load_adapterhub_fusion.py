"""Run adapters, a fusion and a head trained with AdapterHub (PyTorch) in Keras, and compare with PyTorch.

AdapterHub's `adapters` library saves each module as a directory: an adapter
(`adapter_config.json` + `adapter.safetensors` or `pytorch_adapter.bin`), a fusion
(`adapter_fusion_config.json` + `model_adapter_fusion.safetensors` or
`pytorch_model_adapter_fusion.bin`) and a head (`head_config.json` +
`model_head.safetensors` or `pytorch_model_head.bin`). `adapterhub.load_fusion_model`
reads all of them, `.bin` files included (without PyTorch and without running
pickle code), into a Keras model on the same base checkpoint.

To compare with the numbers you got in PyTorch, save the inputs and outputs there:

    # in PyTorch, with `adapters` (model: the AdapterModel you trained, with the fusion active)
    model.eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch)
    numpy.savez("pytorch_outputs.npz", logits=out.logits.numpy(),
                **{k: v.numpy() for k, v in batch.items()})

then run:

    python examples/load_adapterhub_fusion.py --base-model bert-base-uncased \
        --adapters saved/sentiment saved/nli saved/topic --fusion saved/fusion --head saved/head \
        --reference pytorch_outputs.npz

Without `--reference` it tokenizes `--text` with the base model's tokenizer and
prints the predicted labels. `--smoke` loads the `.bin` files that `adapters`
1.3.0 wrote for the repository's tests (three adapters, a dynamic fusion, a
3-label head on a tiny BERT) and compares with the outputs `adapters` computed.
"""

import argparse
import os

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE_CASE = os.path.join(HERE, os.pardir, "tests", "fixtures", "adapterhub_bin", "tiny_seqbn_dynamic")
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--base-model", help="the Hugging Face checkpoint the adapters were trained on "
                                             "(directory or cached hub id)")
    parser.add_argument("--adapters", nargs="+", metavar="DIR", help="AdapterHub adapter directories")
    parser.add_argument("--fusion", metavar="DIR", help="AdapterHub fusion directory")
    parser.add_argument("--head", metavar="DIR", help="AdapterHub head directory (optional)")
    parser.add_argument("--reference", metavar="NPZ",
                        help="inputs and outputs from PyTorch: input_ids, attention_mask, [token_type_ids], "
                             "logits, [fusion_attentions]")
    parser.add_argument("--text", action="append", default=[], help="a text to classify (repeatable)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest absolute logit difference accepted (default: 1e-4)")
    parser.add_argument("--smoke", action="store_true",
                        help="load the test fixtures' AdapterHub .bin files and compare with their reference")
    args = parser.parse_args(argv)
    if args.smoke:
        case = os.path.normpath(FIXTURE_CASE)
        args.base_model = os.path.normpath(os.path.join(HERE, os.pardir, "tests", "fixtures", "backbones",
                                                        "tiny-bert"))
        args.adapters = [os.path.join(case, n) for n in ("sentiment", "nli", "topic")]
        args.fusion, args.head = os.path.join(case, "fusion"), os.path.join(case, "head")
        args.reference = os.path.join(case, "reference.npz")
        args.tolerance = 1e-5
    missing = [flag for flag, value in (("--base-model", args.base_model), ("--adapters", args.adapters),
                                        ("--fusion", args.fusion)) if not value]
    if missing:
        parser.error(f"missing {', '.join(missing)} (or pass --smoke)")
    if not args.reference and not args.text:
        parser.error("pass --reference (outputs saved in PyTorch) or --text (texts to classify)")
    return args


def compare(model, reference, tolerance):
    """Run `model` on the reference's inputs; return the largest differences, raising if one is too large."""
    import numpy as np

    inputs = {k: reference[k] for k in INPUT_NAMES if k in reference.files}
    out = model(inputs)
    report = {}
    for name in ("logits", "fusion_attentions", "last_hidden_state"):
        if name in reference.files and name in out:
            ours = np.asarray(out[name], dtype=np.float64)
            theirs = np.asarray(reference[name], dtype=np.float64)
            if ours.shape != theirs.shape:
                raise SystemExit(f"{name}: Keras gives shape {ours.shape}, PyTorch gave {theirs.shape}; the inputs "
                                 "or the modules differ.")
            report[name] = float(np.abs(ours - theirs).max())
    if "logits" not in report:
        raise SystemExit("--reference: holds no 'logits' (or the model has no head: pass --head).")
    if report["logits"] > tolerance:
        raise SystemExit(f"logits differ from PyTorch's by {report['logits']:.3g} (> {tolerance:g}): was the "
                         "PyTorch model in eval mode, on the same base checkpoint?")
    return report


def main(argv=None):
    args = parse_args(argv)
    import numpy as np

    from keras_adapterfusion.formats import adapterhub

    # One call: the encoder, every adapter, the fusion over them and the head.
    model = adapterhub.load_fusion_model(args.base_model, args.adapters, args.fusion, head_dir=args.head)
    setup = model.adapter_setup
    print(f"loaded {len(setup.adapters)} adapters {list(setup.adapters)} and fusion {setup.fusion_key!r} "
          f"on {args.base_model}" + (f", head from {args.head}" if args.head else ""))

    if args.reference:
        reference = np.load(args.reference)
        report = compare(model, reference, args.tolerance)
        for name, value in report.items():
            print(f"max |Keras - PyTorch| {name}: {value:.2e}")
        # AdapterHub's literal fusion form (K and V applied to every adapter's output) gives the same numbers
        # as the package's faster default form.
        literal = adapterhub.load_fusion_model(args.base_model, args.adapters, args.fusion, head_dir=args.head,
                                               reference_form=True)
        literal_report = compare(literal, reference, args.tolerance)
        print(f"max |Keras (reference form) - PyTorch| logits: {literal_report['logits']:.2e}")

    if args.text:
        from keras_adapterfusion import load_tokenizer

        batch = load_tokenizer(args.base_model)(args.text, padding=True, truncation=True, return_tensors="np")
        logits = np.asarray(model({k: batch[k] for k in INPUT_NAMES if k in batch})["logits"])
        names = [str(i) for i in range(logits.shape[-1])]
        if args.head:  # the head's label2id (from head_config.json) names the classes
            label2id = adapterhub.load_head(args.head, model.encoder)[2]
            if label2id:
                names = sorted(label2id, key=label2id.get)
        for text, row in zip(args.text, logits):
            print(f"{names[int(row.argmax())]}\t{text}")

    if args.smoke:
        assert report["logits"] <= 1e-5 and report["fusion_attentions"] <= 1e-5, report
        assert literal_report["logits"] <= 1e-5, literal_report
        print("smoke OK")


if __name__ == "__main__":
    main()
