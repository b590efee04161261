"""Weight merging: a new adapter whose weights combine those of trained adapters of one kind.

`merge_adapters(encoder, "avg", ["a", "b"], weights=[0.3, 0.7])` adds the adapter `"avg"` to the encoder,
with every variable the weighted sum of the same variable of `"a"` and `"b"` (down and up kernels and
biases, the adapters' own LayerNorms, a learned scaling): AdapterHub's `average_adapter` with its `"linear"`
strategy. The new adapter then runs, trains, fuses and saves like any other. Where each variable lives
comes from `formats.locations`, the table both file formats read.

Example:

```python
merge_adapters(encoder, "sentiment_mix", {"imdb": 0.5, "tweets": 0.5})
model = AdapterModel(encoder, head, adapter_setup="sentiment_mix")
```
"""

from keras import ops

from keras_adapterfusion.formats.locations import adapter_locations, module_variable
from keras_adapterfusion.names import check_name

METHODS = ("linear",)
# Fields that may differ between merged adapters (they do not change the shape of the computation).
_FREE_FIELDS = ("dropout", "init_weights")


def _merge_weights(adapters, weights, normalize_weights):
    """`(names, weights)` from a list of names (with `weights`) or a dict name -> weight."""
    if isinstance(adapters, dict):
        if weights is not None:
            raise ValueError("merge_adapters: got adapters as a dict of weights and weights too; expected one.")
        adapters, weights = list(adapters), list(adapters.values())
    if isinstance(adapters, str) or not isinstance(adapters, (list, tuple)) or len(adapters) < 2:
        raise ValueError(f"merge_adapters: adapters {adapters!r}; expected two or more adapter names (a list, or a "
                         "dict name -> weight).")
    if len(set(adapters)) != len(adapters):
        raise ValueError(f"merge_adapters: adapters {list(adapters)} repeat a name; expected distinct names.")
    if weights is None:
        weights = [1.0 / len(adapters)] * len(adapters)
    if isinstance(weights, (str, dict)) or not hasattr(weights, "__len__") or len(weights) != len(adapters) or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights):
        raise ValueError(f"merge_adapters: weights {weights!r}; expected {len(adapters)} numbers, one per adapter.")
    weights = [float(w) for w in weights]
    if normalize_weights:
        total = sum(weights)
        if total == 0:
            raise ValueError(f"merge_adapters: weights {weights} sum to 0; expected a non-zero sum (or "
                             "normalize_weights=False).")
        weights = [w / total for w in weights]
    return list(adapters), weights


def merge_adapters(encoder, name, adapters, weights=None, normalize_weights=True, method="linear"):
    """Add adapter `name` to `encoder`, its weights a weighted combination of trained adapters' weights.

    Args:
        encoder: a built `TransformerEncoder` holding the adapters.
        name: the new adapter's name (not yet in the encoder).
        adapters: the adapters to merge: a list of names, or a dict name -> weight.
        weights: one weight per adapter (default: equal); not with a dict.
        normalize_weights: divide the weights by their sum (AdapterHub's default).
        method: `"linear"`, the weighted sum of every variable (AdapterHub's `average_adapter`).

    Returns:
        `name`.

    Raises:
        ValueError: a bad name, unknown adapters, weights that do not fit, or adapters whose configs differ
            in more than `dropout` and `init_weights` (as AdapterHub refuses them); the encoder is then
            unchanged.
    """
    check_name(name, "merge_adapters name")
    if method not in METHODS:
        raise ValueError(f"merge_adapters: method {method!r}; expected one of {list(METHODS)} for bottleneck "
                         "adapters.")
    names, weights = _merge_weights(adapters, weights, normalize_weights)
    if name in encoder.adapter_configs:
        raise ValueError(f"merge_adapters: the encoder already has an adapter {name!r}; expected a new name.")
    missing = [n for n in names if n not in encoder.adapter_configs]
    if missing:
        raise ValueError(f"merge_adapters: unknown adapter(s) {missing}; expected names from "
                         f"{sorted(encoder.adapter_configs)}.")
    configs = [encoder.adapter_configs[n] for n in names]
    shape = [c.replace(**{f: getattr(configs[0], f) for f in _FREE_FIELDS}) for c in configs]
    if any(c != shape[0] for c in shape[1:]):
        differ = sorted(f for f, v in configs[0].to_dict().items()
                        if f not in _FREE_FIELDS and any(c.to_dict()[f] != v for c in configs[1:]))
        raise ValueError(f"merge_adapters: adapters {names} differ in {differ}; expected the same config "
                         f"(only {list(_FREE_FIELDS)} may differ).")
    encoder.add_adapter(name, configs[0])
    for loc in adapter_locations(encoder, configs[0]):
        target = module_variable(encoder, loc, "adapter", name)
        total = None
        for n, w in zip(names, weights):
            term = ops.convert_to_tensor(module_variable(encoder, loc, "adapter", n)) * ops.cast(w, target.dtype)
            total = term if total is None else total + term
        target.assign(total)
    return name
