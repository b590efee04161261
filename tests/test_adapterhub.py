"""AdapterHub import/export: parity with `adapters` 1.3.0 outputs, round trips, errors."""

import inspect
import json
import os
import shutil

import numpy as np
import pytest
from keras import ops
from safetensors.numpy import load_file, save_file

from conftest import BACKBONES, FIXTURES, FUSION_CASE, TINY_BERT, max_abs, model_inputs
from parity import assert_parity
from keras_adapterfusion import CheckpointError, adapterhub, load_encoder
from keras_adapterfusion.layers import BottleneckAdapter

VARIANTS = os.path.join(FIXTURES, "reference_variants")
CASE_NAMES = ["sentiment", "nli", "topic"]

# Max-abs error bounds per case and output (see tests/parity.py): about 3x the larger error measured on
# TensorFlow and JAX (over both fusion forms, fast and reference), at least 4 float32 ulps of the
# output's magnitude. Measured with adapters 1.3.0's reference.npz files, TF 2.21 / JAX 0.10, CPU.
PARITY_BOUNDS = {
    "tiny_seqbn_dynamic": {
        "logits": 2.5e-07,  # TF 8.20e-08, JAX 7.45e-08
        "last_hidden_state": 4.3e-06,  # TF 1.19e-06, JAX 1.43e-06
        "fusion_attentions": 2.7e-07,  # TF 8.94e-08, JAX 5.96e-08
    },
    "adapterhub_bin/tiny_seqbn_dynamic": {
        "logits": 2.3e-07,  # TF 5.77e-08, JAX 7.45e-08
        "last_hidden_state": 2.9e-06,  # TF 9.54e-07, JAX 9.54e-07
        "fusion_attentions": 2.7e-07,  # TF 8.94e-08, JAX 5.96e-08
    },
    "custom_fields_dynamic": {
        "logits": 1.7e-05,  # TF 5.01e-06, JAX 5.48e-06 (|logits| up to 7.3)
        "last_hidden_state": 9.5e-06,  # TF 3.16e-06, JAX 2.26e-06
        "fusion_attentions": 3.8e-06,  # TF 1.25e-06, JAX 1.07e-06
    },
    "houlsby_static": {
        "logits": 4.3e-06,  # TF 9.54e-07, JAX 1.43e-06
        "last_hidden_state": 3.6e-06,  # TF 1.07e-06, JAX 1.19e-06
        "fusion_attentions": 1.6e-06,  # TF 4.77e-07, JAX 5.07e-07
        "mh_fusion_attentions": 9.0e-07,  # TF 2.98e-07, JAX 2.68e-07
    },
    "mh_only_no_query_temperature": {
        "logits": 5.8e-06,  # TF 1.91e-06, JAX 1.43e-06
        "last_hidden_state": 3.6e-06,  # TF 9.54e-07, JAX 1.19e-06
        "mh_fusion_attentions": 2.4e-07,  # TF 0, JAX 2.98e-08: the floor, 4 ulps of 0.50
    },
    "post_add_leave_out": {
        "logits": 4.7e-06,  # TF 1.55e-06, JAX 1.31e-06
        "last_hidden_state": 5.3e-06,  # TF 1.22e-06, JAX 1.76e-06
        "fusion_attentions": 2.4e-06,  # TF 6.85e-07, JAX 7.75e-07
    },
    "roberta_seqbn_dynamic": {
        "logits": 2.7e-05,  # TF 6.38e-06, JAX 8.91e-06
        "last_hidden_state": 4.8e-05,  # TF 9.60e-06, JAX 1.59e-05
        "fusion_attentions": 6.3e-06,  # TF 1.25e-06, JAX 2.09e-06
    },
    "single_no_original_ln_after": {
        "logits": 9.7e-06,  # TF 2.44e-06, JAX 3.22e-06
        "last_hidden_state": 7.4e-06,  # TF 2.44e-06, JAX 2.38e-06
    },
    "xlmr_houlsby_dynamic": {
        "logits": 4.3e-06,  # TF 1.43e-06, JAX 1.43e-06
        "last_hidden_state": 4.5e-06,  # TF 1.43e-06, JAX 1.49e-06
        "fusion_attentions": 9.0e-07,  # TF 2.98e-07, JAX 2.38e-07
        "mh_fusion_attentions": 1.2e-06,  # TF 3.58e-07, JAX 3.73e-07
    },
}


