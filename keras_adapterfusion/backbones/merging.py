"""Weight merging: a new adapter whose weights combine those of trained adapters of one kind.

`merge_adapters(encoder, "avg", ["a", "b"], weights=[0.3, 0.7])` adds the adapter `"avg"` to the encoder.

- `method="linear"` (bottleneck adapters and LoRAs): every variable is the weighted sum of the same
  variable of `"a"` and `"b"` (down and up kernels and biases, the adapters' own LayerNorms, a learned
  scaling; a LoRA's `A` and `B`): AdapterHub's `average_adapter` with its `"linear"` strategy.
- `method="peft_linear"` and `method="ties"` (LoRAs of one rank): PEFT's `add_weighted_adapter` with
  `combination_type="linear"` / `"ties"`. Each LoRA's `A` and `B` are weighted by `sqrt(w_n · scaling_n)`
  and summed (task arithmetic), or, for TIES (Yadav et al., 2023), first pruned to their `density` largest
  magnitudes, then summed where their sign agrees with the elected (majority) sign and divided by how many
  agree. The new LoRA has the same rank and scaling 1 (`alpha = r`), as PEFT makes it.

The new adapter then runs, trains, fuses and saves like any other.

Example:

```python
merge_adapters(encoder, "sentiment_mix", {"imdb": 0.5, "tweets": 0.5})
model = AdapterModel(encoder, head, adapter_setup="sentiment_mix")
```
"""

import math

from keras import ops

from keras_adapterfusion.configs import is_lora
from keras_adapterfusion.names import check_name

METHODS = ("linear", "peft_linear", "ties")
MAJORITY_SIGN = ("total", "frequency")
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


