"""Native save/load of adapters, fusions and heads; whole models through .keras; errors."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
from keras import ops
from safetensors.numpy import load_file, save_file

from conftest import BACKBONES, FUSION_CASE, TINY_BERT, max_abs
from keras_adapterfusion.io.directories import MANIFEST
from keras_adapterfusion.layers import AdapterSetup
from keras_adapterfusion import (
    CheckpointError,
    ClassificationHead,
    MultipleChoiceHead,
    SaveError,
    TokenClassificationHead,
    adapterhub,
    builders,
    heads,
    load_encoder,
    saving,
)


def perturb(weights, seed=0):
    rng = np.random.default_rng(seed)
    for v in weights:
        v.assign(ops.convert_to_numpy(v) + rng.normal(0, 0.2, v.shape).astype("float32"))


def batch(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 1000, (3, 8)).astype("int32")
    mask = np.ones((3, 8), "int32")
    mask[2, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


@pytest.fixture
def trained():
    """A tiny-bert encoder with two perturbed adapters (one Houlsby), a fusion and a head."""
    encoder = load_encoder(TINY_BERT)
    builders.build_adapter_model(encoder, "a", num_labels=2)
    builders.build_adapter_model(encoder, "b", num_labels=2, adapter_config=dict(reduction_factor=4, ln_after=True))
    model = builders.build_fusion_model(encoder, ["a", "b"], num_labels=3)
    perturb(encoder.adapter_weights("a"), 1)
    perturb(encoder.adapter_weights("b"), 2)
    perturb(encoder.fusion_weights(["a", "b"]), 3)
    perturb(model.head.weights, 4)
    return encoder, model


def test_native_round_trip_into_another_model(trained, tmp_path):
    encoder, model = trained
    saving.save_adapter(encoder, "a", tmp_path / "a")
    saving.save_adapter(encoder, "b", tmp_path / "b")
    saving.save_fusion(encoder, ["a", "b"], tmp_path / "fusion")
    saving.save_head(model.head, tmp_path / "head", encoder)
    assert sorted(os.listdir(tmp_path / "a")) == [MANIFEST, "module.json", "weights.safetensors"]
    size = sum(os.path.getsize(tmp_path / "a" / f) for f in os.listdir(tmp_path / "a"))
    assert size < 20_000  # small: the adapter only, not the encoder

    other = load_encoder(TINY_BERT)
    assert saving.load_adapter(other, tmp_path / "a") == "a"
    saving.load_adapter(other, tmp_path / "b")
    assert saving.load_fusion(other, tmp_path / "fusion") == AdapterSetup.fuse(["a", "b"])
    head = saving.load_head(tmp_path / "head", other)
    rebuilt = builders.build_fusion_model(other, ["a", "b"], head=head)
    x = batch()
    assert max_abs(rebuilt(x), model(x)) == 0.0
    assert other.adapter_configs["b"] == encoder.adapter_configs["b"]
    assert other.fusion_specs["a,b"]["config"] == encoder.fusion_specs["a,b"]["config"]


@pytest.mark.parametrize("builder", ["head_only", "full", "st_a", "fusion", "mt_a", "multiple_choice"])
def test_keras_round_trip_identical_outputs(builder, trained, tmp_path):
    encoder, fusion = trained
    x = batch()
    if builder == "head_only":
        model = builders.build_head_only_model(encoder, num_labels=2)
    elif builder == "full":
        model = builders.build_full_finetune_model(encoder, num_labels=2)
    elif builder == "st_a":
        model = builders.build_adapter_model(encoder, "b", num_labels=2)
    elif builder == "fusion":
        model = fusion
    elif builder == "mt_a":
        model = builders.build_multitask_model(encoder, {"a": 2, "b": 3})
        x = dict(x, task_id=np.ones(3, "int32"))
    else:
        model = builders.build_adapter_model(encoder, "a", head=MultipleChoiceHead(2))
        x = {k: np.stack([v, v[::-1]], axis=1) for k, v in x.items()}
    perturb(model.head_layers()[0].weights, 9)
    model.compile(optimizer="adam", **heads.compile_arguments(model.head_layers()[0]))
    expected = ops.convert_to_numpy(model(x))
    trainable = sorted(v.path for v in model.trainable_weights)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert max_abs(loaded(x), expected) == 0.0
    assert loaded.compiled and loaded.optimizer is not None  # comes back compiled: evaluate works at once
    y = np.zeros(len(x["input_ids"]), "int32")
    assert loaded.evaluate(x, y, verbose=0, return_dict=True)["loss"] == pytest.approx(
        model.evaluate(x, y, verbose=0, return_dict=True)["loss"], rel=1e-5)
    assert len(loaded.trainable_weights) == len(trainable)
    assert sum(int(np.prod(v.shape)) for v in loaded.trainable_weights) == sum(
        int(np.prod(v.shape)) for v in model.trainable_weights)


def test_saving_is_atomic(trained, tmp_path, monkeypatch):
    encoder, model = trained
    saving.save_adapter(encoder, "a", tmp_path / "a")
    before = (tmp_path / "a" / "weights.safetensors").read_bytes()
    import safetensors.numpy

    def fail(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(safetensors.numpy, "save_file", fail)
    with pytest.raises(OSError, match="no space"):
        saving.save_adapter(encoder, "b", tmp_path / "a")
    with pytest.raises(OSError, match="no space"):
        saving.save_head(model.head, tmp_path / "head", encoder)
    assert sorted(os.listdir(tmp_path)) == ["a"]
    assert (tmp_path / "a" / "weights.safetensors").read_bytes() == before
    assert json.load(open(tmp_path / "a" / "module.json"))["name"] == "a"


def test_wrong_kind_encoder_and_shape(trained, tmp_path):
    encoder, model = trained
    saving.save_adapter(encoder, "a", tmp_path / "a")
    saving.save_fusion(encoder, ["a", "b"], tmp_path / "fusion")

    with pytest.raises(CheckpointError) as e:
        saving.load_fusion(load_encoder(TINY_BERT), tmp_path / "a")
    assert "module.json" in str(e.value) and "holds a adapter; expected a fusion" in str(e.value)

    roberta = load_encoder(os.path.join(BACKBONES, "tiny-roberta"))
    with pytest.raises(CheckpointError) as e:
        saving.load_adapter(roberta, tmp_path / "a")
    assert "different encoder" in str(e.value) and "model_type: expected 'roberta', found 'bert'" in str(e.value)

    retrained = load_encoder(TINY_BERT)
    retrained.embeddings.norm.gamma.assign(ops.convert_to_numpy(retrained.embeddings.norm.gamma) + 0.01)
    with pytest.raises(CheckpointError, match="weights_digest"):
        saving.load_adapter(retrained, tmp_path / "a")

    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "a", broken)
    tensors = load_file(str(broken / "weights.safetensors"))
    tensors["1.output.up.kernel"] = np.zeros((4, 7), "float32")
    save_file(tensors, str(broken / "weights.safetensors"))
    fresh = load_encoder(TINY_BERT)
    with pytest.raises(CheckpointError) as e:
        saving.load_adapter(fresh, broken)
    assert "weights.safetensors" in str(e.value) and "[4, 7]" in str(e.value) and "[4, 64]" in str(e.value)
    assert not fresh.adapter_configs and not fresh.adapter_weights("a")

    with pytest.raises(CheckpointError, match="lacks"):
        saving.load_fusion(fresh, tmp_path / "fusion")
    with pytest.raises(CheckpointError, match="no such directory"):
        saving.load_adapter(fresh, tmp_path / "missing")


# --------------------------------------------------------- nothing is lost
def test_a_save_never_replaces_files_it_did_not_write(trained, tmp_path, monkeypatch):
    encoder, model = trained
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("mine")
    monkeypatch.chdir(project)
    for save in (lambda d: saving.save_adapter(encoder, "a", d), lambda d: saving.save_head(model.head, d, encoder),
                 lambda d: adapterhub.save_adapter(encoder, "a", d), lambda d: adapterhub.save_fusion(encoder, ["a", "b"], d)):
        for target in (".", "", str(project)):
            with pytest.raises(SaveError):
                save(target)
    assert sorted(os.listdir(project)) == ["train.py"]
    saving.save_adapter(encoder, "a", project / "adapter")
    with pytest.raises(SaveError, match="holds a saved 'adapter'"):
        saving.save_head(model.head, project / "adapter", encoder)
    with pytest.raises(SaveError, match="holds a saved 'adapter'"):
        adapterhub.save_adapter(encoder, "a", project / "adapter")


def _run(*args):
    import subprocess
    import sys

    env = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "tensorflow"), TF_CPP_MIN_LOG_LEVEL="3")
    script = os.path.join(os.path.dirname(__file__), "scripts", "crash_model_save.py")
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.backend_independent
@pytest.mark.parametrize("when", ["mid-write", "before-replace"])
def test_kill_during_keras_save_keeps_the_earlier_file(trained, tmp_path, when):
    encoder, model = trained
    path = tmp_path / "model.keras"
    model.save(str(path))
    before = path.read_bytes()
    done = _run("keras", str(path), when)
    assert done.returncode == -9, done.stderr[-1500:]
    assert path.read_bytes() == before
    x = batch()
    assert max_abs(keras.saving.load_model(str(path))(x), model(x)) == 0.0
    model.save(str(path))  # the next save replaces the stale partial file
    assert sorted(os.listdir(tmp_path)) == ["model.keras"]


@pytest.mark.backend_independent
def test_kill_during_adapter_save_loads_one_of_the_two_saves(trained, tmp_path):
    encoder, _ = trained
    target = tmp_path / "a"
    saving.save_adapter(encoder, "a", target)
    done = _run("adapter", str(target), "swap:move-in")  # killed with the earlier save moved aside
    assert done.returncode == -9, done.stderr[-1500:]
    assert not target.exists()
    fresh = load_encoder(TINY_BERT)
    saving.load_adapter(fresh, target)  # finds the complete new save
    assert any(max_abs(a, b) > 0 for a, b in zip(fresh.adapter_weights("a"), encoder.adapter_weights("a")))
    saving.save_adapter(encoder, "a", target)
    assert sorted(os.listdir(tmp_path)) == ["a"]


# ------------------------------------------------------------------ heads
def test_head_configs_are_symmetric_and_refuse_what_they_cannot_use():
    mc = MultipleChoiceHead(3, use_bias=False, label_names=["x", "y", "z"])
    again = MultipleChoiceHead.from_config(mc.get_config())
    assert again.use_bias is False and again.label_names == ["x", "y", "z"] and again.num_choices == 3
    tag = TokenClassificationHead(4, use_bias=False)
    assert TokenClassificationHead.from_config(tag.get_config()).use_bias is False
    with pytest.raises(ValueError, match="TokenClassificationHead.use_pooler"):
        TokenClassificationHead(4, use_pooler=True)
    with pytest.raises(ValueError, match="MultipleChoiceHead.num_labels"):
        MultipleChoiceHead(3, num_labels=2)
    with pytest.raises(ValueError, match="label_names"):
        ClassificationHead(2, label_names=["only one"])
    with pytest.raises(ValueError, match="dropout"):
        ClassificationHead(2, dropout="abc")


def _head_dir(tmp_path, **config_changes):
    src = os.path.join(FUSION_CASE, "head")
    dst = tmp_path / "head"
    shutil.copytree(src, dst)
    meta = json.load(open(dst / "head_config.json"))
    meta["config"].update(config_changes)
    json.dump(meta, open(dst / "head_config.json", "w"))
    return dst


def test_adapterhub_multilabel_head_round_trip(tmp_path):
    encoder = load_encoder(TINY_BERT)
    head, name, label2id = adapterhub.load_head(_head_dir(tmp_path, head_type="multilabel_classification"), encoder)
    assert head.problem_type == "multi_label" and head.head_type == "multilabel_classification"
    assert heads.compile_arguments(head)["loss"].__class__.__name__ == "BinaryCrossentropy"
    adapterhub.save_head(head, name, tmp_path / "out", encoder, label2id=label2id)
    saved = json.load(open(tmp_path / "out" / "head_config.json"))
    assert saved["config"]["head_type"] == "multilabel_classification"
    again, _, _ = adapterhub.load_head(tmp_path / "out", encoder)
    assert again.problem_type == "multi_label"


@pytest.mark.parametrize("changes, message", [
    (dict(label2id={"a": 0, "b": 1}), "field 'label2id'"),
    (dict(label2id={"a": 0, "b": 1, "c": 5}), "mapped to the ids 0..2"),
    (dict(num_labels="3"), "field 'num_labels' is '3'"),
    (dict(layers=0), "field 'layers' is 0"),
    (dict(head_type="tagging"), "field 'head_type' is 'tagging'"),
    (dict(dropout_prob="abc"), "field 'dropout_prob' is 'abc'"),
    (dict(bias="yes"), "field 'bias' is 'yes'"),
])
def test_adapterhub_head_config_errors_name_file_and_field(tmp_path, changes, message):
    with pytest.raises(CheckpointError, match=message) as e:
        adapterhub.load_head(_head_dir(tmp_path, **changes), load_encoder(TINY_BERT))
    assert "head_config.json" in str(e.value)
