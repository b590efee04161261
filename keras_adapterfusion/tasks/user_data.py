"""Tasks from your own data: files, pandas data frames, or Python lists.

`from_files`, `from_pandas` and `from_lists` return the same `Task` objects the
registry holds, so every builder, the pipelines, `fit` and the command line
(`--train-file`, `--validation-file`, `--test-file`) treat them alike.

- Files: CSV (`.csv`), TSV (`.tsv`, `.tab`), JSON Lines (`.jsonl`, `.ndjson`), and
  Parquet (`.parquet`, when `pyarrow` is installed). The first row of a CSV or TSV
  file names the columns.
- Columns: the text (`text`), optionally a second text for sentence pairs
  (`text_pair_column`), and the label (`label`).
- Labels may be strings or integers. The task kind is inferred from the training
  labels, or set with `task_kind`:
  - `"single_label"`: strings or integers, one class per example; the label names
    are the distinct training labels, sorted (integers numerically);
  - `"multi_label"`: a list per example (JSON Lines), or, in CSV/TSV, the labels
    joined by `label_separator` (`"|"`); inferred when the labels are lists;
  - `"regression"`: numbers; inferred when a training label is not a whole number.
- Checked up front, each ending in one `ValueError` naming the file (and line) and
  the column: an empty file, a missing column (the message lists the columns the
  file has), an empty text, a label in validation or test that training never saw,
  fewer than two classes, and a label column that looks like text (as many distinct
  values as rows: the columns are probably mixed up).

Example:

```python
from keras_adapterfusion.tasks import from_files, from_lists

task = from_files("data/train.csv", validation_file="data/dev.csv", text_column="sentence",
                  label_column="sentiment")
task.label_names, task.kind            # ('negative', 'positive'), 'single_label'
texts, labels = task.load("train")

task = from_lists(["great film", "dull plot"], ["pos", "neg"])
```
"""

import csv
import json
import math
import os

import numpy as np

from keras_adapterfusion.errors import DataError
from keras_adapterfusion.names import check_name
from keras_adapterfusion.tasks.registry import DEFAULT_METRICS, KINDS, Task

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
SPLITS = ("train", "validation", "test")


# ------------------------------------------------------------------ reading
def _format_of(path, file_format):
    if file_format is not None:
        if file_format not in set(FORMATS.values()):
            raise DataError(f"file_format: got {file_format!r}; expected one of {sorted(set(FORMATS.values()))}.")
        return file_format
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise DataError(f"{path}: unknown file type {ext or '(no extension)'!r}; expected one of {sorted(FORMATS)} "
                        "(or pass file_format).")
    return FORMATS[ext]


