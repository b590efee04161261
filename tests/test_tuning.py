"""Fusion search with keras-tuner (`keras_adapterfusion.tuning` and `keras-adapterfusion tune`).

What is proven here: the space checks every field and maps values to the fusion configs it documents; a
trial's model runs on its own copy of the encoder (the loaded encoder never gains a fusion, nor is it read
from disk again); a set-up gives the same result whichever trials ran before it; a search continues where
it stopped (an interrupted trial runs again, none runs twice, none once `max_trials` is reached); trials that
differ only in learning rate compile nothing new (JAX's persistent cache); the command line writes its
reports and refuses bad arguments with one line; and a chief with two workers share the trials out.
"""

import csv
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import BACKEND, TINY_BERT
from keras_adapterfusion import cli, tuning
from keras_adapterfusion.configs import FusionConfig

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "distributed_search.py")
# Everything fixed but the learning rate: every trial compiles the same programs.
FIXED = dict(epochs=[2], batch_size=[8], presets=["dynamic"], value_initialized=[True],
             regularization_weight=[0.01], query_before_ln=[False], residual_before=[False], dropout=[0.1])


def token_data(n, seed, length=10):
    """Tokenized examples (as `experiments.prepare` gives them) whose label is readable from the first token."""
    rng = np.random.default_rng(seed)
    ids = [np.concatenate([[2], rng.integers(5, 1000, rng.integers(3, length)), [3]]).astype("int32")
           for _ in range(n)]
    encoded = {"input_ids": ids, "attention_mask": [np.ones_like(i) for i in ids],
               "token_type_ids": [np.zeros_like(i) for i in ids]}
    return encoded, np.array([int(i[1] % 2) for i in ids])


def encoder_with(names):
    from keras_adapterfusion import load_encoder

    encoder = load_encoder(TINY_BERT)
    for name in names:
        encoder.add_adapter(name)
    return encoder


def snapshot(encoder):
    return {v.path: np.array(v.numpy()) for v in encoder.weights}


# ------------------------------------------------------------------ the space
@pytest.mark.backend_independent
@pytest.mark.parametrize("fields, field", [
    ({"learning_rate": [1e-3, 1e-4]}, "learning_rate"),
    ({"learning_rate": [0, 1e-4]}, "learning_rate"),
    ({"presets": ["dynamic", "fast"]}, "presets"),
    ({"presets": []}, "presets"),
    ({"value": [1, 0]}, "value"),
    ({"regularization_weight": [-0.1]}, "regularization_weight"),
    ({"dropout": [1.0]}, "dropout"),
    ({"batch_size": [16, 16]}, "batch_size"),
    ({"epochs": [0]}, "epochs"),
    ({"patience": 0}, "patience"),
    ({"min_adapters": 0}, "min_adapters"),
    ({"adapter_subsets": [["a", "a"]]}, "adapter_subsets"),
])
def test_space_names_the_bad_field_its_value_and_what_is_expected(fields, field):
    with pytest.raises(ValueError) as error:
        tuning.FusionSearchSpace.from_dict(fields)
    message = str(error.value)
    assert message.startswith(f"FusionSearchSpace.{field}: got ") and "expected" in message
    assert repr(next(iter(fields.values()))) in message


@pytest.mark.backend_independent
def test_space_json_subsets_and_unknown_fields():
    space = tuning.FusionSearchSpace.from_json('{"presets": ["static"], "batch_size": [16], "patience": null}')
    assert space.presets == ("static",) and space.batch_size == (16,) and space.patience is None
    assert tuning.FusionSearchSpace.from_json(space.to_json()) == space
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['lr'\]"):
        tuning.FusionSearchSpace.from_dict({"lr": [1e-4, 1e-3]})
    with pytest.raises(ValueError, match="not JSON"):
        tuning.FusionSearchSpace.from_json("{presets: dynamic}")
    default = tuning.FusionSearchSpace()
    assert default.subsets(["a", "b", "c"]) == ["a,b,c", "a,b", "a,c", "b,c"]  # the full set first: the default
    assert tuning.FusionSearchSpace(min_adapters=1).subsets(["a", "b"]) == ["a,b", "a", "b"]
    assert tuning.FusionSearchSpace(adapter_subsets=[["c", "a"]]).subsets(["a", "b", "c"]) == ["a,c"]
    with pytest.raises(ValueError, match="min_adapters: got 2; expected at most the 1 adapters"):
        default.subsets(["a"])
    with pytest.raises(ValueError, match=r"adapter_subsets.*\['z'\] not among them"):
        tuning.FusionSearchSpace(adapter_subsets=[["a", "z"]]).subsets(["a", "b"])
    with pytest.raises(ValueError, match="an explicit list of subsets: 10 adapters make 1013"):
        tuning.FusionSearchSpace(min_adapters=2).subsets([f"a{i}" for i in range(10)])