def merge_adapters(encoder, name, adapters, weights=None, normalize_weights=None, method="linear", density=None,
                   majority_sign="total"):
    """Add adapter `name` to `encoder`, its weights a weighted combination of trained adapters' weights.

    Args:
        encoder: a built `TransformerEncoder` holding the adapters.
        name: the new adapter's name (not yet in the encoder).
        adapters: the adapters to merge: a list of names, or a dict name -> weight.
        weights: one weight per adapter (default: equal); not with a dict.
        normalize_weights: divide the weights by their sum; default True for `"linear"` (AdapterHub's
            default) and False for PEFT's methods (PEFT takes them as given).
        method: `"linear"` (AdapterHub's `average_adapter`), or for LoRAs `"peft_linear"` or `"ties"`
            (PEFT's `add_weighted_adapter`); see the module docstring.
        density: for `"ties"`, the fraction of each LoRA matrix's entries kept (by magnitude), in (0, 1].
        majority_sign: for `"ties"`, how the sign of each entry is elected: `"total"` (the sign of the sum)
            or `"frequency"` (the more frequent sign), as PEFT's `majority_sign_method`.

    Returns:
        `name`.

    Raises:
        ValueError: a bad name, unknown adapters, weights that do not fit, or adapters whose configs differ
            in more than `dropout` and `init_weights` (as AdapterHub refuses them; PEFT's methods also need one
            rank); the encoder is then unchanged.
    """
    check_name(name, "merge_adapters name")
    if method not in METHODS:
        raise ValueError(f"merge_adapters: method {method!r}; expected one of {list(METHODS)}.")
    peft_method = method in ("peft_linear", "ties")
    names, weights = _merge_weights(adapters, weights, (not peft_method) if normalize_weights is None
                                    else normalize_weights)
    if name in encoder.adapter_configs:
        raise ValueError(f"merge_adapters: the encoder already has an adapter {name!r}; expected a new name.")
    missing = [n for n in names if n not in encoder.adapter_configs]
    if missing:
        raise ValueError(f"merge_adapters: unknown adapter(s) {missing}; expected names from "
                         f"{sorted(encoder.adapter_configs)}.")
    configs = [encoder.adapter_configs[n] for n in names]
    free = _FREE_FIELDS + (("alpha",) if peft_method else ())  # PEFT folds each LoRA's scaling into its weight
    if peft_method and not all(is_lora(c) for c in configs):
        raise ValueError(f"merge_adapters: method {method!r} merges LoRAs; {[n for n, c in zip(names, configs) if not is_lora(c)]} "
                         "are bottleneck adapters (use method='linear').")
    if type(configs[0]) is not type(configs[-1]) or any(type(c) is not type(configs[0]) for c in configs):
        raise ValueError(f"merge_adapters: adapters {names} mix LoRAs and bottleneck adapters; expected one kind.")
    shape = [c.replace(**{f: getattr(configs[0], f) for f in free}) for c in configs]
    if any(c != shape[0] for c in shape[1:]):
        differ = sorted(f for f, v in configs[0].to_dict().items()
                        if f not in free and any(c.to_dict()[f] != v for c in configs[1:]))
        raise ValueError(f"merge_adapters: adapters {names} differ in {differ}; expected the same config "
                         f"(only {list(free)} may differ).")
    if method == "ties":
        if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0.0 < density <= 1.0:
            raise ValueError(f"merge_adapters: density {density!r}; expected a fraction in (0, 1] for 'ties'.")
        if majority_sign not in MAJORITY_SIGN:
            raise ValueError(f"merge_adapters: majority_sign {majority_sign!r}; expected one of {list(MAJORITY_SIGN)}.")
    elif density is not None:
        raise ValueError(f"merge_adapters: density {density!r} given for method {method!r}; only 'ties' prunes.")
    new_config = configs[0].replace(alpha=configs[0].r) if peft_method else configs[0]
    if peft_method:
        # PEFT: sqrt(w · scaling) on both A and B, so that their product carries w · scaling.
        weights = [math.sqrt(w * c.scaling) for w, c in zip(weights, configs)]
    encoder.add_adapter(name, new_config)
    # The same config gives the same variables in the same order (block by block, layer by layer).
    sources = [encoder.adapter_weights(n) for n in names]
    for target, *variables in zip(encoder.adapter_weights(name), *sources, strict=True):
        terms = [ops.convert_to_tensor(v) for v in variables]
        if method == "ties":
            merged = _ties(terms, weights, density, majority_sign, target.dtype)
        else:
            merged = None
            for term, w in zip(terms, weights):
                part = term * ops.cast(w, target.dtype)
                merged = part if merged is None else merged + part
        target.assign(merged)
    return name


def _ties(tensors, weights, density, majority_sign, dtype):
    """TIES merging of one variable: prune each to its `density` largest magnitudes, elect a sign per entry
    (from the pruned, unweighted tensors), and average the weighted entries that agree with it."""
    pruned = []
    for t in tensors:
        flat = ops.reshape(t, (-1,))
        k = int(density * flat.shape[0])
        if k >= flat.shape[0]:
            pruned.append(t)
            continue
        keep = ops.zeros_like(flat)
        if k > 0:
            _, index = ops.top_k(ops.abs(flat), k)
            keep = ops.scatter_update(keep, ops.expand_dims(index, 1), ops.ones((k,), dtype=flat.dtype))
        pruned.append(ops.reshape(flat * keep, t.shape))
    stacked = ops.stack(pruned, axis=0)
    signs = ops.sign(stacked)
    magnitude = ops.sum(stacked, axis=0) if majority_sign == "total" else ops.sum(signs, axis=0)
    elected = ops.where(magnitude >= 0, 1.0, -1.0)
    agree = ops.cast(ops.equal(signs, ops.cast(elected, signs.dtype)[None]), dtype)
    scale = ops.reshape(ops.convert_to_tensor(weights, dtype=dtype), (-1,) + (1,) * len(tensors[0].shape))
    total = ops.sum(stacked * scale * agree, axis=0)
    return total / ops.maximum(ops.sum(agree, axis=0), 1.0)
