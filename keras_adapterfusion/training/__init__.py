"""Training a stage: model builders, optimizers and schedules, losses and metrics, callbacks, runs.

- `builders`: one model per stage, trainable flags set (`build_adapter_model`,
  `build_fusion_model`, `build_multitask_model`, ...).
- `optimizers`: AdamW per stage with its learning-rate schedule (`make_optimizer`,
  `LinearDecay`, `compile_for_stage`).
- `losses`: a head's loss and metrics (`make_head`, `compile_arguments`, the masked
  token losses).
- `callbacks`: every Keras callback of the package.
- `runs`: running one stage on a task (`prepare`, `fit`, `evaluate`, `rebuild_model`); `run_files`: a run
  directory's `run.json` (`read_run`, `run_task`; no Keras, the command line reads it first).

`keras_adapterfusion.training.make_optimizer` and the other names of `optimizers`
load on first use (the names of the module this package replaced), so importing
this package imports no Keras.
"""

from keras_adapterfusion.lazy import lazy_attributes

_OPTIMIZERS = "keras_adapterfusion.training.optimizers"
_LAZY = {name: _OPTIMIZERS for name in ("DEFAULT_LEARNING_RATES", "DEFAULT_WEIGHT_DECAY", "NO_DECAY",
                                         "LinearDecay", "make_optimizer", "stage_of", "compile_for_stage")}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
