"""Numerics shared by the layers: the precision softmaxes run in."""

import numpy as np
from keras import backend, ops

HALF_PRECISIONS = ("float16", "bfloat16")


def softmax_input(x):
    """`x` for a softmax: half precisions widened to float32 (mixed precision), float32 and float64 kept."""
    if backend.standardize_dtype(x.dtype) in HALF_PRECISIONS:
        return ops.cast(x, "float32")
    return x


def lowest(dtype):
    """The most negative finite number of `dtype`: what masked attention scores are set to."""
    return float(np.finfo(backend.standardize_dtype(dtype)).min)
