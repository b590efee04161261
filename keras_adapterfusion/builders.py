"""One builder per training stage of AdapterFusion and its baselines.

Every builder takes the same encoder (a `TransformerEncoder`, or a checkpoint path
or cached hub id, loaded with `load_encoder`) and returns an uncompiled
`keras.Model` whose trainable weights are exactly the stage's. Builders reuse
the layer objects they are given, so stage 2 uses the very adapter weights
stage 1 trained, with no copies.

| stage | builder | trains |
|---|---|---|
| head only | `build_head_only_model` | the head |
| full fine-tuning | `build_full_finetune_model` | encoder + head |
| ST-A | `build_adapter_model` | one adapter + its head |
| MT-A | `build_multitask_model` | one adapter + head per task, together |
| Fusion w/ ST-A or MT-A | `build_fusion_model` | fusion layers + a new head (optionally the adapters) |

This module is the only place that decides trainable flags. A model stores its
stage's *trainable spec* (`{"encoder", "pooler", "adapters", "fusions", "heads"}`)
in its config and re-applies it when it is built, loaded from `.keras`, or fit,
so models that share an encoder each train their own weights.

Example:

```python
from keras_adapterfusion import builders

encoder = load_encoder("path/to/bert")
st_a = builders.build_adapter_model(encoder, "sentiment", num_labels=2)     # stage 1
...fit...
fusion = builders.build_fusion_model(encoder, ["sentiment", "nli"], num_labels=3)  # stage 2
```
"""

from keras_adapterfusion.backbones.huggingface import load_encoder
from keras_adapterfusion.backbones.transformer_encoder import TransformerEncoder
from keras_adapterfusion.configs import AdapterConfig
from keras_adapterfusion.layers.classification_head import ClassificationHead
from keras_adapterfusion.layers.transformer_block import fusion_key, fusion_names

SPEC_KEYS = ("encoder", "pooler", "adapters", "fusions", "heads")


def resolve_encoder(encoder, **load_kwargs):
    """A `TransformerEncoder` from an encoder or a checkpoint path / cached hub id."""
    if isinstance(encoder, TransformerEncoder):
        if not encoder.built:
            encoder.build()
        return encoder
    return load_encoder(encoder, **load_kwargs)


def resolve_head(head, num_labels):
    if head is None:
        if num_labels is None:
            raise ValueError("builder: pass head=<a head layer> or num_labels=<int>; got neither.")
        return ClassificationHead(num_labels, name="head")
    if num_labels is not None:
        raise ValueError("builder: pass head or num_labels, not both.")
    return head


def make_spec(encoder=False, pooler=False, adapters=(), fusions=(), heads=True):
    return {
        "encoder": bool(encoder),
        "pooler": bool(pooler),
        "adapters": sorted(adapters),
        "fusions": sorted(fusions),
        "heads": bool(heads),
    }


def check_spec(spec):
    if not isinstance(spec, dict) or set(spec) != set(SPEC_KEYS):
        raise ValueError(f"trainable_spec: got {spec!r}; expected a dict with keys {list(SPEC_KEYS)}.")
    return spec


def apply_trainable_spec(encoder, heads, spec):
    """Set the trainable flags of `encoder`'s layers and of `heads` from `spec`.

    Flags are set on leaf layers (embeddings, each dense / norm of each block,
    each adapter, each fusion, the pooler, the heads); the encoder and its blocks
    stay trainable containers, since Keras hides every weight under a
    non-trainable parent.
    """
    check_spec(spec)
    encoder.trainable = True
    base = spec["encoder"]
    encoder.embeddings.trainable = base
    if encoder.use_pooler:
        encoder.pooler.trainable = base and spec["pooler"]
    adapters, fusions = set(spec["adapters"]), set(spec["fusions"])
    for block in encoder.blocks:
        for layer in block.base_layers():
            layer.trainable = base
        for container in (block.mh_adapters, block.output_adapters):
            for name, layer in container.items():
                layer.trainable = name in adapters
        for container in (block.mh_fusions, block.output_fusions):
            for key, layer in container.items():
                layer.trainable = key in fusions
    for head in heads:
        head.trainable = spec["heads"]


def _creation_trainable(layer):
    """Variables of `layer` and its sublayers that were created trainable.

    Unlike `layer.trainable_weights`, this does not depend on the current flags,
    which another model on the same encoder may have changed.
    """
    out = []
    for sub in layer._flatten_layers(include_self=True):
        out.extend(sub._trainable_variables)
    return out


def spec_layers(encoder, heads, spec):
    """The layers whose weights `spec` trains."""
    check_spec(spec)
    layers = []
    if spec["encoder"]:
        layers.append(encoder.embeddings)
        if encoder.use_pooler and spec["pooler"]:
            layers.append(encoder.pooler)
    adapters, fusions = set(spec["adapters"]), set(spec["fusions"])
    for block in encoder.blocks:
        if spec["encoder"]:
            layers.extend(block.base_layers())
        for container in (block.mh_adapters, block.output_adapters):
            layers.extend(layer for name, layer in container.items() if name in adapters)
        for container in (block.mh_fusions, block.output_fusions):
            layers.extend(layer for key, layer in container.items() if key in fusions)
    if spec["heads"]:
        layers.extend(heads)
    return layers


