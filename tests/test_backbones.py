"""Hugging Face checkpoints: parity with transformers' outputs, file formats, errors."""

import json
import os
import shutil

import numpy as np
import pytest
from keras import ops
from safetensors.numpy import load_file, save_file

from conftest import BACKBONES, FLOAT64_EXACT, FLOAT64_SKIP, TINY_BERT, base_shape, max_abs, model_inputs
from parity import assert_parity, bounds_for
from torch_files import write_torch_zip
from keras_adapterfusion import CheckpointError, TransformerEncoder, load_encoder, load_tokenizer
from keras_adapterfusion.backbones.huggingface import DEFAULT_ENCODER, resolve_checkpoint, weight_rows
from keras_adapterfusion.layers.activations import get_activation

# Bounds are derived from the precision (tests/parity.py): float32 against transformers' float32
# reference.npz, float64 against its float64 reference_float64.npz (tests/fixtures/make_backbone_float64.py).
SENTENCES = [
    "The movie was a delight from start to finish.",
    "A man is playing a guitar on the street.",
    "Stocks fell sharply after the central bank raised interest rates again.",
    "Is the sky blue?",
]


# One tiny checkpoint per supported model type (tests/fixtures/README.md says which script wrote each).
TINY_CHECKPOINTS = ["tiny-bert", "tiny-roberta", "tiny-xlm-roberta", "tiny-distilbert", "tiny-electra",
                    "tiny-albert", "tiny-deberta-v2"]


def check_parity(case, encoder, ref, dtype="float32"):
    """Outputs of `encoder` against transformers' `ref`, within the precision-derived bounds."""
    out = encoder(model_inputs(ref), output_hidden_states=True)
    errors = {
        "last_hidden_state": max_abs(out["last_hidden_state"], ref["hidden_states"][-1]),
        "hidden_states": max_abs(out["hidden_states"], ref["hidden_states"]),
    }
    reference = {"last_hidden_state": ref["hidden_states"][-1], "hidden_states": ref["hidden_states"]}
    assert ("pooler_output" in ref) == encoder.use_pooler == ("pooler_output" in out)  # DistilBERT, ELECTRA: none
    if encoder.use_pooler:
        errors["pooler_output"] = max_abs(out["pooler_output"], ref["pooler_output"])
        reference["pooler_output"] = ref["pooler_output"]
    if "last_hidden_state" in ref:
        assert max_abs(ref["last_hidden_state"], ref["hidden_states"][-1]) == 0.0
    assert ops.convert_to_numpy(out["hidden_states"]).shape == ref["hidden_states"].shape
    bounds = bounds_for(reference, list(errors), dtype, encoder.depth, encoder.hidden_size)
    assert_parity(f"{case} ({dtype})", errors, bounds)
    return errors


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", TINY_CHECKPOINTS)
def test_tiny_checkpoint_parity(name, dtype, request):
    if dtype == "float64":
        if not FLOAT64_EXACT:
            pytest.skip(FLOAT64_SKIP)
        request.getfixturevalue("float64")
    directory = os.path.join(BACKBONES, name)
    encoder = load_encoder(directory, dtype=dtype)
    assert encoder.model_type == json.load(open(os.path.join(directory, "config.json")))["model_type"]
    assert base_shape(directory) == (encoder.depth, encoder.hidden_size)
    reference = "reference.npz" if dtype == "float32" else "reference_float64.npz"
    errors = check_parity(name, encoder, np.load(os.path.join(directory, reference)), dtype)
    print(name, dtype, errors)


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
    errors = check_parity("minilm", encoder, ref)
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
    assert max_abs(out, ref["last_hidden_state"]) <= bounds_for(ref, ["last_hidden_state"], "float32", 2, 64)[
        "last_hidden_state"]
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


