"""Tasks from the user's own data (files, data frames, lists) and the backend-neutral batches."""

import json

import numpy as np
import pytest

from keras_adapterfusion.tasks import DataError, from_files, from_lists, task_from_config
from keras_adapterfusion.tasks.pipeline import compute_metrics, make_dataset

pytestmark = pytest.mark.backend_independent  # no backend changes what it tests: the TensorFlow pass runs it

SENTENCES = [("what a lovely film", "good"), ("dull and far too long", "bad"), ("a joy to watch", "good"),
             ("I want my money back", "bad"), ("the cast is superb", "good"), ("boring", "bad")]


def write(path, rows, fmt):
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        sep = "\t" if fmt == "tsv" else ","
        keys = list(rows[0])
        lines = [sep.join(keys)] + [sep.join(str(r[k]) for k in keys) for r in rows]
        path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_files_with_custom_columns_and_string_labels(tmp_path, fmt):
    rows = [{"sentence": t, "sentiment": y} for t, y in SENTENCES]
    train = write(tmp_path / f"train.{fmt}", rows, fmt)
    dev = write(tmp_path / f"dev.{fmt}", rows[:2], fmt)
    task = from_files(train, dev, text_column="sentence", label_column="sentiment")
    assert task.kind == "single_label" and task.label_names == ("bad", "good") and task.layout == "single"
    assert task.name == "train" and task.head_kind == "classification" and task.num_labels == 2
    texts, labels = task.load("train")
    assert texts[0] == "what a lovely film" and labels.tolist() == [1, 0, 1, 0, 1, 0]
    assert task.load("validation")[1].tolist() == [1, 0]
    assert task.load("train", limit=2)[1].tolist() == [1, 0]
    with pytest.raises(ValueError, match="has no 'test' split"):
        task.load("test")
    again = task_from_config(json.loads(json.dumps(task.to_config())))
    assert again.label_names == task.label_names and again.load("train")[0] == texts


def test_integer_labels_pairs_regression_and_multi_label(tmp_path):
    ints = from_lists(["a", "b", "c", "d"], [2, 0, 10, 2])
    assert ints.label_names == ("0", "2", "10") and ints.load("train")[1].tolist() == [1, 0, 2, 1]
    pairs = from_lists(["a", "b"], ["x", "y"], text_pairs=["c", "d"])
    assert pairs.layout == "pair" and pairs.load("train")[0] == [("a", "c"), ("b", "d")]
    reg = from_lists(["a", "b", "c"], [0.5, 1.0, 3.25])
    assert reg.kind == "regression" and reg.num_labels == 1 and reg.head_kind == "regression"
    assert reg.load("train")[1].dtype == np.float32
    multi = from_lists(["a", "b", "c"], [["x", "y"], ["y"], []])
    assert multi.kind == "multi_label" and multi.label_names == ("x", "y")
    assert multi.load("train")[1].tolist() == [[1, 1], [0, 1], [0, 0]]
    rows = [{"text": "a", "label": "x|y"}, {"text": "b", "label": "y"}]
    csv_multi = from_files(write(tmp_path / "m.csv", rows, "csv"), task_kind="multi_label")
    assert csv_multi.load("train")[1].tolist() == [[1, 1], [0, 1]]


@pytest.mark.parametrize("setup, message", [
    (lambda p: write(p / "t.csv", [{"text": "a", "label": "x"}], "csv") and (p / "t.csv").write_text("text,label\n"),
     "holds no examples"),
    (lambda p: (p / "t.csv").write_text(""), "holds no examples"),
    (lambda p: write(p / "t.csv", [{"sentence": t, "label": y} for t, y in SENTENCES], "csv"),
     r"has no text column 'text'; its columns are \['sentence', 'label'\]"),
    (lambda p: write(p / "t.csv", [{"text": t, "y": y} for t, y in SENTENCES], "csv"), "has no label column 'label'"),
    (lambda p: write(p / "t.csv", [{"text": "", "label": "x"}, {"text": "b", "label": "y"}], "csv"),
     r"t.csv:2 \(train\): empty text"),
    (lambda p: write(p / "t.csv", [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}], "csv"),
     r"hold 1 class\(es\)"),
    (lambda p: write(p / "t.csv", [{"text": y, "label": f"{t} {i}"} for i, (t, y) in enumerate(SENTENCES * 5)], "csv"),
     "mixed up"),
    (lambda p: (p / "t.jsonl").write_text('{"text": "a", "label": "x"}\n[1, 2]\n'), r"t.jsonl:2: holds a JSON list"),
    (lambda p: (p / "t.jsonl").write_text('{"text": "a", "label": "x"}\n{not json\n'), r"t.jsonl:2: not valid JSON"),
    (lambda p: (p / "t.txt").write_text("text,label\na,x\n"), "unknown file type '.txt'"),
    (lambda p: (p / "t.csv").write_bytes(b"text,label\n\xff\xfe,x\n"), "is not UTF-8"),
])
def test_bad_files_end_in_one_clear_error(tmp_path, setup, message):
    setup(tmp_path)
    path = next(str(p) for p in tmp_path.iterdir() if p.name.startswith("t."))
    with pytest.raises(DataError, match=message):
        from_files(path)


