"""The models: `AdapterModel`, `MultiTaskModel`, `ParallelModel` (`adapter_model`), and which weights train (`trainable`).

- `adapter_model`: an encoder, its adapter set-up and one head (`AdapterModel`),
  one head per task routed per example (`MultiTaskModel`), or several set-ups with
  their heads in one encoder pass (`ParallelModel`).
- `trainable`: the trainable spec (`make_spec`, `check_spec`, `apply_trainable_spec`):
  the one record of which parts of a model train.

The names below load on first use, so importing this package imports no Keras.
"""

from keras_adapterfusion.lazy import lazy_attributes

_LAZY = {
    "AdapterModel": "keras_adapterfusion.models.adapter_model",
    "MultiTaskModel": "keras_adapterfusion.models.adapter_model",
    "ParallelModel": "keras_adapterfusion.models.adapter_model",
    "OUTPUT_KEYS": "keras_adapterfusion.models.adapter_model",
    "make_spec": "keras_adapterfusion.models.trainable",
    "check_spec": "keras_adapterfusion.models.trainable",
    "apply_trainable_spec": "keras_adapterfusion.models.trainable",
}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
