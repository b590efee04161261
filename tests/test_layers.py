"""Every layer and head through one battery (tests/layer_battery.py), plus the rules the battery cannot see.

Runs on TensorFlow and JAX. `run_layer_battery` checks, per case: the config (symmetric with `__init__`,
`from_config` and JSON round trips), a symbolic call against the eager one, mixed precision against
float32 with the same weights, one `fit` step, and a `.keras` round trip.
"""

import keras
import numpy as np
import pytest
from keras import ops

from conftest import BACKEND, max_abs
from layer_battery import LayerCase, run_layer_battery
from keras_adapterfusion import (
    AdapterConfig,
    AdapterFusion,
    BottleneckAdapter,
    ClassificationHead,
    FusionConfig,
    LoRAConfig,
    TransformerBlock,
    TransformerEncoder,
)
from keras_adapterfusion.layers import LoRA, MultipleChoiceHead, TextEmbeddings, TokenClassificationHead
from keras_adapterfusion.layers.activations import get_activation

H, LAYERS = 32, 2
# The battery's shapes: hidden 16, batch 3, 6 tokens.
BH, B, T = 16, 3, 6

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
    "par_bn": AdapterConfig.from_preset("par_bn"),
    "scaled_par_bn_ln_after": AdapterConfig.from_preset("scaled_par_bn", ln_after=True, mh_adapter=True),
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


# ------------------------------------------------------------------ battery cases
def _normal(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _mask():
    mask = np.ones((B, T), "int32")
    mask[1, 4:] = 0
    mask[2, 2:] = 0
    return mask


def _ids(vocab=40, seed=0, pad=None):
    ids = np.random.default_rng(seed).integers(2, vocab, size=(B, T)).astype("int32")
    if pad is not None:
        ids[1, 4:] = pad
    return ids


def _adapter_kwargs(config):
    return dict(bottleneck_size=config.bottleneck_size(BH, 0), non_linearity=config.non_linearity,
                ln_before=config.ln_before, ln_after=config.ln_after,
                adapter_residual_before_ln=config.adapter_residual_before_ln, scaling=config.scaling,
                init_weights=config.init_weights, dropout=config.dropout)


def _fusion_kwargs(config, **extra):
    fields = config.to_dict()
    fields["dropout_prob"] = 0.1 if fields["dropout_prob"] is None else fields["dropout_prob"]
    return {**fields, **extra}


# Key biases have an exact gradient of zero (in attention and in fusion, `q · b_K` is the same for every
# key and cancels in the softmax): a fit step moves them by rounding noise or not at all.
KEY_BIAS = ("key/bias",)


def _block_kwargs(**extra):
    return dict(hidden_size=BH, num_heads=2, intermediate_size=32, hidden_dropout=0.1, attention_dropout=0.1,
                **extra)


def _freeze(*layers_of):
    """`prepare_fit` that freezes the layers `layers_of(layer)` returns (a training stage)."""

    def prepare(layer):
        for getter in layers_of:
            for sub in getter(layer):
                sub.trainable = False

    return prepare


def _block_base(block):
    return block.base_layers()


def _block_adapters(block):
    return [a for slot in (block.mh_adapters, block.output_adapters) for a in slot.values()]


def _adapter_changes_block_output(block, inputs, outputs):
    assert set(outputs) == {"hidden_states"}  # no fusion: no attention entries
    plain = block(**inputs)["hidden_states"]
    assert max_abs(outputs["hidden_states"], plain) > 1e-3


def _fusion_probabilities(slots):
    def check(block, inputs, outputs):
        mh, out = outputs.get("mh_fusion_attention"), outputs["fusion_attention"]
        assert (mh is not None) == (slots == "double_seq_bn")
        for probs in (mh, out) if mh is not None else (out,):
            p = ops.convert_to_numpy(probs)
            assert p.shape == (B, T, 3)
            np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)

    return check


# The cases whose fit step is compiled (`tf.function` / `jax.jit`): at least one of every class, and the
# fusion variants that change state or add a loss inside the step. The others fit eagerly: the same
# gradients, without a trace that costs 1 to 17 s per case (TensorFlow, 2 CPU cores).
COMPILED_FIT = {
    "adapter-ln_before_after", "fusion-dynamic", "fusion-temperature", "block-adapter-seq_bn",
    "block-fusion-double_seq_bn-dynamic", "embeddings-roberta", "head-classification", "head-multiple_choice",
    "head-token_classification", "encoder-plain", "lora",
}


