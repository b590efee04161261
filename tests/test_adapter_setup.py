"""The adapter set-up value type, the naming rule, unique weight paths, named fusions, MT-A routing."""

import json
import os

import keras
import numpy as np
import pytest
from keras import ops

from conftest import TINY_BERT, max_abs
from keras_adapterfusion import (
    AdapterConfig,
    AdapterModel,
    AdapterSetup,
    ClassificationHead,
    InvalidNameError,
    ParallelModel,
    TransformerEncoder,
    adapterhub,
    builders,
    load_encoder,
    saving,
)
from keras_adapterfusion.names import check_name, path_part


def tiny(num_layers=2):
    enc = TransformerEncoder(vocab_size=60, hidden_size=16, num_layers=num_layers, num_heads=2,
                             intermediate_size=32, max_positions=16, hidden_dropout=0.0, attention_dropout=0.0)
    enc.build()
    return enc


def batch(b=4, t=7, seed=0, vocab=60):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (b, t)).astype("int32")
    mask = np.ones_like(ids)
    mask[1, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def perturb(variables, seed):
    rng = np.random.default_rng(seed)
    for v in variables:
        v.assign(ops.convert_to_numpy(v) + rng.normal(0, 0.3, v.shape).astype("float32"))


# ------------------------------------------------------------ AdapterSetup
@pytest.mark.parametrize("value, kind, adapters, key", [
    ("a", "single", ("a",), None),
    (["a", "b"], "fuse", ("a", "b"), "a,b"),
    ("a,b", "fuse", ("a", "b"), "a,b"),
    (("a", "b", "c"), "fuse", ("a", "b", "c"), "a,b,c"),
    (AdapterSetup.fuse(["a", "b"], name="target"), "fuse", ("a", "b"), "target"),
    (AdapterSetup.per_row(["a", "b"]), "per_row", ("a", "b"), None),
])
def test_every_form_parses_to_one_value_and_round_trips(value, kind, adapters, key):
    setup = AdapterSetup.parse(value)
    assert (setup.kind, setup.adapters) == (kind, adapters)
    if key is not None:
        assert setup.fusion_key == key
    assert AdapterSetup.parse(setup.token()) == setup
    assert AdapterSetup.parse(json.loads(json.dumps(setup.to_config()))) == setup
    assert AdapterSetup.parse(None) is None


@pytest.mark.parametrize("value, message", [
    (["a"], "a fusion needs at least two adapters"),
    (["a", "a"], "repeated names"),
    (3, "expected None, an adapter name"),
    ([], "a fusion needs at least two"),
    ("", "adapter name: got ''"),
    ("..", "adapter name: got '..'"),
    (["a", "x/y"], "contains '/'"),
])
def test_bad_setups_are_refused(value, message):
    with pytest.raises(ValueError, match=message):
        AdapterSetup.parse(value)


# ------------------------------------------------------------ compositions
STACK = AdapterSetup.stack(["lang", "task"])
LANG_FUSE = AdapterSetup.stack(["lang", AdapterSetup.fuse(["a", "b"])])
FUSE_STACK = AdapterSetup.fuse([AdapterSetup.stack(["lang", "a"]), "b"])
AVERAGE = AdapterSetup.average(["a", "b", "c"], weights=[1, 2, 5])
AVERAGE_STACKS = AdapterSetup.average([AdapterSetup.stack(["lang", "a"]), AdapterSetup.stack(["lang", "b"])])


@pytest.mark.parametrize("setup, names, text, hub", [
    (STACK, ("lang", "task"), "Stack(lang, task)", "Stack(lang, task)"),
    (LANG_FUSE, ("lang", "a", "b"), "Stack(lang, Fuse(a, b))", "Stack(lang, Fuse(a, b))"),
    (FUSE_STACK, ("lang", "a", "b"), "Fuse(Stack(lang, a), b)", "Fuse(Stack(lang, a), b)"),
    (AVERAGE, ("a", "b", "c"), "Average(a, b, c; weights 0.125, 0.25, 0.625)", "Average(a, b, c)"),
    (AVERAGE_STACKS, ("lang", "a", "b"), "Average(Stack(lang, a), Stack(lang, b); weights 0.5, 0.5)",
     "Average(Stack(lang, a), Stack(lang, b))"),
    (AdapterSetup.fuse(["a", "b", "c"]).controlled(exclude=["c"], fixed={"a": 0.25}), ("a", "b", "c"),
     "Fuse(a, b, c; without c; fixed a=0.25)", None),
])
def test_compositions_parse_round_trip_and_speak_adapterhub(setup, names, text, hub):
    assert setup.names() == names and str(setup) == text
    assert AdapterSetup.parse(setup.token()) == setup
    assert AdapterSetup.parse(json.loads(json.dumps(setup.to_config()))) == setup
    if hub is None:  # AdapterHub has no such setup
        with pytest.raises(ValueError, match="has no AdapterHub composition dict"):
            setup.to_adapterhub()
        return
    # AdapterHub's own dict form (`AdapterCompositionBlock.to_dict()`), both ways.
    assert AdapterSetup.parse(setup.to_adapterhub()) == setup
    def render(d):
        if d["type"] == "single":
            return d["children"][0]
        return f"{d['type']}({', '.join(render(c) for c in d['children'])})"
    assert render(setup.to_adapterhub()) == hub


def test_a_fusion_over_a_stack_is_keyed_by_its_last_adapter():
    assert FUSE_STACK.fusion_key == "a,b" and FUSE_STACK.member_names() == ("a", "b")
    assert [f.fusion_key for f in LANG_FUSE.fusions()] == ["a,b"] and STACK.fusions() == []
    assert AdapterSetup.stack(["a"]) == AdapterSetup.single("a")
    assert AVERAGE.weights == (0.125, 0.25, 0.625)
    assert AdapterSetup.average(["a", "b"], [2, 6], normalize_weights=False).weights == (2.0, 6.0)


@pytest.mark.parametrize("build, message", [
    (lambda: AdapterSetup.stack([AdapterSetup.stack(["a", "b"]), "c"]), "cannot nest Stack\\(a, b\\) in a 'stack'"),
    (lambda: AdapterSetup.fuse([AdapterSetup.average(["a", "b"]), "c"]), "cannot nest Average"),
    (lambda: AdapterSetup.per_row([AdapterSetup.stack(["a", "b"]), "c"]), "expected adapter names"),
    (lambda: AdapterSetup.stack(["x", AdapterSetup.fuse([AdapterSetup.stack(["a", AdapterSetup.fuse(["b", "c"])]), "d"])]),
     "Fuse\\(b, c\\) is at level 2"),
    (lambda: AdapterSetup.average(["a", "b"], weights=[1.0]), "expected 2 finite numbers"),
    (lambda: AdapterSetup.average(["a", "b"], weights=[1.0, -1.0]), "sum to 0"),
    (lambda: AdapterSetup.average(["a", "b"], weights=[1.0, float("nan")]), "finite numbers"),
    (lambda: AdapterSetup.average(["a"]), "an average needs at least two"),
    (lambda: AdapterSetup.stack(["a", "a"]), "repeated names"),
    (lambda: AdapterSetup(("a", "b"), "stack", weights=(0.5, 0.5)), "only an average has weights"),
    (lambda: AdapterSetup.parse({"type": "BatchSplit", "children": []}), "'BatchSplit' is not supported"),
])
def test_bad_compositions_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def composed_encoder():
    enc = tiny()
    enc.add_adapter("lang", AdapterConfig.from_preset("seq_bn", reduction_factor=4))
    enc.add_adapter("task", "seq_bn")
    enc.add_adapter("a", "seq_bn")
    enc.add_adapter("b", AdapterConfig.from_preset("par_bn", reduction_factor=4))
    enc.add_fusion(["a", "b"])
    perturb([v for n in ("lang", "task", "a", "b") for v in enc.adapter_weights(n)] + enc.fusion_weights("a,b"), 7)
    return enc


def test_the_encoder_checks_every_fusion_of_a_composition():
    enc = composed_encoder()
    with pytest.raises(ValueError, match="no fusion 'lang,b'"):
        enc.check_setup(AdapterSetup.fuse([AdapterSetup.stack(["a", "lang"]), "b"]))
    enc.add_fusion(["a", "b"], name="named")
    with pytest.raises(ValueError, match="fusion 'named' fuses \\['a', 'b'\\]; the setup .* gives it \\['b', 'a'\\]"):
        enc.check_setup(AdapterSetup.fuse(["b", "a"], name="named"))
    with pytest.raises(ValueError, match="unknown adapter\\(s\\) \\['nope'\\]"):
        enc.check_setup(AdapterSetup.stack(["lang", "nope"]))


def test_a_stack_of_one_name_and_a_fusion_inside_a_stack_of_one_run_as_themselves():
    enc = composed_encoder()
    x = batch()
    for setup, same in ((AdapterSetup.stack(["task"]), "task"),
                        (AdapterSetup.stack([AdapterSetup.fuse(["a", "b"])]), ["a", "b"])):
        assert max_abs(enc(x, adapter_setup=setup)["last_hidden_state"],
                       enc(x, adapter_setup=same)["last_hidden_state"]) == 0.0


CONTROLLED = AdapterSetup.stack(["lang", AdapterSetup.fuse(["a", "b"]).controlled(fixed={"a": 0.3})])


@pytest.mark.parametrize("setup", [STACK, LANG_FUSE, FUSE_STACK, AVERAGE_STACKS, CONTROLLED], ids=str)
def test_composed_models_save_load_and_build_symbolically(setup, tmp_path):
    enc = composed_encoder()
    head = ClassificationHead(2, dropout=0.0)
    model = AdapterModel(enc, head, adapter_setup=setup, output_key="logits")
    x = batch()
    out = ops.convert_to_numpy(model(x))
    assert np.all(np.isfinite(out))
    assert max_abs(out, AdapterModel(enc, head, adapter_setup="task", output_key="logits")(x)) > 1e-4
    path = str(tmp_path / "composed.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.adapter_setup == setup
    assert max_abs(loaded(x), out) == 0.0
    # A functional model over the encoder (a symbolic call: the setup travels as its token).
    inputs = {k: keras.Input((None,), dtype="int32", name=k) for k in x}
    outputs = enc(inputs, adapter_setup=setup)
    functional = keras.Model(inputs, outputs["last_hidden_state"])
    assert max_abs(functional(x), enc(x, adapter_setup=setup)["last_hidden_state"]) < 1e-6
    if setup.fusions():
        assert ops.convert_to_numpy(enc(x, adapter_setup=setup)["fusion_attentions"]).shape == (2, 4, 7, 2)


def test_madx_trains_the_task_adapter_on_a_frozen_language_adapter():
    enc = composed_encoder()
    model = builders.build_adapter_model(enc, "new_task", num_labels=2, stacked_on=["lang"])
    assert model.adapter_setup == AdapterSetup.stack(["lang", "new_task"])
    trained = {id(v) for v in model.trainable_weights}
    assert {id(v) for v in enc.adapter_weights("new_task")} <= trained
    assert not {id(v) for v in enc.adapter_weights("lang")} & trained
    before = [ops.convert_to_numpy(v) for v in enc.adapter_weights("lang")]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(batch(), np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    for b, v in zip(before, enc.adapter_weights("lang")):
        np.testing.assert_array_equal(b, ops.convert_to_numpy(v))
    with pytest.raises(ValueError, match="stacked_on names \\['missing'\\]"):
        builders.build_adapter_model(enc, "t2", num_labels=2, stacked_on=["missing"])
    assert "t2" not in enc.adapter_configs


# ------------------------------------------------------------------ names
BAD_NAMES = ["", ".", "..", "a/b", "a\\b", "../up", "a,b", " a", "a\n", 3, None]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n) for n in BAD_NAMES])
def test_one_naming_rule_everywhere_and_nothing_is_left_behind(name, tmp_path):
    enc = tiny()
    with pytest.raises(InvalidNameError):
        check_name(name)
    before = [v.path for v in enc.weights]
    with pytest.raises(InvalidNameError):
        enc.add_adapter(name, "seq_bn")
    assert enc.adapter_configs == {} and all(b.adapter_configs == {} for b in enc.blocks)
    assert [v.path for v in enc.weights] == before
    enc.add_adapter("a", "seq_bn")
    enc.add_adapter("b", "seq_bn")
    if isinstance(name, str):
        with pytest.raises(InvalidNameError):
            enc.add_fusion(["a", "b"], name=name)
        assert enc.fusion_specs == {} and all(b.fusion_specs == {} for b in enc.blocks)
    saving.save_adapter(enc, "a", tmp_path / "a")
    if name is not None:  # load_as=None keeps the stored name
        with pytest.raises(InvalidNameError):
            saving.load_adapter(tiny(), tmp_path / "a", load_as=name)


