"""`layers/fused.py`: the forms of the block's products and LayerNorm that fuse into single CPU kernels compute
what Keras's `Dense` and `LayerNormalization` compute.

Bounds come from the precision: in float64 a few hundred ulps of the output's magnitude (the two orders of
summation differ); in float32 `2 * k * eps32 * magnitude` for a product over `k` terms (two implementations,
each rounding at most `k` times in the worst case, as a bound on the sum of rounding errors) and a few dozen
ulps for LayerNorm (a mean and a variance over the row, then an affine map).
"""

import keras
import numpy as np
import pytest
from keras import ops

from conftest import FLOAT64_EXACT, max_abs
from keras_adapterfusion.layers.activations import get_activation
from keras_adapterfusion.layers.fused import LayerNorm, bias_add, dense

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)


def _inputs(dtype, shape=(2, 5, 12), scale=3.0, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale + 0.5).astype(dtype)


@pytest.mark.parametrize("activation", [None, "gelu", "relu", "gelu_new", "swish"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dense_matches_keras_dense(activation, dtype, request):
    if dtype == "float64":
        request.getfixturevalue("float64")
    x = _inputs(dtype)
    layer = keras.layers.Dense(7, bias_initializer="random_normal", dtype=dtype)
    layer.build(x.shape)
    expected = layer(x)
    if activation is not None:
        expected = get_activation(activation)(expected)
    got = dense(ops.convert_to_tensor(x), layer.kernel, layer.bias, activation)
    assert tuple(got.shape) == (2, 5, 7)
    magnitude = float(np.max(np.abs(ops.convert_to_numpy(expected))))
    eps = EPS64 if dtype == "float64" else EPS32
    assert max_abs(got, expected) <= 2 * x.shape[-1] * eps * max(magnitude, 1.0)


def test_dense_without_bias_and_on_a_2d_input():
    x = _inputs("float32", (6, 12))
    kernel = _inputs("float32", (12, 4), scale=0.2, seed=1)
    got = dense(ops.convert_to_tensor(x), ops.convert_to_tensor(kernel))
    assert tuple(got.shape) == (6, 4)
    assert max_abs(got, x.astype("float64") @ kernel.astype("float64")) <= 2 * 12 * EPS32 * 20


def test_bias_add_is_an_add_over_the_last_axis():
    y = _inputs("float32", (3, 4))
    b = np.arange(4, dtype="float32")
    assert max_abs(bias_add(ops.convert_to_tensor(y), ops.convert_to_tensor(b)), y + b) == 0.0


def test_exact_gelu_matches_the_erf_formula_in_float64(float64):
    """x * Phi(x) with Phi from the error function, to float64 rounding (also far in the negative tail)."""
    from math import erf, sqrt

    x = np.concatenate([np.linspace(-9, 9, 181), [-30.0, 30.0]])
    expected = np.array([v * 0.5 * (1.0 + erf(v / sqrt(2.0))) for v in x])
    got = ops.convert_to_numpy(get_activation("gelu")(ops.convert_to_tensor(x, "float64")))
    assert np.max(np.abs(got - expected)) <= 8 * EPS64 * 30


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layer_norm_matches_keras(dtype, request):
    if dtype == "float64":
        request.getfixturevalue("float64")
    x = _inputs(dtype, scale=5.0)
    ours = LayerNorm(epsilon=1e-12, dtype=dtype, beta_initializer="random_normal",
                     gamma_initializer="random_normal")
    keras_ln = keras.layers.LayerNormalization(epsilon=1e-12, dtype=dtype)
    ours.build(x.shape)
    keras_ln.build(x.shape)
    keras_ln.set_weights(ours.get_weights())
    expected = keras_ln(x)
    magnitude = float(np.max(np.abs(ops.convert_to_numpy(expected))))
    eps = EPS64 if dtype == "float64" else EPS32
    if dtype == "float64" and not FLOAT64_EXACT:
        eps = EPS32  # Keras on JAX reduces float64 in float32 (conftest.FLOAT64_EXACT)
    assert max_abs(ours(x), expected) <= 64 * eps * magnitude
    # ... and the textbook formula, in float64
    x64 = x.astype("float64")
    centered = x64 - x64.mean(-1, keepdims=True)
    gamma, beta = (np.asarray(w, "float64") for w in ours.get_weights())
    textbook = centered / np.sqrt((centered ** 2).mean(-1, keepdims=True) + 1e-12) * gamma + beta
    assert max_abs(ours(x), textbook) <= 64 * eps * magnitude


def test_layer_norm_keeps_the_weights_and_config_of_keras_layer_normalization():
    ours = LayerNorm(epsilon=1e-5, name="norm")
    ours.build((None, 8))
    assert [w.path for w in ours.weights] == ["norm/gamma", "norm/beta"]
    config = ours.get_config()
    assert config == keras.layers.LayerNormalization.from_config(config).get_config()
    assert isinstance(ours, keras.layers.LayerNormalization)


def test_layer_norm_in_mixed_precision_computes_in_float32_and_returns_the_compute_dtype():
    x = _inputs("float32", scale=50.0)
    ours = LayerNorm(epsilon=1e-12, dtype="mixed_bfloat16")
    ours.build(x.shape)
    out = ours(x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    reference = keras.layers.LayerNormalization(epsilon=1e-12)
    reference.build(x.shape)
    # the output rounded once to bfloat16 (8 significant bits) from a float32-accurate value
    expected = ops.convert_to_numpy(reference(ops.cast(ops.cast(x, "bfloat16"), "float32")))
    assert max_abs(ops.cast(out, "float32"), expected) <= 2.0 ** -7 * float(np.max(np.abs(expected)))


@pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")
@pytest.mark.parametrize("kwargs", [dict(rms_scaling=True), dict(center=False), dict(axis=[1, 2])])
def test_layer_norm_falls_back_to_keras_for_other_set_ups(kwargs):
    x = _inputs("float32")
    ours, keras_ln = LayerNorm(**kwargs), keras.layers.LayerNormalization(**kwargs)
    ours.build(x.shape)
    keras_ln.build(x.shape)
    assert max_abs(ours(x), keras_ln(x)) == 0.0
