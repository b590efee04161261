"""The command line: every command's happy path and error paths (real MiniLM, small slices of offline data)."""

import json
import os

import numpy as np
import pytest

from keras_adapterfusion.io.directories import MANIFEST
from keras_adapterfusion import cli

pytestmark = [pytest.mark.tensorflow_only, pytest.mark.slow]

SMALL = ["--train-examples", "32", "--eval-examples", "32", "--epochs", "1", "--batch-size", "16",
         "--max-length", "24"]


@pytest.fixture(scope="module", autouse=True)
def _op_determinism_off_after():
    """The training commands turn on TensorFlow's op determinism for the process; the later tests run without."""
    yield
    from tensorflow.python.framework import config

    config.disable_op_determinism()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    """Run directories of the training commands, made once for the module."""
    root = tmp_path_factory.mktemp("runs")
    common = SMALL + ["--data-dir", data_dir]
    out = {}
    for key, argv in {
        "tweets": ["train-adapter", "--task", "vader_tweets", "--adapter-name", "tweets"],
        "subj": ["train-adapter", "--task", "subjectivity", "--adapter-name", "subj", "--balanced"],
        "head": ["head-only", "--task", "vader_tweets"],
        "full": ["finetune", "--task", "vader_tweets"],
    }.items():
        out[key] = str(root / key)
        assert cli.main(argv + ["--output-dir", out[key]] + common) == 0, key
    out["fuse"] = str(root / "fuse")
    assert cli.main(["fuse", "--task", "vader_tweets", "--adapters", out["tweets"], out["subj"],
                     "--output-dir", out["fuse"]] + common) == 0
    return out


def read(path):
    with open(path) as f:
        return json.load(f)


def test_training_commands_write_artefacts_and_metrics(runs):
    expected = {
        "tweets": {"adapter", "head"}, "subj": {"adapter", "head"}, "head": {"head"}, "full": {"model.keras"},
        "fuse": {"adapters", "fusion", "head", "fusion_heatmap.png", "fusion_attention.json"},
    }
    for key, parts in expected.items():
        files = set(os.listdir(runs[key]))
        assert files == parts | {"run.json", "metrics.json", MANIFEST}, (key, files)
        metrics = read(os.path.join(runs[key], "metrics.json"))
        assert 0.0 <= metrics["accuracy"] <= 1.0 and "macro_f1" in metrics and metrics["examples"] == 32
        assert len(metrics["losses"]) == 1 and np.isfinite(metrics["losses"][0])
        # Per-epoch validation metrics (the validation split is also the evaluated one here).
        assert metrics["split"] == "validation" and metrics["history"]["val_accuracy"] == [metrics["accuracy"]]
        assert {"val_loss", "val_macro_f1", "loss"} <= set(metrics["history"]) and metrics["best_epoch"] == 1
    attention = read(os.path.join(runs["fuse"], "fusion_attention.json"))
    assert attention["adapters"] == ["tweets", "subj"] and np.allclose(np.sum(attention["mean_attention"], 1), 1)
    assert sorted(os.listdir(os.path.join(runs["fuse"], "adapters"))) == ["subj", "tweets"]
    # --balanced draws as many examples of each class; without it the counts are the random draw's
    subj = read(os.path.join(runs["subj"], "run.json"))
    assert subj["balanced"] is True and list(subj["train_label_counts"].values()) == [16, 16]
    tweets = read(os.path.join(runs["tweets"], "run.json"))
    assert tweets["balanced"] is False and sum(tweets["train_label_counts"].values()) == 32
    run = read(os.path.join(runs["fuse"], "run.json"))
    assert run["stage"] == "fusion" and run["adapters"] == ["tweets", "subj"] and run["train_examples"] == 32


