"""Load Hugging Face BERT, RoBERTa, XLM-R, DistilBERT, ELECTRA and ALBERT checkpoints into `TransformerEncoder`.

`config.json` is read and checked by `backbones.checkpoint`; the weights
(`model.safetensors`, shards, or PyTorch's `pytorch_model.bin`, read without
PyTorch and without running pickle code) by `keras_adapterfusion.io`; each
`model_type`'s converter (`backbones.converters`) supplies only the key table,
and the one weight loader checks every tensor's name, shape, dtype and
finiteness before it assigns them all.

Example:

```python
from keras_adapterfusion.backbones import load_encoder, load_tokenizer

encoder = load_encoder("path/to/bert-base-uncased")   # or a cached hub id
tokenizer = load_tokenizer("path/to/bert-base-uncased")
```
"""

from keras_adapterfusion.backbones.checkpoint import (  # noqa: F401  (re-exported)
    DEFAULT_ENCODER,
    SUPPORTED_MODEL_TYPES,
    encoder_kwargs_from_hf_config,
    read_hf_config,
    resolve_checkpoint,
)
from keras_adapterfusion.backbones.converters import CONVERTERS
from keras_adapterfusion.backbones.transformer_encoder import TransformerEncoder
from keras_adapterfusion.errors import CheckpointError
from keras_adapterfusion.io.tensors import read_weights
from keras_adapterfusion.io.weights import load_weights

# Buffers that sit beside the encoder's weights in checkpoints (task heads: each converter's `head_prefixes`).
IGNORED_SUFFIXES = ("position_ids", "embeddings.token_type_ids")


def _normalize_key(key):
    return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def strip_encoder_prefix(tensors, model_type, source):
    """Drop the model's prefix (`bert.`, `roberta.`, ...) and the task-head keys beside the encoder."""
    prefix, heads = CONVERTERS[model_type].prefix, CONVERTERS[model_type].head_prefixes
    out = {}
    for key, value in tensors.items():
        k = _normalize_key(key)
        if k.startswith(prefix):
            k = k[len(prefix):]
        elif k.startswith(heads):
            continue
        if k.endswith(IGNORED_SUFFIXES):
            continue
        out[k] = value
    if not out:
        raise CheckpointError(f"{source}: holds no encoder weights.")
    return out


def weight_rows(encoder):
    """The key table of `encoder`'s model type (keys without the model prefix)."""
    return CONVERTERS[encoder.model_type].rows(encoder)


def load_encoder(path_or_id, use_pooler=None, dtype=None, cache_dir=None, allow_nonfinite=False, **overrides):
    """Build a `TransformerEncoder` from a Hugging Face checkpoint and load its weights.

    Args:
        path_or_id: a directory with `config.json` and weights, or a hub id already
            in the local Hugging Face cache.
        use_pooler: include the pooler; by default, when the checkpoint has one.
        dtype: a Keras dtype policy name, e.g. `"mixed_bfloat16"`.
        cache_dir: the Hugging Face hub cache to look in for hub ids.
        allow_nonfinite: load weights holding NaN or inf (refused by default).
        **overrides: other `TransformerEncoder` arguments (e.g. `hidden_dropout`).

    Returns:
        A built `TransformerEncoder` holding the checkpoint's weights.

    Raises:
        CheckpointError: naming the file and the field or tensor at fault.
    """
    directory = resolve_checkpoint(path_or_id, cache_dir)
    config = read_hf_config(directory)
    weights = read_weights(directory, "model")
    tensors = strip_encoder_prefix(weights.tensors, config["model_type"], weights.path)
    if use_pooler is None:
        use_pooler = any(k.startswith("pooler.") for k in tensors)
    kwargs = encoder_kwargs_from_hf_config(config)
    kwargs.update(overrides)
    if not use_pooler:
        tensors = {k: v for k, v in tensors.items() if not k.startswith("pooler.")}
    encoder = TransformerEncoder(use_pooler=use_pooler, dtype=dtype, name="encoder", **kwargs)
    encoder.build()
    load_weights(weight_rows(encoder), tensors, weights.path, allow_nonfinite=allow_nonfinite)
    encoder.checkpoint = directory
    return encoder


def load_tokenizer(path_or_id, cache_dir=None, **kwargs):
    """The checkpoint's tokenizer, through `transformers.AutoTokenizer` (offline)."""
    directory = resolve_checkpoint(path_or_id, cache_dir)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory, **kwargs)
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{directory}: holds no usable tokenizer ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]}).") from e
