"""The sequential bottleneck adapter layer."""

import math

import keras
from keras import ops

from keras_adapterfusion.configs import AdapterConfig
from keras_adapterfusion.layers.activations import get_activation
from keras_adapterfusion.layers.fused import LayerNorm, dense


def kernel_initializer(init_weights, which, fan_in):
    """Kernel initializer of AdapterHub's init schemes for `which` in {down, up}."""
    if init_weights == "bert":
        return keras.initializers.RandomNormal(stddev=0.02)
    if init_weights == "houlsby":
        # trunc_normal_(std=1e-2, a=-2e-2, b=2e-2): two standard deviations.
        return keras.initializers.TruncatedNormal(stddev=0.01)
    if init_weights == "mam_adapter":
        if which == "up":
            return "zeros"
        # kaiming_uniform_(a=sqrt(5)) gives the bound 1 / sqrt(fan_in).
        bound = 1.0 / math.sqrt(fan_in)
        return keras.initializers.RandomUniform(-bound, bound)
    raise ValueError(
        f"init_weights: got {init_weights!r}; expected one of 'bert', 'mam_adapter', 'houlsby'."
    )


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class BottleneckAdapter(keras.layers.Layer):
    """A sequential bottleneck adapter (Houlsby et al., 2019; Pfeiffer et al., 2020).

    Computes `up = (W_up · act(W_down · a + b_down) + b_up) * scaling` on its
    input `a` (after an optional new LayerNorm), then
    `out = ln_after(dropout(up)) + residual` (or `ln_after(dropout(up) +
    residual)` when `adapter_residual_before_ln`). Where `a` and `residual`
    come from inside a transformer block is decided by the block
    (`TransformerBlock`), following AdapterHub's pre/post-forward rules.

    Args:
        bottleneck_size: width of the bottleneck.
        non_linearity: activation name (see `AdapterConfig.non_linearity`).
        ln_before: add a LayerNorm before the down projection.
        ln_after: add a LayerNorm after the up projection.
        adapter_residual_before_ln: add the residual before `ln_after`.
        scaling: a float, `"learned"` (a learned scalar) or `"channel"` (a
            learned vector).
        init_weights: `"bert"`, `"mam_adapter"` or `"houlsby"`.
        dropout: dropout rate on the up projection's output.
        layer_norm_epsilon: epsilon of the new LayerNorms (PyTorch's 1e-5).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: the adapter input `a`, shape `[batch, tokens, hidden]`.
        residual: the residual added to the output; `None` adds nothing.
        training: Python bool, whether dropout is active.
        up_only: return only the scaled up projection (before dropout and the
            residual), as AdapterFusion consumes it.

    Example:

    ```python
    adapter = BottleneckAdapter(bottleneck_size=24)
    x = keras.random.normal((2, 5, 384))
    y = adapter(x, residual=x)
    ```

    References:
        - [Houlsby et al., 2019](https://arxiv.org/abs/1902.00751)
        - [Pfeiffer et al., 2020](https://arxiv.org/abs/2005.00247)
    """

    def __init__(
        self,
        bottleneck_size,
        non_linearity="relu",
        ln_before=False,
        ln_after=False,
        adapter_residual_before_ln=False,
        scaling=1.0,
        init_weights="bert",
        dropout=0.0,
        layer_norm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(bottleneck_size, bool) or not isinstance(bottleneck_size, int) or bottleneck_size < 1:
            raise ValueError(
                f"BottleneckAdapter.bottleneck_size: got {bottleneck_size!r}; expected an int >= 1."
            )
        # Validation of the remaining fields is shared with AdapterConfig.
        AdapterConfig(
            non_linearity=non_linearity,
            ln_before=ln_before,
            ln_after=ln_after,
            adapter_residual_before_ln=adapter_residual_before_ln,
            scaling=scaling,
            init_weights=init_weights,
            dropout=dropout,
        )
        self.bottleneck_size = bottleneck_size
        self.non_linearity = non_linearity
        self.ln_before = ln_before
        self.ln_after = ln_after
        self.adapter_residual_before_ln = adapter_residual_before_ln
        self.scaling = scaling
        self.init_weights = init_weights
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self._activation = get_activation(non_linearity)
        self.supports_masking = False

    @classmethod
    def from_adapter_config(cls, config, hidden_size, block_index=0, **kwargs):
        """Build the adapter that `config` puts into block `block_index`."""
        config = AdapterConfig.get(config)
        return cls(
            bottleneck_size=config.bottleneck_size(hidden_size, block_index),
            non_linearity=config.non_linearity,
            ln_before=config.ln_before,
            ln_after=config.ln_after,
            adapter_residual_before_ln=config.adapter_residual_before_ln,
            scaling=config.scaling,
            init_weights=config.init_weights,
            dropout=config.dropout,
            **kwargs,
        )

    def build(self, input_shape):
        hidden = input_shape[-1]
        self.hidden_size = hidden
        if self.ln_before:
            self.norm_before = LayerNorm(
                epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="norm_before"
            )
            self.norm_before.build(input_shape)
        self.down = keras.layers.Dense(
            self.bottleneck_size,
            kernel_initializer=kernel_initializer(self.init_weights, "down", hidden),
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name="down",
        )
        self.down.build(input_shape)
        self.up = keras.layers.Dense(
            hidden,
            kernel_initializer=kernel_initializer(self.init_weights, "up", self.bottleneck_size),
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name="up",
        )
        self.up.build(tuple(input_shape[:-1]) + (self.bottleneck_size,))
        if self.scaling == "learned":
            self.scale = self.add_weight(name="scale", shape=(1,), initializer="ones")
        elif self.scaling == "channel":
            self.scale = self.add_weight(name="scale", shape=(hidden,), initializer="ones")
        if self.ln_after:
            self.norm_after = LayerNorm(
                epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="norm_after"
            )
            self.norm_after.build(input_shape)
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def up_projection(self, inputs):
        """The scaled up projection for input `inputs` (what fusion attends over)."""
        x = inputs
        if self.ln_before:
            x = self.norm_before(x)
        # The two products as `fused.dense` forms them (on TensorFlow the bias and the activation run inside
        # the product's kernel); the same as `self.up(act(self.down(x)))`.
        x = dense(x, self.down.kernel, self.down.bias, self.non_linearity)
        up = dense(x, self.up.kernel, self.up.bias)
        if isinstance(self.scaling, str):
            up = up * ops.cast(self.scale, up.dtype)
        elif self.scaling != 1.0:
            up = up * self.scaling
        return up

    def call(self, inputs, residual=None, training=None, up_only=False):
        up = self.up_projection(inputs)
        if up_only:
            return up
        return self.output_from_up(up, residual, training=training)

    def output_from_up(self, up, residual=None, training=None):
        """The adapter's output from its scaled up projection `up` (dropout, `ln_after`, the residual).

        `call` is `output_from_up(up_projection(inputs), residual)`; a slot that needs both the up
        projection (for a fusion over stacks) and the output calls the two steps itself.
        """
        out = self.dropout_layer(up, training=training)
        if residual is not None and self.adapter_residual_before_ln:
            out = out + residual
        if self.ln_after:
            out = self.norm_after(out)
        if residual is not None and not self.adapter_residual_before_ln:
            out = out + residual
        return out

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            bottleneck_size=self.bottleneck_size,
            non_linearity=self.non_linearity,
            ln_before=self.ln_before,
            ln_after=self.ln_after,
            adapter_residual_before_ln=self.adapter_residual_before_ln,
            scaling=self.scaling,
            init_weights=self.init_weights,
            dropout=self.dropout,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config