def test_evaluate_reproduces_the_training_metrics(runs, data_dir, capsys):
    for key in ("fuse", "head", "full", "tweets"):
        out_file = os.path.join(runs[key], "again.json")
        code = cli.main(["evaluate", "--run-dir", runs[key], "--split", "validation", "--eval-examples", "32",
                         "--data-dir", data_dir, "--output", out_file])
        assert code == 0
        again, first = read(out_file), read(os.path.join(runs[key], "metrics.json"))
        assert again["accuracy"] == pytest.approx(first["accuracy"], abs=1e-9), key
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy"] == again["accuracy"]


def test_export_from_run_directory(runs, tmp_path):
    code = cli.main(["export", "--run-dir", runs["fuse"], "--export-dir", str(tmp_path), "--model-name", "tweets"])
    assert code == 0
    label_map = read(tmp_path / "tweets" / "1" / "assets" / "label_map.json")
    assert label_map["tasks"]["default"]["labels"] == ["negative", "positive"]  # from the saved head
    assert label_map["tasks"]["default"]["text_pair"] is False
    assert label_map["max_length"] == 24  # the run's --max-length, not a default
    assert sorted(label_map["signatures"]) == ["serving_default"]  # raw text only when asked
    assert os.path.isfile(tmp_path / "tweets" / "1" / "assets" / "tokenizer.json")  # the encoder's own


def one_error_line(capsys):
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("keras-adapterfusion")]
    assert "Traceback" not in err
    assert len(lines) == 1
    return lines[0]


def test_error_paths_exit_2_with_one_line(runs, data_dir, tmp_path, capsys):
    from keras_adapterfusion import load_encoder
    from keras_adapterfusion.formats import native as saving

    common = SMALL + ["--data-dir", data_dir]
    assert cli.main(["train-adapter", "--task", "glue_sst9", "--output-dir", str(tmp_path / "x")] + common) == 2
    assert "unknown task 'glue_sst9'" in one_error_line(capsys)

    assert cli.main(["fuse", "--task", "vader_tweets", "--adapters", runs["tweets"], str(tmp_path / "nope"),
                     "--output-dir", str(tmp_path / "y")] + common) == 2
    assert "is not a directory" in one_error_line(capsys)

    tiny = load_encoder(os.path.join(os.path.dirname(__file__), "fixtures", "backbones", "tiny-bert"))
    tiny.add_adapter("alien", "seq_bn")
    saving.save_adapter(tiny, "alien", tmp_path / "alien")
    assert cli.main(["fuse", "--task", "vader_tweets", "--adapters", runs["tweets"], str(tmp_path / "alien"),
                     "--output-dir", str(tmp_path / "z")] + common) == 2
    assert "saved from a different encoder" in one_error_line(capsys)

    # (runs["subj"]: the evaluate test writes a metrics file into the others, which no run may replace)
    assert cli.main(["head-only", "--task", "vader_tweets", "--output-dir", runs["subj"]] + common) == 2
    assert "is not empty; pass --overwrite" in one_error_line(capsys)

    assert cli.main(["evaluate", "--run-dir", str(tmp_path)]) == 2
    assert "not a run directory" in one_error_line(capsys)

    assert cli.main(["head-only", "--task", "vader_tweets", "--encoder", str(tmp_path / "no-encoder"),
                     "--output-dir", str(tmp_path / "w")] + common) == 2
    assert "--encoder" in one_error_line(capsys)

    assert cli.main(["fuse", "--task", "vader_tweets"]) == 2
    assert "required: --output-dir, --adapters" in one_error_line(capsys)