def spec_trainable_weights(encoder, heads, spec):
    """The weights a model with `spec` trains, whatever the current flags say."""
    out, seen = [], set()
    for layer in spec_layers(encoder, heads, spec):
        for v in _creation_trainable(layer):
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
    return out


def _uses_pooler(heads):
    return any(getattr(h, "use_pooler", False) for h in heads)


def _model(encoder, head, adapter_setup, spec, name):
    from keras_adapterfusion.models import AdapterModel

    return AdapterModel(encoder, head, adapter_setup=adapter_setup, output_key="logits", trainable_spec=spec,
                        name=name)


def build_head_only_model(encoder, head=None, num_labels=None, name="head_only", **load_kwargs):
    """Baseline: a head on the frozen encoder (no adapters)."""
    encoder = resolve_encoder(encoder, **load_kwargs)
    head = resolve_head(head, num_labels)
    return _model(encoder, head, None, make_spec(heads=True), name)


def build_full_finetune_model(encoder, head=None, num_labels=None, name="full_finetune", **load_kwargs):
    """Baseline: every encoder weight and the head train (the pooler only if the head reads it)."""
    encoder = resolve_encoder(encoder, **load_kwargs)
    head = resolve_head(head, num_labels)
    return _model(encoder, head, None, make_spec(encoder=True, pooler=_uses_pooler([head])), name)


def _ensure_adapter(encoder, name, config):
    """Add adapter `name` (with `config`, default `seq_bn`) unless the encoder has it;
    if it has it, `config` (when given) must match."""
    if name not in encoder.adapter_configs:
        encoder.add_adapter(name, config if config is not None else "seq_bn")
    elif config is not None and AdapterConfig.get(config) != encoder.adapter_configs[name]:
        raise ValueError(
            f"build: adapter {name!r} already exists with config {encoder.adapter_configs[name]}; "
            f"got a different config {AdapterConfig.get(config)}."
        )


def build_adapter_model(encoder, adapter_name, head=None, num_labels=None, adapter_config=None,
                        name=None, **load_kwargs):
    """Stage 1, ST-A: one adapter (added if the encoder lacks it) and its head train.

    `adapter_config` (default `"seq_bn"`) configures a new adapter; for an existing
    one it must match or be left out.
    """
    encoder = resolve_encoder(encoder, **load_kwargs)
    head = resolve_head(head, num_labels)
    _ensure_adapter(encoder, adapter_name, adapter_config)
    spec = make_spec(adapters=[adapter_name], heads=True)
    return _model(encoder, head, adapter_name, spec, name or f"st_a_{adapter_name}")


def build_multitask_model(encoder, heads, adapter_config=None, name="mt_a", **load_kwargs):
    """Stage 1, MT-A: one adapter and one head per task, all trained together.

    Args:
        encoder: encoder or checkpoint.
        heads: dict task name -> head layer or number of labels. The adapter of each
            task is called after the task.
        adapter_config: config of the adapters that are added (default `"seq_bn"`).

    Returns:
        A `MultiTaskModel`; feed it batches that each come from one task, with a
        `task_id` input (see `keras_adapterfusion.tasks.mix_task_datasets`).
    """
    from keras_adapterfusion.models import MultiTaskModel

    encoder = resolve_encoder(encoder, **load_kwargs)
    if not isinstance(heads, dict) or len(heads) < 2:
        raise ValueError(f"build_multitask_model: heads must map two or more task names to heads; got {heads!r}.")
    layers = {}
    for task, head in heads.items():
        layers[task] = ClassificationHead(head, name=f"head_{task}") if isinstance(head, int) else head
        _ensure_adapter(encoder, task, adapter_config)
    spec = make_spec(adapters=list(heads), heads=True)
    return MultiTaskModel(encoder, layers, trainable_spec=spec, name=name)


def build_fusion_model(encoder, adapter_names, head=None, num_labels=None, fusion_config="dynamic",
                       unfreeze_adapters=False, name="fusion", **load_kwargs):
    """Stage 2, Fusion w/ ST-A or w/ MT-A: fusion layers and a new head train.

    The adapters must already be in the encoder (trained in stage 1, or loaded);
    the fusion over them is added unless it exists. With `unfreeze_adapters` the
    adapters train too.
    """
    encoder = resolve_encoder(encoder, **load_kwargs)
    names = list(fusion_names(adapter_names))
    missing = [n for n in names if n not in encoder.adapter_configs]
    if missing:
        raise ValueError(
            f"build_fusion_model: adapter(s) {missing} are not in the encoder; expected names from "
            f"{sorted(encoder.adapter_configs)} (train or load them first)."
        )
    key = fusion_key(names)
    if key not in encoder.fusion_specs:
        encoder.add_fusion(names, fusion_config)
    head = resolve_head(head, num_labels)
    spec = make_spec(adapters=names if unfreeze_adapters else (), fusions=[key], heads=True)
    return _model(encoder, head, names, spec, name)
