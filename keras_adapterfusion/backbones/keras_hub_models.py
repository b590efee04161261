"""Encoders from keras-hub backbones: `from_keras_hub(backbone_or_preset_dir)`.

A keras-hub `BertBackbone`, `RobertaBackbone`, `XLMRobertaBackbone`, `DistilBertBackbone`, `ElectraBackbone`,
`AlbertBackbone` or `DebertaV3Backbone` (an object, or a preset directory written by `save_to_preset`) becomes this package's `TransformerEncoder`
with the same weights and the same function, so that adapters and fusion can be added to a model fine-tuned
in keras-hub. Each backbone class has one key table here (like `backbones.converters` for Hugging Face
checkpoints), and the one weight loader (`keras_adapterfusion.io.load_weights`) checks and assigns every tensor.

What is carried over, and what is not:

- every weight of the backbone (embeddings, each block, the embedding projection of ELECTRA and ALBERT, the
  pooler of BERT, ELECTRA and ALBERT), its dropout rate, LayerNorm epsilon, activation (keras-hub's BERT,
  ELECTRA and ALBERT use the tanh form of GELU, `"gelu_new"` here; RoBERTa, XLM-R and DistilBERT the exact
  one) and position table;
- ALBERT's sharing: one block per group (`num_inner_repetitions` must be 1), run `num_layers / num_groups`
  times (`TransformerEncoder.depth`), with adapters placed as AdapterHub places them in ALBERT;
- DeBERTa-v3's relative attention (`bucket_size` buckets, up to `max_sequence_length`) and its relative
  embeddings with their LayerNorm; keras-hub masks padding only as keys, the encoder's `DisentangledBlock` masks
  padded queries too, as Hugging Face's DeBERTa does (padded tokens' own outputs differ, real tokens' do not);
- keras-hub's RoBERTa and XLM-R count positions from 0 for every token (their converters drop the two rows that
  Hugging Face's RoBERTa skips), so the encoder uses absolute positions (`position_style="absolute"`), not
  Hugging Face's padding-aware RoBERTa positions, and has no token-type table, as keras-hub's has none;
- keras-hub applies dropout after every attention output and feed-forward, DistilBERT and ALBERT included,
  and so does the encoder;
- the tokenizer, when asked (`tokenizer_dir`): written as a Hugging Face tokenizer
  (`backbones.keras_hub_tokenizers`), which the encoder's `checkpoint` then names;
- not carried over: task heads (take `backbone`, not the task model), the preprocessor's packing (sequence
  length, special tokens: the Hugging Face tokenizer adds its own), and LoRA or quantization state.

Example:

```python
import keras_hub
from keras_adapterfusion import from_keras_hub

backbone = keras_hub.models.BertBackbone(vocabulary_size=1000, num_layers=2, num_heads=4,
                                         hidden_dim=64, intermediate_dim=128)
encoder = from_keras_hub(backbone)            # or from_keras_hub("path/to/preset_dir")
encoder.add_adapter("task", "seq_bn")
```
"""

import os

import keras
import numpy as np

from keras_adapterfusion.backbones.converters import KeyStyle, block_rows, layer_rows
from keras_adapterfusion.backbones.keras_hub_tokenizers import keras_hub_tokenizer, load_preset
from keras_adapterfusion.backbones.transformer_encoder import TransformerEncoder
from keras_adapterfusion.errors import CheckpointError
from keras_adapterfusion.io.weights import WeightRow, load_weights

# keras-hub backbone class -> (this package's model_type, its embeddings layout, a pooler).
BACKBONES = {
    "BertBackbone": ("bert", "segments", True),
    "ElectraBackbone": ("electra", "segments", True),
    "RobertaBackbone": ("roberta", "token_and_position", False),
    "XLMRobertaBackbone": ("xlm-roberta", "token_and_position", False),
    "DistilBertBackbone": ("distilbert", "token_and_position", False),
    "AlbertBackbone": ("albert", "segments", True),
    "DebertaV3Backbone": ("deberta-v2", "tokens", False),
}


def _backbone(backbone_or_preset_dir):
    if isinstance(backbone_or_preset_dir, (str, os.PathLike)):
        import keras_hub

        return load_preset(backbone_or_preset_dir, "config.json", keras_hub.models.Backbone.from_preset, "a backbone")
    return backbone_or_preset_dir


def _activation_name(function):
    name = getattr(function, "__name__", str(function))
    if name == "gelu_approximate":
        return "gelu_new"
    if name == "gelu":
        return "gelu"
    if name in ("relu", "silu", "swish", "tanh"):
        return name
    raise CheckpointError(f"from_keras_hub: the blocks' activation {name!r} has no counterpart here; expected "
                          "keras-hub's gelu or gelu_approximate.")


def _array(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable))