def test_demo_command_tiny(tmp_path, data_dir, capsys, monkeypatch):
    from keras_adapterfusion.applications import demo

    # Two sources and two seeds (the quick size has three of each) show the same: the whole command, one
    # adapter per source, a mean and spread over seeds, and a heatmap column per fused adapter.
    tiny = demo.DemoSize(source_train=16, source_epochs=1, target_train=16, target_epochs=1, seeds=2,
                         max_length=16, batch_size=16, test_limit=16, sources=("subjectivity", "bbc_topic"))
    monkeypatch.setitem(demo.SIZES, "quick", tiny)
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--output-dir", str(out), "--data-dir", data_dir]) == 0
    assert sorted(os.listdir(out)) == [MANIFEST, "fusion_heatmap.png", "report.md", "results.json"]
    results = read(out / "results.json")
    assert set(results["summary"]) == {"head_only", "full_finetune", "st_a", "fusion"}
    for setup, runs in results["runs"].items():
        assert [r["seed"] for r in runs] == [0, 1]
        values = [r["test"]["accuracy"] for r in runs]
        assert results["summary"][setup]["mean"] == pytest.approx(np.mean(values))
        assert results["summary"][setup]["std"] == pytest.approx(np.std(values, ddof=1))
    attention = np.array(results["fusion_attention"]["mean_attention"])
    assert attention.shape == (6, 3) and np.allclose(attention.sum(1), 1.0)
    assert results["fusion_attention"]["adapters"] == ["subjectivity", "bbc_topic", "vader_tweets (ST-A)"]
    stdout = capsys.readouterr().out
    assert "| fusion |" in stdout and "| head_only |" in stdout
    report = (out / "report.md").read_text()
    assert "## Target results" in report and "fusion_heatmap.png" in report


def _draw_from_global_random_state():
    """What a first-time dataset build may do: draw from Python's, NumPy's and the backend's global state."""
    import random

    import keras

    random.random()
    np.random.random()
    keras.random.uniform(())


def test_a_first_data_build_does_not_change_the_results(tmp_path, data_dir, monkeypatch):
    """The CLI (and the demo, the same way: `seed_everything` after the data) seeds after building the data."""
    from keras_adapterfusion.training import runs as experiments

    argv = ["train-adapter", "--task", "vader_tweets", "--data-dir", data_dir] + SMALL
    assert cli.main(argv + ["--output-dir", str(tmp_path / "plain")]) == 0
    prepare = experiments.prepare

    def prepare_drawing(*args, **kwargs):
        _draw_from_global_random_state()
        return prepare(*args, **kwargs)

    monkeypatch.setattr(experiments, "prepare", prepare_drawing)
    assert cli.main(argv + ["--output-dir", str(tmp_path / "drawn")]) == 0
    plain, drawn = read(tmp_path / "plain" / "metrics.json"), read(tmp_path / "drawn" / "metrics.json")
    assert drawn["losses"] == pytest.approx(plain["losses"], rel=1e-6)
    assert drawn["accuracy"] == plain["accuracy"]


# ------------------------------------------------------------ your own data
def _write_csv(path, rows):
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence", "sentiment"])
        writer.writerows(rows)
    return str(path)


