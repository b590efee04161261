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
| `deberta-v2` (v2 and v3) | `deberta.` | `deberta_rows` (+ `encoder.rel_embeddings`, `encoder.LayerNorm`) | as BERT |
| `albert` | `albert.` | `albert_rows` (block `i` is layer group `i`, shared by its layers) | `encoder.albert_layer_groups.{i}.albert_layers.0.attention.attention_adapters.`, `encoder.albert_layer_groups.{i}.albert_layers.0.output_adapters.` |
"""

import dataclasses
from typing import Callable

import keras

from keras_adapterfusion.configs import LORA_PROJECTIONS
from keras_adapterfusion.io.weights import WeightRow


@dataclasses.dataclass(frozen=True)
class KeyStyle:
    """How a weight file names a layer's tensors: the suffixes of a Dense layer's kernel and bias and of a
    LayerNorm's scale and offset, and the transform a kernel needs (`"transpose"` for PyTorch's `Linear`)."""

    dense: tuple = (".weight", ".bias")
    norm: tuple = (".weight", ".bias")
    kernel_transform: str = "transpose"


HF_KEYS = KeyStyle()  # Hugging Face (PyTorch) checkpoints


def layer_rows(key, layer, style=HF_KEYS):
    """The `WeightRow`s of one Dense or LayerNormalization layer under `key` in `style`."""
    if isinstance(layer, keras.layers.LayerNormalization):
        (scale, offset), pairs = style.norm, ((layer.gamma, None), (layer.beta, None))
    else:
        (scale, offset), pairs = style.dense, ((layer.kernel, style.kernel_transform), (layer.bias, None))
    return [WeightRow(key + suffix, tuple(variable.shape), variable, transform)
            for suffix, (variable, transform) in zip((scale, offset), pairs)]


def _embedding_rows(encoder):
    emb = encoder.embeddings
    tables = [("word_embeddings", emb.word_embeddings)]
    if emb.position_embeddings is not None:
        tables.append(("position_embeddings", emb.position_embeddings))
    if emb.token_type_embeddings is not None:
        tables.append(("token_type_embeddings", emb.token_type_embeddings))
    rows = [WeightRow(f"embeddings.{k}.weight", tuple(t.embeddings.shape), t.embeddings) for k, t in tables]
    return rows + layer_rows("embeddings.LayerNorm", emb.norm)


def block_rows(encoder, layer, names, style=HF_KEYS):
    """Rows of every block: `layer` is the key of block `i` (a format string), `names` the key of each of
    the block's layers after it, in `TransformerBlock.base_layers` order."""
    rows = []
    for i, block in enumerate(encoder.blocks):
        for name, part in zip(names, block.base_layers(), strict=True):
            rows.extend(layer_rows(layer.format(i=i) + name, part, style))
    return rows


def bert_rows(encoder):
    """`WeightRow`s of a BERT-layout encoder (BERT, RoBERTa, XLM-R, ELECTRA), keys without the model prefix."""
    rows = _embedding_rows(encoder)
    if encoder.embedding_projection is not None:  # ELECTRA with embedding_size != hidden_size
        rows.extend(layer_rows("embeddings_project", encoder.embedding_projection))
    rows.extend(block_rows(encoder, "encoder.layer.{i}.", (
        "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
        "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm")))
    if encoder.use_pooler:
        rows.extend(layer_rows("pooler.dense", encoder.pooler))
    return rows


def distilbert_rows(encoder):
    """`WeightRow`s of a DistilBERT encoder, keys without the `distilbert.` prefix."""
    return _embedding_rows(encoder) + block_rows(encoder, "transformer.layer.{i}.", (
        "attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin", "sa_layer_norm",
        "ffn.lin1", "ffn.lin2", "output_layer_norm"))


def albert_rows(encoder):
    """`WeightRow`s of an ALBERT encoder, keys without the `albert.` prefix: block `i` is layer group `i`
    (one layer per group), run `depth // num_layers` times."""
    rows = _embedding_rows(encoder)
    if encoder.embedding_projection is not None:
        rows.extend(layer_rows("encoder.embedding_hidden_mapping_in", encoder.embedding_projection))
    rows.extend(block_rows(encoder, "encoder.albert_layer_groups.{i}.albert_layers.0.", (
        "attention.query", "attention.key", "attention.value", "attention.dense", "attention.LayerNorm",
        "ffn", "ffn_output", "full_layer_layer_norm")))
    if encoder.use_pooler:
        rows.extend(layer_rows("pooler", encoder.pooler))
    return rows


def deberta_rows(encoder):
    """`WeightRow`s of a DeBERTa-v2/v3 encoder, keys without the `deberta.` prefix."""
    rows = _embedding_rows(encoder)
    rows.append(WeightRow("encoder.rel_embeddings.weight", tuple(encoder.relative_embeddings.embeddings.shape),
                          encoder.relative_embeddings.embeddings))
    if encoder.relative_norm is not None:
        rows.extend(layer_rows("encoder.LayerNorm", encoder.relative_norm))
    return rows + block_rows(encoder, "encoder.layer.{i}.", (
        "attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj", "attention.output.dense",
        "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"))


def projection_paths(encoder):
    """Where each block projection a LoRA can adapt lives in the checkpoint: `{(block, projection): key}`.

    The keys (without the model prefix, without `.weight`) are the modules' paths, which AdapterHub's
    (`<path>.loras.<name>.lora_A`) and PEFT's (`<path>.lora_A.weight`) LoRA files extend. They come from
    the converter's own key table, so each model type's names are written once.
    """
    kernels = {}
    for row in CONVERTERS[encoder.model_type].rows(encoder):
        target = row.target() if callable(row.target) else row.target
        kernels[id(target)] = row.key[:-len(".weight")] if row.key.endswith(".weight") else row.key
    return {(i, p): kernels[id(block.projection(p).kernel)]
            for i, block in enumerate(encoder.blocks) for p in LORA_PROJECTIONS}


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
    "albert": Converter(
        "albert.", albert_rows,
        {"mh": "encoder.albert_layer_groups.{i}.albert_layers.0.attention.attention_adapters.",
         "output": "encoder.albert_layer_groups.{i}.albert_layers.0.output_adapters."},
        "AlbertAdapterModel",
        BERT_HEADS + ("predictions.", "sop_classifier."),
    ),
    "deberta-v2": Converter("deberta.", deberta_rows, BERT_SLOTS, "DebertaV2AdapterModel",
                            BERT_HEADS + ("lm_predictions.", "mask_predictions.", "pooler.")),
}