def test_a_saved_name_that_escapes_is_refused(tmp_path):
    enc = tiny()
    enc.add_adapter("a", "seq_bn")
    saving.save_adapter(enc, "a", tmp_path / "a")
    meta_path = tmp_path / "a" / "module.json"
    meta = json.load(open(meta_path))
    meta["name"] = ".."
    json.dump(meta, open(meta_path, "w"))
    with pytest.raises(ValueError, match=r"field 'name': got '\.\.'"):
        saving.load_adapter(tiny(), tmp_path / "a")


def test_path_part_is_unique_and_tensorflow_safe():
    keys = ["a,b", "a>2c>b", "a_b", "a b", "é", "a.b", "sentiment,nli,topic"]
    parts = [path_part(k) for k in keys]
    assert len(set(parts)) == len(parts)
    import re

    assert all(re.fullmatch(r"[A-Za-z0-9_.>-]+", p) for p in parts)


# ------------------------------------------------------------ weight paths
def test_every_weight_has_a_unique_path_that_names_its_block():
    enc = tiny(num_layers=3)
    enc.add_adapter("s", "seq_bn")
    enc.add_adapter("h", "double_seq_bn")
    enc.add_adapter("t", "seq_bn")
    enc.add_adapter("odd name é", "seq_bn")
    enc.add_fusion(["s", "t"], "dynamic")
    enc.add_fusion(["s", "t", "odd name é"], "static", name="second")
    paths = [v.path for v in enc.weights]
    assert len(paths) == len(set(paths)), [p for p in paths if paths.count(p) > 1]
    assert "encoder/block_2/output_adapter_s/down/kernel" in paths or \
        f"{enc.name}/block_2/output_adapter_s/down/kernel" in paths
    adapter_paths = [p for p in paths if "_adapter_" in p or "_fusion_" in p]
    assert adapter_paths and all(f"/block_{i}/" in p for p in adapter_paths for i in [int(p.split("block_")[1][0])])
    assert any("/mh_adapter_h/" in p for p in paths) and any("/output_fusion_second/" in p for p in paths)


