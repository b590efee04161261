"""Weight merging (`merge_adapters`): the weighted sum of every variable, and what it refuses.

Parity with `adapters`' `average_adapter` is the reference case `merged_linear` (tests/test_adapterhub.py).
"""

import numpy as np
import pytest
from keras import ops

from keras_adapterfusion import AdapterConfig, LoRAConfig, TransformerEncoder, merge_adapters


def encoder_with(configs, seed=0):
    enc = TransformerEncoder(vocab_size=40, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                             max_positions=12, hidden_dropout=0.0, attention_dropout=0.0)
    enc.build()
    rng = np.random.default_rng(seed)
    for name, config in configs.items():
        enc.add_adapter(name, config)
        for v in enc.adapter_weights(name):
            v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
    return enc


def test_every_variable_is_the_weighted_sum():
    config = AdapterConfig.from_preset("houlsby", ln_before=True, scaling="channel", leave_out=[1])
    enc = encoder_with({"a": config, "b": config.replace(dropout=0.2), "c": config.replace(init_weights="houlsby")})
    assert merge_adapters(enc, "m", {"a": 1.0, "b": 2.0, "c": 1.0}) == "m"
    assert enc.adapter_configs["m"] == config
    merged = enc.adapter_weights("m")
    # Every variable of the adapter (LayerNorm, down and up kernels and biases, the channel scaling: 7 per slot),
    # in both slots of block 0 only (leave_out=[1]).
    assert len(merged) == 2 * 7
    for m, a, b, c in zip(merged, *(enc.adapter_weights(n) for n in "abc")):
        expected = 0.25 * ops.convert_to_numpy(a) + 0.5 * ops.convert_to_numpy(b) + 0.25 * ops.convert_to_numpy(c)
        np.testing.assert_allclose(ops.convert_to_numpy(m), expected, rtol=0, atol=4 * 2.0**-24 * 3)
    # Unnormalized weights are taken as they are.
    merge_adapters(enc, "sum", ["a", "b"], weights=[1.0, 1.0], normalize_weights=False)
    for s, a, b in zip(enc.adapter_weights("sum"), enc.adapter_weights("a"), enc.adapter_weights("b")):
        np.testing.assert_allclose(ops.convert_to_numpy(s), ops.convert_to_numpy(a) + ops.convert_to_numpy(b),
                                   rtol=0, atol=2.0**-24 * 8)


@pytest.mark.parametrize("call, message", [
    (lambda e: merge_adapters(e, "m", ["a", "other"]), "differ in \\['non_linearity', 'reduction_factor'\\]"),
    (lambda e: merge_adapters(e, "m", ["a", "nope"]), "unknown adapter\\(s\\) \\['nope'\\]"),
    (lambda e: merge_adapters(e, "m", ["a"]), "two or more adapter names"),
    (lambda e: merge_adapters(e, "m", ["a", "a"]), "repeat a name"),
    (lambda e: merge_adapters(e, "m", ["a", "b"], weights=[1.0]), "expected 2 numbers"),
    (lambda e: merge_adapters(e, "m", ["a", "b"], weights=[1.0, -1.0]), "sum to 0"),
    (lambda e: merge_adapters(e, "m", {"a": 1.0, "b": 1.0}, weights=[1, 1]), "expected one"),
    (lambda e: merge_adapters(e, "a", ["a", "b"]), "already has an adapter 'a'"),
    (lambda e: merge_adapters(e, "m", ["a", "b"], method="ties", density=0.5), "method 'ties' merges LoRAs"),
    (lambda e: merge_adapters(e, "m", ["a", "b"], method="dare"), "method 'dare'"),
    (lambda e: merge_adapters(e, "m", ["l1", "l2"], method="ties"), "density None; expected a fraction"),
    (lambda e: merge_adapters(e, "m", ["l1", "l2"], method="ties", density=0.5, majority_sign="x"),
     "majority_sign 'x'"),
    (lambda e: merge_adapters(e, "m", ["l1", "l2"], method="peft_linear", density=0.5), "only 'ties' prunes"),
    (lambda e: merge_adapters(e, "m", ["l1", "l3"], method="peft_linear"), "differ in \\['r'\\]"),
    (lambda e: merge_adapters(e, "m", ["a", "l1"]), "mix LoRAs and bottleneck adapters"),
    (lambda e: merge_adapters(e, "x/y", ["a", "b"]), "merge_adapters name"),
])
def test_bad_merges_are_refused_and_change_nothing(call, message):
    enc = encoder_with({"a": "seq_bn", "b": "seq_bn", "other": AdapterConfig(non_linearity="swish",
                                                                              reduction_factor=4),
                        "l1": LoRAConfig(r=2), "l2": LoRAConfig(r=2, alpha=4), "l3": LoRAConfig(r=4)})
    before = sorted(enc.adapter_configs)
    with pytest.raises(ValueError, match=message):
        call(enc)
    assert sorted(enc.adapter_configs) == before