def battery_cases():
    cases = []
    # Bottleneck adapters: every distinct layer among the adapter variants.
    seen = []
    for variant, config in sorted(ADAPTER_VARIANTS.items()):
        kwargs = _adapter_kwargs(config)
        if kwargs in seen:
            continue
        seen.append(kwargs)
        cases.append(LayerCase(f"adapter-{variant}", BottleneckAdapter, kwargs,
                               {"inputs": _normal(B, T, BH), "residual": _normal(B, T, BH, seed=1)}))
    # Fusion layers: every variant, and the reference form.
    fusion_inputs = {"query": _normal(B, T, BH), "adapter_outputs": _normal(B, T, 3, BH, seed=1),
                     "residual": _normal(B, T, BH, seed=2)}
    # The dynamic one also trains under both mixed policies (float16 with loss scaling), as its float32
    # softmax and its regularization loss meet float16 there; whole models train in mixed precision
    # in test_stages.py (MiniLM with fusion).
    for variant, config in sorted(FUSION_VARIANTS.items()):
        cases.append(LayerCase(f"fusion-{variant}", AdapterFusion, _fusion_kwargs(config), fusion_inputs,
                               updated_in_training=("temperature",), may_stay=KEY_BIAS,
                               fit_mixed_precision=variant == "dynamic"))
    cases.append(LayerCase("fusion-dynamic-reference_form", AdapterFusion,
                           _fusion_kwargs(FUSION_VARIANTS["dynamic"], reference_form=True), fusion_inputs,
                           may_stay=KEY_BIAS))
    # Blocks: with each adapter variant (stage 1: only the adapter trains) and with a fusion of each
    # variant over adapters in either slot preset (stage 2: only the fusion trains).
    block_inputs = {"hidden_states": _normal(B, T, BH, seed=1), "attention_mask": _mask()}
    for variant, config in sorted(ADAPTER_VARIANTS.items()):
        cases.append(LayerCase(
            f"block-adapter-{variant}", TransformerBlock, _block_kwargs(adapters={"task": config.to_dict()}),
            block_inputs, {"adapter_setup": "task"}, prepare_fit=_freeze(_block_base), may_stay=KEY_BIAS,
            check=_adapter_changes_block_output,
        ))
    for slots in ("seq_bn", "double_seq_bn"):
        adapters = {n: AdapterConfig.from_preset(slots, reduction_factor=r).to_dict()
                    for n, r in (("a", 4), ("b", 8), ("c", 2))}
        for variant, config in sorted(FUSION_VARIANTS.items()):
            fusions = {"a,b,c": {"adapters": ["a", "b", "c"], "config": config.to_dict(), "name": None}}
            # Stage 2 trains only the fusion; a fusion without weights lets the adapters train through it.
            frozen = (_block_base, _block_adapters) if config.query or config.key or config.value else (_block_base,)
            cases.append(LayerCase(
                f"block-fusion-{slots}-{variant}", TransformerBlock,
                _block_kwargs(adapters=adapters, fusions=fusions), block_inputs, {"adapter_setup": ["a", "b", "c"]},
                prepare_fit=_freeze(*frozen), updated_in_training=("temperature",), may_stay=KEY_BIAS,
                check=_fusion_probabilities(slots),
            ))
    # LoRA: the layer, and a block whose projections a LoRA adapts (stage 1: only the LoRA trains).
    cases.append(LayerCase("lora", LoRA, dict(units=12, r=4, alpha=8.0, dropout=0.1, init_weights="bert"),
                           {"inputs": _normal(B, T, BH)}))
    lora = LoRAConfig(r=2, alpha=4, attn_matrices=["q", "k", "v"], intermediate_lora=True, output_lora=True,
                      attention_output_lora=True, init_weights="bert").to_dict()
    cases.append(LayerCase(
        "block-lora", TransformerBlock, _block_kwargs(adapters={"task": lora}), block_inputs,
        {"adapter_setup": "task"}, prepare_fit=_freeze(_block_base), may_stay=KEY_BIAS,
        check=_adapter_changes_block_output,
    ))
    # A fusion of parallel adapters (their own residual form, see AdapterSlot.pre_forward).
    parallel = {n: AdapterConfig.from_preset("par_bn", reduction_factor=r).to_dict()
                for n, r in (("a", 4), ("b", 8), ("c", 2))}
    cases.append(LayerCase(
        "block-fusion-par_bn-dynamic", TransformerBlock,
        _block_kwargs(adapters=parallel,
                      fusions={"a,b,c": {"adapters": ["a", "b", "c"], "config": FUSION_VARIANTS["dynamic"].to_dict(),
                                         "name": None}}),
        block_inputs, {"adapter_setup": ["a", "b", "c"]}, prepare_fit=_freeze(_block_base, _block_adapters),
        may_stay=KEY_BIAS, check=_fusion_probabilities("seq_bn"),
    ))
    # Embeddings.
    cases.append(LayerCase("embeddings-absolute", TextEmbeddings,
                           dict(vocab_size=40, hidden_size=BH, max_positions=T, type_vocab_size=2),
                           {"input_ids": _ids(), "token_type_ids": (_ids() % 2).astype("int32")}))
    cases.append(LayerCase("embeddings-roberta", TextEmbeddings,
                           dict(vocab_size=40, hidden_size=BH, max_positions=T + 2, type_vocab_size=1,
                                pad_token_id=1, position_style="roberta", layer_norm_epsilon=1e-5, dropout=0.0),
                           {"input_ids": _ids(pad=1)}))
    cases.append(LayerCase("embeddings-no-token-types", TextEmbeddings,
                           dict(vocab_size=40, hidden_size=BH, max_positions=T, type_vocab_size=0),
                           {"input_ids": _ids()}))
    # Heads: each kind.
    hidden = _normal(B, T, BH)
    cases += [
        LayerCase("head-classification", ClassificationHead, dict(num_labels=3, label_names=["neg", "neu", "pos"]),
                  {"hidden_states": hidden}),
        LayerCase("head-classification-pooler-1layer", ClassificationHead,
                  dict(num_labels=2, layers=1, use_pooler=True), {"hidden_states": hidden,
                                                                   "pooled_output": _normal(B, BH, seed=3)}),
        LayerCase("head-multilabel", ClassificationHead,
                  dict(num_labels=4, head_type="multilabel_classification", activation="relu", dropout=0.0),
                  {"hidden_states": hidden}),
        LayerCase("head-regression", ClassificationHead,
                  dict(num_labels=1, head_type="regression", layers=3, use_bias=False), {"hidden_states": hidden}),
        LayerCase("head-multiple_choice", MultipleChoiceHead,
                  dict(num_choices=3, activation="gelu", label_names=["A", "B", "C"]),
                  {"hidden_states": _normal(B * 3, T, BH)}),
        LayerCase("head-token_classification", TokenClassificationHead,
                  dict(num_labels=5, layers=2, label_names=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]),
                  {"hidden_states": hidden}),
    ]
    # Encoders: plain with the pooler and all hidden states; a RoBERTa-style one with an adapter left
    # out of block 1 (stage 1); one (of one block, to keep it quick) fusing adapters in both slots.
    encoder = dict(vocab_size=40, hidden_size=BH, num_layers=2, num_heads=2, intermediate_size=32, max_positions=T + 2)
    encoder_inputs = {"inputs": {"input_ids": _ids(), "attention_mask": _mask(),
                                 "token_type_ids": np.zeros((B, T), "int32")}}
    houlsby = {n: AdapterConfig.from_preset("double_seq_bn", reduction_factor=4).to_dict() for n in ("a", "b")}
    cases += [
        LayerCase("encoder-plain", TransformerEncoder, encoder, encoder_inputs, {"output_hidden_states": True},
                  may_stay=KEY_BIAS),
        LayerCase("encoder-roberta-adapter-leave_out", TransformerEncoder,
                  dict(encoder, position_style="roberta", pad_token_id=1, type_vocab_size=1, use_pooler=False,
                       model_type="roberta", adapters={"task": ADAPTER_VARIANTS["per_block_reduction"].to_dict()}),
                  {"inputs": {"input_ids": _ids(pad=1), "attention_mask": _mask()}}, {"adapter_setup": "task"},
                  prepare_fit=_freeze(lambda e: [e.embeddings],
                                      lambda e: [layer for b in e.blocks for layer in b.base_layers()]),
                  may_stay=KEY_BIAS),
        LayerCase("encoder-fusion-double_seq_bn", TransformerEncoder,
                  dict(encoder, num_layers=1, adapters=houlsby,
                       fusions={"a,b": {"adapters": ["a", "b"], "config": FusionConfig().to_dict(), "name": None}}),
                  encoder_inputs, {"adapter_setup": ["a", "b"]}, may_stay=KEY_BIAS),
        # DistilBERT's layout (no token-type table, no dropout after the attention projection) and
        # ELECTRA's (narrower embeddings, projected), each fusing two adapters.
        LayerCase("encoder-distilbert-fusion", TransformerEncoder,
                  dict(encoder, num_layers=1, type_vocab_size=0, use_pooler=False, attention_output_dropout=False,
                       model_type="distilbert", adapters={n: AdapterConfig().to_dict() for n in ("a", "b")},
                       fusions={"a,b": {"adapters": ["a", "b"], "config": FusionConfig().to_dict(), "name": None}}),
                  {"inputs": {"input_ids": _ids(), "attention_mask": _mask()}}, {"adapter_setup": ["a", "b"]},
                  may_stay=KEY_BIAS),
        LayerCase("encoder-electra-embedding-projection", TransformerEncoder,
                  dict(encoder, embedding_size=BH // 2, use_pooler=False, model_type="electra"),
                  encoder_inputs, {"output_hidden_states": True}, may_stay=KEY_BIAS),
        # ALBERT's: one block run twice (shared weights and adapters), narrower embeddings, no dropout
        # after the feed-forward, the mh slot's inputs in AdapterHub's ALBERT order; fusing two Houlsby adapters.
        LayerCase("encoder-albert-shared-block-fusion", TransformerEncoder,
                  dict(encoder, num_layers=1, depth=2, embedding_size=BH // 2, feed_forward_dropout=False,
                       swap_attention_slot_inputs=True, model_type="albert", adapters=houlsby,
                       fusions={"a,b": {"adapters": ["a", "b"], "config": FusionConfig().to_dict(), "name": None}}),
                  encoder_inputs, {"adapter_setup": ["a", "b"]}, may_stay=KEY_BIAS),
        # DeBERTa-v3's: disentangled attention over 4 log-bucketed relative positions (normalized relative
        # embeddings), no position or token-type table, padding zeroed in the embeddings; fusing two adapters.
        LayerCase("encoder-deberta-relative-fusion", TransformerEncoder,
                  dict(encoder, num_layers=1, type_vocab_size=0, position_style="none", use_pooler=False,
                       zero_padding_embeddings=True, model_type="deberta-v2",
                       relative_attention={"position_buckets": 4, "max_relative_positions": 8,
                                           "types": ["c2p", "p2c"], "normalize": True},
                       adapters={n: AdapterConfig().to_dict() for n in ("a", "b")},
                       fusions={"a,b": {"adapters": ["a", "b"], "config": FusionConfig().to_dict(), "name": None}}),
                  {"inputs": {"input_ids": _ids(), "attention_mask": _mask()}}, {"adapter_setup": ["a", "b"]},
                  may_stay=KEY_BIAS),
    ]
    for case in cases:
        case.fit_run_eagerly = case.id not in COMPILED_FIT
    return cases


BATTERY_CASES = battery_cases()


def test_battery_covers_every_layer_and_head():
    classes = {case.cls for case in BATTERY_CASES}
    assert classes == {BottleneckAdapter, LoRA, AdapterFusion, TransformerBlock, TextEmbeddings, ClassificationHead,
                       MultipleChoiceHead, TokenClassificationHead, TransformerEncoder}
    head_types = {c.init_kwargs.get("head_type", "classification")
                  for c in BATTERY_CASES if c.cls is ClassificationHead}
    assert head_types == {"classification", "multilabel_classification", "regression"}
    ids = [case.id for case in BATTERY_CASES]
    assert len(ids) == len(set(ids))
    for variant in ADAPTER_VARIANTS:
        assert f"block-adapter-{variant}" in ids
    for variant in FUSION_VARIANTS:
        assert f"fusion-{variant}" in ids
        assert {f"block-fusion-seq_bn-{variant}", f"block-fusion-double_seq_bn-{variant}"} <= set(ids)
    assert COMPILED_FIT <= set(ids)
    assert any(case.fit_mixed_precision for case in BATTERY_CASES)
    assert {case.cls for case in BATTERY_CASES if not case.fit_run_eagerly} == classes


@pytest.mark.parametrize("case", BATTERY_CASES, ids=lambda case: case.id)
def test_layer_battery(case, tmp_path):
    run_layer_battery(case, tmp_path)


def test_battery_catches_a_config_that_drops_an_argument():
    """What `MultipleChoiceHead.get_config` once did (before f865cd0): drop `use_bias`, so a head built
    without a bias came back from its config with one. The battery names the argument."""

    @keras.saving.register_keras_serializable(package="keras_adapterfusion_tests")
    class DroppingHead(MultipleChoiceHead):
        def get_config(self):
            config = super().get_config()
            config.pop("use_bias")
            return config

    case = LayerCase("dropping", DroppingHead, dict(num_choices=2, use_bias=False),
                     {"hidden_states": _normal(2 * B, T, BH)})
    with pytest.raises(AssertionError, match=r"drops __init__ arguments \['use_bias'\]"):
        run_layer_battery(case, None)


def test_battery_catches_a_wrong_symbolic_shape():
    @keras.saving.register_keras_serializable(package="keras_adapterfusion_tests")
    class WrongShapeHead(ClassificationHead):
        def compute_output_shape(self, hidden_states_shape, pooled_output_shape=None):
            return (hidden_states_shape[0], self.num_labels + 1)

    case = LayerCase("wrong", WrongShapeHead, dict(num_labels=2), {"hidden_states": _normal(B, T, BH)})
    with pytest.raises(AssertionError, match="symbolic vs eager"):
        run_layer_battery(case, None)


# ------------------------------------------------ variants inside the encoder
@pytest.mark.parametrize("variant", sorted(ADAPTER_VARIANTS))
def test_adapter_variant_in_encoder(variant):
    """Weight count across blocks (`leave_out`, per-block factors), config, symbolic shapes, and the
    encoder unchanged while the adapter is off."""
    config = ADAPTER_VARIANTS[variant]
    encoder = tiny_encoder()
    x = batch()
    base = encoder(x)["last_hidden_state"]
    encoder.add_adapter("task", config)
    perturb(encoder.adapter_weights("task"))
    assert TransformerEncoder.from_config(encoder.get_config()).adapter_configs["task"] == config
    n = sum(int(np.prod(v.shape)) for v in encoder.adapter_weights("task"))
    assert n == adapter_param_count(config, H, LAYERS)
    sym = {k: keras.Input((None,), dtype="int32", name=k) for k in x}
    assert tuple(encoder(sym, adapter_setup="task")["last_hidden_state"].shape) == (None, None, H)
    y = encoder(x, adapter_setup="task")["last_hidden_state"]
    assert np.all(np.isfinite(ops.convert_to_numpy(y)))
    assert max_abs(y, base) > 1e-3
    assert max_abs(encoder(x)["last_hidden_state"], base) == 0.0


@pytest.mark.parametrize("variant", sorted(FUSION_VARIANTS))
@pytest.mark.parametrize("slots", ["seq_bn", "double_seq_bn"])
def test_fusion_variant_in_encoder(variant, slots):
    """Fusion weight count, attention shapes (symbolic and eager) and probabilities over the adapters."""
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
    else:
        assert "mh_fusion_attentions" not in out


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


@pytest.fixture
def x64():
    """64-bit floats for the duration of a test: on JAX, `jax_enable_x64` on, then back as it was.

    Without it JAX silently makes float64 arrays float32 (with a warning), and a "float64" test runs in
    float32. TensorFlow always has float64.
    """
    if BACKEND != "jax":
        yield
        return
    import jax

    previous = bool(jax.config.read("jax_enable_x64"))
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", sorted(FUSION_VARIANTS))
def test_fast_fusion_equals_reference_form(variant, dtype, request):
    """Outputs, attentions and gradients (weights and inputs) of the two forms agree.

    In float64 the agreement is 1e-10 (the forms are algebraically equal); in
    float32 it is 1e-5, relative to the gradient's size for gradients, since the
    two forms sum in a different order. The float64 case runs in float64 on every
    backend (JAX with `jax_enable_x64`, see the `x64` fixture) and checks that it does.
    """
    if dtype == "float64":
        request.getfixturevalue("x64")
    fast, ref = _fusion_pair(FUSION_VARIANTS[variant], dtype=dtype)
    tol = 1e-5 if dtype == "float32" else 1e-10
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 5, 16)).astype(dtype)
    u = rng.normal(size=(2, 5, 4, 16)).astype(dtype)
    r = rng.normal(size=(2, 5, 16)).astype(dtype)
    out_f, p_f = fast(q, u, r)
    out_r, p_r = ref(q, u, r)
    for v in fast.weights + ref.weights:
        assert keras.backend.standardize_dtype(v.dtype) == dtype, v.path
    for x in (out_f, p_f, out_r, p_r):
        assert ops.convert_to_numpy(x).dtype == np.dtype(dtype)
    assert max_abs(out_f, out_r) < tol
    assert max_abs(p_f, p_r) < tol
    grads_f, grads_r = _grads(fast, [q, u, r]), _grads(ref, [q, u, r])
    assert len(grads_f) == len(grads_r) == len(fast.trainable_variables) + 3
    for gf, gr in zip(grads_f, grads_r):
        assert gf.dtype == gr.dtype == np.dtype(dtype)
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
    out = block(x, adapter_setup="pf")["hidden_states"]
    # recompute by hand from the block's parts
    att = block.hidden_dropout_layer(block.attention_output_dense(block._attention(x, None, False)))
    x1 = block.attention_norm(att + x)
    h = block.output_dense(get_activation(block.hidden_act)(block.intermediate_dense(x1)))
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




