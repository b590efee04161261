"""Hugging Face converters: one per `model_type`, each only a key table.

A converter says where the checkpoint's encoder keys start (`prefix`: what a
task model such as `BertForSequenceClassification` puts in front) and maps
every tensor onto the encoder's variables: one `WeightRow` per tensor, with the
transform (`"transpose"` turns PyTorch's `Linear` `[out, in]` into Keras's
`[in, out]`). Reading files and checking tensors is `keras_adapterfusion.io`'s
job; configs are read by `backbones.checkpoint`.

| model_type | prefix | table |
|---|---|---|
| `bert` | `bert.` | `bert_rows` |
| `roberta`, `xlm-roberta` | `roberta.` | `bert_rows` (the same block layout; positions differ, see `TextEmbeddings`) |
"""

import dataclasses
from typing import Callable

from keras_adapterfusion.io.weights import WeightRow


def bert_rows(encoder):
    """`WeightRow`s of a BERT-layout encoder, keys without the model prefix."""
    rows = []
    emb = encoder.embeddings
    for key, variable in (
        ("embeddings.word_embeddings.weight", emb.word_embeddings.embeddings),
        ("embeddings.position_embeddings.weight", emb.position_embeddings.embeddings),
        ("embeddings.token_type_embeddings.weight", emb.token_type_embeddings.embeddings),
        ("embeddings.LayerNorm.weight", emb.norm.gamma),
        ("embeddings.LayerNorm.bias", emb.norm.beta),
    ):
        rows.append(WeightRow(key, tuple(variable.shape), variable))
    for i, block in enumerate(encoder.blocks):
        p = f"encoder.layer.{i}."
        for hf, dense in (
            ("attention.self.query", block.query_dense),
            ("attention.self.key", block.key_dense),
            ("attention.self.value", block.value_dense),
            ("attention.output.dense", block.attention_output_dense),
            ("intermediate.dense", block.intermediate_dense),
            ("output.dense", block.output_dense),
        ):
            rows.append(WeightRow(p + hf + ".weight", tuple(dense.kernel.shape), dense.kernel, "transpose"))
            rows.append(WeightRow(p + hf + ".bias", tuple(dense.bias.shape), dense.bias))
        for hf, norm in (("attention.output.LayerNorm", block.attention_norm), ("output.LayerNorm", block.output_norm)):
            rows.append(WeightRow(p + hf + ".weight", tuple(norm.gamma.shape), norm.gamma))
            rows.append(WeightRow(p + hf + ".bias", tuple(norm.beta.shape), norm.beta))
    if encoder.use_pooler:
        rows.append(WeightRow("pooler.dense.weight", tuple(encoder.pooler.kernel.shape), encoder.pooler.kernel,
                              "transpose"))
        rows.append(WeightRow("pooler.dense.bias", tuple(encoder.pooler.bias.shape), encoder.pooler.bias))
    return rows


@dataclasses.dataclass(frozen=True)
class Converter:
    """What a `model_type` needs: its key prefix and its key table."""

    prefix: str
    rows: Callable


CONVERTERS = {
    "bert": Converter("bert.", bert_rows),
    "roberta": Converter("roberta.", bert_rows),
    "xlm-roberta": Converter("roberta.", bert_rows),
}