def load_case(reference_form=False, directory=FUSION_CASE, names=CASE_NAMES, base=TINY_BERT, **kwargs):
    return adapterhub.load_fusion_model(
        base, [os.path.join(directory, n) for n in names], os.path.join(directory, "fusion"),
        head_dir=os.path.join(directory, "head"), reference_form=reference_form, **kwargs,
    )


def errors_against(model, ref):
    out = model(model_inputs(ref))
    keys = [k for k in ("logits", "last_hidden_state", "fusion_attentions", "mh_fusion_attentions") if k in ref]
    return {k: max_abs(out[k], ref[k]) for k in keys}


@pytest.mark.parametrize("reference_form", [False, True])
def test_fixture_parity(reference_form):
    ref = np.load(os.path.join(FUSION_CASE, "reference.npz"))
    model = load_case(reference_form)
    errors = errors_against(model, ref)
    assert set(errors) == {"logits", "last_hidden_state", "fusion_attentions"}
    assert ops.convert_to_numpy(model(model_inputs(ref))["fusion_attentions"]).shape == (2, 4, 10, 3)
    print("tiny_seqbn_dynamic", reference_form, errors)
    assert_parity(f"tiny_seqbn_dynamic (reference_form={reference_form})", errors, PARITY_BOUNDS["tiny_seqbn_dynamic"])


VARIANT_CASES = sorted(os.listdir(VARIANTS)) if os.path.isdir(VARIANTS) else []


def check_variant_parity(case):
    """Load reference variant `case` (a fusion in both forms) and check it against its bounds.

    The one parity check of the reference variants: `test_reference_variant_parity` runs it, and so does
    the test that shows that a wrong adapter LayerNorm epsilon fails it. Returns `{label: (model, errors)}`.
    """
    directory = os.path.join(VARIANTS, case)
    spec = json.load(open(os.path.join(directory, "case.json")))
    base = os.path.join(BACKBONES, spec["base"])
    names = list(spec["adapters"])
    ref = np.load(os.path.join(directory, "reference.npz"))
    if spec["fusion"]:
        models = {f"reference_form={rf}": load_case(rf, directory, names, base) for rf in (False, True)}
    else:
        models = {"single adapter": adapterhub.load_adapter_model(base, os.path.join(directory, names[0]),
                                                                   head_dir=os.path.join(directory, "head"))}
    measured = {}
    for label, model in models.items():
        errors = errors_against(model, ref)
        print(case, label, errors)
        assert "logits" in errors and "last_hidden_state" in errors
        if spec["fusion"]:
            assert "fusion_attentions" in errors or "mh_fusion_attentions" in errors
        assert_parity(f"{case} ({label})", errors, PARITY_BOUNDS[case])
        measured[label] = (model, errors)
    return measured


@pytest.mark.parametrize("case", VARIANT_CASES)
def test_reference_variant_parity(case):
    """Cases written by `adapters` 1.3.0 itself (tests/fixtures/make_reference_variants.py)."""
    check_variant_parity(case)


def test_every_parity_case_has_bounds():
    assert set(PARITY_BOUNDS) == set(VARIANT_CASES) | {"tiny_seqbn_dynamic", "adapterhub_bin/tiny_seqbn_dynamic"}


def _cases_with_adapter_layernorms():
    out = []
    for case in VARIANT_CASES:
        spec = json.load(open(os.path.join(VARIANTS, case, "case.json")))
        if any(a.get("ln_before") or a.get("ln_after") for a in spec["adapters"].values()):
            out.append(case)
    return out


