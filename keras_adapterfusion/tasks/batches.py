"""`TokenBatches`: tokenized examples as a `keras.utils.PyDataset`, on any backend, without TensorFlow.

`FullBatches` is the one-shape variant a tuning trial trains on.

The same grouping as the `tf.data` path of `tasks.pipeline.make_dataset`: one
group, or length buckets (by default at the quartiles of the lengths, each bucket
batched on its own); a shuffle of the examples and of the batch order every epoch
drawn from `seed` (epoch `e` uses the generator `numpy.random.default_rng([seed, e])`,
so a run is reproducible); and a fixed number of batches per epoch, so `fit`
shows a progress bar. Unlike `tf.data`'s per-batch padding, every batch of a
bucket is padded to the bucket's longest example: a few fixed shapes, so a
compiled (XLA) step is traced once per bucket rather than once per batch length.

Example:

```python
from keras_adapterfusion.tasks.batches import TokenBatches

train = TokenBatches(encoded, labels, batch_size=16, shuffle=True, seed=0, padding="buckets")
model.fit(train, epochs=3)
```
"""

import keras
import numpy as np

from keras_adapterfusion.tasks.buckets import INPUT_KEYS, bucket_plan, lengths


class TokenBatches(keras.utils.PyDataset):
    """Batches of `(x, y)` from `tokenize`'s output (see the module docstring).

    Args:
        encoded: the dict `tasks.pipeline.tokenize` returns.
        labels: one label per example (ints, multi-hot rows or floats).
        batch_size: examples per batch.
        shuffle: reshuffle every epoch.
        seed: the shuffle seed.
        padding: `"longest"` or `"buckets"`.
        bucket_boundaries: length boundaries for `"buckets"`.
        drop_remainder: drop the last smaller batch of each bucket.
        **kwargs: `keras.utils.PyDataset` arguments (`workers`, ...).
    """

    def __init__(self, encoded, labels, batch_size=32, shuffle=False, seed=0, padding="longest",
                 bucket_boundaries=None, drop_remainder=False, **kwargs):
        super().__init__(**kwargs)
        self.encoded = encoded
        self.labels = np.asarray(labels)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.drop_remainder = drop_remainder
        n = len(self.labels)
        self.choices = encoded["input_ids"][0].ndim == 2
        lens = lengths(encoded)
        if padding == "buckets" and not self.choices:
            boundaries, self.bucket_of = bucket_plan(lens, bucket_boundaries)
            self.num_buckets = len(boundaries) + 1
        else:
            self.bucket_of, self.num_buckets = np.zeros(n, int), 1
        # Each bucket's longest example: the padded length of its batches.
        self.pad_to = {int(b): int(lens[self.bucket_of == b].max()) for b in np.unique(self.bucket_of)}
        self.epoch = 0
        self.plan = self._plan(0)

    def _plan(self, epoch):
        n = len(self.labels)
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        batches = []
        for bucket in range(self.num_buckets):
            members = order[self.bucket_of[order] == bucket]
            stop = len(members) - len(members) % self.batch_size if self.drop_remainder else len(members)
            batches.extend(members[i:i + self.batch_size] for i in range(0, stop, self.batch_size))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __len__(self):
        return len(self.plan)

    @property
    def num_batches(self):
        return len(self.plan)

    def __getitem__(self, index):
        members = self.plan[index]
        longest = self.pad_to[int(self.bucket_of[members[0]])]
        x = {}
        for key in INPUT_KEYS:
            first = self.encoded[key][members[0]]
            out = np.zeros((len(members),) + first.shape[:-1] + (longest,), np.int32)
            for row, i in enumerate(members):
                value = self.encoded[key][i]
                out[row, ..., : value.shape[-1]] = value
            x[key] = out
        return x, self.labels[members]

    def on_epoch_end(self):
        self.epoch += 1
        self.plan = self._plan(self.epoch)


class FullBatches(TokenBatches):
    """Batches that all have one shape: full (the last one topped up from the epoch's start), one length.

    What a tuning trial trains on, so it compiles one training step. The
    examples are reshuffled every epoch (`seed`, as `TokenBatches`); an epoch
    has `ceil(n / batch_size)` batches, so every example is seen at least once
    per epoch.

    Args:
        encoded: `tokenize`'s output.
        labels: one label (or label row) per example.
        batch_size: examples per batch.
        seed: the shuffle's seed.

    Example:

    ```python
    batches = FullBatches(encoded, labels, batch_size=16, seed=0)
    {tuple(x["input_ids"].shape) for x, _ in (batches[i] for i in range(len(batches)))}  # one shape
    ```
    """

    def __init__(self, encoded, labels, batch_size, seed):
        super().__init__(encoded, labels, batch_size=batch_size, shuffle=True, seed=seed, padding="longest")

    def _plan(self, epoch):
        n, size = len(self.labels), self.batch_size
        order = np.random.default_rng([self.seed, epoch]).permutation(n)
        count = -(-n // size)
        filled = np.resize(order, count * size)  # repeats the order from its start
        return [filled[i * size:(i + 1) * size] for i in range(count)]
