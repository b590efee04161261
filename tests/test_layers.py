"""One battery over every adapter and fusion variant (runs on TensorFlow and JAX)."""

import os

import keras
import numpy as np
import pytest
from keras import ops

from conftest import BACKEND, max_abs
from keras_adapterfusion import (
    AdapterConfig,
    AdapterFusion,
    AdapterModel,
    BottleneckAdapter,
    ClassificationHead,
    FusionConfig,
    TransformerBlock,
    TransformerEncoder,
)

H, LAYERS = 32, 2

ADAPTER_VARIANTS = {
    "seq_bn": AdapterConfig.from_preset("seq_bn"),
    "double_seq_bn": AdapterConfig.from_preset("double_seq_bn"),
    "ln_before_after": AdapterConfig(ln_before=True, ln_after=True, reduction_factor=4),
    "adapter_residual_before_ln": AdapterConfig(ln_after=True, adapter_residual_before_ln=True),
    "post_add": AdapterConfig(residual_before_ln="post_add", non_linearity="gelu"),
    "residual_after_ln": AdapterConfig(residual_before_ln=False, original_ln_after=False),
    "scaling_learned": AdapterConfig(scaling="learned", dropout=0.1),
    "scaling_channel": AdapterConfig(scaling="channel", init_weights="houlsby"),
    "scaling_float": AdapterConfig(scaling=2.0, init_weights="mam_adapter"),
    "per_block_reduction": AdapterConfig(reduction_factor={"0": 2, "default": 8}, leave_out=[1]),
}

FUSION_VARIANTS = {
    "dynamic": FusionConfig.from_preset("dynamic"),
    "static": FusionConfig.from_preset("static"),
    "residual_before": FusionConfig(residual_before=True),
    "query_before_ln": FusionConfig(query_before_ln=True),
    "value_after_softmax": FusionConfig(value_before_softmax=False, value_initialized=False),
    "temperature": FusionConfig(temperature=True),
    "no_query_no_key": FusionConfig(query=False, key=False, value=False, regularization=False),
}


def tiny_encoder(**kwargs):
    encoder = TransformerEncoder(
        vocab_size=50, hidden_size=H, num_layers=LAYERS, num_heads=4, intermediate_size=64,
        max_positions=20, hidden_dropout=0.0, attention_dropout=0.0, **kwargs,
    )
    encoder.build()
    return encoder


def perturb(variables, scale=0.3, seed=0):
    """Move weights away from their (often zero or identity) start, so tests mean something."""
    rng = np.random.default_rng(seed)
    for v in variables:
        v.assign(np.asarray(v.numpy() if hasattr(v, "numpy") else v) + rng.normal(0, scale, v.shape).astype("float32"))


def batch(b=3, t=7, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, size=(b, t)).astype("int32")
    mask = np.ones((b, t), "int32")
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def adapter_param_count(config, hidden, layers):
    total = 0
    for i in range(layers):
        if not config.in_block(i):
            continue
        b = config.bottleneck_size(hidden, i)
        per = hidden * b + b + b * hidden + hidden
        per += 2 * hidden * (config.ln_before + config.ln_after)
        per += {"learned": 1, "channel": hidden}.get(config.scaling, 0)
        total += per * len(config.slots())
    return total


def fusion_param_count(config, hidden):
    return (hidden * hidden + hidden) * (config.query + config.key) + hidden * hidden * config.value


