"""Files written by an earlier version of the package still load, with the same outputs.

`fixtures/formats/` was written by `fixtures/make_format_fixtures.py` with the
version and commit in its `written_by.json` (before the block's adapter slots were
redesigned). Each format is loaded by today's code and must give the outputs that
version computed, within float32 rounding (different CPUs round differently).
"""

import json
import os

import keras
import numpy as np
import pytest
from keras import ops

from conftest import FIXTURES, TINY_BERT, max_abs
from parity import float32_bound
from keras_adapterfusion import AdapterModel, load_encoder
from keras_adapterfusion.formats import adapterhub
from keras_adapterfusion.formats import native as saving

FORMATS = os.path.join(FIXTURES, "formats")
EXPECTED = dict(np.load(os.path.join(FORMATS, "expected.npz")))
X = {k: EXPECTED[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
LAYERS, HIDDEN = 2, 64


def bound(reference):
    return float32_bound(float(np.max(np.abs(reference))), LAYERS, HIDDEN)


def check(label, got, reference):
    error = max_abs(ops.convert_to_numpy(got), reference)
    assert error <= bound(reference), f"{label}: error {error} above the float32 bound {bound(reference)}"


def test_the_fixtures_name_their_writer():
    with open(os.path.join(FORMATS, "written_by.json")) as f:
        info = json.load(f)
    assert set(info) == {"keras_adapterfusion", "commit", "keras", "backend"} and info["commit"]


@pytest.mark.parametrize("name", ["fusion", "mt_a"])
def test_keras_files_load(name):
    model = keras.saving.load_model(os.path.join(FORMATS, f"{name}.keras"))
    if name == "fusion":
        check("fusion.keras logits", model(X, training=False), EXPECTED["logits"])
        attentions = model.encoder(X, adapter_setup=["a", "b"], training=False)["fusion_attentions"]
        check("fusion.keras attentions", attentions, EXPECTED["fusion_attentions"])
    else:
        check("mt_a.keras logits", model(dict(X, task_id=EXPECTED["task_id"]), training=False),
              EXPECTED["mt_a_logits"])


def test_native_modules_load():
    encoder = load_encoder(TINY_BERT)
    root = os.path.join(FORMATS, "native")
    assert [saving.load_adapter(encoder, os.path.join(root, n)) for n in ("a", "b")] == ["a", "b"]
    saving.load_fusion(encoder, os.path.join(root, "fusion"))
    head = saving.load_head(os.path.join(root, "head"), encoder)
    model = AdapterModel(encoder, head, adapter_setup=["a", "b"], output_key="logits")
    check("native logits", model(X, training=False), EXPECTED["logits"])


def test_adapterhub_modules_load():
    root = os.path.join(FORMATS, "adapterhub")
    model = adapterhub.load_fusion_model(TINY_BERT, [os.path.join(root, n) for n in ("a", "b")],
                                         os.path.join(root, "fusion"), os.path.join(root, "head"))
    out = model(X, training=False)
    check("AdapterHub logits", out["logits"] if isinstance(out, dict) else out, EXPECTED["logits"])


@pytest.mark.tensorflow_only
def test_saved_model_loads():
    import tensorflow as tf

    loaded = tf.saved_model.load(os.path.join(FORMATS, "saved_model", "fusion", "1"))
    served = loaded.signatures["serving_default"](**{k: tf.constant(v, tf.int64) for k, v in X.items()})
    check("SavedModel logits", served["logits"], EXPECTED["logits"])


def test_the_fixtures_are_not_trivial():
    # Perturbed weights: the fusion's logits differ from the plain encoder's head on the same inputs,
    # and the two adapters get different attention weights.
    probs = EXPECTED["fusion_attentions"]
    assert probs.shape[-1] == 2 and float(np.max(np.abs(probs[..., 0] - probs[..., 1]))) > 0.05
    assert EXPECTED["logits"].shape == (3, 3) and EXPECTED["mt_a_logits"].shape == (3, 3)
