"""LoRA: the layer, training only the LoRA, merging and unmerging, saving, and what is refused.

Parity with `adapters` (AdapterHub files) is in tests/test_adapterhub.py (the `lora_*` reference cases),
with PEFT in tests/test_peft.py.
"""

import keras
import numpy as np
import pytest
from keras import ops

from conftest import TINY_BERT, max_abs
from keras_adapterfusion import (AdapterModel, AdapterSetup, ClassificationHead, LoRAConfig, TransformerEncoder,
                                 load_encoder)
from keras_adapterfusion.formats import native
from keras_adapterfusion.layers import LoRA
from keras_adapterfusion.training import builders

EPS32 = 2.0**-24  # float32's unit roundoff


def tiny():
    enc = TransformerEncoder(vocab_size=60, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                             max_positions=16, hidden_dropout=0.0, attention_dropout=0.0)
    enc.build()
    return enc


def batch(b=3, t=6, vocab=60, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((b, t), "int32")
    mask[1, 4:] = 0
    return {"input_ids": rng.integers(1, vocab, (b, t)).astype("int32"), "attention_mask": mask}


def with_lora(config=None, seed=3):
    enc = tiny()
    enc.add_adapter("l", config or LoRAConfig(r=2, alpha=4, attn_matrices=["q", "k", "v"], intermediate_lora=True,
                                              output_lora=True, attention_output_lora=True))
    rng = np.random.default_rng(seed)
    for v in enc.adapter_weights("l"):
        v.assign(rng.normal(0, 0.3, v.shape).astype("float32"))
    return enc


def test_the_layer_is_x_times_its_delta():
    lora = LoRA(units=8, r=3, alpha=6)
    x = keras.random.normal((2, 4, 5), seed=1)
    lora.build(x.shape)
    lora.lora_B.assign(keras.random.normal(lora.lora_B.shape, seed=2))
    got = ops.convert_to_numpy(lora(x))
    want = np.einsum("bti,io->bto", ops.convert_to_numpy(x), ops.convert_to_numpy(lora.delta()))
    # Two products of at most 5 terms (x A, then (x A) B) against one of 5 with A B formed first: a few ulps.
    np.testing.assert_allclose(got, want, rtol=0, atol=32 * EPS32 * max(1.0, float(np.abs(want).max())))
    # "lora" initialisation: B starts at zero, so a new LoRA is a no-op.
    fresh = LoRA(units=8, r=3)
    fresh.build(x.shape)
    assert float(np.abs(ops.convert_to_numpy(fresh(x))).max()) == 0.0


def test_every_adapted_projection_changes_the_output_and_the_rest_stay():
    x = batch()
    for projections in (["q"], ["k"], ["v"]):
        enc = with_lora(LoRAConfig(r=2, attn_matrices=projections))
        assert max_abs(enc(x, adapter_setup="l")["last_hidden_state"], enc(x)["last_hidden_state"]) > 1e-4
    for flag in ("intermediate_lora", "output_lora", "attention_output_lora"):
        enc = with_lora(LoRAConfig(r=2, selfattn_lora=False, **{flag: True}))
        assert max_abs(enc(x, adapter_setup="l")["last_hidden_state"], enc(x)["last_hidden_state"]) > 1e-4


def test_stage_one_trains_only_the_lora_and_the_head():
    enc = load_encoder(TINY_BERT, hidden_dropout=0.0, attention_dropout=0.0)
    model = builders.build_adapter_model(enc, "l", num_labels=2, adapter_config="lora")
    trained = {id(v) for v in model.trainable_weights}
    lora = {id(v) for v in enc.adapter_weights("l")}
    assert lora <= trained and len(trained - lora) == len(model.head.trainable_weights)
    assert len(lora) == 2 * 2 * 2  # query and value, lora_A and lora_B, in 2 blocks
    base = [ops.convert_to_numpy(v) for v in enc.blocks[0].base_layers()[0].weights]
    b_before = [ops.convert_to_numpy(layer.lora_B) for block in enc.blocks for layer in block.loras("l").values()]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    x = {k: v % 1000 for k, v in batch(b=4, vocab=1000).items()}
    model.fit(x, np.array([0, 1, 0, 1]), epochs=2, verbose=0)
    for b, v in zip(base, enc.blocks[0].base_layers()[0].weights):
        np.testing.assert_array_equal(b, ops.convert_to_numpy(v))
    b_after = [ops.convert_to_numpy(layer.lora_B) for block in enc.blocks for layer in block.loras("l").values()]
    assert all(np.abs(a - b).max() > 0 for a, b in zip(b_after, b_before))


def test_merge_runs_the_lora_at_the_plain_cost_and_unmerge_restores_the_kernels():
    enc = with_lora()
    x = batch()
    kernels = [ops.convert_to_numpy(enc.blocks[0].projection(p).kernel) for p in ("query", "output")]
    unmerged = ops.convert_to_numpy(enc(x, adapter_setup="l")["last_hidden_state"])
    enc.merge_lora("l")
    assert enc.merged_lora == "l" and all(b.merged_lora == "l" for b in enc.blocks)
    for setup in ("l", None):  # merged, the kernels carry the update whatever the setup
        merged = ops.convert_to_numpy(enc(x, adapter_setup=setup)["last_hidden_state"])
        # float32: W x + (x A) B scaling against (W + A B scaling) x; LayerNorm outputs of magnitude ~3.
        assert max_abs(merged, unmerged) <= 256 * EPS32 * 4, setup
    with pytest.raises(ValueError, match="'l' is merged; expected unmerge_lora\\(\\) first"):
        enc.merge_lora("l")
    assert enc.unmerge_lora() == "l" and enc.merged_lora is None
    for before, p in zip(kernels, ("query", "output")):
        after = ops.convert_to_numpy(enc.blocks[0].projection(p).kernel)
        # (W + D) - D in float32: two roundings of the sums' magnitude.
        bound = 2 * EPS32 * (np.abs(before).max() + np.abs(after - before).max() + 10.0)
        assert np.abs(after - before).max() <= bound
    assert enc.unmerge_lora() is None
    enc.add_adapter("bn", "seq_bn")
    with pytest.raises(ValueError, match="'bn' is not a LoRA"):
        enc.merge_lora("bn")


def test_a_merged_encoder_saves_and_loads_merged(tmp_path):
    enc = with_lora()
    head = ClassificationHead(2, dropout=0.0)
    model = AdapterModel(enc, head, adapter_setup="l", output_key="logits")
    x = batch()
    enc.merge_lora("l")
    out = ops.convert_to_numpy(model(x))
    model.save(str(tmp_path / "merged.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "merged.keras"))
    assert loaded.encoder.merged_lora == "l"
    assert max_abs(loaded(x), out) == 0.0  # the kernels came merged; the update is not added again
    loaded.encoder.unmerge_lora()
    enc.unmerge_lora()
    assert max_abs(loaded(x), model(x)) <= 1e-6


def test_native_files_keep_a_lora(tmp_path):
    enc = with_lora()
    native.save_adapter(enc, "l", tmp_path / "l")
    other = tiny()
    base = [w for w in enc.weights if "lora" not in w.path]
    assert len(base) == len(other.weights)
    for mine, theirs in zip(base, other.weights):
        theirs.assign(mine)
    assert native.load_adapter(other, tmp_path / "l") == "l"
    assert other.adapter_configs["l"] == enc.adapter_configs["l"]
    x = batch()
    assert max_abs(other(x, adapter_setup="l")["last_hidden_state"], enc(x, adapter_setup="l")["last_hidden_state"]) == 0


def test_a_lora_runs_alone():
    enc = with_lora()
    enc.add_adapter("a", "seq_bn")
    enc.add_adapter("b", "seq_bn")
    with pytest.raises(ValueError, match="adapters \\['l'\\] are LoRAs"):
        enc.add_fusion(["l", "a"])
    with pytest.raises(ValueError, match="holds the LoRA\\(s\\) \\['l'\\]; expected a LoRA to run alone"):
        enc.check_setup(AdapterSetup.stack(["a", "l"]))


@pytest.mark.parametrize("fields, message", [
    ({"r": 0}, "LoRAConfig.r: got 0"),
    ({"alpha": -1}, "LoRAConfig.alpha: got -1"),
    ({"attn_matrices": ["q", "o"]}, "LoRAConfig.attn_matrices"),
    ({"selfattn_lora": False}, "expected at least one projection"),
    ({"init_weights": "vera"}, "LoRAConfig.init_weights: got 'vera'"),
    ({"dropout": 1.0}, "LoRAConfig.dropout: got 1.0"),
])
def test_bad_lora_configs_name_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        LoRAConfig(**fields)
