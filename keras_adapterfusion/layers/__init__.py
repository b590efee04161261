"""Keras layers: adapters (bottleneck, LoRA), fusion, the transformer block with adapter slots, heads; `AdapterSetup`."""

from keras_adapterfusion.layers.adapter_fusion import AdapterFusion
from keras_adapterfusion.layers.adapter_setup import AdapterSetup
from keras_adapterfusion.layers.adapter_slot import AdapterSlot
from keras_adapterfusion.layers.bottleneck_adapter import BottleneckAdapter
from keras_adapterfusion.layers.classification_head import ClassificationHead
from keras_adapterfusion.layers.disentangled_block import DisentangledBlock
from keras_adapterfusion.layers.lora import LoRA, LoRALayers
from keras_adapterfusion.layers.multiple_choice_head import MultipleChoiceHead
from keras_adapterfusion.layers.text_embeddings import TextEmbeddings
from keras_adapterfusion.layers.token_classification_head import TokenClassificationHead
from keras_adapterfusion.layers.transformer_block import TransformerBlock

__all__ = [
    "AdapterFusion",
    "AdapterSetup",
    "AdapterSlot",
    "BottleneckAdapter",
    "ClassificationHead",
    "DisentangledBlock",
    "LoRA",
    "LoRALayers",
    "MultipleChoiceHead",
    "TextEmbeddings",
    "TokenClassificationHead",
    "TransformerBlock",
]
