"""Stage builders: trainable weights per stage, training on the real MiniLM encoder, heads, optimizers."""

import os

import keras
import numpy as np
import pytest
from keras import ops

from conftest import max_abs
from keras_adapterfusion import (
    TransformerEncoder,
    analysis,
    builders,
    heads,
    load_encoder,
    load_tokenizer,
    training,
)

POSITIVE = [
    "a wonderful, moving film", "i loved every minute of it", "brilliant acting and a great story",
    "an absolute delight", "the best meal we have had in years", "warm, funny and clever",
    "highly recommended to everyone", "a beautiful and joyful experience",
]
NEGATIVE = [
    "a dull, lifeless film", "i hated every minute of it", "terrible acting and a boring story",
    "an absolute mess", "the worst meal we have had in years", "cold, tedious and stupid",
    "avoid it at all costs", "an ugly and painful experience",
]


def count(weights):
    return sum(int(np.prod(v.shape)) for v in weights)


# --------------------------------------------------------------- counts
@pytest.fixture(scope="module")
def bert_base():
    encoder = TransformerEncoder(vocab_size=30522, hidden_size=768, num_layers=12, num_heads=12,
                                 intermediate_size=3072, max_positions=512)
    encoder.build()
    return encoder


@pytest.mark.slow
def test_trainable_counts_on_bert_base(bert_base):
    enc = bert_base
    head = 768 * 768 + 768 + 768 * 2 + 2  # ClassificationHead(2), layers=2
    assert head == 592_130
    encoder_params = count(enc.weights) - count(enc.pooler.weights)

    head_only = builders.build_head_only_model(enc, num_labels=2)
    full = builders.build_full_finetune_model(enc, num_labels=2)
    st_a = builders.build_adapter_model(enc, "sst", num_labels=2)
    builders.build_adapter_model(enc, "mnli", num_labels=3)
    fusion = builders.build_fusion_model(enc, ["sst", "mnli"], num_labels=2)
    fusion_unfrozen = builders.build_fusion_model(enc, ["sst", "mnli"], num_labels=2, unfreeze_adapters=True,
                                                  name="fusion_unfrozen")

    assert count(head_only.trainable_weights) == head
    assert count(full.trainable_weights) == encoder_params + head
    assert count(st_a.trainable_weights) == 894_528 + head
    assert count(fusion.trainable_weights) == 12 * 1_771_008 + head
    assert count(fusion_unfrozen.trainable_weights) == 12 * 1_771_008 + 2 * 894_528 + head
    # every model keeps its own count however the shared flags were last set
    assert count(st_a.trainable_weights) == 894_528 + head
    for model in (head_only, full, st_a, fusion, fusion_unfrozen):
        total = count(model.trainable_weights) + count(model.non_trainable_weights)
        assert total == count(model.weights)

    mt_a = builders.build_multitask_model(enc, {"qqp": 2, "rte": 2})
    assert count(mt_a.trainable_weights) == 2 * 894_528 + 2 * head

    houlsby = builders.build_adapter_model(enc, "houlsby", num_labels=2, adapter_config="double_seq_bn")
    assert count(houlsby.trainable_weights) == 2 * 894_528 + head

    # the same layer objects: the fusion model runs the adapter that st_a trains
    assert fusion.encoder is st_a.encoder
    assert fusion.encoder.blocks[3].adapter_layers("sst")["output"] is st_a.encoder.blocks[3].adapter_layers("sst")["output"]


