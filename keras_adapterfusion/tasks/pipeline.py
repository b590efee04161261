"""Tokenization into batches for `fit`: truncation, padding to the batch's longest or to
length buckets, a cache of tokenized data; `tf.data` on TensorFlow, a `PyDataset` on
every backend; and the task metrics.

Example:

```python
from keras_adapterfusion.tasks import get_task, pipeline

task = get_task("vader_tweets")
texts, labels = task.load("train", limit=300)
encoded = pipeline.tokenize(tokenizer, task, texts, max_length=64, cache_dir="~/.cache/kaf")
train = pipeline.make_dataset(encoded, labels, batch_size=16, shuffle=True, seed=0, padding="buckets")
model.fit(train, epochs=3)
```
"""

import hashlib
import json
import os

import numpy as np

from keras_adapterfusion.tasks.buckets import INPUT_KEYS, bucket_plan, count_batches, lengths

PADDINGS = ("longest", "buckets")


def _fingerprint(tokenizer, task_name, inputs, max_length):
    h = hashlib.sha256()
    h.update(json.dumps([type(tokenizer).__name__, getattr(tokenizer, "name_or_path", ""),
                         len(tokenizer), task_name, max_length]).encode())
    h.update(json.dumps(inputs, ensure_ascii=False).encode())
    return h.hexdigest()[:24]


def tokenize(tokenizer, task, inputs, max_length=128, cache_dir=None):
    """Tokenize a task's inputs (as `Task.load` gives them) without padding.

    Returns a dict with `input_ids`, `attention_mask`, `token_type_ids`: lists of
    int32 arrays (one per example; `[choices, tokens]` arrays for multiple choice,
    padded over the choices of one example). With `cache_dir`, the result is
    stored there, keyed by the tokenizer, the task, the texts and `max_length`,
    and read back next time.
    """
    from keras_adapterfusion.tasks.registry import get_task

    task = get_task(task)
    path = None
    if cache_dir is not None:
        cache_dir = os.path.expanduser(os.fspath(cache_dir))
        os.makedirs(cache_dir, exist_ok=True)
        path = os.path.join(cache_dir, f"{task.name}-{_fingerprint(tokenizer, task.name, inputs, max_length)}.npz")
        if os.path.isfile(path):
            with np.load(path, allow_pickle=False) as data:
                return _unflatten(data)
    if task.layout == "single":
        enc = tokenizer(list(inputs), truncation=True, max_length=max_length)
        out = {k: [np.asarray(v, np.int32) for v in enc.get(k, enc["input_ids"])] for k in INPUT_KEYS}
        if "token_type_ids" not in enc:
            out["token_type_ids"] = [np.zeros_like(v) for v in out["input_ids"]]
    elif task.layout == "pair":
        enc = tokenizer([a for a, _ in inputs], [b for _, b in inputs], truncation=True, max_length=max_length)
        out = {k: [np.asarray(v, np.int32) for v in enc[k]] for k in ("input_ids", "attention_mask")}
        out["token_type_ids"] = [np.asarray(v, np.int32) for v in enc["token_type_ids"]] if "token_type_ids" in enc \
            else [np.zeros_like(v) for v in out["input_ids"]]
    else:
        out = {k: [] for k in INPUT_KEYS}
        for context, choices in inputs:
            enc = tokenizer([context] * len(choices), list(choices), truncation=True, max_length=max_length,
                            padding=True, return_tensors="np")
            out["input_ids"].append(enc["input_ids"].astype(np.int32))
            out["attention_mask"].append(enc["attention_mask"].astype(np.int32))
            types = enc.get("token_type_ids")
            out["token_type_ids"].append(np.zeros_like(enc["input_ids"], np.int32) if types is None
                                         else types.astype(np.int32))
    if path is not None:
        from keras_adapterfusion.io.files import atomic_file

        with atomic_file(path) as tmp:
            np.savez(tmp, **_flatten(out))
    return out


