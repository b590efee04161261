"""The encoder backbone and its Hugging Face checkpoint converters.

- `transformer_encoder`: `TransformerEncoder`, the Keras encoder with adapter slots.
- `checkpoint`: finding checkpoint directories and reading `config.json` (pure Python).
- `converters`: one key table per Hugging Face `model_type`.
- `huggingface`: `load_encoder`, `load_tokenizer`.
- `keras_hub_models`: `from_keras_hub`, an encoder from a keras-hub text backbone.
- `keras_hub_tokenizers`: `keras_hub_tokenizer`, a keras-hub tokenizer written as a Hugging Face tokenizer.
- `copying`: `copy_encoder`, the one way to copy an encoder with a chosen set of adapters and fusions.
- `merging`: `merge_adapters`, a new adapter from the weighted weights of trained ones.

The names below load on first use, so `backbones.checkpoint` can be imported
without Keras (the command line checks an encoder before it imports TensorFlow).
"""

import importlib

_LAZY = {
    "TransformerEncoder": "keras_adapterfusion.backbones.transformer_encoder",
    "copy_encoder": "keras_adapterfusion.backbones.copying",
    "from_keras_hub": "keras_adapterfusion.backbones.keras_hub_models",
    "keras_hub_tokenizer": "keras_adapterfusion.backbones.keras_hub_tokenizers",
    "load_encoder": "keras_adapterfusion.backbones.huggingface",
    "load_tokenizer": "keras_adapterfusion.backbones.huggingface",
    "merge_adapters": "keras_adapterfusion.backbones.merging",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_adapterfusion.backbones' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
