"""The block's dense products and LayerNorm, written in the forms a CPU runs fastest.

The same functions run on every backend and compute what `keras.layers.Dense` and
`keras.layers.LayerNormalization` compute. On TensorFlow they are written so that the graph
optimizer (grappler's remapper, with oneDNN, on by default on x86) turns them into single kernels:

- `dense`: a 2-D product whose bias is added with `BiasAdd`, so the product, the bias and the
  activation (exact GELU, ReLU) run as one oneDNN kernel (`_MklNativeFusedMatMul` with the activation
  as a post-op) instead of a product followed by 4-5 element-wise passes;
- `LayerNorm.call`: `beta + (x - mean) * (rsqrt(var + eps) * gamma)`, seven ops over the tensor
  where Keras's form runs nine.

TensorFlow's own kernels outside oneDNN are compiled for SSE/AVX only, so every element-wise pass
that becomes a post-op of a oneDNN kernel (compiled for the CPU it runs on) is time saved on CPUs
with AVX2 or AVX-512 (docs/performance.md, "Where the time goes").
"""

import keras
from keras import ops

from keras_adapterfusion.layers.activations import get_activation


def dense(x, kernel, bias=None, activation=None):
    """`activation(x @ kernel + bias)` over the last axis of `x`, computed as one 2-D product.

    Args:
        x: `[..., in]`.
        kernel: `[in, out]`.
        bias: `[out]` or None.
        activation: an activation name of `get_activation` (`"gelu"`, `"relu"`, ...) or None.

    Returns:
        `[..., out]`.
    """
    shape = ops.shape(x)
    y = ops.matmul(ops.reshape(x, (-1, shape[-1])), kernel)
    if bias is not None:
        y = bias_add(y, bias)
    if activation is not None:
        # Applied to the 2-D product, before the reshape: the remapper fuses only an activation
        # that reads the BiasAdd directly.
        y = get_activation(activation)(y)
    return ops.reshape(y, tuple(shape[:-1]) + (ops.shape(kernel)[-1],))


def bias_add(y, bias):
    """`y + bias` over the last axis; TensorFlow's `BiasAdd` op there (the form its kernel fusions match)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.nn.bias_add(y, ops.cast(bias, y.dtype))
    return y + bias


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class LayerNorm(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` over the last axis in the textbook form.

    `beta + (x - mean) * (rsqrt(mean((x - mean)^2) + epsilon) * gamma)`, the mean and variance over
    the last axis, computed in float32 at least (as Keras does for half precisions). Any other
    set-up (several axes, `rms_scaling`, no `center` or `scale`) runs Keras's own form. Same
    weights, same config: a drop-in for the layer.
    """

    def call(self, inputs):
        axis = self.axis if isinstance(self.axis, (list, tuple)) else [self.axis]
        last = len(axis) == 1 and axis[0] in (-1, len(inputs.shape) - 1)
        if self.rms_scaling or not (self.center and self.scale) or not last:
            return super().call(inputs)
        x = ops.convert_to_tensor(inputs)
        compute = keras.backend.result_type(x.dtype, "float32")
        x = ops.cast(x, compute)
        centered = x - ops.mean(x, axis=-1, keepdims=True)
        variance = ops.mean(ops.square(centered), axis=-1, keepdims=True)
        scale = ops.rsqrt(variance + self.epsilon) * ops.cast(self.gamma, compute)
        return ops.cast(ops.cast(self.beta, compute) + centered * scale, self.compute_dtype)
