"""Import and export of AdapterHub (`adapters`) adapters, fusion layers and heads.

AdapterHub saves each module as a directory: a JSON config and a weights file
(`*.safetensors`, or a pickled `pytorch_*.bin`):

| module | config | weights |
|---|---|---|
| adapter | `adapter_config.json` | `adapter.safetensors` / `pytorch_adapter.bin` |
| fusion | `adapter_fusion_config.json` | `model_adapter_fusion.safetensors` / `pytorch_model_adapter_fusion.bin` |
| head | `head_config.json` | `model_head.safetensors` / `pytorch_model_head.bin` |

Loading checks everything (config fields, hidden size, model type, every key and
every shape) before it changes a variable, so a failed load leaves nothing
half-loaded. Pickled files are read only with `allow_pickle=True`.

Example:

```python
from keras_adapterfusion import adapterhub

model = adapterhub.load_fusion_model(
    "path/to/bert", ["adapters/sentiment", "adapters/nli"], "adapters/fusion",
    head_dir="adapters/head")
out = model({"input_ids": ids, "attention_mask": mask})
```
"""

import os

import numpy as np

from keras_adapterfusion.backbones.huggingface import (
    BASE_PREFIX,
    apply_transform,
    load_encoder,
    read_tensors,
)
from keras_adapterfusion.backbones.transformer_encoder import TransformerEncoder
from keras_adapterfusion.configs import AdapterConfig, FusionConfig
from keras_adapterfusion.errors import CheckpointError
from keras_adapterfusion.fileio import atomic_directory, read_json, write_json
from keras_adapterfusion.layers.classification_head import ClassificationHead
from keras_adapterfusion.layers.transformer_block import fusion_key
from keras_adapterfusion.models import AdapterModel

ADAPTERHUB_VERSION = "adapters.1.3.0"
MODEL_CLASS = {"bert": "BertAdapterModel", "roberta": "RobertaAdapterModel", "xlm-roberta": "XLMRobertaAdapterModel"}
SLOT_PATH = {"mh": "attention.output", "output": "output"}

# BnConfig fields that this package does not implement, with the values that
# leave the computation unchanged.
_UNSUPPORTED_ADAPTER_FIELDS = {
    "is_parallel": (False,),
    "use_gating": (False,),
    "phm_layer": (False,),
    "inv_adapter": (None,),
    "cross_adapter": (False,),
    "stochastic_depth": (0, 0.0, None),
    "architecture": (None, "bottleneck"),
}
# BnConfig fields that only matter for features above, or only for initialisation.
_IGNORED_ADAPTER_FIELDS = {
    "init_weights_seed": None,
    "inv_adapter_reduction_factor": None,
    "phm_dim": 4,
    "shared_phm_rule": True,
    "factorized_phm_rule": False,
    "phm_c_init": "normal",
    "phm_init_range": 0.0001,
    "learn_phm": True,
    "hypercomplex_nonlinearity": "glorot-uniform",
    "phm_rank": 1,
    "phm_bias": True,
    "shared_W_phm": False,
    "factorized_phm_W": True,
}
# Activation names of configs saved before `adapters` wrote a version field.
_LEGACY_ACTIVATIONS = {"gelu": "gelu_new", "gelu_orig": "gelu"}

_HEAD_TYPES = ("classification", "multilabel_classification")


