"""Activation functions by the names Hugging Face configs and AdapterHub use."""

import math

import keras
from keras import ops


def _gelu_exact(x):
    # x * Phi(x) = (x / 2) * (1 + erf(x / sqrt(2))), as torch computes it on a CPU, with the constant in x's
    # precision: float64 stays float64-accurate (TensorFlow's own `tf.nn.gelu` uses a float32 constant, errors
    # ~5e-9 in float64). In this form (`(x * 0.5) * (erf(x * c) + 1)`) TensorFlow's graph optimizer fuses the
    # GELU into the product before it (`layers/fused.py`); its erf also runs 3-4x faster than the erfc of
    # `tf.nn.gelu` on a CPU.
    x = ops.convert_to_tensor(x)
    c = ops.convert_to_tensor(1.0 / math.sqrt(2.0), dtype=x.dtype)
    return (x * ops.convert_to_tensor(0.5, dtype=x.dtype)) * (ops.erf(x * c) + ops.convert_to_tensor(1.0, x.dtype))


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

