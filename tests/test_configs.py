import json

import pytest

from keras_adapterfusion.configs import AdapterConfig, FusionConfig

pytestmark = pytest.mark.backend_independent  # no backend changes what it tests: the TensorFlow pass runs it


def test_presets_match_design_table():
    pf = AdapterConfig.from_preset("seq_bn")
    assert AdapterConfig.from_preset("pfeiffer") == pf
    assert (pf.mh_adapter, pf.output_adapter, pf.original_ln_before, pf.original_ln_after) == (False, True, True, True)
    assert (pf.residual_before_ln, pf.non_linearity, pf.reduction_factor) == (True, "relu", 16)
    hb = AdapterConfig.from_preset("double_seq_bn")
    assert AdapterConfig.from_preset("houlsby") == hb
    assert (hb.mh_adapter, hb.output_adapter, hb.original_ln_before, hb.original_ln_after) == (True, True, False, True)
    assert (hb.non_linearity, hb.reduction_factor) == ("swish", 16)
    st, dy = FusionConfig.from_preset("static"), FusionConfig.from_preset("dynamic")
    assert (st.key, st.query, st.value, st.regularization, st.value_initialized) == (True, True, False, False, False)
    assert (dy.key, dy.query, dy.value, dy.regularization, dy.value_initialized) == (True, True, True, True, True)
    assert dy == FusionConfig()
    for c in (st, dy):
        assert (c.query_before_ln, c.residual_before, c.value_before_softmax, c.temperature) == (False, False, True, False)


@pytest.mark.parametrize(
    "config",
    [
        AdapterConfig.from_preset("seq_bn"),
        AdapterConfig.from_preset("houlsby", reduction_factor={"0": 8, "default": 16}, leave_out=[1]),
        AdapterConfig(scaling="channel", ln_before=True, ln_after=True, residual_before_ln="post_add"),
        FusionConfig.from_preset("static"),
        FusionConfig(dropout_prob=0.2, regularization_weight=0.5, temperature=True),
    ],
)
def test_json_round_trip(config):
    text = config.to_json()
    json.loads(text)
    assert type(config).from_json(text) == config
    assert type(config).from_dict(config.to_dict()) == config


def test_reduction_factor_per_block():
    c = AdapterConfig(reduction_factor={2: 4, "default": 16})
    assert c.reduction_factor == {"2": 4, "default": 16}
    assert c.bottleneck_size(768, 2) == 192
    assert c.bottleneck_size(768, 0) == 48
    with pytest.raises(ValueError, match="default"):
        AdapterConfig(reduction_factor={"1": 4}).bottleneck_size(64, 0)


@pytest.mark.parametrize(
    "kwargs, field, allowed",
    [
        (dict(non_linearity="relu6"), "non_linearity", "relu"),
        (dict(reduction_factor=0), "reduction_factor", "positive"),
        (dict(reduction_factor={"x": 2}), "reduction_factor", "default"),
        (dict(residual_before_ln="pre_add"), "residual_before_ln", "post_add"),
        (dict(scaling="per_token"), "scaling", "learned"),
        (dict(init_weights="xavier"), "init_weights", "bert"),
        (dict(leave_out=[-1]), "leave_out", "block indices"),
        (dict(dropout=1.5), "dropout", "[0, 1)"),
        (dict(mh_adapter="yes"), "mh_adapter", "True or False"),
        (dict(mh_adapter=False, output_adapter=False), "mh_adapter", "at least one"),
        (dict(original_ln_before=False, residual_before_ln="post_add"), "residual_before_ln", "original_ln_before"),
    ],
)
def test_adapter_config_errors_name_field_and_allowed(kwargs, field, allowed):
    with pytest.raises(ValueError) as e:
        AdapterConfig(**kwargs)
    assert field in str(e.value) and allowed in str(e.value)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(key=1), "key"),
        (dict(dropout_prob=2.0), "dropout_prob"),
        (dict(regularization_weight=-1), "regularization_weight"),
    ],
)
def test_fusion_config_errors(kwargs, field):
    with pytest.raises(ValueError, match=field):
        FusionConfig(**kwargs)


def test_unknown_preset_and_field():
    with pytest.raises(ValueError) as e:
        AdapterConfig.from_preset("lora")
    assert "'lora'" in str(e.value) and "seq_bn" in str(e.value) and "houlsby" in str(e.value)
    with pytest.raises(ValueError) as e:
        FusionConfig.from_preset("attention")
    assert "dynamic" in str(e.value) and "static" in str(e.value)
    with pytest.raises(ValueError) as e:
        AdapterConfig.from_dict({"reduction_factor": 16, "use_gating": True})
    assert "use_gating" in str(e.value) and "reduction_factor" in str(e.value)
    with pytest.raises(ValueError, match="preset name"):
        AdapterConfig.get(3)


def test_presets_take_overrides():
    c = AdapterConfig.from_preset("seq_bn", reduction_factor=2, non_linearity="GELU")
    assert c.reduction_factor == 2 and c.non_linearity == "gelu" and c.original_ln_before


def test_one_fusability_check_for_every_caller():
    """`configs.check_fusable` is the check; the encoder, a block and the tuner's hypermodel name themselves."""
    from conftest import TINY_BERT

    from keras_adapterfusion import load_encoder
    from keras_adapterfusion.configs import check_fusable
    from keras_adapterfusion.tuning import FusionHyperModel

    seq_bn, houlsby = AdapterConfig.from_preset("seq_bn"), AdapterConfig.from_preset("houlsby")
    check_fusable({"a": seq_bn, "b": AdapterConfig.from_preset("seq_bn", reduction_factor=4)})
    with pytest.raises(ValueError, match=r"^fused adapters have different slot flags .*a: \(False, True\), "
                                         r"h: \(True, True\); expected the same for all\.$"):
        check_fusable({"a": seq_bn, "h": houlsby})
    encoder = load_encoder(TINY_BERT)
    encoder.add_adapter("a", seq_bn)
    encoder.add_adapter("h", houlsby)
    for call, prefix in ((lambda: encoder.add_fusion(["a", "h"]), "add_fusion: "),
                         (lambda: encoder.blocks[0].add_fusion(["a", "h"]), "add_fusion: "),
                         (lambda: FusionHyperModel(encoder, ["a", "h"], num_labels=2),
                          "FusionHyperModel.adapter_names: ")):
        with pytest.raises(ValueError, match="^" + prefix + "fused adapters have different slot flags"):
            call()
    assert not encoder.fusion_specs
