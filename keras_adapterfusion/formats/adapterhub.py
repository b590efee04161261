"""Import and export of AdapterHub (`adapters`) adapters, fusion layers and heads.

AdapterHub saves each module as a directory: a JSON config and a weights file
(`*.safetensors`, or a pickled `pytorch_*.bin`):

| module | config | weights |
|---|---|---|
| adapter | `adapter_config.json` | `adapter.safetensors` / `pytorch_adapter.bin` |
| fusion | `adapter_fusion_config.json` | `model_adapter_fusion.safetensors` / `pytorch_model_adapter_fusion.bin` |
| head | `head_config.json` | `model_head.safetensors` / `pytorch_model_head.bin` |

Loading checks every config field (naming the file and the field), the hidden
size and model type, and every tensor's key, shape, dtype and finiteness
before it changes a variable, so a failed load leaves nothing half-loaded.
PyTorch `.bin` files are read without PyTorch and without running pickle code
(`keras_adapterfusion.io.torch_bin`). This module supplies only the configs'
translation and the key tables; `keras_adapterfusion.io` reads, checks,
assigns and writes.

Classification heads (`head_type` `"classification"` and
`"multilabel_classification"`) are supported; their `label2id` comes back with
the head and is written on export.

Example:

```python
from keras_adapterfusion.formats import adapterhub

model = adapterhub.load_fusion_model(
    "path/to/bert", ["adapters/sentiment", "adapters/nli"], "adapters/fusion",
    head_dir="adapters/head")
out = model({"input_ids": ids, "attention_mask": mask})
```
"""

import os

from keras_adapterfusion.backbones.converters import CONVERTERS, projection_paths
from keras_adapterfusion.backbones.huggingface import load_encoder
from keras_adapterfusion.backbones.transformer_encoder import TransformerEncoder
from keras_adapterfusion.configs import AdapterConfig, FusionConfig, LoRAConfig, check_fusable, is_lora
from keras_adapterfusion.errors import CheckpointError
from keras_adapterfusion.formats.locations import adapter_locations, fusion_locations, module_variable
from keras_adapterfusion.io import (
    WeightRow,
    gather_weights,
    json_field,
    read_json,
    read_weights,
    saved_directory,
    stage_weights,
    write_directory,
    write_json,
)
from keras_adapterfusion.layers.adapter_setup import AdapterSetup, fusion_key
from keras_adapterfusion.layers.classification_head import ClassificationHead
from keras_adapterfusion.models.adapter_model import AdapterModel
from keras_adapterfusion.names import check_name

ADAPTERHUB_VERSION = "adapters.1.3.0"