def test_adapter_layernorm_epsilon_bug_fails_parity(monkeypatch):
    """The bounds catch a real bug that the old flat 1e-4 let through: the adapters' own LayerNorms
    (`ln_before`, `ln_after`) with epsilon 1e-12 (the encoder's) instead of PyTorch's 1e-5.

    Measured with epsilon 1e-12 (TF / JAX): single_no_original_ln_after last_hidden_state 1.48e-5 /
    1.48e-5 against its bound 7.4e-6; custom_fields_dynamic logits 1.45e-5 / 1.84e-5 against 1.7e-5 and
    fusion_attentions 3.9e-6 / 4.1e-6 (reference form) against 3.8e-6.
    """
    cases = _cases_with_adapter_layernorms()
    assert set(cases) == {"custom_fields_dynamic", "single_no_original_ln_after"}
    signature = inspect.signature(BottleneckAdapter.__init__)
    defaulted = [name for name, p in signature.parameters.items() if p.default is not p.empty]
    defaults = list(BottleneckAdapter.__init__.__defaults__)
    assert defaults[defaulted.index("layer_norm_epsilon")] == 1e-5
    defaults[defaulted.index("layer_norm_epsilon")] = 1e-12
    monkeypatch.setattr(BottleneckAdapter.__init__, "__defaults__", tuple(defaults))

    failures = {}
    for case in cases:
        try:
            measured = check_variant_parity(case)
        except AssertionError as e:
            failures[case] = str(e)
            continue
        # Passing is allowed for a case, but only with the bug really in place.
        for model, _ in measured.values():
            epsilons = {layer.layer_norm_epsilon for block in model.encoder.blocks
                        for name in model.encoder.adapter_names for layer in block.adapter_layers(name).values()}
            assert epsilons == {1e-12}
    print(failures)
    assert failures, "an adapter LayerNorm epsilon of 1e-12 passed every parity bound"
    # The clearest case: 2x over its bound on both backends.
    assert "single_no_original_ln_after" in failures
    assert "last_hidden_state: max-abs error" in failures["single_no_original_ln_after"]


def test_reference_variants_cover_every_config_field():
    """Every AdapterConfig / FusionConfig field takes a non-default value in some reference case."""
    seen_adapter, seen_fusion = set(), set()
    base_adapter, base_fusion = adapterhub.AdapterConfig().to_dict(), adapterhub.FusionConfig().to_dict()
    for case in VARIANT_CASES:
        spec = json.load(open(os.path.join(VARIANTS, case, "case.json")))
        for a in spec["adapters"].values():
            fields = {k: v for k, v in a.items() if k != "preset"}
            config = adapterhub.AdapterConfig.from_preset(a["preset"], **fields).to_dict()
            seen_adapter.update(k for k, v in config.items() if v != base_adapter[k])
        if spec["fusion"]:
            fields = {k: v for k, v in spec["fusion"].items() if k != "preset"}
            config = adapterhub.FusionConfig.from_preset(spec["fusion"]["preset"], **fields).to_dict()
            seen_fusion.update(k for k, v in config.items() if v != base_fusion[k])
    untested_adapter = set(base_adapter) - seen_adapter - {"init_weights", "dropout"}  # training-time only
    untested_fusion = set(base_fusion) - seen_fusion - {"dropout_prob", "regularization_weight"}
    assert not untested_adapter, untested_adapter
    assert not untested_fusion, untested_fusion


def test_pytorch_bin_files_load_without_pytorch(tmp_path):
    """`pytorch_adapter.bin` / `pytorch_model_head.bin` written by `adapters`: read by the restricted
    reader (no PyTorch, no pickle code run), with the same numbers as the safetensors twins."""
    src = os.path.join(VARIANTS, "single_no_original_ln_after")
    for part in ("solo", "head"):
        os.makedirs(tmp_path / part)
        for f in os.listdir(os.path.join(src, part)):
            if not f.endswith(".safetensors"):
                shutil.copy(os.path.join(src, part, f), tmp_path / part)
    assert not any(f.endswith(".safetensors") for part in ("solo", "head") for f in os.listdir(tmp_path / part))
    model = adapterhub.load_adapter_model(TINY_BERT, str(tmp_path / "solo"), head_dir=str(tmp_path / "head"))
    twin = adapterhub.load_adapter_model(TINY_BERT, os.path.join(src, "solo"), head_dir=os.path.join(src, "head"))
    ref = np.load(os.path.join(src, "reference.npz"))
    assert_parity("single_no_original_ln_after (.bin files)", errors_against(model, ref),
                  PARITY_BOUNDS["single_no_original_ln_after"])
    assert max_abs(model(model_inputs(ref))["logits"], twin(model_inputs(ref))["logits"]) == 0.0


def test_pytorch_bin_fusion_bundle_matches_adapters():
    """A whole bundle of `.bin` files written by `adapters` (adapters, fusion, head), without PyTorch."""
    directory = os.path.join(FIXTURES, "adapterhub_bin", "tiny_seqbn_dynamic")
    assert not any(f.endswith(".safetensors") for _, _, files in os.walk(directory) for f in files)
    ref = np.load(os.path.join(directory, "reference.npz"))
    model = load_case(directory=directory)
    errors = errors_against(model, ref)
    print("adapterhub_bin", errors)
    assert_parity("adapterhub_bin/tiny_seqbn_dynamic", errors, PARITY_BOUNDS["adapterhub_bin/tiny_seqbn_dynamic"])