# ------------------------------------------------------------ adapter battery
@pytest.mark.parametrize("variant", sorted(ADAPTER_VARIANTS))
def test_adapter_battery(variant, tmp_path):
    config = ADAPTER_VARIANTS[variant]
    encoder = tiny_encoder()
    x = batch()
    base = encoder(x)["last_hidden_state"]
    encoder.add_adapter("task", config)
    perturb(encoder.adapter_weights("task"))

    # config round trip of the layers that were created
    for block in encoder.blocks:
        for layer in block.adapter_layers("task").values():
            clone = BottleneckAdapter.from_config(layer.get_config())
            assert clone.get_config() == layer.get_config()
    enc_clone = TransformerEncoder.from_config(encoder.get_config())
    assert enc_clone.adapter_configs["task"] == config

    # trainable count of the adapter
    n = sum(int(np.prod(v.shape)) for v in encoder.adapter_weights("task"))
    assert n == adapter_param_count(config, H, LAYERS)

    # symbolic call
    sym = {k: keras.Input((None,), dtype="int32", name=k) for k in x}
    out = encoder(sym, adapter_setup="task")
    assert tuple(out["last_hidden_state"].shape) == (None, None, H)

    # eager call: the adapter changes the output, and is finite
    y = encoder(x, adapter_setup="task")["last_hidden_state"]
    assert np.all(np.isfinite(ops.convert_to_numpy(y)))
    assert max_abs(y, base) > 1e-3
    # with adapter off, the encoder is unchanged
    assert max_abs(encoder(x)["last_hidden_state"], base) == 0.0

    # one fit step changes the adapter weights and only them
    model = AdapterModel(encoder, ClassificationHead(2, dropout=0.0), adapter_setup="task", output_key="logits")
    adapter_ids = {id(v) for v in encoder.adapter_weights("task")}
    for w in encoder.weights:
        w.trainable = id(w) in adapter_ids
    before = [ops.convert_to_numpy(v) for v in encoder.adapter_weights("task")]
    frozen_before = ops.convert_to_numpy(encoder.embeddings.word_embeddings.embeddings)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    hist = model.fit(x, np.array([0, 1, 1]), epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    after = [ops.convert_to_numpy(v) for v in encoder.adapter_weights("task")]
    assert any(max_abs(a, b) > 0 for a, b in zip(after, before))
    assert max_abs(encoder.embeddings.word_embeddings.embeddings, frozen_before) == 0.0

    # .keras round trip gives identical outputs
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert max_abs(loaded(x), model(x)) < 1e-6


@pytest.mark.parametrize("variant", sorted(FUSION_VARIANTS))
@pytest.mark.parametrize("slots", ["seq_bn", "double_seq_bn"])
def test_fusion_battery(variant, slots, tmp_path):
    config = FUSION_VARIANTS[variant]
    encoder = tiny_encoder()
    for i, name in enumerate(["a", "b", "c"]):
        encoder.add_adapter(name, AdapterConfig.from_preset(slots, reduction_factor=[4, 8, 2][i]))
        perturb(encoder.adapter_weights(name), seed=i)
    key = encoder.add_fusion(["a", "b", "c"], config)
    assert key == "a,b,c"
    perturb(encoder.fusion_weights(key), scale=0.1, seed=7)
    x = batch()

    n = sum(int(np.prod(v.shape)) for v in encoder.fusion_weights(key) if v.trainable)
    per_block = fusion_param_count(config, H) * (2 if slots == "double_seq_bn" else 1)
    assert n == per_block * LAYERS

    sym = {k: keras.Input((None,), dtype="int32", name=k) for k in x}
    out = encoder(sym, adapter_setup=["a", "b", "c"])
    assert tuple(out["fusion_attentions"].shape) == (LAYERS, None, None, 3)

    out = encoder(x, adapter_setup=["a", "b", "c"])
    p = ops.convert_to_numpy(out["fusion_attentions"])
    assert p.shape == (LAYERS, 3, 7, 3)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    if slots == "double_seq_bn":
        assert ops.convert_to_numpy(out["mh_fusion_attentions"]).shape == (LAYERS, 3, 7, 3)

    model = AdapterModel(encoder, ClassificationHead(3, dropout=0.0), adapter_setup=["a", "b", "c"],
                         output_key="logits")
    fusion_vars = [v for v in encoder.fusion_weights(key) if v.trainable]
    for w in encoder.trainable_weights:
        w.trainable = any(w is f for f in fusion_vars)
    before = [ops.convert_to_numpy(v) for v in fusion_vars]
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    hist = model.fit(x, np.array([0, 1, 2]), epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    after = [ops.convert_to_numpy(v) for v in fusion_vars]
    if fusion_vars:
        assert any(max_abs(a, b) > 0 for a, b in zip(after, before))

    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert max_abs(loaded(x), model(x)) < 1e-6


# ---------------------------------------------------- fast form == reference form
def _fusion_pair(config, h=16, dtype="float32"):
    fast = AdapterFusion.from_fusion_config(config, dropout_prob=0.0, dtype=dtype)
    ref = AdapterFusion.from_fusion_config(config, dropout_prob=0.0, reference_form=True, dtype=dtype)
    q_shape, u_shape = (2, 5, h), (2, 5, 4, h)
    # The same global seed before each build gives both dropout layers the same seed.
    keras.utils.set_random_seed(5)
    fast.build(q_shape, u_shape, q_shape)
    keras.utils.set_random_seed(5)
    ref.build(q_shape, u_shape, q_shape)
    perturb(fast.weights, scale=0.2, seed=3)
    for a, b in zip(ref.weights, fast.weights):
        a.assign(b)
    return fast, ref


def _grads(layer, inputs):
    """Gradients of a scalar function of the layer output w.r.t. its trainable weights and inputs."""
    weights = layer.trainable_variables
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(v) for v in inputs]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            out, probs = layer(*tensors)
            loss = tf.reduce_sum(tf.sin(out)) + tf.reduce_sum(probs * probs)
        g = tape.gradient(loss, list(weights) + tensors)
        return [np.asarray(x) for x in g]
    import jax
    import jax.numpy as jnp

    def f(w, xs):
        (out, probs), _ = layer.stateless_call(w, [v.value for v in layer.non_trainable_variables], *xs)
        return jnp.sum(jnp.sin(out)) + jnp.sum(probs * probs)

    gw, gx = jax.grad(f, argnums=(0, 1))([v.value for v in weights], [jnp.asarray(v) for v in inputs])
    return [np.asarray(x) for x in list(gw) + list(gx)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", sorted(FUSION_VARIANTS))
def test_fast_fusion_equals_reference_form(variant, dtype):
    """Outputs, attentions and gradients (weights and inputs) of the two forms agree.

    In float64 the agreement is 1e-10 (the forms are algebraically equal); in
    float32 it is 1e-5, relative to the gradient's size for gradients, since the
    two forms sum in a different order.
    """
    if dtype == "float64" and keras.backend.standardize_dtype(ops.ones((), "float64").dtype) != "float64":
        pytest.skip(f"{BACKEND} runs without 64-bit floats (jax_enable_x64 is off)")
    fast, ref = _fusion_pair(FUSION_VARIANTS[variant], dtype=dtype)
    tol = 1e-5 if dtype == "float32" else 1e-10
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 5, 16)).astype(dtype)
    u = rng.normal(size=(2, 5, 4, 16)).astype(dtype)
    r = rng.normal(size=(2, 5, 16)).astype(dtype)
    out_f, p_f = fast(q, u, r)
    out_r, p_r = ref(q, u, r)
    assert max_abs(out_f, out_r) < tol
    assert max_abs(p_f, p_r) < tol
    grads_f, grads_r = _grads(fast, [q, u, r]), _grads(ref, [q, u, r])
    assert len(grads_f) == len(grads_r) == len(fast.trainable_variables) + 3
    for gf, gr in zip(grads_f, grads_r):
        assert gf.shape == gr.shape
        assert max_abs(gf, gr) < tol * max(1.0, float(np.max(np.abs(gr))))


