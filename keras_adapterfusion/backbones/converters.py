"""Hugging Face converters: one per `model_type`, each only a key table.

A converter says where the checkpoint's encoder keys start (`prefix`: what a
task model such as `BertForSequenceClassification` puts in front) and maps
every tensor onto the encoder's variables: one `WeightRow` per tensor, with the
transform (`"transpose"` turns PyTorch's `Linear` `[out, in]` into Keras's
`[in, out]`). It also names where AdapterHub (`adapters`) keeps a block's two
adapter slots, the AdapterHub model class, and the keys of task heads that sit
beside the encoder in full checkpoints. Reading files and checking tensors is
`keras_adapterfusion.io`'s job; configs are read by `backbones.checkpoint`.

| model_type | prefix | table | AdapterHub slots (block `i`) |
|---|---|---|---|
| `bert` | `bert.` | `bert_rows` | `encoder.layer.{i}.attention.output.`, `encoder.layer.{i}.output.` |
| `roberta`, `xlm-roberta` | `roberta.` | `bert_rows` (positions differ, see `TextEmbeddings`) | as BERT |
| `electra` | `electra.` | `bert_rows` (+ `embeddings_project` when `embedding_size` differs) | as BERT |
| `distilbert` | `distilbert.` | `distilbert_rows` | `transformer.layer.{i}.attention_adapters.`, `transformer.layer.{i}.output_adapters.` |
"""

import dataclasses
from typing import Callable

import keras

from keras_adapterfusion.io.weights import WeightRow


def _dense_rows(key, dense):
    return [WeightRow(key + ".weight", tuple(dense.kernel.shape), dense.kernel, "transpose"),
            WeightRow(key + ".bias", tuple(dense.bias.shape), dense.bias)]


def _norm_rows(key, norm):
    return [WeightRow(key + ".weight", tuple(norm.gamma.shape), norm.gamma),
            WeightRow(key + ".bias", tuple(norm.beta.shape), norm.beta)]


def _embedding_rows(encoder):
    emb = encoder.embeddings
    tables = [("word_embeddings", emb.word_embeddings), ("position_embeddings", emb.position_embeddings)]
    if emb.token_type_embeddings is not None:
        tables.append(("token_type_embeddings", emb.token_type_embeddings))
    rows = [WeightRow(f"embeddings.{k}.weight", tuple(t.embeddings.shape), t.embeddings) for k, t in tables]
    return rows + _norm_rows("embeddings.LayerNorm", emb.norm)


def _block_rows(encoder, layer, names):
    """Rows of every block: `layer` is the key of block `i` (a format string), `names` the key of each of
    the block's layers after it, in `TransformerBlock.base_layers` order."""
    rows = []
    for i, block in enumerate(encoder.blocks):
        for name, part in zip(names, block.base_layers()):
            add = _norm_rows if isinstance(part, keras.layers.LayerNormalization) else _dense_rows
            rows.extend(add(layer.format(i=i) + name, part))
    return rows


def bert_rows(encoder):
    """`WeightRow`s of a BERT-layout encoder (BERT, RoBERTa, XLM-R, ELECTRA), keys without the model prefix."""
    rows = _embedding_rows(encoder)
    if encoder.embedding_projection is not None:  # ELECTRA with embedding_size != hidden_size
        rows.extend(_dense_rows("embeddings_project", encoder.embedding_projection))
    rows.extend(_block_rows(encoder, "encoder.layer.{i}.", (
        "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
        "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm")))
    if encoder.use_pooler:
        rows.extend(_dense_rows("pooler.dense", encoder.pooler))
    return rows


def distilbert_rows(encoder):
    """`WeightRow`s of a DistilBERT encoder, keys without the `distilbert.` prefix."""
    return _embedding_rows(encoder) + _block_rows(encoder, "transformer.layer.{i}.", (
        "attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin", "sa_layer_norm",
        "ffn.lin1", "ffn.lin2", "output_layer_norm"))


BERT_SLOTS = {"mh": "encoder.layer.{i}.attention.output.", "output": "encoder.layer.{i}.output."}
# Task heads and pretraining heads beside the encoder in full checkpoints (not loaded).
BERT_HEADS = ("cls.", "lm_head.", "classifier.", "qa_outputs.", "heads.", "score.")


@dataclasses.dataclass(frozen=True)
class Converter:
    """What a `model_type` needs: its key prefix, its key table, where AdapterHub keeps each adapter slot
    of block `i` (a format string per slot), AdapterHub's model class, and the head keys to skip."""

    prefix: str
    rows: Callable
    adapter_slots: dict
    model_class: str
    head_prefixes: tuple = BERT_HEADS


CONVERTERS = {
    "bert": Converter("bert.", bert_rows, BERT_SLOTS, "BertAdapterModel"),
    "roberta": Converter("roberta.", bert_rows, BERT_SLOTS, "RobertaAdapterModel"),
    "xlm-roberta": Converter("roberta.", bert_rows, BERT_SLOTS, "XLMRobertaAdapterModel"),
    "electra": Converter("electra.", bert_rows, BERT_SLOTS, "ElectraAdapterModel",
                         BERT_HEADS + ("discriminator_predictions.", "generator_predictions.", "generator_lm_head.")),
    "distilbert": Converter(
        "distilbert.", distilbert_rows,
        {"mh": "transformer.layer.{i}.attention_adapters.", "output": "transformer.layer.{i}.output_adapters."},
        "DistilBertAdapterModel",
        BERT_HEADS + ("vocab_transform.", "vocab_layer_norm.", "vocab_projector.", "pre_classifier."),
    ),
}