@pytest.mark.backend_independent
def test_declared_values_map_to_the_documented_fusion_configs():
    import keras_tuner

    space = tuning.FusionSearchSpace()
    hp = keras_tuner.HyperParameters()
    setup = space.declare(hp, ["a", "b", "c"])
    assert [p.name for p in hp.space] == ["learning_rate", "preset", "value", "value_initialized",
                                          "regularization_weight", "query_before_ln", "residual_before", "dropout",
                                          "adapters", "batch_size", "epochs"]
    # The defaults: the paper's set-up (dynamic over every adapter, 5e-5, AdapterHub's 0.01 regularization).
    assert setup.adapters == ("a", "b", "c") and setup.learning_rate == 5e-5 and setup.epochs == 10
    assert setup.fusion_config == FusionConfig.from_preset("dynamic", dropout_prob=0.1)
    assert not hp.is_active("value") and hp.is_active("value_initialized")
    hp.values["preset"] = "static"
    assert hp.is_active("value") and not hp.is_active("regularization_weight")
    # Hyperband sets the epochs: no `epochs` hyperparameter then.
    other = keras_tuner.HyperParameters()
    space.declare(other, ["a", "b"], tuner_sets_epochs=True)
    assert "epochs" not in [p.name for p in other.space]
    # One value: fixed, still recorded.
    fixed = keras_tuner.HyperParameters()
    tuning.FusionSearchSpace(presets=("static",)).declare(fixed, ["a", "b"])
    assert type(fixed._hps["preset"][0]).__name__ == "Fixed"

    static_v = tuning.fusion_config_from_values({"preset": "static", "value": True, "dropout": 0.0})
    assert (static_v.value, static_v.value_initialized, static_v.regularization, static_v.dropout_prob) == \
        (True, False, False, 0.0)
    off = tuning.fusion_config_from_values({"preset": "dynamic", "regularization_weight": 0.0,
                                            "value_initialized": False, "query_before_ln": True,
                                            "residual_before": True})
    assert (off.value, off.value_initialized, off.regularization, off.query_before_ln, off.residual_before) == \
        (True, False, False, True, True)
    values = {"preset": "dynamic", "learning_rate": 1e-4}
    assert tuning.trial_seed(0, values) == tuning.trial_seed(0, dict(values, **{"tuner/epochs": 3}))
    assert tuning.trial_seed(0, values) != tuning.trial_seed(1, values)


