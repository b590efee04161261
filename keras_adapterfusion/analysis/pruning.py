"""Prune what fusion does not use, and drop adapters from the lower blocks (AdapterDrop).

AdapterFusion often gives most of its attention to one or two of its adapters. AdapterDrop
(Rücklé et al., 2021) makes inference cheaper in two ways, both offered here:

- `prune_fusion(model, data, keep=k)`: keep the k adapters with the highest mean fusion
  attention on `data` (`adapter_importance`), and fuse only those. The fusion's Q, K and V do
  not depend on how many adapters it fuses, so the pruned model is exactly the model built
  with only the kept adapters, its fusion and head holding the same weights.
- `drop_adapters(model, blocks=n)`: the first n blocks run no adapter (and no fusion): their
  adapters are left out (`AdapterConfig.leave_out`), so those blocks compute what the plain
  encoder computes there.

Both return a new `AdapterModel` on a new encoder that holds only what the model runs (the
dropped adapters' weights are not copied), so it saves (`.keras`, native and AdapterHub
formats) and exports like any other model; the original model is left as it was. The two
compose: `drop_adapters(prune_fusion(model, data, keep=2), blocks=2)`.

Example:

```python
from keras_adapterfusion.analysis import pruning

print(pruning.adapter_importance(fusion_model, validation_x))   # {"sentiment": 0.61, "nli": 0.07, ...}
small = pruning.prune_fusion(fusion_model, validation_x, keep=2)
faster = pruning.drop_adapters(small, blocks=3)
faster.save("pruned.keras")
```

References:
    - [Rücklé et al., 2021, AdapterDrop](https://arxiv.org/abs/2010.11918)
"""

import numpy as np

from keras_adapterfusion.layers.adapter_setup import AdapterSetup


def _adapter_model(model, what):
    from keras_adapterfusion.models.adapter_model import AdapterModel

    if not isinstance(model, AdapterModel):
        raise ValueError(f"{what}: got {type(model).__name__}; expected an AdapterModel (MultiTaskModel routes "
                         "examples per row and is not supported).")
    return model


def _fusion_model(model, what):
    _adapter_model(model, what)
    setup = model.adapter_setup
    if setup is None or setup.kind != "fuse" or not setup.is_flat():
        raise ValueError(f"{what}: model {model.name!r} runs adapter setup {str(setup)!r}; expected a fusion over "
                         "adapter names.")
    return setup


def control_fusion(model, exclude=(), fixed=None, name=None):
    """The fusion model with some adapters left out, or some attention weights fixed (no retraining).

    A new `AdapterModel` on the same encoder and head (the weights are shared, nothing is copied) whose
    setup is `model.adapter_setup.controlled(exclude, fixed)`: excluded adapters do not run and the
    attention is a softmax over the others; fixed adapters get their weight on every token and the
    others share the rest as the fusion's softmax over them decides (see `AdapterSetup.controlled`).
    `prune_fusion` drops adapters through the same exclusion.

    Args:
        model: an `AdapterModel` whose `adapter_setup` is a fusion over adapter names.
        exclude: names of fused adapters to leave out.
        fixed: dict fused adapter name -> weight in [0, 1] (summing to at most 1; to exactly 1 when
            every kept adapter is fixed).
        name: the new model's name (default: the model's name with `_controlled`).

    Returns:
        A new `AdapterModel` sharing `model`'s encoder and head.

    Example:

    ```python
    without_topic = control_fusion(fusion_model, exclude=["topic"])
    half_sentiment = control_fusion(fusion_model, fixed={"sentiment": 0.5})
    ```
    """
    from keras_adapterfusion.models.adapter_model import AdapterModel

    setup = _fusion_model(model, "control_fusion")
    controlled = setup.controlled(exclude=exclude, fixed=fixed)
    return AdapterModel(model.encoder, model.head, adapter_setup=controlled,
                        output_hidden_states=model.output_hidden_states, output_key=model.output_key,
                        trainable_spec=model.trainable_spec, name=name or f"{model.name}_controlled")


