"""Encoders from keras-hub backbones: `from_keras_hub(backbone_or_preset_dir)`.

A keras-hub `BertBackbone`, `RobertaBackbone`, `XLMRobertaBackbone`, `DistilBertBackbone` or `ElectraBackbone`
(an object, or a preset directory written by `save_to_preset`) becomes this package's `TransformerEncoder`
with the same weights and the same function, so that adapters and fusion can be added to a model fine-tuned
in keras-hub. Each backbone class has one key table here (like `backbones.converters` for Hugging Face
checkpoints), and the one weight loader (`keras_adapterfusion.io.load_weights`) checks and assigns every tensor.

What is carried over, and what is not:

- every weight of the backbone (embeddings, each block, ELECTRA's embedding projection, the pooler of BERT and
  ELECTRA), its dropout rate, LayerNorm epsilon, activation (keras-hub's BERT and ELECTRA use the tanh form of
  GELU, `"gelu_new"` here; RoBERTa, XLM-R and DistilBERT the exact one) and position table;
- keras-hub's RoBERTa and XLM-R count positions from 0 for every token (their converters drop the two rows that
  Hugging Face's RoBERTa skips), so the encoder uses absolute positions (`position_style="absolute"`), not
  Hugging Face's padding-aware RoBERTa positions, and has no token-type table, as keras-hub's has none;
- keras-hub applies dropout after every attention output, DistilBERT included, and so does the encoder;
- not carried over: task heads (take `backbone`, not the task model), the preprocessor and tokenizer (tokenize
  with the keras-hub preprocessor, or pass `token_ids` as `input_ids` and `padding_mask` as `attention_mask`),
  and LoRA or quantization state. ALBERT and DeBERTa-v3 backbones are refused: this package has no encoder for
  them yet.

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
}


def _backbone(backbone_or_preset_dir):
    if isinstance(backbone_or_preset_dir, (str, os.PathLike)):
        path = os.fspath(backbone_or_preset_dir)
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise CheckpointError(f"{path}: no keras-hub preset (config.json) here; expected a directory "
                                  "written by a backbone's save_to_preset.")
        import keras_hub

        try:
            return keras_hub.models.Backbone.from_preset(path)
        except Exception as e:  # keras-hub raises many kinds for a bad preset
            raise CheckpointError(f"{path}: keras-hub could not load the preset ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:200] if str(e) else ''}).") from e
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
    else:
        emb = backbone.embeddings
        out = {"token_embedding": _array(emb.token_embedding.embeddings),
               "position_embedding": _array(emb.position_embedding.position_embeddings)}
    norm = backbone.embeddings_layer_norm
    out.update({"embeddings_layer_norm.gamma": _array(norm.gamma), "embeddings_layer_norm.beta": _array(norm.beta)})
    return out


def _block_tensors(i, layer, hidden):
    """One keras-hub `TransformerEncoder`'s tensors, in this package's shapes (the attention's
    `EinsumDense` kernels `[hidden, heads, head_dim]` and `[heads, head_dim, hidden]` as `[hidden, hidden]`)."""
    attention = layer._self_attention_layer
    out = {}
    for part, dense in (("query", attention._query_dense), ("key", attention._key_dense),
                        ("value", attention._value_dense)):
        out[f"{i}.{part}.kernel"] = _array(dense.kernel).reshape(hidden, hidden)
        out[f"{i}.{part}.bias"] = _array(dense.bias).reshape(hidden)
    out[f"{i}.attention_output.kernel"] = _array(attention._output_dense.kernel).reshape(hidden, hidden)
    out[f"{i}.attention_output.bias"] = _array(attention._output_dense.bias).reshape(hidden)
    for name, part in (("attention_norm", layer._self_attention_layer_norm),
                       ("output_norm", layer._feedforward_layer_norm)):
        out[f"{i}.{name}.gamma"], out[f"{i}.{name}.beta"] = _array(part.gamma), _array(part.beta)
    for name, part in (("intermediate", layer._feedforward_intermediate_dense),
                       ("output", layer._feedforward_output_dense)):
        out[f"{i}.{name}.kernel"], out[f"{i}.{name}.bias"] = _array(part.kernel), _array(part.bias)
    return out


def keras_hub_rows(encoder):
    """The key table of an encoder built from a keras-hub backbone: keras-hub's layer names -> variables."""
    emb = encoder.embeddings
    tables = [("token_embedding", emb.word_embeddings), ("position_embedding", emb.position_embeddings)]
    if emb.token_type_embeddings is not None:
        tables.append(("segment_embedding", emb.token_type_embeddings))
    rows = [WeightRow(k, tuple(t.embeddings.shape), t.embeddings) for k, t in tables]
    rows += [WeightRow("embeddings_layer_norm.gamma", tuple(emb.norm.gamma.shape), emb.norm.gamma),
             WeightRow("embeddings_layer_norm.beta", tuple(emb.norm.beta.shape), emb.norm.beta)]
    dense = []
    if encoder.embedding_projection is not None:
        dense.append(("embeddings_projection", encoder.embedding_projection))
    if encoder.use_pooler:
        dense.append(("pooled_dense", encoder.pooler))
    for i, block in enumerate(encoder.blocks):
        dense += [(f"{i}.{name}", getattr(block, attr)) for name, attr in (
            ("query", "query_dense"), ("key", "key_dense"), ("value", "value_dense"),
            ("attention_output", "attention_output_dense"), ("intermediate", "intermediate_dense"),
            ("output", "output_dense"))]
        for name in ("attention_norm", "output_norm"):
            norm = getattr(block, name)
            rows += [WeightRow(f"{i}.{name}.gamma", tuple(norm.gamma.shape), norm.gamma),
                     WeightRow(f"{i}.{name}.beta", tuple(norm.beta.shape), norm.beta)]
    for key, layer in dense:
        rows += [WeightRow(f"{key}.kernel", tuple(layer.kernel.shape), layer.kernel),
                 WeightRow(f"{key}.bias", tuple(layer.bias.shape), layer.bias)]
    return rows


