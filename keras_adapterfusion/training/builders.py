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

Each builder gives its model the stage's *trainable spec*
(`keras_adapterfusion.models.trainable`); the model stores it in its config and
re-applies it when it is built, loaded from `.keras`, or fit, so models that
share an encoder each train their own weights.

Example:

```python
from keras_adapterfusion.training import builders

encoder = load_encoder("path/to/bert")
st_a = builders.build_adapter_model(encoder, "sentiment", num_labels=2)     # stage 1
...fit...
fusion = builders.build_fusion_model(encoder, ["sentiment", "nli"], num_labels=3)  # stage 2
```
"""

from keras_adapterfusion.backbones.huggingface import load_encoder
from keras_adapterfusion.backbones.transformer_encoder import TransformerEncoder
from keras_adapterfusion.configs import adapter_config
from keras_adapterfusion.layers.adapter_setup import AdapterSetup
from keras_adapterfusion.layers.classification_head import ClassificationHead
from keras_adapterfusion.models.adapter_model import AdapterModel, MultiTaskModel
from keras_adapterfusion.models.trainable import make_spec


def resolve_encoder(encoder, **load_kwargs):
    """A `TransformerEncoder` from an encoder or a checkpoint path / cached hub id."""
    if isinstance(encoder, TransformerEncoder):
        if not encoder.built:
            encoder.build()
        return encoder
    return load_encoder(encoder, **load_kwargs)


def resolve_head(head, num_labels):
    """`head` itself, or a `ClassificationHead(num_labels)` when `head` is None (pass one of the two)."""
    if head is None:
        if num_labels is None:
            raise ValueError("builder: pass head=<a head layer> or num_labels=<int>; got neither.")
        return ClassificationHead(num_labels, name="head")
    if num_labels is not None:
        raise ValueError("builder: pass head or num_labels, not both.")
    return head


def _uses_pooler(heads):
    return any(getattr(h, "use_pooler", False) for h in heads)


def _model(encoder, head, adapter_setup, spec, name):
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
    elif config is not None and adapter_config(config) != encoder.adapter_configs[name]:
        raise ValueError(
            f"build: adapter {name!r} already exists with config {encoder.adapter_configs[name]}; "
            f"got a different config {adapter_config(config)}."
        )


def build_adapter_model(encoder, adapter_name, head=None, num_labels=None, adapter_config=None,
                        name=None, stacked_on=(), **load_kwargs):
    """Stage 1, ST-A: one adapter (added if the encoder lacks it) and its head train.

    `adapter_config` (default `"seq_bn"`) configures a new adapter; for an existing
    one it must match or be left out. `stacked_on` names adapters already in the
    encoder that run below it, frozen (MAD-X trains a task adapter on a language
    adapter this way): the model runs `AdapterSetup.stack([*stacked_on, adapter_name])`.
    """
    encoder = resolve_encoder(encoder, **load_kwargs)
    head = resolve_head(head, num_labels)
    below = [stacked_on] if isinstance(stacked_on, str) else list(stacked_on)
    missing = [n for n in below if n not in encoder.adapter_configs]
    if missing:
        raise ValueError(f"build_adapter_model: stacked_on names {missing}, not in the encoder; expected names from "
                         f"{sorted(encoder.adapter_configs)} (train or load them first).")
    if adapter_name in below:
        raise ValueError(f"build_adapter_model: stacked_on {below} holds the adapter that trains, {adapter_name!r}; "
                         "expected only the adapters below it.")
    _ensure_adapter(encoder, adapter_name, adapter_config)
    spec = make_spec(adapters=[adapter_name], heads=True)
    setup = AdapterSetup.stack([*below, adapter_name])
    return _model(encoder, head, setup, spec, name or f"st_a_{adapter_name}")


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
                       unfreeze_adapters=False, fusion_name=None, name="fusion", **load_kwargs):
    """Stage 2, Fusion w/ ST-A or w/ MT-A: fusion layers and a new head train.

    The adapters must already be in the encoder (trained in stage 1, or loaded);
    the fusion over them is added unless it exists. With `unfreeze_adapters` the
    adapters train too. `fusion_name` names the fusion, so that several fusions
    over the same adapters (for different targets) can share the encoder; without
    it the fusion is keyed as AdapterHub keys it.
    """
    encoder = resolve_encoder(encoder, **load_kwargs)
    setup = AdapterSetup.fuse(adapter_names, fusion_name)
    names = list(setup.adapters)
    missing = [n for n in names if n not in encoder.adapter_configs]
    if missing:
        raise ValueError(
            f"build_fusion_model: adapter(s) {missing} are not in the encoder; expected names from "
            f"{sorted(encoder.adapter_configs)} (train or load them first)."
        )
    if setup.fusion_key not in encoder.fusion_specs:
        encoder.add_fusion(names, fusion_config, name=fusion_name)
    elif encoder.fusion_specs[setup.fusion_key]["adapters"] != names:
        raise ValueError(f"build_fusion_model: the fusion {setup.fusion_key!r} fuses "
                         f"{encoder.fusion_specs[setup.fusion_key]['adapters']}; got {names}.")
    head = resolve_head(head, num_labels)
    spec = make_spec(adapters=names if unfreeze_adapters else (), fusions=[setup.fusion_key], heads=True)
    return _model(encoder, head, setup, spec, name)
