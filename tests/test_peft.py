"""PEFT LoRAs (`formats.peft.load_peft_lora`): parity with PEFT's own outputs, and what is refused.

The cases were written by PEFT 0.17.1 itself (tests/fixtures/make_peft_reference.py): LoRAs of BERT
(query, value and both output projections, so the attention's too), RoBERTa (rsLoRA, one layer only) and
DistilBERT (every linear layer of the blocks), every LoRA weight moved away from its start.
"""

import json
import os
import shutil

import numpy as np
import pytest

from conftest import BACKBONES, FIXTURES, FLOAT64_EXACT, FLOAT64_SKIP, base_shape, max_abs, model_inputs
from parity import assert_parity, bounds_for
from keras_adapterfusion import CheckpointError, load_encoder
from keras_adapterfusion.formats.peft import load_peft_lora

PEFT = os.path.join(FIXTURES, "peft")
CASES = sorted(c for c in os.listdir(PEFT) if os.path.isfile(os.path.join(PEFT, c, "adapter_config.json"))) \
    if os.path.isdir(PEFT) else []


def case_of(case):
    directory = os.path.join(PEFT, case)
    return directory, json.load(open(os.path.join(directory, "case.json")))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_peft_lora_parity(case, dtype, request):
    if dtype == "float64":
        if not FLOAT64_EXACT:
            pytest.skip(FLOAT64_SKIP)
        request.getfixturevalue("float64")
    directory, spec = case_of(case)
    base = os.path.join(BACKBONES, spec["base"])
    ref = np.load(os.path.join(directory, "reference.npz" if dtype == "float32" else "reference_float64.npz"))
    encoder = load_encoder(base, dtype=dtype)
    name = load_peft_lora(encoder, directory)
    assert name == case
    config = encoder.adapter_configs[name]
    lora = spec["lora"]
    assert config.r == lora["r"]
    scale = lora["lora_alpha"] / (np.sqrt(lora["r"]) if lora.get("use_rslora") else lora["r"])
    assert abs(config.scaling - scale) <= 1e-12 * scale
    if "layers_to_transform" in lora:
        assert config.leave_out == [i for i in range(encoder.num_layers) if i not in lora["layers_to_transform"]]
    out = encoder(model_inputs(ref), adapter_setup=name)["last_hidden_state"]
    errors = {"last_hidden_state": max_abs(out, ref["last_hidden_state"])}
    layers, hidden = base_shape(base)
    print(case, dtype, errors)
    assert_parity(f"PEFT {case} ({dtype})", errors, bounds_for(ref, list(errors), dtype, layers, hidden))
    # The LoRA changes the output (not a no-op), and merged it gives the same numbers.
    plain = encoder(model_inputs(ref))["last_hidden_state"]
    assert max_abs(plain, ref["last_hidden_state"]) > 100 * errors["last_hidden_state"]
    encoder.merge_lora(name)
    merged = encoder(model_inputs(ref))["last_hidden_state"]
    assert_parity(f"PEFT {case} merged ({dtype})", {"last_hidden_state": max_abs(merged, ref["last_hidden_state"])},
                  bounds_for(ref, ["last_hidden_state"], dtype, layers, hidden))


def test_the_attention_output_lora_is_read_and_has_no_adapterhub_form(tmp_path):
    from keras_adapterfusion.formats import adapterhub

    directory, spec = case_of("bert_qv_outputs")
    encoder = load_encoder(os.path.join(BACKBONES, spec["base"]))
    name = load_peft_lora(encoder, directory, name="qv")
    assert encoder.adapter_configs[name].projections() == ["query", "value", "attention_output", "output"]
    with pytest.raises(ValueError, match="attention_output_lora"):
        adapterhub.save_adapter(encoder, name, tmp_path / "hub")
    assert not os.path.exists(tmp_path / "hub")