def adapter_importance(model, data, steps=None, batch_size=64):
    """Mean fusion attention of each fused adapter on `data`, the ranking `prune_fusion` uses.

    The attention is averaged over the real tokens of `data` (see
    `analysis.collect_fusion_attentions`), then over the blocks (and the two slots, for
    adapters in both) where the fusion runs; blocks whose adapters are all left out do not
    count.

    Args:
        model: an `AdapterModel` whose `adapter_setup` is a fusion.
        data: inputs as `analysis.collect_fusion_attentions` takes them: a dict of arrays,
            `(x, y)` arrays, or batches (a `tf.data.Dataset`, a `PyDataset`, a list).
        steps: use at most this many batches.
        batch_size: batch size for arrays.

    Returns:
        A dict adapter name -> mean attention, in the fusion's order; the values sum to 1.

    Example:

    ```python
    adapter_importance(model, {"input_ids": ids, "attention_mask": mask})
    # {"vader_movie": 0.12, "subjectivity": 0.03, "bbc_topic": 0.02, "target": 0.83}
    ```
    """
    from keras_adapterfusion.analysis.attentions import collect_fusion_attentions

    setup = _fusion_model(model, "adapter_importance")
    config = model.encoder.adapter_configs[setup.adapters[-1]]
    rows = []
    for slot, present in (("mh", config.mh_adapter), ("output", config.output_adapter)):
        if present:
            mean = collect_fusion_attentions(model, data, steps=steps, slot=slot, verbose=0, batch_size=batch_size)
            rows.extend(r for r in mean if r.sum() > 0)  # blocks where the fusion ran
    if not rows:
        raise ValueError(f"adapter_importance: the fusion of model {model.name!r} runs in no block.")
    scores = np.mean(np.stack(rows), axis=0)
    return {name: float(v) for name, v in zip(setup.adapters, scores)}


def prune_fusion(model, data, keep, steps=None, batch_size=64, name=None):
    """A model that fuses only the `keep` adapters with the highest mean fusion attention on `data`.

    The others are excluded as `control_fusion(model, exclude=...)` excludes them (the fusion's
    query, key and value projections do not depend on the number of fused adapters), and the
    result is copied onto a new encoder holding only what it runs: the kept adapters (in the
    fusion's order), a fusion over them with the original fusion's weights, and the same head.
    `model` is not changed.

    Args:
        model: an `AdapterModel` whose `adapter_setup` is a fusion.
        data: data to rank the adapters on (see `adapter_importance`); use held-out data of
            the target task.
        keep: how many adapters to keep, from 2 to the number fused (a fusion needs two; for one
            adapter, use that adapter's own model).
        steps: rank on at most this many batches.
        batch_size: batch size for arrays.
        name: the new model's name (default: the model's name with `_pruned`).

    Returns:
        A new `AdapterModel`. Its `pruning` attribute records `kept`, `dropped` and the
        `importance` of every adapter.

    Example:

    ```python
    pruned = prune_fusion(fusion_model, validation_x, keep=2)
    pruned.pruning["kept"]          # e.g. ["vader_movie", "vader_tweets"]
    pruned.predict(test_x)
    ```
    """
    setup = _fusion_model(model, "prune_fusion")
    n = len(setup.adapters)
    if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)) or not 2 <= keep <= n:
        raise ValueError(f"prune_fusion.keep: got {keep!r}; expected an int from 2 to {n} (the number of fused "
                         "adapters; a fusion needs two, for one adapter use its own model).")
    importance = adapter_importance(model, data, steps=steps, batch_size=batch_size)
    order = sorted(range(n), key=lambda i: (-importance[setup.adapters[i]], i))  # ties: the fusion's order
    chosen = sorted(order[:keep])
    kept = [setup.adapters[i] for i in chosen]
    excluded = control_fusion(model, exclude=[a for a in setup.adapters if a not in kept])
    pruned = _rebuild(excluded, drop_blocks=0, name=name or f"{model.name}_pruned")
    pruned.pruning = {"kept": kept, "dropped": [a for a in setup.adapters if a not in kept],
                      "importance": importance}
    return pruned


