"""Hugging Face checkpoints: parity with transformers' outputs, file formats, errors."""

import json
import os
import shutil

import numpy as np
import pytest
from keras import ops
from safetensors.numpy import load_file, save_file

from conftest import BACKBONES, TINY_BERT, max_abs, model_inputs
from keras_adapterfusion import CheckpointError, load_encoder, load_tokenizer
from keras_adapterfusion.backbones.huggingface import DEFAULT_ENCODER, resolve_checkpoint, weight_table
from keras_adapterfusion.layers.activations import get_activation

PARITY = 1e-4
SENTENCES = [
    "The movie was a delight from start to finish.",
    "A man is playing a guitar on the street.",
    "Stocks fell sharply after the central bank raised interest rates again.",
    "Is the sky blue?",
]


def check_parity(encoder, ref):
    out = encoder(model_inputs(ref), output_hidden_states=True)
    errors = {
        "last_hidden_state": max_abs(out["last_hidden_state"], ref["last_hidden_state"]),
        "hidden_states": max_abs(out["hidden_states"], ref["hidden_states"]),
        "pooler_output": max_abs(out["pooler_output"], ref["pooler_output"]),
    }
    assert ops.convert_to_numpy(out["hidden_states"]).shape == ref["hidden_states"].shape
    for key, err in errors.items():
        assert err < PARITY, (key, err)
    return errors


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-roberta", "tiny-xlm-roberta"])
def test_tiny_checkpoint_parity(name):
    directory = os.path.join(BACKBONES, name)
    encoder = load_encoder(directory)
    assert encoder.model_type == json.load(open(os.path.join(directory, "config.json")))["model_type"]
    errors = check_parity(encoder, np.load(os.path.join(directory, "reference.npz")))
    print(name, errors)


def test_roberta_positions_skip_padding():
    encoder = load_encoder(os.path.join(BACKBONES, "tiny-roberta"))
    ids = np.array([[5, 6, 7, 1, 1]])
    pos = ops.convert_to_numpy(encoder.embeddings.position_ids(ids))
    np.testing.assert_array_equal(pos, [[2, 3, 4, 1, 1]])


def test_minilm_parity_and_tokenizer(minilm_path):
    ref = np.load(os.path.join(BACKBONES, "minilm_reference.npz"))
    tokenizer = load_tokenizer(minilm_path)
    tokens = tokenizer(SENTENCES, padding=True, return_tensors="np")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(tokens[key], ref[key])
    encoder = load_encoder(minilm_path)
    assert (encoder.num_layers, encoder.hidden_size, encoder.num_heads) == (6, 384, 12)
    errors = check_parity(encoder, ref)
    print("minilm", errors)


def test_default_encoder_name_resolves_to_packaged_minilm(minilm_path, tmp_path):
    assert resolve_checkpoint(DEFAULT_ENCODER, cache_dir=str(tmp_path)) == minilm_path


def test_exact_gelu():
    x = np.array([-2.0, -0.5, 0.3, 1.7], "float32")
    from math import erf, sqrt

    exact = [v * 0.5 * (1 + erf(v / sqrt(2))) for v in x]
    assert max_abs(get_activation("gelu")(x), exact) < 1e-6
    assert max_abs(get_activation("gelu_new")(x), exact) > 1e-5


def _copy_config(src, dst):
    os.makedirs(dst, exist_ok=True)
    shutil.copy(os.path.join(src, "config.json"), dst)


def _reference_out(directory=TINY_BERT):
    ref = np.load(os.path.join(TINY_BERT, "reference.npz"))
    return ref, ops.convert_to_numpy(load_encoder(directory)(model_inputs(ref))["last_hidden_state"])