def test_pytorch_bin_checkpoint_loads_without_pytorch(tmp_path):
    """A pytorch_model.bin is read by the restricted reader: no PyTorch, no pickle code run."""
    _copy_config(TINY_BERT, tmp_path)
    write_torch_zip(load_file(os.path.join(TINY_BERT, "model.safetensors")), tmp_path / "pytorch_model.bin")
    ref = np.load(os.path.join(BACKBONES, "tiny-bert", "reference.npz"))
    check_parity("tiny-bert", load_encoder(str(tmp_path)), ref)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(CheckpointError) as e:
        load_encoder(str(tmp_path))
    assert "pytorch_model.bin" in str(e.value)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d, t: os.remove(os.path.join(d, "config.json")), "config.json: missing"),
        (lambda d, t: _edit_config(d, model_type="gpt2"), "model_type 'gpt2' is not supported"),
        (lambda d, t: _edit_config(d, hidden_size=32), "has shape"),
        (lambda d, t: _drop_tensor(d, t, "encoder.layer.1.output.dense.bias"), "missing 1 tensor"),
        (lambda d, t: _add_tensor(d, t, "encoder.layer.0.extra.weight"), "unexpected tensor"),
        (lambda d, t: _edit_config(d, vocab_size=None), "field 'vocab_size' is None"),
        (lambda d, t: _drop_config(d, "vocab_size"), "field 'vocab_size' is missing"),
        (lambda d, t: _edit_config(d, hidden_act="mish"), "field 'hidden_act' is 'mish'"),
        (lambda d, t: _edit_config(d, hidden_dropout_prob="abc"), "field 'hidden_dropout_prob' is 'abc'"),
        (lambda d, t: _edit_config(d, num_attention_heads=5), "divisor of hidden_size"),
        (lambda d, t: _edit_config(d, layer_norm_eps=0), "field 'layer_norm_eps' is 0"),
        (lambda d, t: open(os.path.join(d, "config.json"), "wb").write(b"\xff{}"), "is not UTF-8"),
        (lambda d, t: open(os.path.join(d, "config.json"), "w").write("[1, 2]"), "holds a JSON list"),
        (lambda d, t: _set_tensor(d, t, "encoder.layer.0.output.dense.bias", np.nan), "NaN or infinite"),
        (lambda d, t: _set_tensor(d, t, "pooler.dense.bias", np.inf), "NaN or infinite"),
        (lambda d, t: _retype_tensor(d, t, "encoder.layer.0.output.dense.bias"), "expected floating-point"),
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


def _drop_config(directory, key):
    path = os.path.join(directory, "config.json")
    config = json.load(open(path))
    del config[key]
    json.dump(config, open(path, "w"))


def _set_tensor(directory, tensors, key, value):
    tensors = dict(tensors)
    tensors[key] = tensors[key].copy()
    tensors[key].flat[0] = value
    save_file(tensors, os.path.join(directory, "model.safetensors"))


def _retype_tensor(directory, tensors, key):
    tensors = dict(tensors)
    tensors[key] = tensors[key].astype("int64")
    save_file(tensors, os.path.join(directory, "model.safetensors"))


def test_nonfinite_weights_load_on_request(tmp_path):
    directory = str(tmp_path / "ckpt")
    shutil.copytree(TINY_BERT, directory)
    _set_tensor(directory, load_file(os.path.join(TINY_BERT, "model.safetensors")), "pooler.dense.bias", np.nan)
    encoder = load_encoder(directory, allow_nonfinite=True)
    assert np.isnan(ops.convert_to_numpy(encoder.pooler.bias)[0])


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


@pytest.mark.parametrize("name", TINY_CHECKPOINTS)
def test_weight_table_covers_every_variable(name):
    """Every variable of the encoder is in its model type's key table, and every encoder tensor of the
    checkpoint (a task model's: DistilBERT's MLM, ELECTRA's discriminator) is in the table."""
    from keras_adapterfusion.backbones.huggingface import strip_encoder_prefix

    directory = os.path.join(BACKBONES, name)
    encoder = load_encoder(directory)
    rows = weight_rows(encoder)
    assert {id(row.target) for row in rows} == {id(v) for v in encoder.weights}
    stored = strip_encoder_prefix(load_file(os.path.join(directory, "model.safetensors")), encoder.model_type, name)
    assert {row.key for row in rows} == set(stored)