# ---------------------------------------------------------- named fusions
def test_two_named_fusions_over_the_same_adapters_coexist(tmp_path):
    enc = load_encoder(TINY_BERT, hidden_dropout=0.0, attention_dropout=0.0)
    for name in ("a", "b"):
        builders.build_adapter_model(enc, name, num_labels=2)
    perturb(enc.adapter_weights("a") + enc.adapter_weights("b"), 1)
    first = builders.build_fusion_model(enc, ["a", "b"], head=ClassificationHead(2, dropout=0.0), fusion_name="tweets")
    second = builders.build_fusion_model(enc, ["a", "b"], head=ClassificationHead(3, dropout=0.0),
                                         fusion_config="static", fusion_name="news")
    plain = builders.build_fusion_model(enc, ["a", "b"], num_labels=2)
    assert sorted(enc.fusion_specs) == ["a,b", "news", "tweets"]
    perturb(enc.fusion_weights("tweets"), 2)
    perturb(enc.fusion_weights("news"), 3)
    x = {k: v % 1000 for k, v in batch(vocab=1000).items()}
    assert max_abs(first.encoder(x, adapter_setup=first.adapter_setup)["last_hidden_state"],
                   second.encoder(x, adapter_setup=second.adapter_setup)["last_hidden_state"]) > 1e-3
    # Each model trains only its own fusion.
    names = {id(v) for v in enc.fusion_weights("tweets")}
    assert names & {id(v) for v in first.trainable_weights} == names
    assert not names & {id(v) for v in second.trainable_weights} and not names & {id(v) for v in plain.trainable_weights}
    # Native and AdapterHub round trips keep the names.
    saving.save_fusion(enc, "tweets", tmp_path / "native")
    adapterhub.save_fusion(enc, "news", tmp_path / "hub")
    meta = json.load(open(tmp_path / "hub" / "adapter_fusion_config.json"))
    assert meta["name"] == "a,b" and meta["adapter_names"] == ["a", "b"] and meta["fusion_name"] == "news"
    other = load_encoder(TINY_BERT, hidden_dropout=0.0, attention_dropout=0.0)
    for name in ("a", "b"):
        saving.save_adapter(enc, name, tmp_path / name)
        saving.load_adapter(other, tmp_path / name)
    assert saving.load_fusion(other, tmp_path / "native") == AdapterSetup.fuse(["a", "b"], "tweets")
    assert adapterhub.load_fusion(other, tmp_path / "hub") == AdapterSetup.fuse(["a", "b"], "news")
    with pytest.raises(ValueError, match="already has the fusion 'news'"):
        adapterhub.load_fusion(other, tmp_path / "hub")
    assert adapterhub.load_fusion(other, tmp_path / "hub", name="news2").fusion_key == "news2"
    for key in ("tweets", "news"):
        for mine, theirs in zip(enc.fusion_weights(key), other.fusion_weights(key)):
            np.testing.assert_array_equal(ops.convert_to_numpy(mine), ops.convert_to_numpy(theirs))
    # A .keras file keeps the named fusion.
    path = str(tmp_path / "first.keras")
    first.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.adapter_setup == AdapterSetup.fuse(["a", "b"], "tweets")
    assert max_abs(loaded.predict(x, verbose=0), first.predict(x, verbose=0)) == 0.0