@pytest.mark.backend_independent
def test_importing_tuning_imports_neither_keras_nor_keras_tuner_nor_tensorflow():
    code = ("import sys, keras_adapterfusion, keras_adapterfusion.tuning as t\n"
            "t.FusionSearchSpace(); keras_adapterfusion.tuning.fusion_config_from_values({'preset': 'static'})\n"
            "print(sorted(m for m in ('keras', 'keras_tuner', 'tensorflow', 'jax') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


# ------------------------------------------------------------ trial models
def test_each_trial_model_runs_on_its_own_copy_of_the_encoder():
    import keras_tuner

    encoder = encoder_with("abc")
    before = snapshot(encoder)
    hypermodel = tuning.FusionHyperModel(encoder, ["a", "b", "c"], num_labels=2,
                                         space=tuning.FusionSearchSpace(min_adapters=1))
    models = []
    for adapters, preset in (("a,c", "static"), ("a,b,c", "dynamic"), ("b", "dynamic")):
        hp = keras_tuner.HyperParameters()
        hypermodel.declare_hyperparameters(hp)
        hp.values.update(adapters=adapters, preset=preset, value=False)
        hp.ensure_active_values()  # drops the values the preset makes inactive (as an oracle does)
        models.append(hypermodel.build(hp))
    fused, full, single = models
    assert len({id(encoder), *(id(m.encoder) for m in models)}) == 4
    assert list(fused.encoder.adapter_configs) == ["a", "c"] and list(fused.encoder.fusion_specs) == ["a,c"]
    assert fused.encoder.fusion_specs["a,c"]["config"].value is False  # static
    assert list(full.encoder.fusion_specs) == ["a,b,c"] and full.encoder.fusion_specs["a,b,c"]["config"].value
    assert list(single.encoder.adapter_configs) == ["b"] and single.encoder.fusion_specs == {}
    assert single.adapter_setup.kind == "single"
    # The trainable weights: the fusion (Q, K per block; V too for dynamic) and the new head; one adapter: the head.
    head = 4  # two dense layers
    assert len(fused.trainable_weights) == 2 * 4 + head and len(full.trainable_weights) == 2 * 5 + head
    assert len(single.trainable_weights) == head
    # The copies hold the encoder's values; the encoder itself is as it was: no fusion, the same weights.
    copied = {v.path: np.asarray(v.numpy()) for v in full.encoder.weights}
    for path, value in before.items():
        if path in copied:
            np.testing.assert_array_equal(copied[path], value)
    assert encoder.fusion_specs == {} and list(encoder.adapter_configs) == ["a", "b", "c"]
    assert snapshot(encoder).keys() == before.keys()
    # Validation predictions are made in whole batches of one shape (70 examples: 3 batches of 32, the last
    # topped up); the padding rows do not change the results.
    from keras_adapterfusion.training.runs import predict_logits

    encoded, _ = token_data(70, 2)
    batched, whole = predict_logits(full, encoded, 32), predict_logits(full, encoded, 128)
    assert batched.shape == whole.shape == (70, 2)
    np.testing.assert_allclose(batched, whole, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "jax", reason="on TensorFlow, test_cli_tune_writes_reports_and_continues searches")
def test_search_continues_where_it_stopped_and_trials_are_independent(tmp_path, monkeypatch):
    import keras
    import keras_tuner

    from keras_adapterfusion import backbones
    from keras_adapterfusion.training import builders

    def no_loading(*args, **kwargs):
        raise AssertionError("the encoder was loaded from disk during the search")

    encoder = encoder_with("ab")
    before = snapshot(encoder)
    monkeypatch.setattr(builders, "load_encoder", no_loading)
    monkeypatch.setattr(backbones, "load_encoder", no_loading)
    train, validation = token_data(24, 0), token_data(12, 1)
    cache = tmp_path / "cache"

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    def run(max_trials, callbacks=()):
        hypermodel = tuning.FusionHyperModel(encoder, ["a", "b"], num_labels=2, space=FIXED)
        return tuning.search(hypermodel, train, validation, tuner="random", max_trials=max_trials,
                             directory=tmp_path / "search", compilation_cache_dir=cache, verbose=0,
                             callbacks=callbacks)

    first = run(1)
    assert first.trials_run == ["0"]
    entries = len(os.listdir(cache))
    with pytest.raises(KeyboardInterrupt):  # trial 1 is stopped in its first epoch
        run(3, callbacks=[Interrupt()])
    second = run(3)  # trial 1 runs again, then trial 2
    assert second.trials_run == ["1", "2"]
    assert run(3).trials_run == []  # max_trials reached: nothing runs
    rows = tuning.trial_rows(second)
    assert [r["trial"] for r in rows] == ["0", "1", "2"] and {r["status"] for r in rows} == {"COMPLETED"}
    assert len({r["learning_rate"] for r in rows}) == 3 and all(r["epochs_run"] == 2 for r in rows)
    assert rows[0]["val_accuracy"] == tuning.trial_rows(first)[0]["val_accuracy"]
    # Trials 1 and 2 differ from trial 0 only in the learning rate, a value: no new compiled program.
    assert len(os.listdir(cache)) == entries
    # The encoder gained no fusion and kept its weights.
    assert encoder.fusion_specs == {}
    after = snapshot(encoder)
    assert all(np.array_equal(after[p], before[p]) for p in before)
    # Trial 2's set-up alone, in a fresh hypermodel: the same result as after trials 0 and 1.
    alone = tuning.FusionHyperModel(encoder, ["a", "b"], num_labels=2, space=FIXED)
    hp = keras_tuner.HyperParameters()
    alone.declare_hyperparameters(hp)
    hp.values.update(second.oracle.trials["2"].hyperparameters.values)
    result = alone.fit(hp, alone.build(hp), train, validation, verbose=0)
    assert result["val_accuracy"] == rows[2]["val_accuracy"]
    assert abs(result["val_loss"] - second.oracle.trials["2"].metrics.get_last_value("val_loss")) < 1e-6


# ---------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def tune_inputs(tmp_path_factory):
    """The tiny encoder with a tokenizer, three saved adapters and a small data set of one's own."""
    from test_without_tensorflow import tiny_encoder_with_tokenizer

    from keras_adapterfusion import load_encoder
    from keras_adapterfusion.formats import native as saving

    root = tmp_path_factory.mktemp("tune")
    encoder_dir = tiny_encoder_with_tokenizer(root / "encoder")
    encoder = load_encoder(encoder_dir)
    for name in ("movie", "news", "subj"):
        encoder.add_adapter(name)
        saving.save_adapter(encoder, name, root / name)
    rows = [("i love this film", "pos"), ("awful movie", "neg"), ("a great day", "pos"), ("i hate it", "neg")] * 6
    for split, part in (("train", rows), ("dev", rows[:8])):
        with open(root / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps({"text": t, "label": y}) + "\n" for t, y in part)
    return root


def tune_argv(root, out, *more):
    return ["tune", "--adapters", str(root / "movie"), str(root / "news"), str(root / "subj"), "--encoder",
            str(root / "encoder"), "--train-file", str(root / "train.jsonl"), "--validation-file",
            str(root / "dev.jsonl"), "--max-length", "16", "--output-dir", str(out), *more]


@pytest.mark.slow
@pytest.mark.backend_independent
def test_cli_tune_writes_reports_and_continues(tune_inputs, tmp_path, capsys):
    out = tmp_path / "tune"
    argv = tune_argv(tune_inputs, out, "--tuner", "random", "--max-trials", "1", "--epochs", "2")
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "ran 1 new trial (1 in all; --max-trials reached)" in printed and "Running Trial #1" in printed
    assert sorted(os.listdir(out)) == sorted(["search", "tune.json", *tuning.REPORT_FILES])
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["trial"] for r in rows] == ["0"] and rows[0]["status"] == "COMPLETED" and rows[0]["epochs_run"] == "2"
    for column in ("learning_rate", "preset", "adapters", "batch_size", "val_accuracy", "seconds",
                   "first_epoch_seconds", "later_epoch_seconds"):
        assert all(r[column] != "" for r in rows), column
    assert all(float(r["seconds"]) > 0 and 0 <= float(r["val_accuracy"]) <= 1 for r in rows)
    best = json.load(open(out / "best_trial.json"))
    assert best["score"] == max(float(r["val_accuracy"]) for r in rows)
    assert "| trial | status |" in open(out / "trials.md").read()
    assert open(out / "trials.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # `fuse --fusion-config` reads best_fusion_config.json as the best trial's config.
    config_path = str(out / "best_fusion_config.json")
    parsed = cli.build_parser().parse_args(["fuse", "--adapters", "x", "y", "--task", "vader_tweets",
                                            "--output-dir", "z", "--fusion-config", config_path])
    assert parsed.fusion_config == tuning.fusion_config_from_values(best["values"])
    # Again on the same directory: the search is continued, and with --max-trials reached nothing runs.
    assert cli.main(argv) == 0
    assert "ran 0 new trials (1 in all; --max-trials reached)" in capsys.readouterr().out
    with open(out / "trials.csv") as f:
        assert list(csv.DictReader(f)) == rows
    # Other arguments on the same directory: one line, exit 2; nothing changed.
    assert cli.main(tune_argv(tune_inputs, out, "--tuner", "hyperband", "--max-trials", "1", "--epochs", "2")) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "holds a search with other arguments (tuner)" in error


@pytest.mark.backend_independent
def test_cli_tune_argument_errors_are_one_line(tune_inputs, tmp_path, capsys, monkeypatch):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    (tmp_path / "space.json").write_text('{"batch_size": [0]}')
    root = tune_inputs
    cases = [
        (tune_argv(root, tmp_path / "o", "--max-trials", "0"), "--max-trials: got '0'"),
        (tune_argv(root, tmp_path / "o", "--tuner", "grid"), "--tuner: invalid choice: 'grid'"),
        (tune_argv(root, tmp_path / "o", "--space", str(tmp_path / "space.json")),
         "FusionSearchSpace.batch_size: got [0]; expected a non-empty list of integers >= 1"),
        (tune_argv(root, tmp_path / "o", "--space", str(tmp_path / "none.json")), "(no such file)"),
        (["tune", "--adapters", str(root / "movie"), "--encoder", str(root / "encoder"), "--task", "vader_tweets",
          "--output-dir", str(tmp_path / "o")], "needs at least 2 adapters (the space's min_adapters); got 1"),
        (tune_argv(root, tmp_path / "foreign"), "holds files this package did not write (e.g. ['notes.txt'])"),
        (["tune", "--adapters", str(root / "movie"), str(root / "movie"), "--encoder", str(root / "encoder"),
          "--task", "vader_tweets", "--output-dir", str(tmp_path / "o")], "both hold an adapter named 'movie'"),
        (["tune", "--adapters", str(root / "movie"), str(root / "news"), "--encoder", str(root / "encoder"),
          "--train-file", str(root / "train.jsonl"), "--output-dir", str(tmp_path / "o")],
         "has no validation split; tune measures its objective there (pass --validation-file)"),
    ]
    for argv, expected in cases:
        assert cli.main(argv) == 2, argv
        error = capsys.readouterr().err
        assert error.startswith("keras-adapterfusion: error: ") and error.count("\n") == 1, error
        assert expected in error, error
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.delenv("KERASTUNER_ORACLE_PORT", raising=False)
    assert cli.main(tune_argv(root, tmp_path / "o")) == 2
    assert "KERASTUNER_ORACLE_IP is set but KERASTUNER_ORACLE_PORT is not" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


# ---------------------------------------------------------- distributed
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.backend_independent
def test_chief_and_two_workers_share_the_trials_out(tmp_path):
    """keras-tuner's chief/worker mode on localhost: three processes, on JAX, TensorFlow blocked in each."""
    port, trials = free_port(), 4
    # XLA's fastest compilation (5 times faster on the CPU; the programs run a little slower): the trials are tiny.
    env = dict(os.environ, KERAS_BACKEND="jax", KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(port),
               XLA_FLAGS="--xla_backend_optimization_level=0")

    def start(tuner_id):
        log = open(tmp_path / f"{tuner_id}.log", "w")
        return subprocess.Popen([sys.executable, SCRIPT, str(tmp_path / tuner_id), str(trials),
                                 str(tmp_path / "cache")], env=dict(env, KERASTUNER_TUNER_ID=tuner_id),
                                stdout=log, stderr=subprocess.STDOUT)

    started = time.time()
    processes = {name: start(name) for name in ("chief", "tuner0", "tuner1")}
    try:
        for name, process in processes.items():
            process.wait(timeout=240)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    logs = {name: open(tmp_path / f"{name}.log").read() for name in processes}
    for name, process in processes.items():
        assert process.returncode == 0, f"{name}:\n{logs[name][-3000:]}"
    reports = {name: json.loads(logs[name].strip().splitlines()[-1]) for name in processes}
    ran = {name: reports[name]["trials_run"] for name in ("tuner0", "tuner1")}
    assert all(ran.values()), ran  # both workers got trials
    assert not set(ran["tuner0"]) & set(ran["tuner1"])  # none ran twice
    assert sorted(ran["tuner0"] + ran["tuner1"]) == sorted(reports["chief"]["completed"])
    assert len(reports["chief"]["completed"]) == trials and reports["chief"]["trials_run"] == []
    # The chief recorded every trial (its own project holds them); the workers' projects hold none.
    def recorded(name):
        project = tmp_path / name / "search"
        return sorted(d for d in os.listdir(project) if os.path.isfile(project / d / "trial.json"))

    assert len(recorded("chief")) == trials and recorded("tuner0") == recorded("tuner1") == []
    for name in ("tuner0", "tuner1"):
        assert reports[name]["tensorflow"] == [] and reports[name]["backend"] == "jax"
    print(f"distributed search: {trials} trials in {time.time() - started:.1f} s; {ran}")