# --------------------------------------------------------------- configs
def adapter_config_from_adapterhub(data, source="adapter config"):
    """An `AdapterConfig` from the `config` dict of an AdapterHub `adapter_config.json`."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: 'config' is {type(data).__name__}; expected an object.")
    fields = {}
    known = {f for f in AdapterConfig.__dataclass_fields__}
    for key, value in data.items():
        if key in known:
            fields[key] = value
        elif key in _UNSUPPORTED_ADAPTER_FIELDS:
            if value not in _UNSUPPORTED_ADAPTER_FIELDS[key]:
                raise CheckpointError(
                    f"{source}: {key}={value!r} is not supported; expected one of "
                    f"{list(_UNSUPPORTED_ADAPTER_FIELDS[key])} (only sequential bottleneck adapters are implemented)."
                )
        elif key not in _IGNORED_ADAPTER_FIELDS:
            raise CheckpointError(
                f"{source}: unknown field {key!r}; expected AdapterHub BnConfig fields."
            )
    try:
        return AdapterConfig.from_dict(fields)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from e


def adapter_config_to_adapterhub(config):
    """The `config` dict AdapterHub writes for `config` (every BnConfig field)."""
    out = dict(_IGNORED_ADAPTER_FIELDS)
    out.update({k: v[0] for k, v in _UNSUPPORTED_ADAPTER_FIELDS.items() if k != "architecture"})
    out["stochastic_depth"] = 0.0
    out.update(config.to_dict())
    return out


def fusion_config_from_adapterhub(data, source="fusion config"):
    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: 'config' is {type(data).__name__}; expected an object.")
    known = set(FusionConfig.__dataclass_fields__) - {"regularization_weight"}
    unknown = sorted(set(data) - known - {"architecture"})
    if unknown:
        raise CheckpointError(f"{source}: unknown field(s) {unknown}; expected {sorted(known)}.")
    try:
        return FusionConfig.from_dict({k: v for k, v in data.items() if k in known})
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from e


def fusion_config_to_adapterhub(config):
    out = config.to_dict()
    out.pop("regularization_weight")
    return out


# ------------------------------------------------------------- file reads
def _read_module(directory, config_name, weights_stem, what, allow_pickle):
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: no such directory; expected an AdapterHub {what} directory.")
    meta = read_json(os.path.join(directory, config_name), f"AdapterHub {what} config")
    if "config" not in meta:
        raise CheckpointError(f"{os.path.join(directory, config_name)}: no 'config' entry; expected AdapterHub's layout.")
    tensors = read_tensors(directory, weights_stem, allow_pickle)
    return meta, tensors


def _check_meta(meta, path, encoder):
    hidden = meta.get("hidden_size")
    if hidden is not None and hidden != encoder.hidden_size:
        raise CheckpointError(
            f"{path}: hidden_size is {hidden}; expected {encoder.hidden_size} (the encoder's)."
        )
    model_type = meta.get("model_type")
    if model_type is not None and model_type != encoder.model_type:
        raise CheckpointError(
            f"{path}: model_type is {model_type!r}; expected {encoder.model_type!r} (the encoder's)."
        )


def _strip_prefix(tensors, model_type):
    prefix = BASE_PREFIX.get(model_type, "bert") + "."
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in tensors.items()}


# ------------------------------------------------------------ key tables
def _slot_prefix(block, slot):
    return f"encoder.layer.{block}.{SLOT_PATH[slot]}."


def adapter_rows(encoder, name, config, stored_name=None):
    """Rows `(key, keras_shape, transform, (block, slot, sublayer, attr))` of an adapter."""
    stored_name = stored_name or name
    h = encoder.hidden_size
    rows = []
    for i in range(encoder.num_layers):
        if not config.in_block(i):
            continue
        b = config.bottleneck_size(h, i)
        for slot in config.slots():
            p = _slot_prefix(i, slot) + f"adapters.{stored_name}."
            down = "adapter_down.1." if config.ln_before else "adapter_down.0."
            loc = (i, slot)
            if config.ln_before:
                rows.append((p + "adapter_down.0.weight", (h,), None, loc + ("norm_before", "gamma")))
                rows.append((p + "adapter_down.0.bias", (h,), None, loc + ("norm_before", "beta")))
            rows.append((p + down + "weight", (h, b), "transpose", loc + ("down", "kernel")))
            rows.append((p + down + "bias", (b,), None, loc + ("down", "bias")))
            rows.append((p + "adapter_up.weight", (b, h), "transpose", loc + ("up", "kernel")))
            rows.append((p + "adapter_up.bias", (h,), None, loc + ("up", "bias")))
            if config.ln_after:
                rows.append((p + "adapter_norm_after.weight", (h,), None, loc + ("norm_after", "gamma")))
                rows.append((p + "adapter_norm_after.bias", (h,), None, loc + ("norm_after", "beta")))
            if config.scaling == "learned":
                rows.append((p + "scaling", (1,), None, loc + (None, "scale")))
            elif config.scaling == "channel":
                rows.append((p + "scaling", (h,), None, loc + (None, "scale")))
    return rows


def _adapter_aliases(rows):
    """AdapterHub also stores `adapter_norm_before.*`, the same tensors as `adapter_down.0.*`."""
    aliases = {}
    for key, _, _, loc in rows:
        if loc[2] == "norm_before":
            alias = key.replace("adapter_down.0.", "adapter_norm_before.")
            aliases[alias] = key
    return aliases


def fusion_rows(encoder, names, config):
    """Rows of a fusion layer over `names` (AdapterHub key names)."""
    key = fusion_key(names)
    h = encoder.hidden_size
    slots = encoder.adapter_configs[names[0]].slots() if names[0] in encoder.adapter_configs else ["output"]
    rows = []
    for i in range(encoder.num_layers):
        for slot in slots:
            p = _slot_prefix(i, slot) + f"adapter_fusion_layer.{key}."
            loc = (i, slot)
            for part, attr in (("query", "query_dense"), ("key", "key_dense")):
                if getattr(config, part):
                    rows.append((p + part + ".weight", (h, h), "transpose", loc + (attr, "kernel")))
                    rows.append((p + part + ".bias", (h,), None, loc + (attr, "bias")))
            if config.value:
                rows.append((p + "value.weight", (h, h), "transpose", loc + ("value_dense", "kernel")))
    return rows


def head_rows(name, num_layers, has_activation, hidden, num_labels, use_bias):
    """Rows of an AdapterHub classification head, as `(key, shape, transform, (dense_index, attr))`."""
    rows = []
    index = 0
    for layer in range(num_layers):
        index += 1  # the Dropout module before each Linear
        last = layer == num_layers - 1
        out = num_labels if last else hidden
        rows.append((f"heads.{name}.{index}.weight", (hidden, out), "transpose", (layer, "kernel")))
        if use_bias or not last:
            rows.append((f"heads.{name}.{index}.bias", (out,), None, (layer, "bias")))
        index += 1
        if not last and has_activation:
            index += 1
    return rows


def _validate(rows, tensors, source, aliases=None):
    """Check keys and shapes; return `[(row, array)]`. Raises before any change."""
    aliases = aliases or {}
    expected = {row[0] for row in rows}
    missing = sorted(expected - set(tensors))
    if missing:
        raise CheckpointError(f"{source}: missing {len(missing)} tensor(s), e.g. {missing[:4]}.")
    unknown = sorted(set(tensors) - expected - set(aliases))
    if unknown:
        raise CheckpointError(
            f"{source}: unknown key(s) {unknown[:6]}" + (" ..." if len(unknown) > 6 else "")
            + "; they do not belong to this module for this encoder."
        )
    staged = []
    for row in rows:
        key, shape, transform = row[0], row[1], row[2]
        value = apply_transform(np.asarray(tensors[key]), transform)
        if tuple(value.shape) != tuple(shape):
            raise CheckpointError(
                f"{source}: tensor {key!r} has shape {list(np.shape(tensors[key]))}; expected "
                f"{list(shape[::-1]) if transform else list(shape)}."
            )
        staged.append((row, value))
    return staged


def _resolve_block_variable(encoder, loc, kind, name):
    block_index, slot, sub, attr = loc
    block = encoder.blocks[block_index]
    layers = block.adapter_layers(name) if kind == "adapter" else block.fusion_layers(name)
    layer = layers[slot]
    owner = layer if sub is None else getattr(layer, sub)
    return getattr(owner, attr)


def _assign(staged, resolve):
    for row, value in staged:
        variable = resolve(row[3])
        variable.assign(value.astype(variable.dtype))


# ----------------------------------------------------------------- loading
def _resolve_encoder(base_model, allow_pickle, **encoder_kwargs):
    if isinstance(base_model, TransformerEncoder):
        return base_model
    return load_encoder(base_model, allow_pickle=allow_pickle, **encoder_kwargs)


def load_adapter(encoder, adapter_dir, load_as=None, allow_pickle=False):
    """Load an AdapterHub adapter directory into `encoder`. Returns the adapter name."""
    config_path = os.path.join(os.fspath(adapter_dir), "adapter_config.json")
    meta, tensors = _read_module(adapter_dir, "adapter_config.json", "adapter", "adapter", allow_pickle)
    _check_meta(meta, config_path, encoder)
    raw = dict(meta["config"])
    if "version" not in meta and raw.get("non_linearity") in _LEGACY_ACTIVATIONS:
        raw["non_linearity"] = _LEGACY_ACTIVATIONS[raw["non_linearity"]]
    config = adapter_config_from_adapterhub(raw, config_path)
    stored_name = meta.get("name")
    if not stored_name:
        raise CheckpointError(f"{config_path}: no 'name'; expected the adapter's name.")
    name = load_as or stored_name
    if name in encoder.adapter_configs:
        raise CheckpointError(f"{adapter_dir}: the encoder already has an adapter {name!r}; pass load_as=...")
    for i in config.leave_out:
        if i >= encoder.num_layers:
            raise CheckpointError(f"{config_path}: leave_out has block {i}; the encoder has {encoder.num_layers}.")
    rows = adapter_rows(encoder, name, config, stored_name)
    tensors = _strip_prefix(tensors, encoder.model_type)
    staged = _validate(rows, tensors, os.fspath(adapter_dir), _adapter_aliases(rows))
    encoder.add_adapter(name, config)
    _assign(staged, lambda loc: _resolve_block_variable(encoder, loc, "adapter", name))
    return name


def load_fusion(encoder, fusion_dir, allow_pickle=False, regularization_weight=None):
    """Load an AdapterHub fusion directory into `encoder` (its adapters must be loaded).

    Returns the list of fused adapter names, in the fusion's order.
    """
    config_path = os.path.join(os.fspath(fusion_dir), "adapter_fusion_config.json")
    meta, tensors = _read_module(
        fusion_dir, "adapter_fusion_config.json", "model_adapter_fusion", "fusion", allow_pickle
    )
    _check_meta(meta, config_path, encoder)
    config = fusion_config_from_adapterhub(meta["config"], config_path)
    if regularization_weight is not None:
        config = config.replace(regularization_weight=regularization_weight)
    names = meta.get("adapter_names") or (meta.get("name") or "").split(",")
    names = [n for n in names if n]
    if not names:
        raise CheckpointError(f"{config_path}: no 'adapter_names'; expected the fused adapters' names.")
    missing = [n for n in names if n not in encoder.adapter_configs]
    if missing:
        raise CheckpointError(
            f"{config_path}: fuses adapter(s) {missing} that are not loaded; loaded: {sorted(encoder.adapter_configs)}."
        )
    flags = {n: (encoder.adapter_configs[n].mh_adapter, encoder.adapter_configs[n].output_adapter) for n in names}
    if len(set(flags.values())) > 1:
        raise CheckpointError(
            f"{config_path}: fused adapters have different slot flags (mh_adapter, output_adapter): {flags}; "
            "expected the same for all."
        )
    rows = fusion_rows(encoder, names, config)
    staged = _validate(rows, _strip_prefix(tensors, encoder.model_type), os.fspath(fusion_dir))
    key = encoder.add_fusion(names, config)
    _assign(staged, lambda loc: _resolve_block_variable(encoder, loc, "fusion", key))
    return list(names)


def load_head(head_dir, encoder, allow_pickle=False):
    """Load an AdapterHub classification head; returns `(ClassificationHead, name, label2id)`."""
    config_path = os.path.join(os.fspath(head_dir), "head_config.json")
    meta, tensors = _read_module(head_dir, "head_config.json", "model_head", "head", allow_pickle)
    _check_meta(meta, config_path, encoder)
    cfg = meta["config"]
    head_type = cfg.get("head_type")
    if head_type not in _HEAD_TYPES:
        raise CheckpointError(f"{config_path}: head_type {head_type!r} is not supported; expected one of {list(_HEAD_TYPES)}.")
    name = meta.get("name")
    if not name:
        raise CheckpointError(f"{config_path}: no 'name'; expected the head's name.")
    try:
        num_labels, layers = int(cfg["num_labels"]), int(cfg.get("layers", 2))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{config_path}: bad num_labels/layers ({e}).") from e
    activation = cfg.get("activation_function", "tanh")
    use_bias = cfg.get("bias", True)
    dropout = cfg.get("dropout_prob")
    if dropout is None:
        dropout = encoder.hidden_dropout
    if cfg.get("use_pooler") and not encoder.use_pooler:
        raise CheckpointError(f"{config_path}: use_pooler is true but the encoder has no pooler.")
    rows = head_rows(name, layers, bool(activation), encoder.hidden_size, num_labels, use_bias)
    staged = _validate(rows, tensors, os.fspath(head_dir))
    try:
        head = ClassificationHead(
            num_labels=num_labels,
            layers=layers,
            activation=activation or None,
            dropout=dropout,
            use_pooler=bool(cfg.get("use_pooler", False)),
            use_bias=use_bias,
            dtype=encoder.dtype_policy,
            name=f"head_{name}",
        )
    except ValueError as e:
        raise CheckpointError(f"{config_path}: {e}") from e
    head.build((None, None, encoder.hidden_size))
    _assign(staged, lambda loc: getattr(head.dense_layers[loc[0]], loc[1]))
    return head, name, cfg.get("label2id")


def load_adapter_model(base_model, adapter_dir, head_dir=None, allow_pickle=False, **encoder_kwargs):
    """A model with one AdapterHub adapter (and head) on a Hugging Face encoder.

    Args:
        base_model: checkpoint directory, cached hub id, or a `TransformerEncoder`.
        adapter_dir: AdapterHub adapter directory.
        head_dir: AdapterHub head directory, or `None`.
        allow_pickle: allow pickled `*.bin` weight files.
        **encoder_kwargs: passed to `load_encoder` (e.g. `dtype`).

    Returns:
        An `AdapterModel` returning `last_hidden_state` (and `logits` with a head).
    """
    encoder = _resolve_encoder(base_model, allow_pickle, **encoder_kwargs)
    name = load_adapter(encoder, adapter_dir, allow_pickle=allow_pickle)
    head = load_head(head_dir, encoder, allow_pickle)[0] if head_dir is not None else None
    return AdapterModel(encoder, head, adapter_setup=name, name="adapter_model")


def load_fusion_model(
    base_model, adapter_dirs, fusion_dir, head_dir=None, allow_pickle=False, reference_form=False, **encoder_kwargs
):
    """A model with AdapterHub adapters, their fusion and (optionally) a head.

    Args:
        base_model: checkpoint directory, cached hub id, or a `TransformerEncoder`.
        adapter_dirs: AdapterHub adapter directories (every adapter the fusion uses).
        fusion_dir: AdapterHub fusion directory.
        head_dir: AdapterHub head directory, or `None`.
        allow_pickle: allow pickled `*.bin` weight files.
        reference_form: compute fusion in AdapterHub's literal form.
        **encoder_kwargs: passed to `load_encoder`.

    Returns:
        An `AdapterModel` whose call takes a dict with `input_ids`,
        `attention_mask` and optionally `token_type_ids`, and returns `logits`
        (with a head), `last_hidden_state` and `fusion_attentions`
        `[blocks, batch, tokens, adapters]`.
    """
    if isinstance(adapter_dirs, (str, os.PathLike)):
        adapter_dirs = [adapter_dirs]
    if not adapter_dirs:
        raise CheckpointError("load_fusion_model: adapter_dirs is empty; expected the fused adapters' directories.")
    if not isinstance(base_model, TransformerEncoder):
        encoder_kwargs.setdefault("fusion_reference_form", reference_form)
    encoder = _resolve_encoder(base_model, allow_pickle, **encoder_kwargs)
    for d in adapter_dirs:
        load_adapter(encoder, d, allow_pickle=allow_pickle)
    names = load_fusion(encoder, fusion_dir, allow_pickle=allow_pickle)
    head = load_head(head_dir, encoder, allow_pickle)[0] if head_dir is not None else None
    return AdapterModel(encoder, head, adapter_setup=names, name="fusion_model")


# ------------------------------------------------------------------ saving
def _meta(encoder, name, config, model_name):
    return {
        "config": config,
        "hidden_size": encoder.hidden_size,
        "model_class": MODEL_CLASS.get(encoder.model_type, "BertAdapterModel"),
        "model_name": model_name or os.path.basename(getattr(encoder, "checkpoint", "") or "") or None,
        "model_type": encoder.model_type,
        "name": name,
        "version": ADAPTERHUB_VERSION,
    }


def _prefixed(encoder, tensors):
    prefix = BASE_PREFIX.get(encoder.model_type, "bert") + "."
    return {prefix + k: v for k, v in tensors.items()}


def _export_rows(rows, resolve):
    out = {}
    for key, _, transform, loc in rows:
        value = np.asarray(resolve(loc), dtype=np.float32)
        out[key] = np.ascontiguousarray(value.T if transform == "transpose" else value)
    return out


def _write_module(directory, config_name, meta, weights_name, tensors):
    from safetensors.numpy import save_file

    with atomic_directory(directory) as tmp:
        write_json(os.path.join(tmp, config_name), meta)
        save_file(tensors, os.path.join(tmp, weights_name), metadata={"format": "pt"})


def save_adapter(encoder, name, directory, model_name=None):
    """Save adapter `name` of `encoder` in AdapterHub's layout (atomically)."""
    if name not in encoder.adapter_configs:
        raise ValueError(f"save_adapter: no adapter {name!r}; expected one of {sorted(encoder.adapter_configs)}.")
    config = encoder.adapter_configs[name]
    rows = adapter_rows(encoder, name, config)
    tensors = _export_rows(rows, lambda loc: _resolve_block_variable(encoder, loc, "adapter", name))
    for alias, key in _adapter_aliases(rows).items():
        tensors[alias] = tensors[key]
    meta = _meta(encoder, name, adapter_config_to_adapterhub(config), model_name)
    _write_module(directory, "adapter_config.json", meta, "adapter.safetensors", _prefixed(encoder, tensors))