def test_a_named_fusion_must_exist_to_run():
    enc = tiny()
    enc.add_adapter("a", "seq_bn")
    enc.add_adapter("b", "seq_bn")
    enc.add_fusion(["a", "b"])
    with pytest.raises(ValueError, match="no fusion 'other'"):
        AdapterModel(enc, None, adapter_setup=AdapterSetup.fuse(["a", "b"], "other"))


# -------------------------------------------------------------- MT-A routing
def test_multitask_rows_equal_their_single_task_models():
    enc = tiny()
    model = builders.build_multitask_model(enc, {"a": 2, "b": 3, "c": 4}, adapter_config="seq_bn")
    perturb([v for t in ("a", "b", "c") for v in enc.adapter_weights(t)], 4)
    for head in model.heads.values():
        head.dropout_layer.rate = 0.0
    x = batch(b=6)
    task_id = np.array([2, 0, 1, 1, 0, 2])
    mixed = ops.convert_to_numpy(model(dict(x, task_id=task_id)))
    assert mixed.shape == (6, 4)
    for i, task in enumerate(model.tasks):
        single = AdapterModel(enc, model.heads[task], adapter_setup=task, output_key="logits")
        expected = ops.convert_to_numpy(single(x))
        rows = task_id == i
        n = model.heads[task].num_labels
        np.testing.assert_allclose(mixed[rows, :n], expected[rows], atol=2e-6, rtol=0)
        assert np.all(mixed[rows, n:] == -1e9)
    # The adapters really differ: a row routed to another task gives other logits.
    other = ops.convert_to_numpy(model(dict(x, task_id=np.zeros(6, "int64"))))
    assert max_abs(other[:, :2], mixed[:, :2]) > 1e-4