def test_sharded_safetensors(tmp_path):
    tensors = load_file(os.path.join(TINY_BERT, "model.safetensors"))
    keys = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    _copy_config(TINY_BERT, tmp_path)
    weight_map = {}
    for shard, names in shards.items():
        save_file({k: tensors[k] for k in names}, os.path.join(tmp_path, shard))
        weight_map.update({k: shard for k in names})
    with open(os.path.join(tmp_path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    ref, expected = _reference_out()
    out = load_encoder(str(tmp_path))(model_inputs(ref))["last_hidden_state"]
    assert max_abs(out, ref["last_hidden_state"]) < PARITY
    assert max_abs(out, expected) == 0.0


def test_prefixed_keys_and_task_heads_are_handled(tmp_path):
    tensors = load_file(os.path.join(TINY_BERT, "model.safetensors"))
    renamed = {"bert." + k: v for k, v in tensors.items()}
    renamed["cls.predictions.bias"] = np.zeros(1000, "float32")
    renamed["bert.embeddings.position_ids"] = np.arange(130)[None]
    _copy_config(TINY_BERT, tmp_path)
    save_file(renamed, os.path.join(tmp_path, "model.safetensors"))
    ref, expected = _reference_out()
    out = load_encoder(str(tmp_path))(model_inputs(ref))["last_hidden_state"]
    assert max_abs(out, expected) == 0.0


def test_hub_id_from_local_cache(tmp_path):
    snapshot = tmp_path / "models--someone--tiny-bert" / "snapshots" / "abc123"
    shutil.copytree(TINY_BERT, snapshot)
    (tmp_path / "models--someone--tiny-bert" / "refs").mkdir()
    (tmp_path / "models--someone--tiny-bert" / "refs" / "main").write_text("abc123")
    ref, expected = _reference_out()
    encoder = load_encoder("someone/tiny-bert", cache_dir=str(tmp_path))
    assert max_abs(encoder(model_inputs(ref))["last_hidden_state"], expected) == 0.0
    with pytest.raises(CheckpointError, match="not a hub id in the local Hugging Face cache"):
        load_encoder("someone/not-cached", cache_dir=str(tmp_path))


def test_pickle_needs_opt_in(tmp_path):
    _copy_config(TINY_BERT, tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(CheckpointError) as e:
        load_encoder(str(tmp_path))
    assert "pytorch_model.bin" in str(e.value) and "allow_pickle=True" in str(e.value)
    try:
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(CheckpointError, match="needs PyTorch"):
            load_encoder(str(tmp_path), allow_pickle=True)
    else:
        with pytest.raises(CheckpointError, match="cannot be read as a PyTorch state dict"):
            load_encoder(str(tmp_path), allow_pickle=True)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d, t: os.remove(os.path.join(d, "config.json")), "config.json: missing"),
        (lambda d, t: _edit_config(d, model_type="gpt2"), "model_type 'gpt2' is not supported"),
        (lambda d, t: _edit_config(d, hidden_size=32), "has shape"),
        (lambda d, t: _drop_tensor(d, t, "encoder.layer.1.output.dense.bias"), "missing 1 tensor"),
        (lambda d, t: _add_tensor(d, t, "encoder.layer.0.extra.weight"), "unknown key"),
        (lambda d, t: open(os.path.join(d, "model.safetensors"), "wb").write(b"\x00" * 20),
         "cannot be read as safetensors"),
        (lambda d, t: os.remove(os.path.join(d, "model.safetensors")), "no weights found"),
        (lambda d, t: _edit_config(d, position_embedding_type="relative_key"), "position_embedding_type"),
    ],
)
def test_checkpoint_errors_name_file_and_problem(tmp_path, mutate, message):
    directory = str(tmp_path / "ckpt")
    shutil.copytree(TINY_BERT, directory)
    mutate(directory, load_file(os.path.join(TINY_BERT, "model.safetensors")))
    with pytest.raises(CheckpointError) as e:
        load_encoder(directory)
    assert message in str(e.value)
    assert directory in str(e.value)


def _edit_config(directory, **changes):
    path = os.path.join(directory, "config.json")
    config = json.load(open(path))
    config.update(changes)
    json.dump(config, open(path, "w"))


def _drop_tensor(directory, tensors, key):
    tensors = dict(tensors)
    del tensors[key]
    save_file(tensors, os.path.join(directory, "model.safetensors"))


def _add_tensor(directory, tensors, key):
    tensors = dict(tensors)
    tensors[key] = np.zeros((2, 2), "float32")
    save_file(tensors, os.path.join(directory, "model.safetensors"))


def test_missing_directory():
    with pytest.raises(CheckpointError, match="no such directory"):
        load_encoder("./does/not/exist")


def test_weight_table_covers_every_variable():
    encoder = load_encoder(TINY_BERT)
    table_ids = {id(v) for _, v, _ in weight_table(encoder)}
    assert table_ids == {id(v) for v in encoder.weights}
