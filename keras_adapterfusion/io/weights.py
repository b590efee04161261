"""The one weight loader: check every tensor, then assign all of them or none.

Each format (Hugging Face checkpoints, AdapterHub modules, native saves, heads)
only supplies a key table: `WeightRow`s saying which tensor of the file goes
into which Keras variable, with which shape and transform. `stage_weights`
checks the whole table against the file before anything changes:

- every key of the table is in the file, and (with `strict`) every tensor of
  the file is in the table or in `ignore`;
- every tensor has a floating-point dtype;
- every tensor has the expected shape after its transform (`"transpose"` turns
  PyTorch's `[out, in]` into Keras's `[in, out]`);
- every value is finite (NaN and inf are refused unless `allow_nonfinite`).

Only then does `StagedWeights.assign` write the variables. A row's target may
be a callable returning the variable, so a module (an adapter, a fusion) can be
checked first and created only once the check has passed.

Example:

```python
rows = [WeightRow("dense.weight", (64, 32), dense.kernel, "transpose"),
        WeightRow("dense.bias", (32,), dense.bias)]
load_weights(rows, weights.tensors, weights.path)
```
"""

import dataclasses
from typing import Any, Optional, Tuple

import numpy as np

from keras_adapterfusion.errors import CheckpointError

TRANSFORMS = (None, "transpose")


@dataclasses.dataclass(frozen=True)
class WeightRow:
    """One tensor of a weights file mapped onto one Keras variable.

    Args:
        key: the tensor's key in the file.
        shape: the variable's shape (after `transform`).
        target: the variable, or a callable returning it (resolved at assignment).
        transform: `None` or `"transpose"` (a 2-D PyTorch `Linear` weight).
    """

    key: str
    shape: Tuple[int, ...]
    target: Any
    transform: Optional[str] = None

    def variable(self):
        """The Keras variable this row loads into (`target`, or what calling it returns)."""
        return self.target() if callable(self.target) and not hasattr(self.target, "assign") else self.target


def apply_transform(array, transform):
    """File layout -> Keras layout (`"transpose"` reverses the axes of a matrix)."""
    if transform not in TRANSFORMS:
        raise ValueError(f"transform: got {transform!r}; expected one of {list(TRANSFORMS)}.")
    if transform == "transpose":
        return np.ascontiguousarray(array.T)
    return array


def export_transform(array, transform):
    """Keras layout -> file layout (the inverse of `apply_transform`)."""
    return apply_transform(array, transform)


def _fmt(keys, limit=4):
    keys = sorted(keys)
    return str(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


class StagedWeights:
    """Checked values for every row; `assign()` writes them."""

    def __init__(self, staged):
        self.staged = staged

    def assign(self):
        """Assign every staged value to its variable (all were checked when they were staged)."""
        for row, value in self.staged:
            variable = row.variable()
            if tuple(variable.shape) != tuple(value.shape):  # the table and the model disagree: a bug, not a file error
                raise RuntimeError(f"weight table: {row.key!r} has shape {list(value.shape)} but its variable "
                                   f"{getattr(variable, 'path', variable)} has {list(variable.shape)}.")
            variable.assign(value.astype(variable.dtype))

    def __len__(self):
        return len(self.staged)


def stage_weights(rows, tensors, source, strict=True, ignore=(), allow_nonfinite=False):
    """Check `tensors` against `rows` and return the staged values; nothing is assigned.

    Args:
        rows: `WeightRow`s.
        tensors: dict key -> array, as read from `source`.
        source: the file the tensors came from, named in every message.
        strict: refuse tensors of the file that no row asks for.
        ignore: keys the file may hold that are not loaded (e.g. duplicates).
        allow_nonfinite: accept NaN and inf values.

    Raises:
        CheckpointError: naming `source`, the key and what was wrong.
    """
    rows = list(rows)
    expected = {row.key for row in rows}
    if len(expected) != len(rows):
        raise RuntimeError(f"weight table for {source}: repeated keys.")
    missing = expected - set(tensors)
    if missing:
        raise CheckpointError(f"{source}: missing {len(missing)} tensor(s): {_fmt(missing)}.")
    if strict:
        unknown = set(tensors) - expected - set(ignore)
        if unknown:
            raise CheckpointError(f"{source}: {len(unknown)} unexpected tensor(s) {_fmt(unknown)}; they do not "
                                  "belong to this module for this encoder.")
    staged = []
    for row in rows:
        raw = np.asarray(tensors[row.key])
        if not np.issubdtype(raw.dtype, np.floating):
            raise CheckpointError(f"{source}: tensor {row.key!r} has dtype {raw.dtype}; expected floating-point "
                                  "weights.")
        if row.transform == "transpose" and raw.ndim != 2:
            raise CheckpointError(f"{source}: tensor {row.key!r} has shape {list(raw.shape)}; expected a matrix "
                                  f"of shape {list(row.shape[::-1])}.")
        value = apply_transform(raw, row.transform)
        if tuple(value.shape) != tuple(row.shape):
            shown = list(row.shape[::-1]) if row.transform == "transpose" else list(row.shape)
            raise CheckpointError(f"{source}: tensor {row.key!r} has shape {list(raw.shape)}; expected {shown}.")
        if not allow_nonfinite:
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            if bad:
                raise CheckpointError(f"{source}: tensor {row.key!r} holds {bad} NaN or infinite value(s); expected "
                                      "finite weights (pass allow_nonfinite=True to load them anyway).")
        staged.append((row, value))
    return StagedWeights(staged)


def load_weights(rows, tensors, source, **kwargs):
    """`stage_weights(...)`, then assign every row. Returns the number of tensors loaded."""
    staged = stage_weights(rows, tensors, source, **kwargs)
    staged.assign()
    return len(staged)


def gather_weights(rows):
    """The inverse: the current value of every row's variable, in the file's layout, by key (float32)."""
    import keras

    out = {}
    for row in rows:
        value = np.asarray(keras.ops.convert_to_numpy(row.variable()), dtype=np.float32)
        out[row.key] = np.ascontiguousarray(export_transform(value, row.transform))
    return out