def _file_tensors(directory):
    for f in os.listdir(directory):
        if f.endswith(".safetensors"):
            return load_file(os.path.join(directory, f))
    raise AssertionError(f"no safetensors in {directory}")


@pytest.mark.parametrize("case", ["tiny_seqbn_dynamic", "custom_fields_dynamic", "houlsby_static"])
def test_export_round_trip_matches_adapterhub_files(case, tmp_path):
    if case == "tiny_seqbn_dynamic":
        directory, names = FUSION_CASE, CASE_NAMES
    else:
        directory = os.path.join(VARIANTS, case)
        names = list(json.load(open(os.path.join(directory, "case.json")))["adapters"])
    model = load_case(directory=directory, names=names)
    encoder = model.encoder
    for n in names:
        adapterhub.save_adapter(encoder, n, tmp_path / n)
    adapterhub.save_fusion(encoder, names, tmp_path / "fusion")
    adapterhub.save_head(model.head, "target", tmp_path / "head", encoder)
    for part in names + ["fusion", "head"]:
        theirs, ours = _file_tensors(os.path.join(directory, part)), _file_tensors(tmp_path / part)
        assert set(ours) == set(theirs), part
        for k in theirs:
            np.testing.assert_array_equal(ours[k], theirs[k])
        config_file = [f for f in os.listdir(tmp_path / part) if f.endswith(".json")][0]
        their_meta = json.load(open(os.path.join(directory, part, config_file)))
        our_meta = json.load(open(tmp_path / part / config_file))
        for key in ("hidden_size", "model_type", "name", "model_class"):
            assert our_meta[key] == their_meta[key], (part, key)
        if part != "head":
            assert our_meta["config"] == their_meta["config"], part
    ref = np.load(os.path.join(directory, "reference.npz"))
    reloaded = load_case(directory=str(tmp_path), names=names)
    assert max_abs(reloaded(model_inputs(ref))["logits"], model(model_inputs(ref))["logits"]) == 0.0


def test_single_adapter_model_without_head():
    model = adapterhub.load_adapter_model(TINY_BERT, os.path.join(FUSION_CASE, "nli"))
    ref = np.load(os.path.join(FUSION_CASE, "reference.npz"))
    out = model(model_inputs(ref))
    assert "logits" not in out and "fusion_attentions" not in out
    plain = load_encoder(TINY_BERT)(model_inputs(ref))["last_hidden_state"]
    assert max_abs(out["last_hidden_state"], plain) > 1e-3


# ----------------------------------------------------------------- errors
def _copy_case(tmp_path):
    dst = tmp_path / "case"
    shutil.copytree(FUSION_CASE, dst)
    return dst


def _edit_json(path, **changes):
    data = json.load(open(path))
    data.update(changes)
    json.dump(data, open(path, "w"))


def test_hidden_size_mismatch(tmp_path):
    case = _copy_case(tmp_path)
    _edit_json(case / "nli" / "adapter_config.json", hidden_size=768)
    with pytest.raises(CheckpointError) as e:
        load_case(directory=str(case))
    assert "nli/adapter_config.json" in str(e.value) and "768" in str(e.value) and "64" in str(e.value)


def test_fused_adapters_with_different_slot_flags(tmp_path):
    case = _copy_case(tmp_path)
    shutil.rmtree(case / "nli")
    shutil.copytree(os.path.join(VARIANTS, "houlsby_static", "a"), case / "nli")
    _edit_json(case / "nli" / "adapter_config.json", name="nli")
    tensors = load_file(str(case / "nli" / "adapter.safetensors"))
    save_file({k.replace(".adapters.a.", ".adapters.nli."): v for k, v in tensors.items()},
              str(case / "nli" / "adapter.safetensors"))
    with pytest.raises(CheckpointError) as e:
        load_case(directory=str(case))
    assert "adapter_fusion_config.json" in str(e.value) and "slot flags" in str(e.value)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: os.remove(c / "topic" / "adapter.safetensors"), "no weights found"),
        (lambda c: os.remove(c / "fusion" / "adapter_fusion_config.json"), "adapter_fusion_config.json: missing"),
        (lambda c: (c / "head" / "model_head.safetensors").write_bytes(b"{broken"), "cannot be read as safetensors"),
        (lambda c: (c / "sentiment" / "adapter_config.json").write_text("{not json"), "is not valid JSON"),
        (lambda c: _add_key(c / "topic" / "adapter.safetensors", "bert.encoder.layer.0.output.adapters.topic.x"),
         "unexpected tensor"),
        (lambda c: _add_key(c / "fusion" / "model_adapter_fusion.safetensors", "bert.pooler.extra"),
         "unexpected tensor"),
        (lambda c: _edit_json(c / "sentiment" / "adapter_config.json",
                              config={**json.load(open(c / "sentiment" / "adapter_config.json"))["config"],
                                      "use_gating": True}), "use_gating=True is not supported"),
        (lambda c: _edit_json(c / "head" / "head_config.json", model_type="roberta"), "model_type is 'roberta'"),
        (lambda c: _reshape(c / "nli" / "adapter.safetensors"), "has shape"),
    ],
)
def test_bad_files_raise_naming_file(tmp_path, mutate, message):
    case = _copy_case(tmp_path)
    mutate(case)
    with pytest.raises(CheckpointError) as e:
        load_case(directory=str(case))
    assert message in str(e.value)
    assert str(case) in str(e.value)


