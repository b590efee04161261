"""Activation functions by the names Hugging Face configs and AdapterHub use."""

import math

import keras
from keras import ops


def _gelu_exact(x):
    x = ops.convert_to_tensor(x)
    if keras.backend.standardize_dtype(x.dtype) != "float64":
        # The backend's fused GELU (oneDNN may fuse it into the preceding matmul).
        return ops.gelu(x, approximate=False)
    # float64: x * Phi(x) with erf, as torch computes it. On TensorFlow `tf.nn.gelu` in float64 is only
    # float32-accurate (errors ~5e-9, its 1/sqrt(2) is a float32 constant), which float64 parity would see.
    return 0.5 * x * (1.0 + ops.erf(x * ops.convert_to_tensor(1.0 / math.sqrt(2.0), dtype="float64")))


def _gelu_tanh(x, constant=math.sqrt(2.0 / math.pi)):
    x = ops.convert_to_tensor(x)
    if keras.backend.standardize_dtype(x.dtype) != "float64":
        return ops.gelu(x, approximate=True)
    # float64: Hugging Face's formula with float64 constants (the backends' tanh GELU is only
    # float32-accurate in float64, as the exact form above).
    c = ops.convert_to_tensor(constant, dtype="float64")
    return 0.5 * x * (1.0 + ops.tanh(c * (x + 0.044715 * x * x * x)))


def _gelu_fast(x):
    # Hugging Face's FastGELUActivation rounds sqrt(2 / pi) to 0.7978845608 (seen only in float64).
    return _gelu_tanh(x, 0.7978845608)


def _quick_gelu(x):
    return x * ops.sigmoid(1.702 * x)


def _leaky_relu(x):
    # torch.nn.functional.leaky_relu's default slope.
    return ops.leaky_relu(x, negative_slope=0.01)


def _linear(x):
    return x


_ACTIVATIONS = {
    "relu": ops.relu,
    "swish": ops.silu,
    "silu": ops.silu,
    "gelu": _gelu_exact,
    "gelu_new": _gelu_tanh,
    "gelu_fast": _gelu_fast,
    "gelu_pytorch_tanh": _gelu_tanh,
    "quick_gelu": _quick_gelu,
    "tanh": ops.tanh,
    "sigmoid": ops.sigmoid,
    "leakyrelu": _leaky_relu,
    "linear": _linear,
}


def get_activation(name):
    """Return the activation function called `name` (Hugging Face spelling).

    `"gelu"` is the exact (erf) GELU, as in PyTorch and Hugging Face;
    `"gelu_new"`, `"gelu_fast"` and `"gelu_pytorch_tanh"` are the tanh form.
    """
    key = (name or "linear").lower()
    if key not in _ACTIVATIONS:
        raise ValueError(
            f"activation: got {name!r}; expected one of {sorted(_ACTIVATIONS)}."
        )
    return _ACTIVATIONS[key]


def supported_activations():
    """The activation names `get_activation` accepts, sorted."""
    return sorted(_ACTIVATIONS)