def test_builder_errors():
    enc = TransformerEncoder(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    with pytest.raises(ValueError, match="not in the encoder"):
        builders.build_fusion_model(enc, ["a", "b"], num_labels=2)
    with pytest.raises(ValueError, match="got neither"):
        builders.build_head_only_model(enc)
    builders.build_adapter_model(enc, "a", num_labels=2)
    with pytest.raises(ValueError, match="different config"):
        builders.build_adapter_model(enc, "a", num_labels=2, adapter_config="houlsby")
    with pytest.raises(ValueError, match="two or more"):
        builders.build_multitask_model(enc, {"a": 2})


# ------------------------------------------------------- training on MiniLM
@pytest.fixture(scope="module")
def sentiment_batch(minilm_path):
    tokenizer = load_tokenizer(minilm_path)
    tokens = tokenizer(POSITIVE + NEGATIVE, padding=True, return_tensors="np")
    x = {k: tokens[k].astype("int32") for k in ("input_ids", "attention_mask", "token_type_ids")}
    y = np.array([1] * len(POSITIVE) + [0] * len(NEGATIVE))
    return x, y


def fit_losses(model, x, y, stage, epochs=4, learning_rate=None):
    training.compile_for_stage(model, stage, learning_rate=learning_rate)
    history = model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    return history.history["loss"]


@pytest.mark.slow
def test_every_stage_lowers_the_loss_on_minilm(minilm_path, sentiment_batch):
    x, y = sentiment_batch
    encoder = load_encoder(minilm_path, hidden_dropout=0.0, attention_dropout=0.0)
    base_before = ops.convert_to_numpy(encoder.blocks[2].query_dense.kernel).copy()
    results = {}

    head_only = builders.build_head_only_model(encoder, num_labels=2)
    results["head_only"] = fit_losses(head_only, x, y, "head_only")
    assert max_abs(encoder.blocks[2].query_dense.kernel, base_before) == 0.0

    st_a = builders.build_adapter_model(encoder, "sentiment", num_labels=2)
    results["adapter"] = fit_losses(st_a, x, y, "adapter", learning_rate=1e-3)
    assert max_abs(encoder.blocks[2].query_dense.kernel, base_before) == 0.0

    mt_a = builders.build_multitask_model(encoder, {"pos_neg": 2, "neg_pos": 2})
    xm = dict(x, task_id=np.zeros(len(y), "int32"))
    training.compile_for_stage(mt_a, learning_rate=1e-3)
    results["multitask"] = mt_a.fit(xm, y, batch_size=16, epochs=4, shuffle=False, verbose=0).history["loss"]

    builders.build_adapter_model(encoder, "other", num_labels=2)
    adapter_before = ops.convert_to_numpy(encoder.blocks[1].adapter_layers("sentiment")["output"].up.kernel).copy()
    fusion = builders.build_fusion_model(encoder, ["sentiment", "other"], num_labels=2)
    results["fusion"] = fit_losses(fusion, x, y, "fusion", learning_rate=1e-3)
    # stage 2 leaves the stage-1 adapter and the encoder as they were
    assert max_abs(encoder.blocks[1].adapter_layers("sentiment")["output"].up.kernel, adapter_before) == 0.0
    assert max_abs(encoder.blocks[2].query_dense.kernel, base_before) == 0.0
    # the same step adds the fusion regularization: its value is part of the loss
    reg = sum(float(ops.convert_to_numpy(b.output_fusions["sentiment,other"].regularization_loss()))
              for b in encoder.blocks)
    assert reg > 0.0

    full = builders.build_full_finetune_model(encoder, num_labels=2)
    results["full_finetune"] = fit_losses(full, x, y, "full_finetune", learning_rate=1e-4)
    assert max_abs(encoder.blocks[2].query_dense.kernel, base_before) > 0.0

    for stage, losses in results.items():
        print(stage, [round(v, 4) for v in losses])
        assert all(np.isfinite(losses)), stage
        assert losses[-1] < losses[0], (stage, losses)


def test_regularization_is_in_the_training_loss():
    enc = TransformerEncoder(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                             hidden_dropout=0.0, attention_dropout=0.0)
    for n in ("a", "b"):
        enc.add_adapter(n, "seq_bn")
    model = builders.build_fusion_model(enc, ["a", "b"], num_labels=2, fusion_config=dict(regularization_weight=3.0))
    for block in enc.blocks:
        block.output_fusions["a,b"].value_dense.kernel.assign(np.full((16, 16), 0.5, "float32"))
    x = {"input_ids": np.ones((2, 4), "int32")}
    y = np.array([0, 1])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with_reg = model.evaluate(x, y, verbose=0)  # evaluation: no regularization
    trained = model.fit(x, y, epochs=1, verbose=0).history["loss"][0]
    expected_reg = 2 * 3.0 * (16 * 16 * 0.25)  # two blocks, ||I - V||² = 16·0.25 + 240·0.25
    assert abs(trained - with_reg - expected_reg) < 1e-3 * expected_reg


def test_compile_builds_the_optimizer_so_the_training_step_traces_once():
    enc = TransformerEncoder(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32)
    model = builders.build_adapter_model(enc, "a", num_labels=2)
    training.compile_for_stage(model, total_steps=4)
    assert model.optimizer.built
    slots = {v.path for v in model.optimizer.variables}
    for weight in model.trainable_weights:  # AdamW: a momentum and a velocity per stage weight
        assert any(weight.name in s and s.endswith("_momentum") for s in slots), weight.path
    traces = []
    step = model.train_step
    model.train_step = lambda *args: traces.append(1) or step(*args)
    x = {"input_ids": np.ones((8, 5), "int32")}
    model.fit(x, np.zeros(8, "int32"), batch_size=4, epochs=2, verbose=0)
    # Slots made inside the first traced step would make tf.function trace it twice.
    assert len(traces) == 1


# -------------------------------------------------------------- heads
@pytest.mark.parametrize("kind", heads.HEAD_KINDS)
def test_every_head_kind_trains(kind):
    enc = TransformerEncoder(vocab_size=60, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                             hidden_dropout=0.0, attention_dropout=0.0)
    rng = np.random.default_rng(0)
    if kind == "multiple_choice":
        head = heads.make_head(kind, 3, dropout=0.0)
        x = {"input_ids": rng.integers(1, 60, (4, 3, 5)).astype("int32"),
             "attention_mask": np.ones((4, 3, 5), "int32")}
        y = np.array([0, 2, 1, 0])
    else:
        x = {"input_ids": rng.integers(1, 60, (4, 5)).astype("int32"), "attention_mask": np.ones((4, 5), "int32")}
        head = heads.make_head(kind, None if kind == "regression" else 3, dropout=0.0)
        y = {
            "classification": np.array([0, 1, 2, 1]),
            "multilabel": np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0]], "float32"),
            "regression": np.array([0.5, -1.0, 2.0, 0.1], "float32"),
            "token_classification": np.array([[0, 1, 2, -100, -100]] * 4),
        }[kind]
    model = builders.build_adapter_model(enc, "task", head=head)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), **heads.compile_arguments(head))
    out = model(x)
    expected_shape = {"classification": (4, 3), "multilabel": (4, 3), "regression": (4, 1),
                      "multiple_choice": (4, 3), "token_classification": (4, 5, 3)}[kind]
    assert tuple(out.shape) == expected_shape
    losses = model.fit(x, y, epochs=8, verbose=0).history["loss"]
    assert losses[-1] < losses[0], losses


