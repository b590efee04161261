"""Which weights a training stage trains: the *trainable spec*, in one place.

A spec is a small dict, stored in a model's config:

| key | meaning |
|---|---|
| `encoder` | the pretrained encoder's own weights (embeddings, blocks) train |
| `pooler` | with `encoder`, the pooler trains too |
| `adapters` | names of the adapters that train |
| `fusions` | keys of the fusions that train |
| `heads` | the model's heads train |

Several models can share one encoder and each train different weights (a
stage-1 model trains an adapter, a stage-2 model a fusion over it), so a model
never trusts the layers' current `trainable` flags, which the last model to
run may have set: `spec_trainable_weights` derives the weights from the spec,
and `apply_trainable_spec` sets the flags before a model trains. The builders
(`keras_adapterfusion.training.builders`) and the models (`keras_adapterfusion.models.adapter_model`)
both import this module; neither imports the other for it.

Example:

```python
spec = make_spec(adapters=["sentiment"], heads=True)      # stage 1, ST-A
weights = spec_trainable_weights(encoder, [head], spec)   # the adapter's and the head's
```
"""

SPEC_KEYS = ("encoder", "pooler", "adapters", "fusions", "heads")


def make_spec(encoder=False, pooler=False, adapters=(), fusions=(), heads=True):
    """A trainable spec (see the module docstring)."""
    return {
        "encoder": bool(encoder),
        "pooler": bool(pooler),
        "adapters": sorted(adapters),
        "fusions": sorted(fusions),
        "heads": bool(heads),
    }


def check_spec(spec):
    """Return `spec` if it is a trainable spec; raise `ValueError` naming what is wrong."""
    if not isinstance(spec, dict) or set(spec) != set(SPEC_KEYS):
        raise ValueError(f"trainable_spec: got {spec!r}; expected a dict with keys {list(SPEC_KEYS)}.")
    for key in ("adapters", "fusions"):
        if not isinstance(spec[key], (list, tuple)) or not all(isinstance(n, str) for n in spec[key]):
            raise ValueError(f"trainable_spec[{key!r}]: got {spec[key]!r}; expected a list of names.")
    return spec


def _adapter_layers(encoder):
    """`(name, layer)` of every adapter layer of every block: each slot's, then each LoRA's."""
    for block in encoder.blocks:
        for slot in block.slots.values():
            yield from slot.adapters.items()
        for name in block.adapter_configs:
            for layer in block.loras(name).values():
                yield name, layer


def _fusion_layers(encoder):
    """`(key, layer)` of every fusion layer of every block and slot."""
    for block in encoder.blocks:
        for slot in block.slots.values():
            yield from slot.fusions.items()


def apply_trainable_spec(encoder, heads, spec):
    """Set the trainable flags of `encoder`'s layers and of `heads` from `spec`.

    Flags are set on the leaf layers (embeddings, each dense and norm of each
    block, each adapter, each fusion, the pooler, the heads); the encoder and its
    blocks stay trainable containers, since Keras hides every weight under a
    non-trainable parent.
    """
    check_spec(spec)
    encoder.trainable = True
    for block in encoder.blocks:
        block.trainable = True
    base = spec["encoder"]
    for layer in encoder.input_layers():
        layer.trainable = base
    if encoder.use_pooler:
        encoder.pooler.trainable = base and spec["pooler"]
    for block in encoder.blocks:
        for layer in block.base_layers():
            layer.trainable = base
    adapters, fusions = set(spec["adapters"]), set(spec["fusions"])
    for name, layer in _adapter_layers(encoder):
        layer.trainable = name in adapters
    for key, layer in _fusion_layers(encoder):
        layer.trainable = key in fusions
    for head in heads:
        head.trainable = spec["heads"]


def spec_layers(encoder, heads, spec):
    """The layers whose weights `spec` trains."""
    check_spec(spec)
    layers = []
    if spec["encoder"]:
        layers.extend(encoder.input_layers())
        if encoder.use_pooler and spec["pooler"]:
            layers.append(encoder.pooler)
        for block in encoder.blocks:
            layers.extend(block.base_layers())
    layers.extend(layer for name, layer in _adapter_layers(encoder) if name in spec["adapters"])
    layers.extend(layer for key, layer in _fusion_layers(encoder) if key in spec["fusions"])
    if spec["heads"]:
        layers.extend(heads)
    return layers


def spec_trainable_weights(encoder, heads, spec):
    """The weights a model with `spec` trains, whatever the layers' current flags say.

    Every weight of the spec's layers, except state a layer declares it never
    trains (`non_trainable_state()`, e.g. a fusion's annealed temperature).
    """
    out, seen = [], set()
    for layer in spec_layers(encoder, heads, spec):
        state = {id(v) for v in getattr(layer, "non_trainable_state", lambda: [])()}
        for v in layer.weights:
            if id(v) not in seen and id(v) not in state:
                seen.add(id(v))
                out.append(v)
    return out