def test_fast_fusion_matches_reference_under_score_dropout():
    """Same seed, same dropout mask: the q·b term is kept so the two forms agree in training too."""
    config = FusionConfig(dropout_prob=0.5)
    fast, ref = _fusion_pair(config)
    rng = np.random.default_rng(1)
    q, u, r = (rng.normal(size=s).astype("float32") for s in ((2, 5, 16), (2, 5, 4, 16), (2, 5, 16)))
    out_f, _ = fast(q, u, r, training=True)
    out_r, _ = ref(q, u, r, training=True)
    assert max_abs(out_f, out_r) < 1e-5


def test_fusion_regularization_added_in_same_step():
    fusion = AdapterFusion.from_fusion_config(FusionConfig(regularization_weight=0.5))
    q = np.ones((1, 2, 8), "float32")
    fusion.build(q.shape, (1, 2, 3, 8), q.shape)
    v = fusion.value_dense.kernel
    v.assign(np.eye(8, dtype="float32") + 0.1)
    fusion(q, np.ones((1, 2, 3, 8), "float32"), q, training=False)
    assert len(fusion.losses) == 0
    fusion(q, np.ones((1, 2, 3, 8), "float32"), q, training=True)
    assert len(fusion.losses) == 1
    assert abs(float(ops.convert_to_numpy(fusion.losses[0])) - 0.5 * 64 * 0.01) < 1e-5