def test_masked_token_loss_ignores_padding():
    loss = heads.MaskedSparseCategoricalCrossentropy()
    logits = np.array([[[2.0, 0.0], [0.0, 2.0], [5.0, -5.0]]], "float32")
    full = float(ops.convert_to_numpy(loss(np.array([[0, 1, -100]]), logits)))
    two = float(ops.convert_to_numpy(keras.losses.sparse_categorical_crossentropy(
        np.array([[0, 1]]), logits[:, :2], from_logits=True)).mean())
    assert abs(full - two) < 1e-6
    acc = heads.MaskedAccuracy()
    acc.update_state(np.array([[0, 0, -100]]), logits)
    assert abs(float(ops.convert_to_numpy(acc.result())) - 0.5) < 1e-6


# ------------------------------------------------------------ optimizer
def test_make_optimizer_defaults_and_linear_decay():
    assert training.DEFAULT_LEARNING_RATES["adapter"] == 1e-4
    assert training.DEFAULT_LEARNING_RATES["fusion"] == 5e-5
    opt = training.make_optimizer("fusion", total_steps=100, warmup_steps=10)
    assert isinstance(opt, keras.optimizers.AdamW)
    schedule = opt.learning_rate if callable(opt.learning_rate) else opt._learning_rate
    values = [float(ops.convert_to_numpy(schedule(s))) for s in (0, 5, 10, 55, 100, 150)]
    np.testing.assert_allclose(values, [0.0, 2.5e-5, 5e-5, 2.5e-5, 0.0, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="stage"):
        training.make_optimizer("stage3")


def test_linear_decay_held_in_optimizer_variables():
    """`LinearDecay.hold_in`: the same rates, from optimizer variables that a new run can reassign."""
    schedule = training.LinearDecay(1e-3, 40)
    optimizer = training.make_optimizer("fusion", learning_rate=schedule)
    plain = [float(ops.convert_to_numpy(training.LinearDecay(1e-3, 40)(s))) for s in (0, 10, 39, 40, 60)]
    assert schedule.hold_in(optimizer) is schedule
    held = [float(ops.convert_to_numpy(schedule(s))) for s in (0, 10, 39, 40, 60)]
    np.testing.assert_allclose(held, plain, rtol=4 * np.finfo(np.float32).eps, atol=0)
    np.testing.assert_allclose(plain, [1e-3, 7.5e-4, 2.5e-5, 0.0, 0.0], rtol=4 * np.finfo(np.float32).eps)
    peak, steps = (v for v in optimizer.variables if v.name in ("peak_learning_rate", "decay_steps"))
    peak.assign(2e-3)
    steps.assign(20.0)
    assert float(ops.convert_to_numpy(schedule(10))) == pytest.approx(1e-3, rel=1e-6)
    with pytest.raises(ValueError, match="warmup_steps=5"):
        training.LinearDecay(1e-3, 40, warmup_steps=5).hold_in(training.make_optimizer("fusion"))


# ----------------------------------------------------------- mixed precision
@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_on_minilm(policy, minilm_path, sentiment_batch):
    keras.config.set_dtype_policy(policy)
    x, y = sentiment_batch
    encoder = load_encoder(minilm_path)
    for name in ("a", "b"):
        encoder.add_adapter(name, "seq_bn")
    model = builders.build_fusion_model(encoder, ["a", "b"], num_labels=2)
    training.compile_for_stage(model, learning_rate=1e-3)
    # One epoch of two steps: float16 matrix products are emulated on most CPUs (the slowest test otherwise).
    losses = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history["loss"]
    assert all(np.isfinite(losses)), losses
    weights = [ops.convert_to_numpy(v) for v in model.trainable_weights]
    assert all(np.all(np.isfinite(w)) for w in weights)


# ------------------------------------------------------------- attentions
def test_fusion_attention_heatmap(tmp_path):
    enc = TransformerEncoder(vocab_size=50, hidden_size=16, num_layers=3, num_heads=2, intermediate_size=32)
    for n in ("sentiment", "nli", "topic"):
        enc.add_adapter(n, "seq_bn")
    model = builders.build_fusion_model(enc, ["sentiment", "nli", "topic"], num_labels=2)
    rng = np.random.default_rng(0)
    mask = np.ones((4, 6), "int32")
    mask[0, 3:] = 0
    batches = [({"input_ids": rng.integers(1, 50, (4, 6)).astype("int32"), "attention_mask": mask},
                np.zeros(4)) for _ in range(3)]
    mean = analysis.collect_fusion_attentions(model, batches, verbose=0)
    assert mean.shape == (3, 3)
    np.testing.assert_allclose(mean.sum(axis=1), 1.0, atol=1e-6)
    # by hand for the first batch only
    one = analysis.collect_fusion_attentions(model, batches[:1], verbose=0)
    p = ops.convert_to_numpy(model.encoder(batches[0][0], adapter_setup=model.adapter_setup)["fusion_attentions"])
    np.testing.assert_allclose(one, (p * mask[None, :, :, None]).sum((1, 2)) / mask.sum(), atol=1e-6)
    path = analysis.plot_fusion_heatmap(mean, model.adapter_setup.adapters, str(tmp_path / "heat.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    callback = analysis.FusionAttentionCallback(batches, str(tmp_path / "cb"))
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(batches[0][0], batches[0][1], epochs=2, verbose=0, callbacks=[callback])
    assert sorted(os.listdir(tmp_path / "cb")) == ["epoch_1.json", "epoch_1.png", "epoch_2.json", "epoch_2.png"]
    # Keras-style validation data, (x, y) arrays, read anew every epoch (a tuple crashed after epoch 1).
    x_all = {k: np.concatenate([b[0][k] for b in batches]) for k in batches[0][0]}
    arrays = analysis.FusionAttentionCallback((x_all, np.zeros(12)), str(tmp_path / "arrays"))
    model.fit(batches[0][0], batches[0][1], epochs=2, verbose=0, callbacks=[arrays])
    assert len(arrays.history) == 2
    np.testing.assert_allclose(analysis.collect_fusion_attentions(model, (x_all, np.zeros(12)), verbose=0,
                                                                  batch_size=5),
                               analysis.collect_fusion_attentions(model, batches, verbose=0), atol=1e-6)
    with pytest.raises(ValueError, match="got an iterator"):
        analysis.FusionAttentionCallback(iter(batches), str(tmp_path / "x"))
    with pytest.raises(ValueError, match="expected a fusion"):
        analysis.collect_fusion_attentions(builders.build_head_only_model(enc, num_labels=2), batches)


@pytest.mark.tensorflow_only
def test_mix_task_datasets_sampling():
    import tensorflow as tf

    from keras_adapterfusion.tasks import mix_task_datasets, sampling_weights

    assert sampling_weights({"a": 30, "b": 10}) == {"a": 0.75, "b": 0.25}
    assert sampling_weights({"a": 30, "b": 10}, "uniform") == {"a": 0.5, "b": 0.5}
    w = sampling_weights({"a": 90, "b": 10}, "temperature", temperature=2.0)
    assert abs(w["a"] - 0.75) < 1e-9

    def ds(n, label):
        x = {"input_ids": tf.ones((n, 4), tf.int32), "attention_mask": tf.ones((n, 4), tf.int32)}
        return tf.data.Dataset.from_tensor_slices((x, tf.fill((n,), label))).batch(2)

    mixed = mix_task_datasets({"a": ds(60, 0), "b": ds(20, 1)}, seed=3)
    ids = [int(x["task_id"][0]) for x, y in mixed]
    labels_match = all(int(y[0]) == t for (x, y), t in zip(mixed, ids))
    assert len(ids) == 40 and labels_match
    assert 20 <= ids.count(0) <= 38
    again = [int(x["task_id"][0]) for x, y in mix_task_datasets({"a": ds(60, 0), "b": ds(20, 1)}, seed=3)]
    assert again == ids
    with pytest.raises(ValueError, match="sampling rule"):
        mix_task_datasets({"a": ds(4, 0)}, rule="greedy")