def _edited(tmp_path, change_config=None, drop_key=None, rename=None):
    directory, spec = case_of("bert_qv_outputs")
    target = tmp_path / "lora"
    shutil.copytree(directory, target)
    if change_config:
        config = json.load(open(target / "adapter_config.json"))
        config.update(change_config)
        json.dump(config, open(target / "adapter_config.json", "w"))
    if drop_key or rename:
        from safetensors.numpy import load_file, save_file

        tensors = load_file(target / "adapter_model.safetensors")
        tensors = {(rename[1] if rename and k == rename[0] else k): v for k, v in tensors.items() if k != drop_key}
        save_file(tensors, target / "adapter_model.safetensors")
    return target, os.path.join(BACKBONES, spec["base"])


@pytest.mark.parametrize("change, message", [
    (dict(change_config={"peft_type": "IA3"}), "peft_type 'IA3'; expected 'LORA'"),
    (dict(change_config={"use_dora": True}), "use_dora=True is not supported"),
    (dict(change_config={"bias": "all"}), "bias='all' is not supported"),
    (dict(change_config={"modules_to_save": ["classifier"]}), "modules_to_save=\\['classifier'\\] is not supported"),
    (dict(change_config={"rank_pattern": {"query": 2}}), "rank_pattern="),
    (dict(change_config={"r": 0}), "r=0; expected an int >= 1"),
    (dict(drop_key="base_model.model.encoder.layer.1.attention.self.query.lora_B.weight"),
     "block 1 query has only \\['.lora_A.weight'\\]"),
    (dict(rename=("base_model.model.encoder.layer.1.attention.self.query.lora_A.weight",
                  "base_model.model.pooler.dense.lora_A.weight")), "pooler.dense.lora_A.weight' is not a LoRA"),
    (dict(drop_key="base_model.model.encoder.layer.1.attention.self.value.lora_A.weight", ), "has only"),
])
def test_bad_peft_files_are_refused_and_change_nothing(tmp_path, change, message):
    target, base = _edited(tmp_path, **change)
    encoder = load_encoder(base)
    with pytest.raises(CheckpointError, match=message):
        load_peft_lora(encoder, target)
    assert encoder.adapter_configs == {}


@pytest.mark.parametrize("merge", ["merged_linear", "merged_ties"])
def test_lora_merging_matches_pefts_add_weighted_adapter(merge):
    """`merge_adapters(method="peft_linear" / "ties")` against PEFT's own merges of the same two LoRAs."""
    from keras import ops

    from keras_adapterfusion import merge_adapters

    directory = os.path.join(PEFT, "merge")
    spec = json.load(open(os.path.join(directory, "case.json")))
    case = next(m for m in spec["merges"] if m["name"] == merge)
    ref = np.load(os.path.join(directory, "reference.npz"))
    encoder = load_encoder(os.path.join(BACKBONES, spec["base"]))
    for name in ("movie", "news", merge):
        load_peft_lora(encoder, os.path.join(directory, name), name="peft_" + name if name == merge else name)
    method = {"linear": "peft_linear", "ties": "ties"}[case["combination_type"]]
    merge_adapters(encoder, "ours", ["movie", "news"], weights=case["weights"], method=method,
                   density=case.get("density"))
    assert encoder.adapter_configs["ours"].scaling == 1.0
    for mine, theirs in zip(encoder.adapter_weights("ours"), encoder.adapter_weights("peft_" + merge)):
        mine, theirs = ops.convert_to_numpy(mine), ops.convert_to_numpy(theirs)
        # The same float32 operations in the same order: two roundings of the weighted sum at most.
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=4 * 2.0**-24 * max(1.0, float(np.abs(theirs).max())))
    for name in ("movie", "news"):  # the merged inputs are PEFT's
        errors = {"last_hidden_state": max_abs(encoder(model_inputs(ref), adapter_setup=name)["last_hidden_state"],
                                               ref[name])}
        assert_parity(f"PEFT merge input {name}", errors, bounds_for({"last_hidden_state": ref[name]}, list(errors),
                                                                      "float32", *base_shape(os.path.join(BACKBONES, spec["base"]))))
    out = encoder(model_inputs(ref), adapter_setup="ours")["last_hidden_state"]
    errors = {"last_hidden_state": max_abs(out, ref[merge])}
    print(merge, errors)
    assert_parity(f"PEFT {merge}", errors, bounds_for({"last_hidden_state": ref[merge]}, list(errors), "float32",
                                                     *base_shape(os.path.join(BACKBONES, spec["base"]))))