def test_multitask_training_on_mixed_batches_updates_every_task():
    enc = tiny()
    model = builders.build_multitask_model(enc, {"a": 2, "b": 2})
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {t: [ops.convert_to_numpy(v).copy() for v in enc.adapter_weights(t)] for t in ("a", "b")}
    x = dict(batch(b=4), task_id=np.array([0, 1, 0, 1]))
    model.fit(x, np.array([0, 1, 1, 0]), batch_size=4, epochs=1, verbose=0)
    for t in ("a", "b"):
        assert any(not np.array_equal(b, ops.convert_to_numpy(v)) for b, v in zip(before[t], enc.adapter_weights(t)))


# ---------------------------------------------- Parallel (with fusions: adapters #268)
def test_parallel_setups_run_every_member_on_its_own_copy():
    enc = composed_encoder()
    x = batch()
    members = [AdapterSetup.fuse(["a", "b"]), "a", "b", STACK]
    out = enc(x, adapter_setup=AdapterSetup.parallel(members))
    hidden = ops.convert_to_numpy(out["last_hidden_state"])
    assert hidden.shape[0] == 4 * len(members)
    for i, member in enumerate(members):
        alone = ops.convert_to_numpy(enc(x, adapter_setup=member)["last_hidden_state"])
        assert max_abs(hidden[4 * i:4 * (i + 1)], alone) <= 1e-6, member
    np.testing.assert_allclose(ops.convert_to_numpy(out["fusion_attentions"]),
                               ops.convert_to_numpy(enc(x, adapter_setup=["a", "b"])["fusion_attentions"]),
                               atol=1e-6, rtol=0)
    assert AdapterSetup.parse(AdapterSetup.parallel(members).to_adapterhub()) == AdapterSetup.parallel(members)
    with pytest.raises(ValueError, match="cannot nest Parallel"):
        AdapterSetup.stack(["lang", AdapterSetup.parallel(["a", "b"])])


