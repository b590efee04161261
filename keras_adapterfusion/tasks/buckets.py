"""Length buckets: the token count of each example and the plan that groups examples of like length.

Shared by `tasks.pipeline` (`tf.data`) and `tasks.batches` (the `PyDataset`), and free of Keras and
TensorFlow so that both can import it.
"""

import numpy as np

INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def lengths(encoded):
    """The token count of every example in `tokenize`'s output."""
    return np.asarray([v.shape[-1] for v in encoded["input_ids"]])


def bucket_plan(lengths_, bucket_boundaries=None):
    """`(boundaries, bucket of each example)`: by default the quartiles of the lengths."""
    if bucket_boundaries is None:
        bucket_boundaries = sorted({int(q) + 1 for q in np.quantile(lengths_, [0.25, 0.5, 0.75])})
    return list(bucket_boundaries), np.searchsorted(np.asarray(bucket_boundaries), lengths_, side="right")


def count_batches(bucket_of, num_buckets, batch_size, drop_remainder):
    """Batches per epoch when each bucket is batched on its own."""
    sizes = [int(np.sum(bucket_of == b)) for b in range(num_buckets)]
    return int(sum(c // batch_size if drop_remainder else -(-c // batch_size) for c in sizes))
