"""Native save/load of adapters, fusions and heads; whole models through .keras; errors."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
from keras import ops
from safetensors.numpy import load_file, save_file

from conftest import BACKBONES, TINY_BERT, max_abs
from keras_adapterfusion import (
    CheckpointError,
    MultipleChoiceHead,
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
    assert sorted(os.listdir(tmp_path / "a")) == ["module.json", "weights.safetensors"]
    size = sum(os.path.getsize(tmp_path / "a" / f) for f in os.listdir(tmp_path / "a"))
    assert size < 20_000  # small: the adapter only, not the encoder

    other = load_encoder(TINY_BERT)
    assert saving.load_adapter(other, tmp_path / "a") == "a"
    saving.load_adapter(other, tmp_path / "b")
    assert saving.load_fusion(other, tmp_path / "fusion") == ["a", "b"]
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