def test_own_csv_from_training_to_a_served_prediction(tmp_path, capsys):
    """A CSV with its own column names and string labels: train-adapter, fuse, export --run-dir and predict
    --export, with the label names and probabilities in the output."""
    from keras_adapterfusion.tasks.offline_data import prepared_split

    files = {}
    for split, n in (("train", 48), ("validation", 16), ("test", 16)):
        texts, labels, _ = prepared_split("vader_sentiment/tweets", split, limit=n)
        files[split] = _write_csv(tmp_path / f"{split}.csv", [(t, ["sad", "happy"][y]) for t, y in zip(texts, labels)])
    data = ["--train-file", files["train"], "--validation-file", files["validation"], "--test-file", files["test"],
            "--text-column", "sentence", "--label-column", "sentiment", "--max-length", "24", "--epochs", "1",
            "--batch-size", "16", "--learning-rate", "1e-3"]
    for name in ("a", "b"):
        assert cli.main(["train-adapter", "--adapter-name", name, "--output-dir", str(tmp_path / name)] + data) == 0
    assert cli.main(["fuse", "--adapters", str(tmp_path / "a"), str(tmp_path / "b"),
                     "--output-dir", str(tmp_path / "fuse"), "--eval-split", "test"] + data) == 0
    run = read(tmp_path / "fuse" / "run.json")
    assert run["label_names"] == ["happy", "sad"] and run["task"]["source"]["label_column"] == "sentiment"
    assert read(tmp_path / "fuse" / "metrics.json")["split"] == "test"
    capsys.readouterr()
    assert cli.main(["export", "--run-dir", str(tmp_path / "fuse"), "--export-dir", str(tmp_path / "export"),
                     "--model-name", "mood"]) == 0  # no --labels: they travel with the model
    assert "(the encoder's own)" in capsys.readouterr().out
    version = str(tmp_path / "export" / "mood" / "1")
    assert read(os.path.join(version, "assets", "label_map.json"))["tasks"]["default"]["labels"] == ["happy", "sad"]
    assert cli.main(["predict", "--export", version, "--text", "what a wonderful day", "--text", "I hate this"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, text in zip(lines, ("what a wonderful day", "I hate this")):
        label, probability, shown = line.split("\t")
        assert label in ("happy", "sad") and 0.5 <= float(probability) <= 1.0 and shown == text
    assert cli.main(["predict", "--export", version, "--text", "meh", "--format", "jsonl"]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert set(row["probabilities"]) == {"happy", "sad"} and sum(row["probabilities"].values()) == pytest.approx(1)
    assert cli.main(["evaluate", "--run-dir", str(tmp_path / "fuse"), "--test-file", files["test"],
                     "--text-column", "sentence", "--label-column", "sentiment", "--output",
                     str(tmp_path / "again.json")]) == 0
    assert read(tmp_path / "again.json")["accuracy"] == read(tmp_path / "fuse" / "metrics.json")["accuracy"]


def test_sentence_pairs_from_training_to_a_prediction(tmp_path, capsys):
    """A JSON Lines file of pairs: head-only, export --run-dir (the run's layout and max_length), then predict
    with --text/--text-pair and with --file, matching the Python tokenizer's pair encoding; a single text is
    refused in one line; a long pair is reported as truncated."""
    from keras_adapterfusion.serving import ServingClient
    from keras_adapterfusion.tasks.offline_data import prepared_split

    texts, labels, _ = prepared_split("vader_sentiment/tweets", "train", limit=33)
    path = tmp_path / "pairs.jsonl"
    with open(path, "w") as f:
        for i in range(32):
            f.write(json.dumps({"premise": texts[i], "hypothesis": texts[i + 1], "label": ["no", "yes"][labels[i]]})
                    + "\n")
    assert cli.main(["head-only", "--train-file", str(path), "--text-column", "premise", "--text-pair-column",
                     "hypothesis", "--max-length", "20", "--epochs", "1", "--batch-size", "16",
                     "--output-dir", str(tmp_path / "run")]) == 0
    assert cli.main(["export", "--run-dir", str(tmp_path / "run"), "--export-dir", str(tmp_path / "export"),
                     "--model-name", "nli"]) == 0
    assert "inputs: sentence pairs, max_length 20" in capsys.readouterr().out
    version = str(tmp_path / "export" / "nli" / "1")
    label_map = read(os.path.join(version, "assets", "label_map.json"))
    assert label_map["tasks"]["default"]["text_pair"] is True and label_map["max_length"] == 20

    short_pair = ("a good day", "not bad")  # 3 + 2 word pieces and 3 special tokens: fits in 20
    long_pair = (" ".join(["very"] * 30), "short")
    assert cli.main(["predict", "--export", version, "--text", short_pair[0], "--text-pair", short_pair[1],
                     "--text", long_pair[0], "--text-pair", long_pair[1], "--format", "jsonl"]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert [(r["text"], r["text_pair"]) for r in rows] == [short_pair, long_pair]
    assert [r["truncated"] for r in rows] == [False, True]
    assert "note: 1 of 2 pairs were longer than max_length 20 tokens and were truncated" in err
    client = ServingClient.from_export(version)
    assert client.max_length == 20
    expected = client.predict_local([short_pair, long_pair])
    assert [r["probabilities"] for r in rows] == [e["probabilities"] for e in expected]
    encoded = client.encode([long_pair])
    assert encoded["input_ids"].shape[1] == 20 and encoded["token_type_ids"].max() == 1

    assert cli.main(["predict", "--export", version, "--file", str(path), "--text-column", "premise",
                     "--text-pair-column", "hypothesis"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 32 and lines[0].split("\t")[2:] == [texts[0], texts[1]]

    assert cli.main(["predict", "--export", version, "--text", "a single text"]) == 2
    assert "trained on sentence pairs; got single texts" in one_error_line(capsys)
    with pytest.raises(ValueError, match="trained on sentence pairs; got single texts"):
        client.predict_local(["a single text"])


@pytest.mark.parametrize("name", ["tiny-distilbert", "tiny-electra", "tiny-albert", "tiny-deberta-v2"])
def test_adapters_and_fusion_train_on_each_tiny_encoder_type(name, tmp_path, capsys):
    """train-adapter twice and fuse on a tiny checkpoint of each newer model type (its own tokenizer), then
    export --run-dir with the raw-text signature and predict from the export."""
    from keras_adapterfusion.tasks.offline_data import prepared_split

    encoder = os.path.join(os.path.dirname(__file__), "fixtures", "backbones", name)
    files = {}
    for split, n in (("train", 32), ("validation", 16)):
        texts, labels, _ = prepared_split("vader_sentiment/tweets", split, limit=n)
        files[split] = _write_csv(tmp_path / f"{split}.csv", [(t, ["sad", "happy"][y]) for t, y in zip(texts, labels)])
    data = ["--encoder", encoder, "--train-file", files["train"], "--validation-file", files["validation"],
            "--text-column", "sentence", "--label-column", "sentiment", "--max-length", "24", "--epochs", "1",
            "--batch-size", "16", "--learning-rate", "1e-3"]
    for adapter in ("a", "b"):
        assert cli.main(["train-adapter", "--adapter-name", adapter, "--output-dir", str(tmp_path / adapter)]
                        + data) == 0
    assert cli.main(["fuse", "--adapters", str(tmp_path / "a"), str(tmp_path / "b"),
                     "--output-dir", str(tmp_path / "fuse")] + data) == 0
    metrics = read(tmp_path / "fuse" / "metrics.json")
    assert 0.0 <= metrics["accuracy"] <= 1.0
    attention = read(tmp_path / "fuse" / "fusion_attention.json")
    assert attention  # the fusion's attention over a and b was measured
    capsys.readouterr()
    assert cli.main(["export", "--run-dir", str(tmp_path / "fuse"), "--export-dir", str(tmp_path / "export"),
                     "--model-name", "m", "--text-signatures"]) == 0
    assert cli.main(["predict", "--export", str(tmp_path / "export" / "m" / "1"), "--text", "what a day"]) == 0
    label, probability, _ = capsys.readouterr().out.strip().splitlines()[-1].split("\t")
    assert label in ("happy", "sad") and 0.5 <= float(probability) <= 1.0
    # The raw-text signature tokenizes in the graph as the checkpoint's Python tokenizer does.
    import tensorflow as tf
    from transformers import AutoTokenizer

    from parity import float32_bound

    loaded = tf.saved_model.load(str(tmp_path / "export" / "m" / "1"))
    texts = ["what a day", "Ça va? Déjà vu, naïve café!"]
    x = AutoTokenizer.from_pretrained(encoder)(texts, padding=True, return_tensors="np", return_token_type_ids=True)
    x = {k: tf.constant(x[k].astype("int64")) for k in ("input_ids", "attention_mask", "token_type_ids")}
    by_ids = loaded.signatures["serving_default"](**x)["logits"].numpy()
    by_text = loaded.signatures["serving_text"](text=tf.constant(texts))["logits"].numpy()
    np.testing.assert_allclose(by_text, by_ids, rtol=0, atol=float32_bound(float(np.abs(by_ids).max()), 2, 64))