def _embedding_tensors(backbone, layout):
    if layout == "segments":
        out = {"token_embedding": _array(backbone.token_embedding.embeddings),
               "position_embedding": _array(backbone.position_embedding.position_embeddings),
               "segment_embedding": _array(backbone.segment_embedding.embeddings)}
    elif layout == "tokens":  # DeBERTa-v3: token embeddings only; relative embeddings beside them
        relative = backbone.relative_embeddings
        out = {"token_embedding": _array(backbone.token_embedding.embeddings),
               "relative_embedding": _array(relative.rel_embeddings),
               "relative_norm.gamma": _array(relative.layer_norm.gamma),
               "relative_norm.beta": _array(relative.layer_norm.beta)}
    else:
        emb = backbone.embeddings
        out = {"token_embedding": _array(emb.token_embedding.embeddings),
               "position_embedding": _array(emb.position_embedding.position_embeddings)}
    norm = backbone.embeddings_layer_norm
    out.update({"embeddings_layer_norm.gamma": _array(norm.gamma), "embeddings_layer_norm.beta": _array(norm.beta)})
    return out


# keras-hub's key style (its variables' own names) and a block's parts, in `TransformerBlock.base_layers`
# order: this package's name for each (the key) and where a keras-hub `TransformerEncoder` keeps it, with
# the attention's `EinsumDense` kernels (`[hidden, heads, head_dim]`, `[heads, head_dim, hidden]`) flattened
# to `[hidden, hidden]` (`"in"`: keep the input axis, `"out"`: keep the output axis).
KERAS_HUB_KEYS = KeyStyle(dense=(".kernel", ".bias"), norm=(".gamma", ".beta"), kernel_transform=None)
BLOCK_PARTS = (
    ("query", lambda layer: layer._self_attention_layer._query_dense, "in"),
    ("key", lambda layer: layer._self_attention_layer._key_dense, "in"),
    ("value", lambda layer: layer._self_attention_layer._value_dense, "in"),
    ("attention_output", lambda layer: layer._self_attention_layer._output_dense, "out"),
    ("attention_norm", lambda layer: layer._self_attention_layer_norm, None),
    ("intermediate", lambda layer: layer._feedforward_intermediate_dense, None),
    ("output", lambda layer: layer._feedforward_output_dense, None),
    ("output_norm", lambda layer: layer._feedforward_layer_norm, None),
)


def _block_tensors(i, layer):
    """One keras-hub `TransformerEncoder`'s tensors, keyed and shaped as `keras_hub_rows` expects them."""
    out = {}
    for name, part_of, flatten in BLOCK_PARTS:
        part = part_of(layer)
        if isinstance(part, keras.layers.LayerNormalization):
            out[f"{i}.{name}.gamma"], out[f"{i}.{name}.beta"] = _array(part.gamma), _array(part.beta)
            continue
        kernel, bias = _array(part.kernel), _array(part.bias)
        if flatten == "in":
            kernel, bias = kernel.reshape(kernel.shape[0], -1), bias.reshape(-1)
        elif flatten == "out":
            kernel = kernel.reshape(-1, kernel.shape[-1])
        out[f"{i}.{name}.kernel"], out[f"{i}.{name}.bias"] = kernel, bias
    return out


def keras_hub_rows(encoder):
    """The key table of an encoder built from a keras-hub backbone: keras-hub's layer names -> variables."""
    emb = encoder.embeddings
    tables = [("token_embedding", emb.word_embeddings), ("position_embedding", emb.position_embeddings),
              ("segment_embedding", emb.token_type_embeddings), ("relative_embedding", encoder.relative_embeddings)]
    rows = [WeightRow(k, tuple(t.embeddings.shape), t.embeddings) for k, t in tables if t is not None]
    if encoder.relative_norm is not None:
        rows += layer_rows("relative_norm", encoder.relative_norm, KERAS_HUB_KEYS)
    rows += layer_rows("embeddings_layer_norm", emb.norm, KERAS_HUB_KEYS)
    if encoder.embedding_projection is not None:
        rows += layer_rows("embeddings_projection", encoder.embedding_projection, KERAS_HUB_KEYS)
    if encoder.use_pooler:
        rows += layer_rows("pooled_dense", encoder.pooler, KERAS_HUB_KEYS)
    return rows + block_rows(encoder, "{i}.", [name for name, _, _ in BLOCK_PARTS], KERAS_HUB_KEYS)


def _blocks(backbone, kind):
    """The backbone's blocks, one per weight set: ALBERT's groups (one layer each), or every layer."""
    if kind != "AlbertBackbone":
        return list(backbone.transformer_layers)
    if backbone.num_inner_repetitions != 1:
        raise CheckpointError(f"from_keras_hub: the AlbertBackbone has num_inner_repetitions "
                              f"{backbone.num_inner_repetitions}; expected 1 (one layer per group).")
    return [group[0] for group in backbone.transformer_layers]