# BnConfig fields that this package does not implement, with the values that
# leave the computation unchanged.
_UNSUPPORTED_ADAPTER_FIELDS = {
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

# AdapterHub head types this package reads and writes, and its own head_type for each.
_HEAD_TYPES = {"classification": "classification", "multilabel_classification": "multilabel_classification"}


# --------------------------------------------------------------- configs
# LoRAConfig fields of AdapterHub that this package does not implement, with the values it accepts.
_UNSUPPORTED_LORA_FIELDS = {
    "composition_mode": ("add",),
    "use_gating": (False,),
    "use_dora": (False,),
    "vera_d": (None,),
    "vera_b": (None,),
}
_IGNORED_LORA_FIELDS = {"init_weights_seed": None, "dtype": None}


def _lora_config_from_adapterhub(data, source):
    fields = {}
    known = set(LoRAConfig.__dataclass_fields__) - {"attention_output_lora"}
    for key, value in data.items():
        if key in known:
            fields[key] = value
        elif key in _UNSUPPORTED_LORA_FIELDS:
            if value not in _UNSUPPORTED_LORA_FIELDS[key]:
                raise CheckpointError(f"{source}: {key}={value!r} is not supported; expected one of "
                                      f"{list(_UNSUPPORTED_LORA_FIELDS[key])} (LoRA, not (IA)^3, VeRA, DoRA or gated).")
        elif key not in _IGNORED_LORA_FIELDS:
            raise CheckpointError(f"{source}: unknown field {key!r}; expected AdapterHub LoRAConfig fields.")
    try:
        return LoRAConfig.from_dict(fields)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from e


def adapter_config_from_adapterhub(data, source="adapter config"):
    """An `AdapterConfig` (or a `LoRAConfig`) from the `config` dict of an AdapterHub `adapter_config.json`."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: is {type(data).__name__}; expected an object.")
    if data.get("architecture") == "lora":
        return _lora_config_from_adapterhub(data, source)
    fields = {}
    known = {f for f in AdapterConfig.__dataclass_fields__}
    for key, value in data.items():
        if key in known:
            fields[key] = value
        elif key in _UNSUPPORTED_ADAPTER_FIELDS:
            if value not in _UNSUPPORTED_ADAPTER_FIELDS[key]:
                raise CheckpointError(
                    f"{source}: {key}={value!r} is not supported; expected one of "
                    f"{list(_UNSUPPORTED_ADAPTER_FIELDS[key])} (only bottleneck adapters are implemented)."
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
    """The `config` dict AdapterHub writes for `config` (every BnConfig or LoRAConfig field)."""
    if is_lora(config):
        if config.attention_output_lora:
            raise ValueError("save_adapter: a LoRA of the attention output projection (attention_output_lora) has "
                             "no AdapterHub form; expected selfattn, intermediate and output LoRAs only.")
        out = dict(_IGNORED_LORA_FIELDS)
        out.update({k: v[0] for k, v in _UNSUPPORTED_LORA_FIELDS.items()})
        out.update({k: v for k, v in config.to_dict().items() if k != "attention_output_lora"})
        return out
    out = dict(_IGNORED_ADAPTER_FIELDS)
    out.update({k: v[0] for k, v in _UNSUPPORTED_ADAPTER_FIELDS.items() if k != "architecture"})
    out["stochastic_depth"] = 0.0
    out.update(config.to_dict())
    return out


def fusion_config_from_adapterhub(data, source="fusion config"):
    """A `FusionConfig` from the `config` dict of an AdapterHub `adapter_fusion_config.json`."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: is {type(data).__name__}; expected an object.")
    known = set(FusionConfig.__dataclass_fields__) - {"regularization_weight"}
    unknown = sorted(set(data) - known - {"architecture"})
    if unknown:
        raise CheckpointError(f"{source}: unknown field(s) {unknown}; expected {sorted(known)}.")
    try:
        return FusionConfig.from_dict({k: v for k, v in data.items() if k in known})
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from e


def fusion_config_to_adapterhub(config):
    """The `config` dict AdapterHub writes for a `FusionConfig` (its fields but `regularization_weight`)."""
    out = config.to_dict()
    out.pop("regularization_weight")
    return out


# ------------------------------------------------------------- file reads
def _read_module(directory, config_name, weights_stem, what):
    """`(config path, meta, WeightsFile)` of an AdapterHub module directory, its JSON checked."""
    directory = saved_directory(directory)
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: no such directory; expected an AdapterHub {what} directory.")
    path = os.path.join(directory, config_name)
    meta = read_json(path, f"AdapterHub {what} config")
    json_field(meta, "config", path, dict)
    json_field(meta, "hidden_size", path, int, default=None, check=lambda v: v >= 1, expected="an integer >= 1")
    json_field(meta, "model_type", path, str, default=None)
    return path, meta, read_weights(directory, weights_stem)


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


def _stored_name(meta, path, what):
    name = json_field(meta, "name", path, str, expected=f"the {what}'s name, a string")
    try:
        return check_name(name, f"{path}: field 'name'")
    except ValueError as e:
        raise CheckpointError(str(e)) from e


def _strip_prefix(tensors, model_type):
    prefix = CONVERTERS[model_type].prefix
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in tensors.items()}


# ------------------------------------------------------------ key tables
def _slot_prefix(encoder, block, slot):
    return CONVERTERS[encoder.model_type].adapter_slots[slot].format(i=block)


def _target(encoder, loc, kind, key):
    return lambda: module_variable(encoder, loc, kind, key)


def adapter_rows(encoder, name, config, stored_name=None):
    """`WeightRow`s of adapter `name` (keys as AdapterHub writes them for `stored_name`, without prefix)."""
    stored_name = stored_name or name
    if is_lora(config):  # `<projection's module>.loras.<name>.lora_A`
        paths = projection_paths(encoder)
        return [WeightRow(paths[(loc.block, loc.slot)] + f".loras.{stored_name}." + loc.hub, loc.shape,
                          _target(encoder, loc, "adapter", name), loc.transform)
                for loc in adapter_locations(encoder, config)]
    return [WeightRow(_slot_prefix(encoder, loc.block, loc.slot) + f"adapters.{stored_name}." + loc.hub, loc.shape,
                      _target(encoder, loc, "adapter", name), loc.transform)
            for loc in adapter_locations(encoder, config)]