@pytest.mark.parametrize("fixed", [(0.25, float("nan"), float("nan")), (0.2, 0.3, 0.5)])
def test_fixed_fusion_weights_by_hand(fixed):
    """Fixed attention weights (AdapterSetup.controlled): the fast form and the literal form against numpy."""
    adapters = [BottleneckAdapter(bottleneck_size=s, init_weights="houlsby") for s in (4, 8, 2)]
    fusion = AdapterFusion.from_fusion_config("dynamic", dropout_prob=0.0)
    x = keras.random.normal((2, 5, BH), seed=3)
    for layer in adapters + [fusion]:
        layer.build(x.shape)
    for v in [w for layer in adapters + [fusion] for w in layer.weights]:
        v.assign(v + keras.random.normal(v.shape, stddev=0.3, seed=7))
    ups = np.stack([ops.convert_to_numpy(a(x, up_only=True)) for a in adapters], axis=2)
    _, learned = fusion(x, ups, x)
    learned = ops.convert_to_numpy(learned)
    is_fixed = ~np.isnan(fixed)
    free = np.where(is_fixed, 0.0, learned)
    free = free / free.sum(-1, keepdims=True) if not is_fixed.all() else free
    expected = np.where(is_fixed, np.nan_to_num(fixed), free * (1.0 - np.nansum(fixed)))
    mix = np.einsum("btn,btnh->bth", expected, ups) @ ops.convert_to_numpy(fusion.value_dense.kernel)
    want = mix + ops.convert_to_numpy(x)
    # float32 (eps 1.2e-7), sums of at most 16 terms: 1e-5 is ~80 eps, far below what a wrong weight gives.
    for out, probs in (fusion(x, ups, x, fixed=fixed), fusion.fuse_adapters(x, x, adapters, x, fixed=fixed)):
        np.testing.assert_allclose(ops.convert_to_numpy(probs), expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(ops.convert_to_numpy(out), want, rtol=1e-5, atol=1e-5)
