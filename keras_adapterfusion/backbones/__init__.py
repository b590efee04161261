"""The encoder backbone and its Hugging Face checkpoint converters."""

from keras_adapterfusion.backbones.huggingface import load_encoder, load_tokenizer
from keras_adapterfusion.backbones.transformer_encoder import TransformerEncoder

__all__ = ["TransformerEncoder", "load_encoder", "load_tokenizer"]
