"""N bottleneck adapters side by side: their weights as a few stacked matrices, for fusion.

AdapterFusion runs every fused adapter on the same input. Run one by one, that is
2N small matrix products and N activations. Side by side it is one product for all
down projections (their kernels concatenated, `[H, S]` with `S` the sum of the
bottleneck sizes) and one for all up projections (`[S, H]`, rows concatenated),
and the adapters' own variables stay where they are: these matrices are read
from them at every call, so training, saving and loading see nothing new.

A *selector* `[S, N]` (1 where bottleneck unit j belongs to adapter n) turns
per-unit products into per-adapter sums and spreads per-adapter weights over
their units, so adapters of different bottleneck sizes stack as well.
"""

import numpy as np
from keras import ops


def can_stack(adapters):
    """Whether `adapters` (`BottleneckAdapter`s) can run side by side.

    They can unless one normalizes its input (`ln_before`, a LayerNorm per
    adapter) or their activations differ.

    Args:
        adapters: a list of `BottleneckAdapter` layers.

    Returns:
        A bool.

    Example:

    ```python
    can_stack([BottleneckAdapter(24), BottleneckAdapter(48)])                      # True
    can_stack([BottleneckAdapter(24), BottleneckAdapter(24, non_linearity="swish")])  # False
    ```
    """
    return (
        len(adapters) > 0
        and not any(a.ln_before for a in adapters)
        and len({(a.non_linearity or "linear").lower() for a in adapters}) == 1
    )


def selector(adapters):
    """The `[S, N]` 0/1 matrix: unit j of the stacked bottleneck belongs to adapter n.

    Args:
        adapters: a list of `BottleneckAdapter` layers.

    Returns:
        A float32 NumPy array `[S, N]`.

    Example:

    ```python
    selector([BottleneckAdapter(2), BottleneckAdapter(1)])   # [[1, 0], [1, 0], [0, 1]]
    ```
    """
    sizes = [a.bottleneck_size for a in adapters]
    out = np.zeros((sum(sizes), len(sizes)), dtype="float32")
    start = 0
    for n, size in enumerate(sizes):
        out[start:start + size, n] = 1.0
        start += size
    return out


def stacked_weights(adapters, dtype):
    """The adapters' weights side by side, with each adapter's scaling folded into its up projection.

    Args:
        adapters: built `BottleneckAdapter`s that `can_stack`.
        dtype: the dtype of the products (the layer's compute dtype).

    Returns:
        A dict: `down_kernel` `[H, S]`, `down_bias` `[S]`, `up_kernel` `[S, H]`,
        `up_bias` `[N, H]`, `selector` `[S, N]`, and `activation`, the shared
        activation function. `S` is the sum of the bottleneck sizes.

    Example:

    ```python
    adapters = [BottleneckAdapter(4), BottleneckAdapter(8)]
    for a in adapters:
        a.build((None, 64))
    w = stacked_weights(adapters, "float32")
    w["down_kernel"].shape, w["up_kernel"].shape, w["up_bias"].shape   # (64, 12), (12, 64), (2, 64)
    ```
    """
    up_kernels, up_biases = [], []
    for adapter in adapters:
        kernel = ops.cast(adapter.up.kernel, dtype)
        bias = ops.cast(adapter.up.bias, dtype)
        if isinstance(adapter.scaling, str):  # "learned" [1] or "channel" [H]: scales every output column
            scale = ops.cast(adapter.scale, dtype)
            kernel, bias = kernel * scale, bias * scale
        elif adapter.scaling != 1.0:
            kernel, bias = kernel * adapter.scaling, bias * adapter.scaling
        up_kernels.append(kernel)
        up_biases.append(bias)
    return {
        "down_kernel": ops.concatenate([ops.cast(a.down.kernel, dtype) for a in adapters], axis=1),
        "down_bias": ops.concatenate([ops.cast(a.down.bias, dtype) for a in adapters], axis=0),
        "up_kernel": ops.concatenate(up_kernels, axis=0),
        "up_bias": ops.stack(up_biases, axis=0),
        "selector": ops.convert_to_tensor(selector(adapters), dtype=dtype),
        "activation": adapters[0]._activation,
    }