def _read_rows(path, file_format):
    """`(columns, rows)`: rows are `(line number, dict)`."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file.")
    fmt = _format_of(path, file_format)
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow); or convert the file to "
                            "CSV or JSON Lines.") from e
        table = pq.read_table(path).to_pylist()
        columns = list(table[0]) if table else []
        return columns, [(i + 1, row) for i, row in enumerate(table)]
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            if fmt == "jsonl":
                rows, columns = [], []
                for number, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}:{number}: not valid JSON ({e.msg}).") from e
                    if not isinstance(row, dict):
                        raise DataError(f"{path}:{number}: holds a JSON {type(row).__name__}; expected an object "
                                        "per line.")
                    columns.extend(k for k in row if k not in columns)
                    rows.append((number, row))
                return columns, rows
            reader = csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",")
            rows = [(number + 1, row) for number, row in enumerate(reader, start=1)]
            return list(reader.fieldnames or []), rows
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: is not UTF-8 text (byte {e.start}).") from e
    except csv.Error as e:
        raise DataError(f"{path}: cannot be read as {fmt.upper()} ({e}).") from e


def _column(rows, columns, column, path, what):
    if column not in columns:
        raise DataError(f"{path}: has no {what} column {column!r}; its columns are {columns} "
                        f"(choose one with the {what}_column argument, or --{what.replace('_', '-')}-column).")


def read_texts(path, text_column="text", text_pair_column=None, file_format=None):
    """The texts of a CSV, TSV or JSON Lines file, for prediction (no labels needed).

    Returns:
        `(texts, pairs)`: lists of str; `pairs` is None without `text_pair_column`.

    Raises:
        DataError: the file is missing, empty or unreadable, lacks a column, or has an empty or
            non-string text (the message names the file, line and column).
    """
    columns, rows = _read_rows(path, file_format)
    if not rows:
        raise DataError(f"{path}: holds no rows.")
    wanted = [(text_column, "text")] + ([(text_pair_column, "text_pair")] if text_pair_column else [])
    out = []
    for column, what in wanted:
        _column(rows, columns, column, path, what)
        values = []
        for number, row in rows:
            value = row.get(column)
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{path}:{number}: column {column!r} is {value!r}; expected a non-empty text.")
            values.append(value)
        out.append(values)
    return out[0], (out[1] if text_pair_column else None)


# ------------------------------------------------------------------- labels
def _is_number(value):
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float, np.integer, np.floating)):
        return True
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def _infer_kind(labels):
    if any(isinstance(v, (list, tuple)) for v in labels):
        return "multi_label"
    if labels and all(_is_number(v) for v in labels) and any(float(v) != int(float(v)) for v in labels):
        return "regression"
    return "single_label"


def _label_text(value):
    """A single label as its name: integers (and whole floats from CSV) as their digits."""
    if _is_number(value) and float(value) == int(float(value)):
        return str(int(float(value)))
    return str(value)


def _multi(value, separator):
    if isinstance(value, (list, tuple)):
        return [_label_text(v) for v in value]
    if value is None or str(value).strip() == "":
        return []
    return [part.strip() for part in str(value).split(separator) if part.strip()]


def _sorted_names(values):
    names = sorted(set(values))
    if all(n.lstrip("-").isdigit() for n in names):
        names.sort(key=int)
    return names


# --------------------------------------------------------------- the task
def _build(name, splits, kind, label_names, label_separator, metrics, source, pairs):
    """`splits`: split -> list of `(where, text, pair, raw_label)`."""
    check_name(name, "task name")
    train = splits.get("train")
    if not train:
        raise DataError(f"task {name!r}: the training data holds no examples.")
    for split, rows in splits.items():
        if not rows:
            raise DataError(f"task {name!r}: the {split} data holds no examples.")
        for where, text, pair, _ in rows:
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{where}: empty text; expected a non-empty string in the text column.")
            if pairs and (not isinstance(pair, str) or not pair.strip()):
                raise DataError(f"{where}: empty second text; expected a non-empty string in the text pair column.")
    if kind is not None and kind not in KINDS:
        raise DataError(f"task_kind: got {kind!r}; expected one of {list(KINDS)}.")
    kind = kind or _infer_kind([label for _, _, _, label in train])
    if kind == "regression":
        encoded = {}
        for split, rows in splits.items():
            values = []
            for where, _, _, label in rows:
                if not _is_number(label) or not math.isfinite(float(label)):
                    raise DataError(f"{where}: label {label!r} is not a finite number; a regression task needs one "
                                    "number per example.")
                values.append(float(label))
            encoded[split] = np.asarray(values, np.float32)
        label_names = ["score"]
    else:
        if kind == "multi_label":
            train_names = [n for _, _, _, label in train for n in _multi(label, label_separator)]
        else:
            train_names = [_label_text(label) for _, _, _, label in train]
            distinct = len(set(train_names))
            if len(train) >= 20 and distinct > max(20, 0.5 * len(train)):
                raise DataError(f"task {name!r}: the label column has {distinct} distinct values in {len(train)} "
                                "training rows; it looks like text. Are the text and label columns mixed up? "
                                "(For numbers, pass task_kind='regression'.)")
        names = list(label_names) if label_names is not None else _sorted_names(train_names)
        if label_names is not None:
            unknown = sorted(set(train_names) - set(names))
            if unknown:
                raise DataError(f"task {name!r}: training labels {unknown} are not in label_names {names}.")
        if len(names) < 2:
            raise DataError(f"task {name!r}: the training labels hold {len(names)} class(es) {names}; expected at "
                            "least two.")
        index = {n: i for i, n in enumerate(names)}
        encoded = {}
        for split, rows in splits.items():
            if kind == "multi_label":
                values = np.zeros((len(rows), len(names)), np.float32)
            else:
                values = np.zeros(len(rows), np.int64)
            for i, (where, _, _, label) in enumerate(rows):
                found = _multi(label, label_separator) if kind == "multi_label" else [_label_text(label)]
                for n in found:
                    if n not in index:
                        raise DataError(f"{where}: label {n!r} never occurs in the training data; expected one of "
                                        f"{names}.")
                    if kind == "multi_label":
                        values[i, index[n]] = 1.0
                    else:
                        values[i] = index[n]
            encoded[split] = values
        label_names = names
    data = {split: ([(t, p) if pairs else t for _, t, p, _ in rows], encoded[split]) for split, rows in splits.items()}
    return Task(name=name, builder=None, layout="pair" if pairs else "single",
                text_fields=("text", "text_pair") if pairs else ("text",), label_names=tuple(label_names),
                metrics=tuple(metrics or DEFAULT_METRICS[kind]), kind=kind, data=data, source=source,
                description=f"{kind.replace('_', '-')} task from {source.get('kind', 'data') if source else 'data'}")


def from_files(train_file, validation_file=None, test_file=None, text_column="text", text_pair_column=None,
               label_column="label", task_kind=None, label_names=None, label_separator="|", file_format=None,
               name=None, metrics=None):
    """A `Task` from CSV, TSV, JSON Lines or Parquet files (see the module docstring).

    Args:
        train_file: the training examples.
        validation_file: optional validation examples.
        test_file: optional test examples.
        text_column: the column holding the text.
        text_pair_column: a second text column, for sentence pairs.
        label_column: the column holding the label.
        task_kind: `"single_label"`, `"multi_label"` or `"regression"`; inferred
            from the training labels when `None`.
        label_names: the label names in order (default: sorted training labels).
        label_separator: joins the labels of a multi-label example in CSV/TSV.
        file_format: `"csv"`, `"tsv"`, `"jsonl"` or `"parquet"` (default: from
            the file extension).
        name: the task's name (default: the training file's name without extension).
        metrics: metric names (default: by kind; see `tasks.registry.DEFAULT_METRICS`).

    Raises:
        DataError (a `ValueError`): naming the file, line and column at fault.
    """
    files = {"train": train_file, "validation": validation_file, "test": test_file}
    files = {k: os.fspath(v) for k, v in files.items() if v is not None}
    splits = {}
    for split, path in files.items():
        columns, rows = _read_rows(path, file_format)
        if not rows:
            raise DataError(f"{path}: holds no examples (an empty file, or a header only).")
        _column(rows, columns, text_column, path, "text")
        if text_pair_column is not None:
            _column(rows, columns, text_pair_column, path, "text_pair")
        _column(rows, columns, label_column, path, "label")
        splits[split] = [(f"{path}:{number} ({split})", row.get(text_column),
                          row.get(text_pair_column) if text_pair_column else None, row.get(label_column))
                         for number, row in rows]
    name = name or os.path.splitext(os.path.basename(files["train"]))[0]
    source = {"kind": "files", "files": {k: os.path.abspath(v) for k, v in files.items()},
              "text_column": text_column, "text_pair_column": text_pair_column, "label_column": label_column,
              "task_kind": task_kind, "label_separator": label_separator, "file_format": file_format}
    return _build(name, splits, task_kind, label_names, label_separator, metrics, source, text_pair_column is not None)


def from_pandas(train, validation=None, test=None, text_column="text", text_pair_column=None, label_column="label",
                task_kind=None, label_names=None, label_separator="|", name="dataframe", metrics=None):
    """A `Task` from pandas data frames (one per split); arguments as for `from_files`."""
    splits = {}
    for split, frame in (("train", train), ("validation", validation), ("test", test)):
        if frame is None:
            continue
        columns = [str(c) for c in frame.columns]
        where = f"data frame '{split}'"
        for column, what in ((text_column, "text"), (text_pair_column, "text_pair"), (label_column, "label")):
            if column is not None and column not in columns:
                raise DataError(f"{where}: has no {what} column {column!r}; its columns are {columns}.")
        records = frame.to_dict("records")
        splits[split] = [(f"{where}, row {i}", r[text_column], r[text_pair_column] if text_pair_column else None,
                          r[label_column]) for i, r in enumerate(records)]
    source = {"kind": "pandas", "text_column": text_column, "text_pair_column": text_pair_column,
              "label_column": label_column}
    return _build(name, splits, task_kind, label_names, label_separator, metrics, source, text_pair_column is not None)


def from_lists(texts, labels, text_pairs=None, validation=None, test=None, task_kind=None, label_names=None,
               name="custom", metrics=None):
    """A `Task` from Python lists.

    Args:
        texts: training texts.
        labels: one label per text (a string, an integer, a list of labels for
            multi-label, or a number for regression).
        text_pairs: second texts, for sentence pairs.
        validation: optional `(texts, labels)` or `(texts, text_pairs, labels)`.
        test: the same for the test split.
        task_kind: as for `from_files`.
        label_names: as for `from_files`.
        name: the task's name.
        metrics: as for `from_files`.
    """
    def rows(split, values):
        if len(values) == 2:
            t, y = values
            p = None
        else:
            t, p, y = values
        t, y = list(t), list(y)
        if len(t) != len(y) or (p is not None and len(list(p)) != len(t)):
            raise DataError(f"from_lists: the {split} split has {len(t)} texts and {len(y)} labels"
                            + (f" and {len(list(p))} text pairs" if p is not None else "")
                            + "; expected one label per text.")
        p = list(p) if p is not None else [None] * len(t)
        return [(f"{split} example {i}", a, b, c) for i, (a, b, c) in enumerate(zip(t, p, y))]

    pairs = text_pairs is not None
    splits = {"train": rows("train", (texts, text_pairs, labels) if pairs else (texts, labels))}
    for split, values in (("validation", validation), ("test", test)):
        if values is not None:
            splits[split] = rows(split, values)
    return _build(name, splits, task_kind, label_names, "|", metrics, {"kind": "lists"}, pairs)


def task_from_config(config):
    """The `Task` a run directory recorded (`Task.to_config()`): a registry name, or files to read again."""
    from keras_adapterfusion.tasks.registry import get_task

    if set(config) == {"name"}:
        return get_task(config["name"])
    source = config.get("source") or {}
    if source.get("kind") != "files":
        raise DataError(f"task {config.get('name')!r}: was made from {source.get('kind', 'unknown')} data, which a "
                        "run directory cannot load again; pass the data (e.g. --test-file) instead.")
    files = source["files"]
    return from_files(files["train"], files.get("validation"), files.get("test"), source["text_column"],
                      source.get("text_pair_column"), source["label_column"], source.get("task_kind"),
                      config.get("label_names"), source.get("label_separator", "|"), source.get("file_format"),
                      name=config["name"], metrics=config.get("metrics"))