def test_supported_model_types_each_have_a_tiny_checkpoint():
    from keras_adapterfusion.backbones.checkpoint import SUPPORTED_MODEL_TYPES
    from keras_adapterfusion.backbones.converters import CONVERTERS

    types = {json.load(open(os.path.join(BACKBONES, n, "config.json")))["model_type"] for n in TINY_CHECKPOINTS}
    assert types == set(SUPPORTED_MODEL_TYPES) == set(CONVERTERS)


def test_unsupported_model_type_names_the_supported_ones(tmp_path):
    from keras_adapterfusion.backbones.checkpoint import SUPPORTED_MODEL_TYPES

    _copy_config(TINY_BERT, tmp_path)
    _edit_config(tmp_path, model_type="gpt2")
    with pytest.raises(CheckpointError) as info:
        load_encoder(str(tmp_path))
    message = str(info.value)
    assert "model_type 'gpt2' is not supported" in message
    assert all(repr(t) in message for t in SUPPORTED_MODEL_TYPES), message


def test_distilbert_config_fields_are_named_as_the_file_names_them(tmp_path):
    shutil.copytree(os.path.join(BACKBONES, "tiny-distilbert"), tmp_path / "d")
    _edit_config(tmp_path / "d", n_heads=5)
    with pytest.raises(CheckpointError, match=r"field 'n_heads' is 5; expected a divisor of dim 64"):
        load_encoder(str(tmp_path / "d"))
    _edit_config(tmp_path / "d", n_heads=4, activation="swiglu")
    with pytest.raises(CheckpointError, match=r"field 'activation' is 'swiglu'"):
        load_encoder(str(tmp_path / "d"))


def test_albert_shares_its_block_and_checks_its_groups(tmp_path):
    """ALBERT: one block (layer group) run num_hidden_layers times; groups that do not divide the layers,
    and more than one layer per group, are refused with the field named."""
    encoder = load_encoder(os.path.join(BACKBONES, "tiny-albert"))
    assert (encoder.num_layers, encoder.depth, encoder.block_order()) == (1, 2, [0, 0])
    assert not encoder.blocks[0].feed_forward_dropout and encoder.blocks[0].attention_output_dropout
    shutil.copytree(os.path.join(BACKBONES, "tiny-albert"), tmp_path / "a")
    _edit_config(tmp_path / "a", num_hidden_groups=3)
    with pytest.raises(CheckpointError, match=r"field 'num_hidden_groups' is 3; expected a divisor of "
                                              r"num_hidden_layers 2"):
        load_encoder(str(tmp_path / "a"))
    _edit_config(tmp_path / "a", num_hidden_groups=1, inner_group_num=2)
    with pytest.raises(CheckpointError, match=r"field 'inner_group_num' .*2.*expected 1"):
        load_encoder(str(tmp_path / "a"))
    # Two groups of one layer each, every layer its own: the blocks run in order, once each.
    two = TransformerEncoder(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                             depth=4)
    assert two.block_order() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match=r"TransformerEncoder.depth: got 3; expected a multiple of num_layers 2"):
        TransformerEncoder(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, depth=3)


def test_deberta_log_buckets_equal_transformers_formula():
    """`log_bucket_positions` against `transformers`' `make_log_bucket_position` transcribed in numpy float32,
    for every distance up to 600 and the bucket settings of the tiny checkpoint and of DeBERTa-v3 (256, 512)."""
    from keras_adapterfusion.layers.disentangled_block import log_bucket_positions

    relative = np.arange(-600, 601, dtype="int32")
    for buckets, max_position in ((8, 130), (256, 512), (16, 64)):
        mid = buckets // 2
        sign = np.sign(relative)
        distance = np.where((relative < mid) & (relative > -mid), mid - 1, np.abs(relative)).astype("float32")
        scale = np.log(np.float32((max_position - 1) / mid))
        log_position = np.ceil(np.log(distance / np.float32(mid)) / scale * np.float32(mid - 1)) + mid
        expected = np.where(distance <= mid, relative, (log_position * sign).astype("int32"))
        got = ops.convert_to_numpy(log_bucket_positions(ops.convert_to_tensor(relative), buckets, max_position))
        np.testing.assert_array_equal(got, expected, err_msg=str((buckets, max_position)))