def _adapter_aliases(config, rows):
    """With `ln_before`, AdapterHub stores the new LayerNorm twice: as `adapter_down.0.*` (the first
    module of the down projection) and as `adapter_norm_before.*`. The first is loaded; the second
    is its alias."""
    if is_lora(config) or not config.ln_before:
        return {}
    return {row.key.replace(".adapter_down.0.", ".adapter_norm_before."): row.key
            for row in rows if ".adapter_down.0." in row.key}


def fusion_rows(encoder, adapter_names, config, key=None):
    """`WeightRow`s of the fusion `key` over `adapter_names` (AdapterHub keys, without prefix)."""
    key = key or fusion_key(adapter_names)
    hub_key = ",".join(adapter_names)
    return [WeightRow(_slot_prefix(encoder, loc.block, loc.slot) + f"adapter_fusion_layer.{hub_key}." + loc.hub,
                      loc.shape,
                      _target(encoder, loc, "fusion", key), loc.transform)
            for loc in fusion_locations(encoder, list(adapter_names), config)]


def head_rows(head, name, hidden):
    """`WeightRow`s of a built classification head, as AdapterHub's `heads.{name}.{i}` keys.

    AdapterHub's head is a `Sequential` of Dropout, Linear (and the activation
    between hidden layers), so its Linear layers sit at indices 1, 4, 7, ... with
    an activation (1, 3, 5, ... without).
    """
    rows = []
    index = 0
    for layer, dense in enumerate(head.dense_layers):
        index += 1  # the Dropout module before each Linear
        last = layer == head.num_layers - 1
        out = head.num_labels if last else hidden
        rows.append(WeightRow(f"heads.{name}.{index}.weight", (hidden, out), dense.kernel, "transpose"))
        if dense.use_bias:
            rows.append(WeightRow(f"heads.{name}.{index}.bias", (out,), dense.bias))
        index += 1
        if not last and head.activation:
            index += 1
    return rows


# ----------------------------------------------------------------- loading
def _resolve_encoder(base_model, **encoder_kwargs):
    if isinstance(base_model, TransformerEncoder):
        return base_model
    return load_encoder(base_model, **encoder_kwargs)


def load_adapter(encoder, adapter_dir, load_as=None, allow_nonfinite=False):
    """Load an AdapterHub adapter directory into `encoder`. Returns the adapter name.

    Args:
        encoder: a `TransformerEncoder`.
        adapter_dir: the AdapterHub adapter directory.
        load_as: the name to give the adapter (default: the stored name).
        allow_nonfinite: load weights holding NaN or inf (refused by default).

    Raises:
        CheckpointError: naming the file and the field or tensor at fault; the
            encoder is then unchanged.
    """
    path, meta, weights = _read_module(adapter_dir, "adapter_config.json", "adapter", "adapter")
    _check_meta(meta, path, encoder)
    raw = dict(meta["config"])
    if "version" not in meta and raw.get("non_linearity") in _LEGACY_ACTIVATIONS:
        raw["non_linearity"] = _LEGACY_ACTIVATIONS[raw["non_linearity"]]
    config = adapter_config_from_adapterhub(raw, f"{path}: config")
    stored_name = _stored_name(meta, path, "adapter")
    name = check_name(load_as, "load_as") if load_as is not None else stored_name
    if name in encoder.adapter_configs:
        raise CheckpointError(f"{adapter_dir}: the encoder already has an adapter {name!r}; pass load_as=...")
    for i in config.leave_out:
        if i >= encoder.num_layers:
            raise CheckpointError(f"{path}: leave_out has block {i}; the encoder has {encoder.num_layers}.")
    rows = adapter_rows(encoder, name, config, stored_name)
    staged = stage_weights(rows, _strip_prefix(weights.tensors, encoder.model_type), weights.path,
                           ignore=_adapter_aliases(config, rows), allow_nonfinite=allow_nonfinite)
    encoder.add_adapter(name, config)
    staged.assign()
    return name