def from_keras_hub(backbone_or_preset_dir, dtype=None, **overrides):
    """A `TransformerEncoder` with the weights and function of a keras-hub text backbone.

    Args:
        backbone_or_preset_dir: a keras-hub `BertBackbone`, `RobertaBackbone`, `XLMRobertaBackbone`,
            `DistilBertBackbone` or `ElectraBackbone`, or a preset directory one was saved to with
            `save_to_preset` (read offline).
        dtype: a Keras dtype policy name for the encoder (default: the global policy).
        **overrides: other `TransformerEncoder` arguments (e.g. `hidden_dropout=0.0`).

    Returns:
        A built `TransformerEncoder` (its `model_type` the backbone's family) whose outputs for
        `{"input_ids": token_ids, "attention_mask": padding_mask, "token_type_ids": segment_ids}` equal the
        backbone's `sequence_output` (and `pooled_output` as `pooler_output`, for BERT and ELECTRA).

    Raises:
        CheckpointError: the object is not one of the supported backbones (ALBERT and DeBERTa-v3 are named
            as not supported yet), or the preset directory does not load.
    """
    backbone = _backbone(backbone_or_preset_dir)
    kind = type(backbone).__name__
    if kind not in BACKBONES:
        raise CheckpointError(f"from_keras_hub: got a {kind}; expected one of {sorted(BACKBONES)} (ALBERT and "
                              "DeBERTa-v3 backbones have no encoder here yet).")
    model_type, layout, pooler = BACKBONES[kind]
    hidden = backbone.hidden_dim
    layers = backbone.transformer_layers
    kwargs = dict(
        vocab_size=getattr(backbone, "vocabulary_size", None) or backbone.vocab_size,  # ELECTRA: vocab_size
        hidden_size=hidden,
        num_layers=backbone.num_layers,
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
    kwargs.update(overrides)
    epsilons = {float(layer._self_attention_layer_norm.epsilon) for layer in layers}
    if epsilons != {kwargs["layer_norm_epsilon"]}:
        raise CheckpointError(f"from_keras_hub: the blocks' LayerNorm epsilons {sorted(epsilons)} differ from the "
                              f"embeddings' {kwargs['layer_norm_epsilon']}; expected one epsilon.")
    tensors = _embedding_tensors(backbone, layout)
    for i, layer in enumerate(layers):
        tensors.update(_block_tensors(i, layer, hidden))
    for key, layer in (("embeddings_projection", getattr(backbone, "embeddings_projection", None)),
                       ("pooled_dense", getattr(backbone, "pooled_dense", None) if pooler else None)):
        if layer is not None:
            tensors[f"{key}.kernel"], tensors[f"{key}.bias"] = _array(layer.kernel), _array(layer.bias)
    encoder = TransformerEncoder(dtype=dtype, name="encoder", **kwargs)
    encoder.build()
    load_weights(keras_hub_rows(encoder), tensors, f"keras-hub {kind}")
    return encoder