def test_validation_labels_training_never_saw(tmp_path):
    train = write(tmp_path / "train.csv", [{"text": t, "label": y} for t, y in SENTENCES], "csv")
    dev = write(tmp_path / "dev.csv", [{"text": "meh", "label": "neutral"}], "csv")
    with pytest.raises(DataError, match=r"dev.csv:2 \(validation\): label 'neutral' never occurs in the training"):
        from_files(train, dev)
    with pytest.raises(DataError, match="no such file"):
        from_files(str(tmp_path / "missing.csv"))
    with pytest.raises(DataError, match="not a finite number"):
        from_lists(["a", "b"], [0.5, "high"], task_kind="regression")
    with pytest.raises(DataError, match="2 texts and 1 labels"):
        from_lists(["a", "b"], ["x"])


def test_from_pandas_when_pandas_is_there():
    pd = pytest.importorskip("pandas")
    from keras_adapterfusion.tasks import from_pandas

    frame = pd.DataFrame({"t": [t for t, _ in SENTENCES], "y": [y for _, y in SENTENCES]})
    task = from_pandas(frame, frame.head(2), text_column="t", label_column="y")
    assert task.label_names == ("bad", "good") and len(task.load("validation")[0]) == 2
    with pytest.raises(DataError, match="has no text column 'text'"):
        from_pandas(frame)


def _encoded(n=23, seed=0):
    rng = np.random.default_rng(seed)
    ids = [rng.integers(1, 50, size=int(rng.integers(2, 12))).astype("int32") for _ in range(n)]
    return {"input_ids": ids, "attention_mask": [np.ones_like(v) for v in ids],
            "token_type_ids": [np.zeros_like(v) for v in ids]}


@pytest.mark.parametrize("padding", ["longest", "buckets"])
def test_pydataset_batches_every_example_once_per_epoch(padding):
    encoded, labels = _encoded(), np.arange(23)
    batches = make_dataset(encoded, labels, batch_size=4, shuffle=True, seed=3, padding=padding,
                           data_path="pydataset")
    epochs = []
    for _ in range(2):
        seen = []
        for i in range(len(batches)):
            x, y = batches[i]
            assert x["input_ids"].shape[0] == len(y) <= 4
            for row, label in enumerate(y):
                n = len(encoded["input_ids"][label])
                assert x["input_ids"][row, :n].tolist() == encoded["input_ids"][label].tolist()
                assert not x["attention_mask"][row, n:].any()  # padding
            seen.extend(y.tolist())
        assert sorted(seen) == list(range(23))
        epochs.append(seen)
        batches.on_epoch_end()
    assert epochs[0] != epochs[1]  # reshuffled
    again = make_dataset(encoded, labels, batch_size=4, shuffle=True, seed=3, padding=padding, data_path="pydataset")
    assert [again[i][1].tolist() for i in range(len(again))] == [b for b in _chunks(epochs[0], again)]


def _chunks(order, batches):
    out, start = [], 0
    for i in range(len(batches)):
        size = len(batches[i][1])
        out.append(order[start:start + size])
        start += size
    return out


def test_pydataset_and_tf_data_agree_on_the_number_of_batches():
    pytest.importorskip("tensorflow")
    encoded, labels = _encoded(57), np.zeros(57, "int64")
    for padding in ("longest", "buckets"):
        for drop in (False, True):
            py = make_dataset(encoded, labels, 8, padding=padding, drop_remainder=drop, data_path="pydataset")
            tf_ds = make_dataset(encoded, labels, 8, padding=padding, drop_remainder=drop, data_path="tf.data")
            assert len(py) == int(tf_ds.cardinality()) == sum(1 for _ in tf_ds), (padding, drop)


def test_metrics_by_kind():
    assert compute_metrics(["micro_f1", "exact_match"], [[1, 0], [1, 1]], [[2.0, -1.0], [3.0, -2.0]],
                           kind="multi_label") == {"micro_f1": 0.8, "exact_match": 0.5}
    out = compute_metrics(["pearson", "mse"], [1.0, 2.0, 3.0], [[1.0], [2.0], [4.0]], kind="regression")
    assert out["mse"] == pytest.approx(1 / 3) and out["pearson"] > 0.9


def test_a_balanced_sample_needs_classes():
    from keras_adapterfusion.training.runs import prepare

    scores = from_lists(["a", "b", "c"], [0.1, 0.5, 0.9], task_kind="regression", name="scores")
    with pytest.raises(ValueError, match="prepare.balanced: task 'scores' is regression; expected a single-label"):
        prepare(scores, None, "train", sample=2, balanced=True)