def load_fusion(encoder, fusion_dir, regularization_weight=None, name=None, allow_nonfinite=False):
    """Load an AdapterHub fusion directory into `encoder` (its adapters must be loaded).

    Args:
        encoder: a `TransformerEncoder` holding the fused adapters.
        fusion_dir: the AdapterHub fusion directory.
        regularization_weight: overrides the weight of the fusion's regularization.
        name: a name for the fusion (see `TransformerEncoder.add_fusion`); by
            default the one stored as `fusion_name` by this package's export, or
            none (AdapterHub's key).
        allow_nonfinite: load weights holding NaN or inf.

    Returns:
        The `AdapterSetup` that runs the fusion.
    """
    path, meta, weights = _read_module(fusion_dir, "adapter_fusion_config.json", "model_adapter_fusion", "fusion")
    _check_meta(meta, path, encoder)
    config = fusion_config_from_adapterhub(meta["config"], f"{path}: config")
    if regularization_weight is not None:
        config = config.replace(regularization_weight=regularization_weight)
    names = meta.get("adapter_names")
    if names is None:
        names = json_field(meta, "name", path, str, expected="the fused adapters' names joined by commas").split(",")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{path}: field 'adapter_names' is {names!r}; expected a list of adapter names.")
    stored = meta.get("fusion_name")
    try:
        setup = AdapterSetup.fuse(names, name if name is not None else stored)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e
    missing = [n for n in setup.adapters if n not in encoder.adapter_configs]
    if missing:
        raise CheckpointError(
            f"{path}: fuses adapter(s) {missing} that are not loaded; loaded: {sorted(encoder.adapter_configs)}."
        )
    check_fusable({n: encoder.adapter_configs[n] for n in setup.adapters}, where=path, error=CheckpointError)
    if setup.fusion_key in encoder.fusion_specs:
        raise CheckpointError(f"{fusion_dir}: the encoder already has the fusion {setup.fusion_key!r}; "
                              "pass name=... to load it under another name.")
    rows = fusion_rows(encoder, list(setup.adapters), config, setup.fusion_key)
    staged = stage_weights(rows, _strip_prefix(weights.tensors, encoder.model_type), weights.path,
                           allow_nonfinite=allow_nonfinite)
    encoder.add_fusion(list(setup.adapters), config, name=setup.fusion_name)
    staged.assign()
    return setup


def _head_config(cfg, path, encoder):
    """Checked arguments of a `ClassificationHead` from an AdapterHub head config."""
    where = f"{path}: config"
    head_type = json_field(cfg, "head_type", where, str, check=lambda v: v in _HEAD_TYPES,
                           expected=f"one of {list(_HEAD_TYPES)}")
    num_labels = json_field(cfg, "num_labels", where, int, check=lambda v: v >= 1, expected="an integer >= 1")
    layers = json_field(cfg, "layers", where, int, default=2, check=lambda v: v >= 1, expected="an integer >= 1")
    activation = json_field(cfg, "activation_function", where, (str, type(None)), default="tanh")
    use_bias = json_field(cfg, "bias", where, bool, default=True)
    dropout = json_field(cfg, "dropout_prob", where, (float, type(None)), default=None,
                         check=lambda v: v is None or 0 <= v < 1, expected="a rate in [0, 1) or null")
    use_pooler = json_field(cfg, "use_pooler", where, bool, default=False)
    label2id = json_field(cfg, "label2id", where, (dict, type(None)), default=None)
    if label2id is not None:
        ids = list(label2id.values())
        if (len(label2id) != num_labels or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
                or sorted(ids) != list(range(num_labels))):
            raise CheckpointError(f"{where}: field 'label2id' is {label2id!r}; expected {num_labels} labels "
                                  f"mapped to the ids 0..{num_labels - 1} (num_labels is {num_labels}).")
    if use_pooler and not encoder.use_pooler:
        raise CheckpointError(f"{where}: field 'use_pooler' is true but the encoder has no pooler.")
    return dict(num_labels=num_labels, layers=layers, activation=activation or None,
                dropout=encoder.hidden_dropout if dropout is None else dropout, use_pooler=use_pooler,
                use_bias=use_bias, head_type=_HEAD_TYPES[head_type]), label2id


def load_head(head_dir, encoder, allow_nonfinite=False):
    """Load an AdapterHub classification head.

    Returns:
        `(ClassificationHead, name, label2id)`; `label2id` is `None` when the
        file has none; otherwise its labels, in the order of their ids, are the
        head's `label_names` (so predictions and exports name them). A
        `"multilabel_classification"` head comes back with
        `head_type="multilabel_classification"` (sigmoid cross-entropy).
    """
    path, meta, weights = _read_module(head_dir, "head_config.json", "model_head", "head")
    _check_meta(meta, path, encoder)
    name = _stored_name(meta, path, "head")
    kwargs, label2id = _head_config(meta["config"], path, encoder)
    if label2id is not None:  # the names, in the order of their ids (as `save_head` writes them)
        kwargs["label_names"] = [label for label, _ in sorted(label2id.items(), key=lambda item: item[1])]
    try:
        head = ClassificationHead(dtype=encoder.dtype_policy, name=f"head_{name}", **kwargs)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e
    head.build((None, None, encoder.hidden_size))
    staged = stage_weights(head_rows(head, name, encoder.hidden_size), weights.tensors, weights.path,
                           allow_nonfinite=allow_nonfinite)
    staged.assign()
    return head, name, label2id


