"""Evaluating a model on tokenized data: its outputs, the task's metrics and the training loss in NumPy.

`runs.evaluate` and the `ValidationMetrics` callback use these, so a metric
logged during training and one computed afterwards are the same computation.
"""

import keras
import numpy as np

from keras_adapterfusion.tasks import compute_metrics, get_task


def evaluate(model, task, encoded, labels, batch_size=64):
    """The task's metrics of `model` on tokenized data (see `predict_logits`)."""
    task = get_task(task)
    return task_metrics(task, np.asarray(labels), predict_logits(model, encoded, batch_size))


def task_metrics(task, labels, logits):
    """`task`'s metrics of `logits` against `labels` (`tasks.compute_metrics`)."""
    return compute_metrics(task.metrics, np.asarray(labels), logits, kind=getattr(task, "kind", "single_label"))


def predict_logits(model, encoded, batch_size=64):
    """`model`'s outputs on tokenized data, as float64.

    Every batch is padded to the longest example of the whole set, and the set
    is topped up to a whole number of batches (with copies of its first
    example, whose outputs are dropped), so the prediction function is traced
    and compiled once rather than once per batch shape.
    """
    n = len(encoded["input_ids"])
    extra = -n % batch_size if n > batch_size else 0
    x = {k: _pad([np.asarray(v) for v in encoded[k]] + [np.asarray(encoded[k][0])] * extra) for k in encoded}
    data, size = x, batch_size
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # Batched by tf.data rather than by Keras: on TensorFlow, Keras slices arrays with a
        # parallel map, which op determinism (`seed_everything`) rewrites, logging a spurious
        # error line ("NodeDef mentions attribute use_unbounded_threadpool"). The same batches.
        data, size = tf.data.Dataset.from_tensor_slices(x).batch(batch_size), None
    return np.asarray(model.predict(data, batch_size=size, verbose=0), dtype=np.float64)[:n]


def _pad(values):
    """Stack ragged int arrays ([tokens] or [choices, tokens]) with zero padding on the last axis."""
    longest = max(v.shape[-1] for v in values)
    out = np.zeros((len(values),) + values[0].shape[:-1] + (longest,), np.int32)
    for i, v in enumerate(values):
        out[i, ..., : v.shape[-1]] = v
    return out


def validation_loss(task, labels, logits):
    """The training loss of `task`'s head on `logits`, in NumPy (what the compiled loss computes)."""
    labels = np.asarray(labels)
    logits = np.asarray(logits, dtype=np.float64)
    if task.kind == "regression":
        return float(np.mean((logits.reshape(-1) - labels.reshape(-1)) ** 2))
    if task.kind == "multi_label":
        return float(np.mean(np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))))
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return float(-np.mean(log_probs[np.arange(len(labels)), labels.astype(int)]))