@pytest.mark.parametrize("field, value, message", [
    ("conv_kernel_size", 3, r"field 'conv_kernel_size' is 3; expected 0"),
    ("share_att_key", False, r"field 'share_att_key' is False; expected true"),
    ("pos_att_type", ["p2p"], r"field 'pos_att_type' is \['p2p'\]; expected a list of 'c2p' and 'p2c'"),
    ("relative_attention", False, r"field 'relative_attention' is False"),
    ("embedding_size", 32, r"field 'embedding_size' is 32; expected hidden_size 64"),
])
def test_deberta_settings_it_does_not_compute_are_refused(tmp_path, field, value, message):
    shutil.copytree(os.path.join(BACKBONES, "tiny-deberta-v2"), tmp_path / "d")
    _edit_config(tmp_path / "d", **{field: value})
    with pytest.raises(CheckpointError, match=message):
        load_encoder(str(tmp_path / "d"))


def test_tanh_gelu_is_float64_accurate(request):
    """The tanh GELUs in float64 follow Hugging Face's formulas with float64 constants."""
    if not FLOAT64_EXACT:
        pytest.skip(FLOAT64_SKIP)
    request.getfixturevalue("float64")
    from math import pi, sqrt, tanh

    x = np.array([-2.0, -0.5, 0.3, 1.7], "float64")
    for name, c in (("gelu_new", sqrt(2 / pi)), ("gelu_pytorch_tanh", sqrt(2 / pi)), ("gelu_fast", 0.7978845608)):
        expected = [0.5 * v * (1 + tanh(c * (v + 0.044715 * v ** 3))) for v in x]
        got = ops.convert_to_numpy(get_activation(name)(ops.convert_to_tensor(x, "float64")))
        assert max_abs(got, expected) < 8 * np.finfo("float64").eps, name


def test_copy_encoder_copies_values_into_new_buffers():
    """`backbones.copying.copy_encoder`, the one encoder copy (pruning and tuning call it)."""
    from keras_adapterfusion.backbones.copying import copy_encoder
    from keras_adapterfusion.names import path_part

    encoder = load_encoder(TINY_BERT)
    for name in ("a", "b", "c"):
        encoder.add_adapter(name, "seq_bn")
    key = encoder.add_fusion(["a", "b", "c"], "dynamic")
    rng = np.random.default_rng(0)
    for v in encoder.weights:
        v.assign(rng.normal(0, 0.1, tuple(v.shape)).astype("float32"))
    copy = copy_encoder(encoder, ["a", "c"], fusions={key: (["a", "c"], None)}, leave_out=[0])
    assert list(copy.adapter_configs) == ["a", "c"] and list(copy.fusion_specs) == ["a,c"]
    assert copy.adapter_configs["a"].leave_out == [0] and not copy.blocks[0].adapter_layers("a")
    source = {v.path.split("/", 1)[1]: v for v in encoder.weights}
    for v in copy.weights:
        part = v.path.split("/", 1)[1].replace(path_part("a,c"), path_part("a,b,c"))
        np.testing.assert_array_equal(ops.convert_to_numpy(v), ops.convert_to_numpy(source[part]), err_msg=v.path)
    first = copy.weights[0]
    first.assign(ops.zeros(tuple(first.shape)))
    assert float(np.abs(ops.convert_to_numpy(encoder.weights[0])).max()) > 0  # the source is untouched
    with pytest.raises(ValueError, match=r"copy_encoder: adapters \['x'\] are not in the encoder"):
        copy_encoder(encoder, ["x"])
    with pytest.raises(ValueError, match="copy_encoder: fusion 'a,b' is not in the encoder"):
        copy_encoder(encoder, ["a", "b"], fusions={"a,b": (["a", "b"], None)})