def load_adapter_model(base_model, adapter_dir, head_dir=None, **encoder_kwargs):
    """A model with one AdapterHub adapter (and head) on a Hugging Face encoder.

    Args:
        base_model: checkpoint directory, cached hub id, or a `TransformerEncoder`.
        adapter_dir: AdapterHub adapter directory.
        head_dir: AdapterHub head directory, or `None`.
        **encoder_kwargs: passed to `load_encoder` (e.g. `dtype`).

    Returns:
        An `AdapterModel` returning `last_hidden_state` (and `logits` with a head).
    """
    return load_composition_model(base_model, [adapter_dir], None, head_dir=head_dir, **encoder_kwargs)


def load_fusion_model(base_model, adapter_dirs, fusion_dir, head_dir=None, reference_form=False, **encoder_kwargs):
    """A model with AdapterHub adapters, their fusion and (optionally) a head.

    Args:
        base_model: checkpoint directory, cached hub id, or a `TransformerEncoder`.
        adapter_dirs: AdapterHub adapter directories (every adapter the fusion uses).
        fusion_dir: AdapterHub fusion directory.
        head_dir: AdapterHub head directory, or `None`.
        reference_form: compute fusion in AdapterHub's literal form.
        **encoder_kwargs: passed to `load_encoder`.

    Returns:
        An `AdapterModel` whose call takes a dict with `input_ids`,
        `attention_mask` and optionally `token_type_ids`, and returns `logits`
        (with a head), `last_hidden_state` and `fusion_attentions`
        `[blocks, batch, tokens, adapters]`.
    """
    if fusion_dir is None:
        raise CheckpointError("load_fusion_model: fusion_dir is None; expected an AdapterHub fusion directory.")
    return load_composition_model(base_model, adapter_dirs, None, fusion_dirs=[fusion_dir], head_dir=head_dir,
                                  reference_form=reference_form, **encoder_kwargs)


def load_composition_model(base_model, adapter_dirs, adapter_setup, fusion_dirs=(), head_dir=None,
                           reference_form=False, **encoder_kwargs):
    """A model with AdapterHub adapters (and fusions, and a head) that runs them in any composition.

    Args:
        base_model: checkpoint directory, cached hub id, or a `TransformerEncoder`.
        adapter_dirs: AdapterHub adapter directories.
        adapter_setup: what the model runs: an `AdapterSetup`, any form `AdapterSetup.parse` reads (an
            AdapterHub composition dict such as `Stack("lang", "task").to_dict()` among them), or `None`
            for the last fusion loaded (or the one adapter, when there is no fusion).
        fusion_dirs: AdapterHub fusion directories (their adapters must be among `adapter_dirs`).
        head_dir: AdapterHub head directory, or `None`.
        reference_form: compute fusion in AdapterHub's literal form.
        **encoder_kwargs: passed to `load_encoder`.

    Returns:
        An `AdapterModel` (named `"fusion_model"` when a fusion runs, else `"adapter_model"`).

    Raises:
        CheckpointError: a directory, file, field or tensor at fault (named).
        ValueError: `adapter_setup` names adapters or fusions that were not loaded.
    """
    if isinstance(adapter_dirs, (str, os.PathLike)):
        adapter_dirs = [adapter_dirs]
    if isinstance(fusion_dirs, (str, os.PathLike)):
        fusion_dirs = [fusion_dirs]
    if not adapter_dirs:
        raise CheckpointError("load_composition_model: adapter_dirs is empty; expected AdapterHub adapter "
                              "directories.")
    if not isinstance(base_model, TransformerEncoder) and fusion_dirs:
        encoder_kwargs.setdefault("fusion_reference_form", reference_form)
    encoder = _resolve_encoder(base_model, **encoder_kwargs)
    names = [load_adapter(encoder, d) for d in adapter_dirs]
    fused = [load_fusion(encoder, d) for d in fusion_dirs]
    if adapter_setup is None:
        if len(names) > 1 and not fused:
            raise ValueError(f"load_composition_model: {len(names)} adapters and no fusion; expected an "
                             "adapter_setup saying how they compose.")
        adapter_setup = fused[-1] if fused else names[0]
    setup = encoder.check_setup(adapter_setup)
    head = load_head(head_dir, encoder)[0] if head_dir is not None else None
    label = "fusion_model" if setup.fusions() else "adapter_model"
    return AdapterModel(encoder, head, adapter_setup=setup, name=label)


