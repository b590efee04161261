"""AdapterFusion (Pfeiffer et al., 2020) for Keras 3.

Importing this package does not import TensorFlow or tensorflow-datasets, so the
layers and models run on the JAX and PyTorch backends too.
"""

from keras_adapterfusion.backbones import TransformerEncoder, load_encoder, load_tokenizer
from keras_adapterfusion.configs import AdapterConfig, FusionConfig
from keras_adapterfusion.errors import CheckpointError
from keras_adapterfusion.layers import (
    AdapterFusion,
    BottleneckAdapter,
    ClassificationHead,
    MultipleChoiceHead,
    TextEmbeddings,
    TokenClassificationHead,
    TransformerBlock,
)
from keras_adapterfusion.models import AdapterModel, MultiTaskModel

from keras_adapterfusion import analysis, builders, heads, saving, training  # noqa: E402,F401

__version__ = "0.1.0"

__all__ = [
    "AdapterConfig",
    "AdapterFusion",
    "AdapterModel",
    "BottleneckAdapter",
    "CheckpointError",
    "ClassificationHead",
    "MultiTaskModel",
    "MultipleChoiceHead",
    "TokenClassificationHead",
    "FusionConfig",
    "TextEmbeddings",
    "TransformerBlock",
    "TransformerEncoder",
    "load_encoder",
    "load_tokenizer",
]