def test_value_initialized_near_identity():
    fusion = AdapterFusion.from_fusion_config("dynamic")
    fusion.build((1, 1, 6), (1, 1, 2, 6), (1, 1, 6))
    k = ops.convert_to_numpy(fusion.value_dense.kernel)
    np.testing.assert_allclose(np.diag(k), 1.0)
    np.testing.assert_allclose(k[~np.eye(6, dtype=bool)], 1e-6)


def test_temperature_anneals_in_training_only():
    fusion = AdapterFusion.from_fusion_config(FusionConfig(temperature=True))
    q = np.ones((1, 2, 8), "float32")
    u = np.ones((1, 2, 3, 8), "float32")
    fusion(q, u, q)
    assert float(ops.convert_to_numpy(fusion.temperature_value)) == 50.0
    fusion(q, u, q, training=True)
    assert abs(float(ops.convert_to_numpy(fusion.temperature_value)) - 49.95) < 1e-5


# ----------------------------------------------------------------- block rules
def test_block_semantics_match_design_formulas():
    """Pfeiffer: LN(W_up relu(W_down LN(h+x)) + h + x); Houlsby: LN(W_up swish(W_down h) + h + x)."""
    block = TransformerBlock(hidden_size=16, num_heads=2, intermediate_size=32, hidden_dropout=0.0,
                             attention_dropout=0.0)
    block.add_adapter("pf", "seq_bn")
    block.build((None, None, 16))
    perturb(block.adapter_layers("pf")["output"].weights)
    ad = block.adapter_layers("pf")["output"]
    x = np.random.default_rng(0).normal(size=(2, 4, 16)).astype("float32")
    out, _, _ = block(x, adapter_setup="pf")
    # recompute by hand from the block's parts
    att = block.hidden_dropout_layer(block.attention_output_dense(block._attention(x, None, False)))
    x1 = block.attention_norm(att + x)
    h = block.output_dense(block._act(block.intermediate_dense(x1)))
    a = block.output_norm(h + x1)
    up = ad.up(ops.relu(ad.down(a)))
    expected = block.output_norm(up + h + x1)
    assert max_abs(out, expected) < 1e-5


def test_adapter_can_be_added_after_build_and_unknown_setup_errors():
    encoder = tiny_encoder()
    encoder.add_adapter("late", "seq_bn")
    assert all(v.shape is not None for v in encoder.adapter_weights("late"))
    with pytest.raises(ValueError, match="unknown adapter"):
        encoder({"input_ids": np.ones((1, 3), "int32")}, adapter_setup="nope")
    with pytest.raises(ValueError, match="no fusion"):
        encoder.add_adapter("other", "seq_bn")
        encoder({"input_ids": np.ones((1, 3), "int32")}, adapter_setup=["late", "other"])
    with pytest.raises(ValueError, match="already exists"):
        encoder.add_adapter("late", "seq_bn")


def test_fused_adapters_must_share_slot_flags():
    encoder = tiny_encoder()
    encoder.add_adapter("a", "seq_bn")
    encoder.add_adapter("b", "houlsby")
    with pytest.raises(ValueError) as e:
        encoder.add_fusion(["a", "b"])
    assert "mh_adapter" in str(e.value) and "a:" in str(e.value)
    assert not encoder.fusion_specs
    assert all(not b.fusion_specs for b in encoder.blocks)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    keras.config.set_dtype_policy(policy)
    encoder = tiny_encoder()
    for n in ("a", "b"):
        encoder.add_adapter(n, "seq_bn")
    encoder.add_fusion(["a", "b"])
    model = AdapterModel(encoder, ClassificationHead(2), adapter_setup=["a", "b"], output_key="logits")
    x = batch()
    logits = model(x)
    assert keras.backend.standardize_dtype(logits.dtype) == policy.split("_")[1]
    assert encoder.blocks[0].output_fusions["a,b"].value_dense.kernel.dtype == "float32"
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    hist = model.fit(x, np.array([0, 1, 1]), epochs=2, verbose=0)
    assert all(np.isfinite(hist.history["loss"]))
