"""Optimizer and learning-rate defaults for each stage, following the paper.

Pfeiffer et al. (2020) train adapters with learning rate 1e-4 and AdapterFusion
with 5e-5, using AdamW with a linear learning-rate decay; full fine-tuning uses
2e-5. The head-only baseline's rate (1e-3) is this package's choice: the paper
does not give one.

Example:

```python
from keras_adapterfusion.training import optimizers as training
from keras_adapterfusion.training import losses as heads

optimizer = training.make_optimizer("fusion", total_steps=1000)
model.compile(optimizer=optimizer, **heads.compile_arguments(model.head))
# or in one call:
training.compile_for_stage(model, "fusion", total_steps=1000)
```
"""

import keras
from keras import ops

DEFAULT_LEARNING_RATES = {
    "head_only": 1e-3,
    "full_finetune": 2e-5,
    "adapter": 1e-4,
    "multitask": 1e-4,
    "fusion": 5e-5,
}
DEFAULT_WEIGHT_DECAY = 0.01
NO_DECAY = ["bias", "gamma", "beta"]


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 over `warmup_steps`, then linear decay to 0 at `total_steps`.

    Args:
        learning_rate: peak learning rate.
        total_steps: step at which the rate reaches 0.
        warmup_steps: steps of linear warm-up.

    `hold_in(optimizer)` (before the optimizer is built) moves the peak and the number of steps into
    optimizer variables: compiled training steps then do not change with them, so runs that differ only
    there (the trials of a search) share one compiled program.
    """

    def __init__(self, learning_rate, total_steps, warmup_steps=0):
        if total_steps <= 0 or warmup_steps < 0 or warmup_steps >= total_steps:
            raise ValueError(
                f"LinearDecay: got total_steps={total_steps}, warmup_steps={warmup_steps}; "
                "expected total_steps > warmup_steps >= 0."
            )
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self._held = None

    def hold_in(self, optimizer):
        """Keep the peak and the number of steps as variables of `optimizer` (not yet built); returns self."""
        if self.warmup_steps:
            raise ValueError(f"LinearDecay.hold_in: got warmup_steps={self.warmup_steps}; expected 0 "
                             "(only the peak and the number of steps are held as variables).")
        peak = optimizer.add_variable((), initializer=keras.initializers.Constant(self.learning_rate),
                                      dtype="float32", name="peak_learning_rate")
        steps = optimizer.add_variable((), initializer=keras.initializers.Constant(float(self.total_steps)),
                                       dtype="float32", name="decay_steps")
        self._held = (peak, steps)
        return self

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if self._held is not None:
            peak, total = self._held
            return peak * ops.maximum(0.0, (total - step) / total)
        peak = self.learning_rate
        if self.warmup_steps:
            warm = peak * step / self.warmup_steps
        else:
            warm = peak
        decay = peak * ops.maximum(0.0, (self.total_steps - step) / (self.total_steps - self.warmup_steps))
        return ops.where(step < self.warmup_steps, warm, decay)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps}


def make_optimizer(stage="adapter", total_steps=None, learning_rate=None, weight_decay=DEFAULT_WEIGHT_DECAY,
                   warmup_steps=0, **kwargs):
    """AdamW with the stage's default learning rate and a linear decay over `total_steps`.

    Args:
        stage: one of `DEFAULT_LEARNING_RATES` (`head_only`, `full_finetune`,
            `adapter`, `multitask`, `fusion`).
        total_steps: training steps; `None` keeps the rate constant.
        learning_rate: overrides the stage default.
        weight_decay: AdamW decay; biases and LayerNorm weights are excluded.
        warmup_steps: linear warm-up steps.
        **kwargs: other `keras.optimizers.AdamW` arguments.
    """
    if stage not in DEFAULT_LEARNING_RATES:
        raise ValueError(f"make_optimizer: got stage {stage!r}; expected one of {list(DEFAULT_LEARNING_RATES)}.")
    rate = DEFAULT_LEARNING_RATES[stage] if learning_rate is None else learning_rate
    schedule = LinearDecay(rate, total_steps, warmup_steps) if total_steps else rate
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay, **kwargs)
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer


def stage_of(model):
    """The stage name a builder's model trains (from its trainable spec)."""
    from keras_adapterfusion.models.adapter_model import MultiTaskModel

    spec = getattr(model, "trainable_spec", None)
    if isinstance(model, MultiTaskModel):
        return "multitask"
    if spec is None:
        raise ValueError(f"stage_of: {model.name} has no trainable spec; build it with keras_adapterfusion.training.builders.")
    if spec["fusions"]:
        return "fusion"
    if spec["encoder"]:
        return "full_finetune"
    if spec["adapters"]:
        return "adapter"
    return "head_only"


def compile_for_stage(model, stage=None, total_steps=None, learning_rate=None, **optimizer_kwargs):
    """Compile a builder's model with its stage's optimizer and its head's loss and metrics."""
    from keras_adapterfusion.training.losses import compile_arguments

    stage = stage or stage_of(model)
    heads = model.head_layers()
    model.compile(
        optimizer=make_optimizer(stage, total_steps, learning_rate, **optimizer_kwargs),
        **compile_arguments(heads[0]),
    )
    return model