def test_parallel_model_gives_the_fusion_and_each_adapter_in_one_pass(tmp_path):
    """adapters issue #268: one call returns the fused prediction and each adapter's own head's prediction."""
    enc = composed_encoder()
    heads = {t: ClassificationHead(n, dropout=0.0, name=f"head_{t}") for t, n in (("target", 3), ("a", 2), ("b", 2))}
    models = {"target": AdapterModel(enc, heads["target"], adapter_setup=["a", "b"]),
              "a": AdapterModel(enc, heads["a"], adapter_setup="a"),
              "b": AdapterModel(enc, heads["b"], adapter_setup="b"),
              "again": AdapterModel(enc, ClassificationHead(2, dropout=0.0, name="head_again"), adapter_setup="a")}
    for m in models.values():
        perturb(m.head.weights, 11)
    parallel = ParallelModel.from_models(models)
    assert parallel.adapter_setup == AdapterSetup.parallel([AdapterSetup.fuse(["a", "b"]), "a", "b"])
    x = batch()
    got = parallel(x)
    assert sorted(got) == sorted(models)
    for task, model in models.items():
        assert max_abs(got[task], model(x)["logits"]) <= 1e-6, task
    path = str(tmp_path / "parallel.keras")
    parallel.save(path)
    loaded = keras.saving.load_model(path)
    assert all(max_abs(loaded(x)[t], got[t]) == 0.0 for t in models)
    with pytest.raises(ValueError, match="use ParallelModel"):
        AdapterModel(enc, None, adapter_setup=AdapterSetup.parallel(["a", "b"]))
    with pytest.raises(ValueError, match="expected adapters to run"):
        ParallelModel(enc, {"t": heads["a"]}, {"t": None})
