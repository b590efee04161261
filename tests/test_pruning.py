"""Fusion pruning and AdapterDrop (keras_adapterfusion.analysis.pruning) on the tiny encoder.

Pruning is model surgery (which adapters and blocks a new encoder holds, whose weights it copies);
it has no backend-specific code, and the forward passes it relies on (fusion over any adapter
set, adapters left out of blocks) are checked on every backend by the layer and parity tests.
So these tests run in the TensorFlow pass only, where they take a few seconds (JAX compiles
each eager op of three model builds).
"""

import keras
import numpy as np
import pytest

from conftest import TINY_BERT, max_abs
from keras_adapterfusion import load_encoder
from keras_adapterfusion.training import builders
from keras_adapterfusion.analysis import pruning

pytestmark = pytest.mark.backend_independent

NAMES = ["a", "b", "c"]


def inputs():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 1000, (6, 12)).astype("int32")
    mask = np.ones((6, 12), "int32")
    mask[1, 8:] = 0
    mask[4, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def randomize(weights, seed):
    rng = np.random.default_rng(seed)
    for w in weights:
        w.assign(rng.normal(0.0, 0.3, tuple(w.shape)).astype("float32"))


def fusion_model(names=NAMES, config="seq_bn"):
    encoder = load_encoder(TINY_BERT, hidden_dropout=0.0, attention_dropout=0.0)
    for i, name in enumerate(names):
        encoder.add_adapter(name, config)
        randomize(encoder.adapter_weights(name), i)  # adapters that differ, so the attention is uneven
    model = builders.build_fusion_model(encoder, names, num_labels=2)
    randomize(encoder.fusion_weights(names), 10)
    return model


@pytest.fixture(scope="module")
def fused():
    """One three-adapter fusion model for the whole module (pruning never changes it)."""
    return fusion_model()


def numpy_outputs(model, x):
    return {k: keras.ops.convert_to_numpy(v) for k, v in model.encoder(x, adapter_setup=model.adapter_setup,
                                                                       output_hidden_states=True).items()} | {
        "logits": keras.ops.convert_to_numpy(model(x))}


def test_pruned_model_equals_a_model_built_with_the_kept_adapters(fused):
    model = fused
    x = inputs()
    before = keras.ops.convert_to_numpy(model(x))
    importance = pruning.adapter_importance(model, x)
    assert list(importance) == NAMES and abs(sum(importance.values()) - 1.0) < 1e-5
    expected = sorted(sorted(NAMES, key=lambda n: -importance[n])[:2], key=NAMES.index)

    pruned = pruning.prune_fusion(model, x, keep=2)
    assert pruned.pruning["kept"] == expected
    assert pruned.pruning["dropped"] == [n for n in NAMES if n not in expected]
    assert sorted(pruned.encoder.adapter_configs) == sorted(expected)  # the dropped adapter's weights are gone
    assert list(pruned.encoder.fusion_specs) == [",".join(expected)]

    # The same model, built from scratch with only the kept adapters and the same weights.
    encoder = load_encoder(TINY_BERT, hidden_dropout=0.0, attention_dropout=0.0)
    for name in expected:
        encoder.add_adapter(name, "seq_bn")
        for old, new in zip(model.encoder.adapter_weights(name), encoder.adapter_weights(name)):
            new.assign(old)
    reference = builders.build_fusion_model(encoder, expected, num_labels=2)
    for old, new in zip(model.encoder.fusion_weights(NAMES), encoder.fusion_weights(expected)):
        new.assign(old)
    reference.head.set_weights(model.head.get_weights())

    got, want = numpy_outputs(pruned, x), numpy_outputs(reference, x)
    for key in ("logits", "last_hidden_state", "fusion_attentions"):
        assert max_abs(got[key], want[key]) <= 1e-6, key
    assert got["fusion_attentions"].shape[-1] == 2
    # The original model is untouched.
    assert max_abs(keras.ops.convert_to_numpy(model(x)), before) == 0.0


def kept_reference(model, kept):
    """The fusion model built from scratch over only `kept`, with `model`'s weights (the hand equivalent)."""
    encoder = load_encoder(TINY_BERT, hidden_dropout=0.0, attention_dropout=0.0)
    for name in kept:
        encoder.add_adapter(name, "seq_bn")
        for old, new in zip(model.encoder.adapter_weights(name), encoder.adapter_weights(name)):
            new.assign(old)
    reference = builders.build_fusion_model(encoder, kept, num_labels=2)
    for old, new in zip(model.encoder.fusion_weights(NAMES), encoder.fusion_weights(kept)):
        new.assign(old)
    reference.head.set_weights(model.head.get_weights())
    return reference


@pytest.mark.parametrize("excluded", [["b"], ["a", "c"]])
def test_excluding_adapters_equals_the_fusion_built_without_them(fused, excluded):
    """adapters issue #391: leave trained adapters out of a fusion at inference, without retraining."""
    x = inputs()
    before = keras.ops.convert_to_numpy(fused(x))
    controlled = pruning.control_fusion(fused, exclude=excluded)
    assert controlled.encoder is fused.encoder and controlled.head is fused.head
    kept = [n for n in NAMES if n not in excluded]
    got = numpy_outputs(controlled, x)
    if len(kept) >= 2:
        want = numpy_outputs(kept_reference(fused, kept), x)
        for key in ("logits", "last_hidden_state"):
            assert max_abs(got[key], want[key]) <= 1e-6, key
        columns = [NAMES.index(n) for n in kept]
        assert max_abs(got["fusion_attentions"][..., columns], want["fusion_attentions"]) <= 1e-6
    # Excluded adapters are reported with attention 0; the kept ones share all of it.
    probs = got["fusion_attentions"]
    assert probs.shape[-1] == 3
    assert np.all(probs[..., [NAMES.index(n) for n in excluded]] == 0.0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    if len(kept) == 1:
        assert np.all(probs[..., NAMES.index(kept[0])] == 1.0)
    assert max_abs(keras.ops.convert_to_numpy(fused(x)), before) == 0.0


def test_prune_fusion_is_the_exclusion_copied(fused):
    x = inputs()
    pruned = pruning.prune_fusion(fused, x, keep=2)
    controlled = pruning.control_fusion(fused, exclude=pruned.pruning["dropped"])
    assert max_abs(keras.ops.convert_to_numpy(pruned(x)), keras.ops.convert_to_numpy(controlled(x))) <= 1e-6


def test_fixed_weights_hold_on_every_token(fused):
    x = inputs()
    controlled = pruning.control_fusion(fused, fixed={"a": 0.5})
    # b and c share the other half in the proportions of the fusion's own softmax over b and c alone (the
    # fusion with a excluded). Blocks run on what the earlier blocks gave, so the first block is where the
    # two see the same input.
    free = numpy_outputs(pruning.control_fusion(fused, exclude=["a"]), x)["fusion_attentions"]
    probs = numpy_outputs(controlled, x)["fusion_attentions"]
    assert np.all(probs[..., 0] == 0.5)
    np.testing.assert_allclose(probs[0, ..., 1:], 0.5 * free[0, ..., 1:], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    every = numpy_outputs(pruning.control_fusion(fused, fixed={"a": 0.2, "b": 0.3, "c": 0.5}), x)
    assert np.all(every["fusion_attentions"] == np.array([0.2, 0.3, 0.5], "float32"))
    for kwargs, message in (({"exclude": ["z"]}, "expected distinct members"),
                            ({"exclude": NAMES}, "leaves no adapter"),
                            ({"fixed": {"a": 0.7, "b": 0.6}}, "sum to 1.3"),
                            ({"fixed": {"a": 0.2, "b": 0.3, "c": 0.4}}, "exactly 1 when every kept"),
                            ({"fixed": {"b": 0.5}, "exclude": ["b"]}, "expected a kept member"),
                            ({"fixed": {"a": 1.5}}, "expected a number in \\[0, 1\\]")):
        with pytest.raises(ValueError, match=message):
            pruning.control_fusion(fused, **kwargs)


def test_dropped_blocks_compute_no_adapter(fused):
    model = fused
    x = inputs()
    dropped = pruning.drop_adapters(model, blocks=1)
    block0, block1 = dropped.encoder.blocks
    assert not block0.output_adapters and not block0.mh_adapters  # nothing there to compute
    assert sorted(block1.output_adapters) == NAMES
    out = numpy_outputs(dropped, x)
    plain = {k: keras.ops.convert_to_numpy(v)
             for k, v in model.encoder(x, adapter_setup=None, output_hidden_states=True).items()}
    full = numpy_outputs(model, x)
    assert max_abs(out["hidden_states"][1], plain["hidden_states"][1]) == 0.0  # block 0: the plain encoder
    assert np.all(out["fusion_attentions"][0] == 0.0)
    assert max_abs(out["hidden_states"][2], plain["hidden_states"][2]) > 1e-3  # block 1 still fuses
    assert max_abs(out["logits"], full["logits"]) > 1e-6
    # Dropping none changes nothing; dropping every block leaves the plain encoder and the head.
    assert max_abs(numpy_outputs(pruning.drop_adapters(model, 0), x)["logits"], full["logits"]) <= 1e-6
    single = builders.build_adapter_model(model.encoder, "a", num_labels=2)
    none_left = pruning.drop_adapters(single, blocks=2)
    assert not any(b.output_adapters for b in none_left.encoder.blocks)
    assert max_abs(numpy_outputs(none_left, x)["last_hidden_state"], plain["last_hidden_state"]) == 0.0


def test_pruned_and_dropped_model_saves_and_loads(fused, tmp_path):
    model = fused
    x = inputs()
    small = pruning.drop_adapters(pruning.prune_fusion(model, x, keep=2), blocks=1)
    assert small.pruning["dropped_blocks"] == 1 and len(small.pruning["kept"]) == 2
    path = str(tmp_path / "pruned.keras")
    small.save(path)
    loaded = keras.saving.load_model(path)
    assert max_abs(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(small(x))) <= 1e-6
    assert sorted(loaded.encoder.adapter_configs) == sorted(small.encoder.adapter_configs)
    assert not loaded.encoder.blocks[0].output_adapters


def test_bad_arguments_are_named(fused):
    model = fused
    x = inputs()
    for keep in (1, 4, True, 2.0):
        with pytest.raises(ValueError, match="keep"):
            pruning.prune_fusion(model, x, keep=keep)
    for blocks in (-1, 3, "1"):
        with pytest.raises(ValueError, match="blocks"):
            pruning.drop_adapters(model, blocks=blocks)
    single = builders.build_adapter_model(model.encoder, "a", num_labels=2)
    with pytest.raises(ValueError, match="expected a fusion"):
        pruning.prune_fusion(single, x, keep=2)
    with pytest.raises(ValueError, match="AdapterModel"):
        pruning.drop_adapters(object(), blocks=1)