def from_keras_hub(backbone_or_preset_dir, dtype=None, tokenizer=None, tokenizer_dir=None, **overrides):
    """A `TransformerEncoder` with the weights and function of a keras-hub text backbone.

    Args:
        backbone_or_preset_dir: a keras-hub `BertBackbone`, `RobertaBackbone`, `XLMRobertaBackbone`,
            `DistilBertBackbone`, `ElectraBackbone`, `AlbertBackbone` or `DebertaV3Backbone`, or a preset directory one was saved to with
            `save_to_preset` (read offline).
        dtype: a Keras dtype policy name for the encoder (default: the global policy).
        tokenizer: a keras-hub tokenizer to carry over (default: the preset directory's, when
            `tokenizer_dir` is given).
        tokenizer_dir: a new directory to write the tokenizer to as a Hugging Face tokenizer
            (`backbones.keras_hub_tokenizers`); the encoder's `checkpoint` then points there, so that
            `load_tokenizer(encoder.checkpoint)`, the stage builders' exports and the command line find it.
        **overrides: other `TransformerEncoder` arguments (e.g. `hidden_dropout=0.0`).

    Returns:
        A built `TransformerEncoder` (its `model_type` the backbone's family) whose outputs for
        `{"input_ids": token_ids, "attention_mask": padding_mask, "token_type_ids": segment_ids}` equal the
        backbone's `sequence_output` (and `pooled_output` as `pooler_output`, for BERT, ELECTRA and ALBERT).

    Raises:
        CheckpointError: the object is not one of the supported backbones, an ALBERT with more than one layer per group or embeddings as wide as its
            hidden states, or the preset directory does not load.
    """
    backbone = _backbone(backbone_or_preset_dir)
    kind = type(backbone).__name__
    if kind not in BACKBONES:
        raise CheckpointError(f"from_keras_hub: got a {kind}; expected one of {sorted(BACKBONES)}.")
    model_type, layout, pooler = BACKBONES[kind]
    hidden = backbone.hidden_dim
    layers = _blocks(backbone, kind)
    albert = model_type == "albert"
    if albert and backbone.embedding_dim == hidden:
        raise CheckpointError(f"from_keras_hub: the AlbertBackbone's embedding_dim equals its hidden_dim {hidden}; "
                              "expected a narrower embedding_dim (the encoder projects only narrower embeddings).")
    kwargs = dict(
        vocab_size=getattr(backbone, "vocabulary_size", None) or backbone.vocab_size,  # ELECTRA: vocab_size
        hidden_size=hidden,
        num_layers=len(layers),
        num_heads=backbone.num_heads,
        intermediate_size=backbone.intermediate_dim,
        hidden_act=_activation_name(layers[0].activation),
        hidden_dropout=float(backbone.dropout),
        attention_dropout=float(backbone.dropout),
        max_positions=backbone.max_sequence_length,
        type_vocab_size=backbone.num_segments if layout == "segments" else 0,
        layer_norm_epsilon=float(backbone.embeddings_layer_norm.epsilon),
        position_style="absolute",
        use_pooler=pooler,
        embedding_size=getattr(backbone, "embedding_dim", None),
        model_type=model_type,
    )
    if albert:  # one block per group, run num_layers / num_groups times; adapters where AdapterHub puts them
        kwargs.update(depth=backbone.num_layers, swap_attention_slot_inputs=True)
    if layout == "tokens":  # DeBERTa-v3: relative attention, c2p and p2c, bucket_size buckets up to the length
        kwargs.update(position_style="none", relative_attention={
            "position_buckets": backbone.bucket_size, "max_relative_positions": backbone.max_sequence_length,
            "types": ["c2p", "p2c"], "normalize": True})
    kwargs.update(overrides)
    epsilons = {float(layer._self_attention_layer_norm.epsilon) for layer in layers}
    if epsilons != {kwargs["layer_norm_epsilon"]}:
        raise CheckpointError(f"from_keras_hub: the blocks' LayerNorm epsilons {sorted(epsilons)} differ from the "
                              f"embeddings' {kwargs['layer_norm_epsilon']}; expected one epsilon.")
    tensors = _embedding_tensors(backbone, layout)
    for i, layer in enumerate(layers):
        tensors.update(_block_tensors(i, layer))
    for key, layer in (("embeddings_projection", getattr(backbone, "embeddings_projection", None)),
                       ("pooled_dense", getattr(backbone, "pooled_dense", None) if pooler else None)):
        if layer is not None:
            tensors[f"{key}.kernel"], tensors[f"{key}.bias"] = _array(layer.kernel), _array(layer.bias)
    source = tokenizer if tokenizer is not None else (
        backbone_or_preset_dir if isinstance(backbone_or_preset_dir, (str, os.PathLike)) else None)
    if tokenizer_dir is None and tokenizer is not None:
        raise CheckpointError("from_keras_hub: got a tokenizer but no tokenizer_dir; expected a new directory to "
                              "write it to.")
    if tokenizer_dir is not None and source is None:
        raise CheckpointError("from_keras_hub: tokenizer_dir needs a tokenizer; expected tokenizer= (a keras-hub "
                              "tokenizer) or a preset directory that holds one.")
    encoder = TransformerEncoder(dtype=dtype, name="encoder", **kwargs)
    encoder.build()
    load_weights(keras_hub_rows(encoder), tensors, f"keras-hub {kind}")
    if tokenizer_dir is not None:
        encoder.checkpoint = keras_hub_tokenizer(source, tokenizer_dir)
    return encoder