# ------------------------------------------------------------------ saving
def _meta(encoder, name, config, model_name):
    return {
        "config": config,
        "hidden_size": encoder.hidden_size,
        "model_class": CONVERTERS[encoder.model_type].model_class,
        "model_name": model_name or os.path.basename(getattr(encoder, "checkpoint", "") or "") or None,
        "model_type": encoder.model_type,
        "name": name,
        "version": ADAPTERHUB_VERSION,
    }


def _write_module(directory, kind, config_name, meta, weights_name, tensors):
    from safetensors.numpy import save_file

    with write_directory(directory, kind) as tmp:
        write_json(os.path.join(tmp, config_name), meta)
        save_file(tensors, os.path.join(tmp, weights_name), metadata={"format": "pt"})


def _prefixed(encoder, tensors):
    prefix = CONVERTERS[encoder.model_type].prefix
    return {prefix + k: v for k, v in tensors.items()}


def save_adapter(encoder, name, directory, model_name=None):
    """Save adapter `name` of `encoder` in AdapterHub's layout (atomically; see `io.write_directory`)."""
    if name not in encoder.adapter_configs:
        raise ValueError(f"save_adapter: no adapter {name!r}; expected one of {sorted(encoder.adapter_configs)}.")
    config = encoder.adapter_configs[name]
    rows = adapter_rows(encoder, name, config)
    tensors = gather_weights(rows)
    for alias, key in _adapter_aliases(config, rows).items():
        tensors[alias] = tensors[key]
    meta = _meta(encoder, name, adapter_config_to_adapterhub(config), model_name)
    _write_module(directory, "adapterhub-adapter", "adapter_config.json", meta, "adapter.safetensors",
                  _prefixed(encoder, tensors))


def save_fusion(encoder, fusion, directory, model_name=None):
    """Save a fusion (its key, `AdapterSetup`, or adapters' names) in AdapterHub's layout (atomically).

    A named fusion is written under AdapterHub's key (its adapters' names joined
    by commas), so AdapterHub loads it; its name is kept in the config's
    `fusion_name` field, which `load_fusion` reads back.
    """
    key = encoder.fusion_key(fusion)
    spec = encoder.fusion_specs[key]
    names = list(spec["adapters"])
    rows = fusion_rows(encoder, names, spec["config"], key)
    meta = _meta(encoder, ",".join(names), fusion_config_to_adapterhub(spec["config"]), model_name)
    meta["adapter_names"] = names
    if spec["name"] is not None:
        meta["fusion_name"] = spec["name"]
    _write_module(directory, "adapterhub-fusion", "adapter_fusion_config.json", meta,
                  "model_adapter_fusion.safetensors", _prefixed(encoder, gather_weights(rows)))


def save_head(head, name, directory, encoder, label2id=None, model_name=None):
    """Save a `ClassificationHead` in AdapterHub's layout (atomically).

    `label2id` defaults to the head's own label names (`head.label_names`) when
    it has them, else `LABEL_0`, `LABEL_1`, ...
    """
    if not isinstance(head, ClassificationHead) or type(head) is not ClassificationHead or not head.built:
        raise ValueError(f"save_head: got {type(head).__name__}; expected a built ClassificationHead.")
    check_name(name, "head name")
    head_type = {v: k for k, v in _HEAD_TYPES.items()}.get(head.head_type)
    if head_type is None:
        raise ValueError(f"save_head: a {head.head_type!r} head has no AdapterHub counterpart; expected one of "
                         f"{list(_HEAD_TYPES.values())}.")
    if label2id is None:
        names = getattr(head, "label_names", None) or [f"LABEL_{i}" for i in range(head.num_labels)]
        label2id = {n: i for i, n in enumerate(names)}
    config = {
        "activation_function": head.activation,
        "bias": head.use_bias,
        "dropout_prob": head.dropout,
        "head_type": head_type,
        "label2id": label2id,
        "layers": head.num_layers,
        "num_labels": head.num_labels,
        "use_pooler": head.use_pooler,
    }
    meta = _meta(encoder, name, config, model_name)
    _write_module(directory, "adapterhub-head", "head_config.json", meta, "model_head.safetensors",
                  gather_weights(head_rows(head, name, encoder.hidden_size)))