def save_fusion(encoder, adapter_names, directory, model_name=None):
    """Save the fusion over `adapter_names` in AdapterHub's layout (atomically)."""
    key = fusion_key(adapter_names)
    if key not in encoder.fusion_specs:
        raise ValueError(f"save_fusion: no fusion {key!r}; expected one of {sorted(encoder.fusion_specs)}.")
    config = encoder.fusion_specs[key]["config"]
    rows = fusion_rows(encoder, list(adapter_names), config)
    tensors = _export_rows(rows, lambda loc: _resolve_block_variable(encoder, loc, "fusion", key))
    meta = _meta(encoder, key, fusion_config_to_adapterhub(config), model_name)
    meta["adapter_names"] = list(adapter_names)
    _write_module(
        directory, "adapter_fusion_config.json", meta, "model_adapter_fusion.safetensors", _prefixed(encoder, tensors)
    )


def save_head(head, name, directory, encoder, label2id=None, model_name=None):
    """Save a `ClassificationHead` in AdapterHub's layout (atomically)."""
    if not isinstance(head, ClassificationHead) or not head.built:
        raise ValueError(f"save_head: got {type(head).__name__}; expected a built ClassificationHead.")
    rows = head_rows(
        name, head.num_layers, bool(head.activation), encoder.hidden_size, head.num_labels, head.use_bias
    )
    tensors = _export_rows(rows, lambda loc: getattr(head.dense_layers[loc[0]], loc[1]))
    config = {
        "activation_function": head.activation,
        "bias": head.use_bias,
        "dropout_prob": head.dropout,
        "head_type": "classification",
        "label2id": label2id or {f"LABEL_{i}": i for i in range(head.num_labels)},
        "layers": head.num_layers,
        "num_labels": head.num_labels,
        "use_pooler": head.use_pooler,
    }
    meta = _meta(encoder, name, config, model_name)
    _write_module(directory, "head_config.json", meta, "model_head.safetensors", tensors)