def _add_key(path, key):
    tensors = load_file(str(path))
    tensors[key] = np.zeros(3, "float32")
    save_file(tensors, str(path))


def _reshape(path):
    tensors = load_file(str(path))
    key = "bert.encoder.layer.1.output.adapters.nli.adapter_up.weight"
    tensors[key] = np.zeros((64, 8), "float32")
    save_file(tensors, str(path))


def test_failed_load_changes_nothing(tmp_path):
    encoder = load_encoder(TINY_BERT)
    adapterhub.load_adapter(encoder, os.path.join(FUSION_CASE, "sentiment"))
    before = [ops.convert_to_numpy(v).copy() for v in encoder.weights]
    case = _copy_case(tmp_path)
    _reshape(case / "nli" / "adapter.safetensors")
    with pytest.raises(CheckpointError):
        adapterhub.load_adapter(encoder, str(case / "nli"))
    assert list(encoder.adapter_configs) == ["sentiment"]
    assert all(not b.adapter_layers("nli") for b in encoder.blocks)
    after = [ops.convert_to_numpy(v) for v in encoder.weights]
    assert len(after) == len(before) and all(np.array_equal(a, b) for a, b in zip(after, before))
    with pytest.raises(CheckpointError, match="already has an adapter 'sentiment'"):
        adapterhub.load_adapter(encoder, os.path.join(FUSION_CASE, "sentiment"))
    name = adapterhub.load_adapter(encoder, os.path.join(FUSION_CASE, "sentiment"), load_as="sentiment2")
    assert name == "sentiment2" and len(encoder.adapter_weights("sentiment2")) == 8


def test_fusion_needs_its_adapters():
    with pytest.raises(CheckpointError, match=r"fuses adapter\(s\) \['topic'\] that are not loaded"):
        load_case(names=["sentiment", "nli"])


def test_save_is_atomic_and_keeps_earlier_save(tmp_path, monkeypatch):
    model = load_case()
    target = tmp_path / "sentiment"
    adapterhub.save_adapter(model.encoder, "sentiment", target)
    first = (target / "adapter.safetensors").read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    import safetensors.numpy

    monkeypatch.setattr(safetensors.numpy, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        adapterhub.save_adapter(model.encoder, "sentiment", target)
    assert (target / "adapter.safetensors").read_bytes() == first
    assert sorted(os.listdir(tmp_path)) == ["sentiment"]
    with pytest.raises(OSError):
        adapterhub.save_adapter(model.encoder, "nli", tmp_path / "new")
    assert sorted(os.listdir(tmp_path)) == ["sentiment"]


def test_head_label2id_becomes_the_heads_label_names(tmp_path):
    case = _copy_case(tmp_path)
    config = json.load(open(case / "head" / "head_config.json"))
    num_labels = config["config"]["num_labels"]
    names = [f"class {chr(ord('a') + i)}" for i in range(num_labels)][::-1]  # ids not in alphabetical order
    config["config"]["label2id"] = {n: i for i, n in enumerate(names)}
    json.dump(config, open(case / "head" / "head_config.json", "w"))
    head, _, label2id = adapterhub.load_head(str(case / "head"), load_encoder(TINY_BERT))
    assert head.label_names == names and label2id == {n: i for i, n in enumerate(names)}
    # written back by save_head, read again: the same names
    adapterhub.save_head(head, "again", str(tmp_path / "again"), load_encoder(TINY_BERT))
    assert adapterhub.load_head(str(tmp_path / "again"), load_encoder(TINY_BERT))[0].label_names == names