def _flatten(encoded):
    """Ragged lists -> flat arrays + lengths (for the npz cache)."""
    out = {}
    for key, values in encoded.items():
        out[key] = np.concatenate([v.reshape(-1) for v in values]) if values else np.zeros(0, np.int32)
        out[key + "__shapes"] = np.asarray([v.shape if v.ndim == 2 else (1, v.shape[0]) for v in values], np.int64)
        out[key + "__ndim"] = np.asarray([values[0].ndim if values else 1])
    return out


def _unflatten(data):
    out = {}
    for key in INPUT_KEYS:
        flat, shapes, ndim = data[key], data[key + "__shapes"], int(data[key + "__ndim"][0])
        values, start = [], 0
        for rows, cols in shapes:
            size = int(rows * cols)
            chunk = flat[start:start + size]
            values.append(chunk.reshape(rows, cols) if ndim == 2 else chunk)
            start += size
        out[key] = values
    return out


def _check(encoded, labels, padding, batch_size):
    if padding not in PADDINGS:
        raise ValueError(f"make_dataset: padding {padding!r}; expected one of {list(PADDINGS)}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"make_dataset: batch_size {batch_size!r}; expected an int >= 1.")
    labels = np.asarray(labels)
    n = len(encoded["input_ids"])
    if len(labels) != n:
        raise ValueError(f"make_dataset: {n} examples but {len(labels)} labels.")
    if n == 0:
        raise ValueError("make_dataset: no examples.")
    return labels


def default_data_path():
    """`"tf.data"` on the TensorFlow backend, else `"pydataset"` (no TensorFlow needed)."""
    import keras

    return "tf.data" if keras.backend.backend() == "tensorflow" else "pydataset"


def make_dataset(encoded, labels, batch_size=32, shuffle=False, seed=0, padding="longest",
                 bucket_boundaries=None, cache=False, prefetch=True, drop_remainder=False, data_path=None):
    """Batches of `(x, y)` for `fit`, `evaluate` and `predict`, from `tokenize`'s output.

    Two paths give the same batching: a `tf.data.Dataset` (the default on the
    TensorFlow backend) and a `keras.utils.PyDataset` that needs no TensorFlow
    (the default on JAX and PyTorch, see `tasks.batches.TokenBatches`). Both pad
    each batch to its longest example or group examples of similar length into
    buckets, shuffle every epoch from `seed`, and know their number of batches,
    so `fit` shows a progress bar.

    Args:
        encoded: the dict `tokenize` returns.
        labels: labels, one per example: ints (single-label), multi-hot rows
            (multi-label) or floats (regression).
        batch_size: examples per batch.
        shuffle: shuffle the examples (every epoch, seeded by `seed`).
        seed: shuffle seed.
        padding: `"longest"` pads each batch to its longest example;
            `"buckets"` groups examples of similar length first (less padding).
        bucket_boundaries: length boundaries for `"buckets"`; by default the
            quartiles of the lengths.
        cache: (`tf.data`) cache the unbatched examples in memory after the first epoch
            (the tokenization itself is cached on disk by `tokenize`).
        prefetch: (`tf.data`) prefetch batches (`tf.data.AUTOTUNE`).
        drop_remainder: drop a last smaller batch (of each bucket).
        data_path: `"tf.data"` or `"pydataset"`; default `default_data_path()`.
    """
    labels = _check(encoded, labels, padding, batch_size)
    data_path = data_path or default_data_path()
    if data_path == "pydataset":
        from keras_adapterfusion.tasks.batches import TokenBatches

        return TokenBatches(encoded, labels, batch_size=batch_size, shuffle=shuffle, seed=seed, padding=padding,
                            bucket_boundaries=bucket_boundaries, drop_remainder=drop_remainder)
    if data_path != "tf.data":
        raise ValueError(f"make_dataset: data_path {data_path!r}; expected 'tf.data' or 'pydataset'.")
    import tensorflow as tf

    n = len(encoded["input_ids"])
    choice_dims = encoded["input_ids"][0].ndim == 2
    inner = [None, None] if choice_dims else [None]

    def generator():
        for i in range(n):
            yield {k: encoded[k][i] for k in INPUT_KEYS}, labels[i]

    label_dtype = tf.as_dtype(labels.dtype)
    spec = ({k: tf.TensorSpec(inner, tf.int32) for k in INPUT_KEYS}, tf.TensorSpec(labels.shape[1:], label_dtype))
    ds = tf.data.Dataset.from_generator(generator, output_signature=spec)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    pad_values = ({k: tf.constant(0, tf.int32) for k in INPUT_KEYS}, tf.constant(0, label_dtype))
    if padding == "longest" or choice_dims:
        ds = ds.padded_batch(batch_size, padding_values=pad_values, drop_remainder=drop_remainder)
        num_batches = count_batches(np.zeros(n, int), 1, batch_size, drop_remainder)
    else:
        boundaries, bucket_of = bucket_plan(lengths(encoded), bucket_boundaries)
        num_batches = count_batches(bucket_of, len(boundaries) + 1, batch_size, drop_remainder)
        ds = ds.bucket_by_sequence_length(
            lambda x, y: tf.shape(x["input_ids"])[0],
            bucket_boundaries=boundaries,
            bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
            padding_values=pad_values,
            drop_remainder=drop_remainder,
        )
    ds = ds.apply(tf.data.experimental.assert_cardinality(num_batches))
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds


# ------------------------------------------------------------------ metrics
def _f1(y_true, y_pred, positive):
    tp = np.sum((y_pred == positive) & (y_true == positive))
    fp = np.sum((y_pred == positive) & (y_true != positive))
    fn = np.sum((y_pred != positive) & (y_true == positive))
    return 0.0 if tp == 0 else float(2 * tp / (2 * tp + fp + fn))


def _ranks(x):
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = np.asarray(x)[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks


def _pearson(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator else 0.0


def compute_metrics(names, y_true, logits_or_scores, kind="single_label"):
    """Metric values by name.

    `kind` says how to read the model's outputs: `"single_label"` (argmax of the
    logits; accuracy, f1 of class 1, macro_f1, matthews), `"multi_label"` (every
    logit > 0 is a predicted label; micro_f1 over all label decisions,
    exact_match of the whole label set) or `"regression"` (the score itself;
    pearson, spearman, mse).
    """
    y_true = np.asarray(y_true)
    scores = np.asarray(logits_or_scores, dtype=np.float64)
    if kind == "multi_label":
        y_pred = (scores > 0).astype(np.int64)
        y_true = (y_true > 0.5).astype(np.int64)
    elif kind == "regression":
        y_pred = scores.reshape(-1)
        y_true = y_true.reshape(-1).astype(np.float64)
    else:
        y_pred = scores.argmax(-1) if scores.ndim == 2 and scores.shape[-1] > 1 else scores.reshape(-1)
    out = {}
    for name in names:
        if name == "accuracy":
            out[name] = float(np.mean(y_pred == y_true))
        elif name == "f1":
            out[name] = _f1(y_true, y_pred, 1)
        elif name == "macro_f1":
            classes = np.unique(np.concatenate([y_true, y_pred]))
            out[name] = float(np.mean([_f1(y_true, y_pred, c) for c in classes]))
        elif name == "matthews":
            classes = np.unique(np.concatenate([y_true, y_pred]))
            confusion = np.array([[np.sum((y_true == a) & (y_pred == b)) for b in classes] for a in classes], float)
            t, p, c, s = confusion.sum(1), confusion.sum(0), np.trace(confusion), confusion.sum()
            denominator = np.sqrt((s * s - (p * p).sum()) * (s * s - (t * t).sum()))
            out[name] = float((c * s - (t * p).sum()) / denominator) if denominator else 0.0
        elif name == "pearson":
            out[name] = _pearson(y_true, y_pred)
        elif name == "spearman":
            out[name] = _pearson(_ranks(y_true), _ranks(y_pred))
        elif name == "mse":
            out[name] = float(np.mean((np.asarray(y_true, np.float64) - y_pred) ** 2))
        elif name == "micro_f1":
            out[name] = _f1(y_true.reshape(-1), y_pred.reshape(-1), 1)
        elif name == "exact_match":
            out[name] = float(np.mean(np.all(y_true == y_pred, axis=-1)))
        else:
            raise ValueError(f"compute_metrics: unknown metric {name!r}.")
    return out