def drop_adapters(model, blocks, name=None):
    """AdapterDrop at inference: a model whose first `blocks` blocks run no adapter and no fusion.

    In those blocks the adapters are left out (added to each adapter's
    `AdapterConfig.leave_out`), so the blocks compute exactly what the plain encoder computes
    there, and the new encoder holds no adapter weights for them. Works for a single adapter
    and for a fusion (where the fusion's attention is reported as zeros for dropped blocks, as
    for any block without adapters). It is a new model on a new encoder; `model` is not changed.

    Args:
        model: an `AdapterModel` running one adapter or a fusion.
        blocks: drop adapters from blocks `0 .. blocks - 1`; an int from 0 to the number of blocks.
        name: the new model's name (default: the model's name with `_drop{blocks}`).

    Returns:
        A new `AdapterModel`. Its `pruning` attribute records `dropped_blocks` (and what
        `prune_fusion` recorded, when `model` came from it).

    Example:

    ```python
    faster = drop_adapters(fusion_model, blocks=3)    # blocks 0, 1, 2 run the plain encoder
    ```
    """
    _adapter_model(model, "drop_adapters")
    setup = model.adapter_setup
    if setup is None or setup.kind not in ("single", "fuse"):
        raise ValueError(f"drop_adapters: model {model.name!r} runs adapter setup {str(setup)!r}; expected one "
                         "adapter or a fusion.")
    layers = model.encoder.num_layers
    if isinstance(blocks, bool) or not isinstance(blocks, (int, np.integer)) or not 0 <= blocks <= layers:
        raise ValueError(f"drop_adapters.blocks: got {blocks!r}; expected an int from 0 to {layers} (the number "
                         "of blocks).")
    dropped = _rebuild(model, drop_blocks=int(blocks), name=name or f"{model.name}_drop{blocks}")
    dropped.pruning = {**getattr(model, "pruning", {}), "dropped_blocks": int(blocks)}
    return dropped


def _rebuild(model, drop_blocks, name):
    """A new AdapterModel on a new encoder holding the base, the adapters the model runs (left out of
    the first `drop_blocks` blocks; a controlled fusion's excluded ones not at all), its fusion over
    them (when it fuses; fixed weights kept) and a copy of its head."""
    import keras

    from keras_adapterfusion.backbones.copying import copy_encoder
    from keras_adapterfusion.models.adapter_model import AdapterModel
    from keras_adapterfusion.models.trainable import make_spec

    encoder = model.encoder
    setup = model.adapter_setup
    adapters = [a for a in setup.adapters if a not in setup.exclude]
    if setup.kind == "fuse" and len(adapters) < 2:
        raise ValueError(f"{name}: model {model.name!r} runs {setup}, one adapter; expected a fusion that keeps "
                         "two or more to copy (run the controlled model itself).")
    new_setup = AdapterSetup.single(adapters[0]) if setup.kind == "single" else \
        AdapterSetup.fuse(adapters, setup.fusion_name).controlled(fixed=dict(setup.fixed))
    fusions = {setup.fusion_key: (list(adapters), setup.fusion_name)} if setup.kind == "fuse" else None
    new_encoder = copy_encoder(encoder, adapters, fusions=fusions, leave_out=range(drop_blocks))

    head = None
    if model.head is not None:
        head = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model.head))
    spec = model.trainable_spec
    if spec is not None:
        spec = make_spec(encoder=spec["encoder"], pooler=spec["pooler"],
                         adapters=[a for a in spec["adapters"] if a in adapters],
                         fusions=[new_setup.fusion_key] if spec["fusions"] and setup.kind == "fuse" else (),
                         heads=spec["heads"])
    pruned = AdapterModel(new_encoder, head, adapter_setup=new_setup, output_hidden_states=model.output_hidden_states,
                          output_key=model.output_key, trainable_spec=spec, name=name)
    if head is not None:
        head.set_weights(model.head.get_weights())  # the same config, so the same weights
    return pruned
