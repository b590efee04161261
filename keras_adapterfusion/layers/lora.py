"""The LoRA layer: a low-rank update of one of a block's projections."""

import math

import keras
from keras import ops

from keras_adapterfusion.configs import LoRAConfig


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class LoRA(keras.layers.Layer):
    """Low-rank adaptation (Hu et al., 2021) of one projection `x W + b`: `scaling · dropout(x) A B`.

    The layer holds `lora_A` `[in, r]` and `lora_B` `[r, units]` (Keras's layout: AdapterHub's and PEFT's
    `lora_A` `[r, in]` and `lora_B` `[out, r]` transposed) and returns the update to add to the
    projection's output; the block adds it (`TransformerBlock`). `delta()` is the update of the kernel,
    `scaling · A B` `[in, units]`, which `merge_lora` adds to `W`.

    Args:
        units: the projection's output width.
        r: the rank.
        alpha: `scaling = alpha / r`.
        dropout: dropout rate on the input.
        init_weights: `"lora"` (`A` Kaiming-uniform as PyTorch's `Linear`, `B` zeros) or `"bert"` (N(0, 0.02)).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: the projection's input `[..., in]`.
        training: Python bool (dropout).

    Example:

    ```python
    lora = LoRA(units=64, r=4, alpha=8)
    x = keras.random.normal((2, 5, 64))
    update = lora(x)          # [2, 5, 64]; zeros until B trains
    ```

    References:
        - [Hu et al., 2021](https://arxiv.org/abs/2106.09685)
    """

    def __init__(self, units, r=8, alpha=8, dropout=0.0, init_weights="lora", **kwargs):
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(f"LoRA.units: got {units!r}; expected an int >= 1.")
        LoRAConfig(r=r, alpha=alpha, dropout=dropout, init_weights=init_weights)  # the shared checks
        self.units = units
        self.r = r
        self.alpha = alpha
        self.dropout = dropout
        self.init_weights = init_weights
        self.scaling = alpha / r
        self.supports_masking = False

    @classmethod
    def from_lora_config(cls, config, units, **kwargs):
        """The layer `config` puts on a projection of width `units`."""
        return cls(units=units, r=config.r, alpha=config.alpha, dropout=config.dropout,
                   init_weights=config.init_weights, **kwargs)

    def build(self, input_shape):
        fan_in = input_shape[-1]
        if self.init_weights == "lora":
            # kaiming_uniform_(a=sqrt(5)) of PyTorch's [r, in] matrix: bound 1 / sqrt(in).
            bound = 1.0 / math.sqrt(fan_in)
            a_init, b_init = keras.initializers.RandomUniform(-bound, bound), "zeros"
        else:
            a_init = b_init = keras.initializers.RandomNormal(stddev=0.02)
        self.lora_A = self.add_weight(name="lora_A", shape=(fan_in, self.r), initializer=a_init)
        self.lora_B = self.add_weight(name="lora_B", shape=(self.r, self.units), initializer=b_init)
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def call(self, inputs, training=None):
        x = self.dropout_layer(inputs, training=training)
        shape = ops.shape(x)
        y = ops.matmul(ops.matmul(ops.reshape(x, (-1, shape[-1])), self.lora_A), self.lora_B) * self.scaling
        return ops.reshape(y, tuple(shape[:-1]) + (self.units,))

    def delta(self):
        """The kernel update `scaling · A B` `[in, units]` (what merging adds to the projection's kernel)."""
        return ops.matmul(self.lora_A, self.lora_B) * self.scaling

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, r=self.r, alpha=self.alpha, dropout=self.dropout,
                      init_weights=self.init_weights)
        return config


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class LoRALayers(keras.layers.Layer):
    """The LoRA layers of one block, by key (`<projection>_lora_<name>`): a holder that stays open.

    Like `AdapterSlot`, it holds no weights of its own and is built from the start, so LoRAs can be
    added to a block after the block is built; the block builds each `LoRA` in its own name scope.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.layers_by_key = {}
        self.built = True

    def call(self, *args, **kwargs):
        raise NotImplementedError("LoRALayers holds a block's LoRA layers; the block calls them.")
