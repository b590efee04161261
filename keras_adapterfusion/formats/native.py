"""Native save and load of single adapters, fusions and heads (no pickle).

Each module is saved to a small directory:

- `module.json`: the kind (`adapter`, `fusion` or `head`), the name, the config,
  the package version, and the signature of the encoder it was trained on
  (architecture and a digest of its pretrained weights);
- `weights.safetensors`: the module's tensors, keyed by where they live
  (`"{block}.{slot}.{sublayer}.{variable}"`; a head's `"dense_{i}.{variable}"`).

Saving goes through the package's one directory writer
(`keras_adapterfusion.io.write_directory`): atomic and crash-safe, and it never
replaces a directory that is not an earlier save of the same kind. Loading
checks the kind, the encoder signature, every config field and every tensor
(key, shape, dtype, finiteness) before it changes anything, and names the file
and the field when something does not fit. For AdapterHub's layout use
`keras_adapterfusion.formats.adapterhub` instead.

`save_trained_weights` and `load_trained_weights` keep a model's trainable
weights in one safetensors file keyed by variable path (a tuning trial's best
epoch, so Hyperband can continue it): the same weight loader checks them.

Example:

```python
from keras_adapterfusion.formats import native as saving

saving.save_adapter(encoder, "sentiment", "artefacts/sentiment")
saving.save_fusion(encoder, ["sentiment", "nli"], "artefacts/fusion")
saving.save_head(model.head, "artefacts/head", encoder)

other = load_encoder("path/to/the/same/checkpoint")
saving.load_adapter(other, "artefacts/sentiment")
```
"""

import hashlib
import os

import keras
import numpy as np

from keras_adapterfusion.configs import FusionConfig, adapter_config
from keras_adapterfusion.errors import CheckpointError
from keras_adapterfusion.formats.locations import adapter_locations, fusion_locations, module_variable
from keras_adapterfusion.io import (
    WeightRow,
    atomic_file,
    load_weights,
    gather_weights,
    json_field,
    read_json,
    read_safetensors,
    read_weights,
    saved_directory,
    stage_weights,
    write_directory,
    write_json,
)
from keras_adapterfusion.layers.adapter_setup import AdapterSetup
from keras_adapterfusion.layers.classification_head import ClassificationHead
from keras_adapterfusion.names import check_name
from keras_adapterfusion.version import __version__

FORMAT = "keras_adapterfusion.module"
FORMAT_VERSION = 1
CONFIG_FILE = "module.json"
WEIGHTS_FILE = "weights.safetensors"
KINDS = ("adapter", "fusion", "head")


def encoder_signature(encoder):
    """Architecture and a digest of the pretrained weights of `encoder`.

    The digest hashes the embeddings' LayerNorm and the first and last blocks'
    attention-output LayerNorms, which differ between any two pretrained
    checkpoints; adapters trained on one encoder do not fit another.
    """
    h = hashlib.sha256()
    parts = [encoder.embeddings.norm, encoder.blocks[0].attention_norm, encoder.blocks[-1].output_norm]
    for layer in parts:
        for v in layer.weights:
            h.update(np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float32).tobytes())
    return {
        "model_type": encoder.model_type,
        "hidden_size": encoder.hidden_size,
        "num_layers": encoder.num_layers,
        "num_heads": encoder.num_heads,
        "intermediate_size": encoder.intermediate_size,
        "vocab_size": encoder.vocab_size,
        "weights_digest": h.hexdigest()[:16],
    }


def _native_key(loc):
    return ".".join(str(p) for p in (loc.block, loc.slot, loc.sub, loc.attr) if p is not None)


def _module_rows(encoder, locations, kind, key):
    return [WeightRow(_native_key(loc), loc.shape,
                      (lambda loc=loc: module_variable(encoder, loc, kind, key)), None)
            for loc in locations]


def _head_rows(head):
    return [WeightRow(f"dense_{i}.{attr}", tuple(getattr(d, attr).shape), getattr(d, attr))
            for i, d in enumerate(head.dense_layers) for attr in ("kernel", "bias")
            if getattr(d, attr, None) is not None]


def _write(directory, kind, meta, tensors):
    from safetensors.numpy import save_file

    with write_directory(directory, kind) as tmp:
        write_json(os.path.join(tmp, CONFIG_FILE), meta)
        save_file(tensors, os.path.join(tmp, WEIGHTS_FILE))


def _meta(kind, name, config, encoder):
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "name": name,
        "config": config,
        "encoder": encoder_signature(encoder),
        "keras_adapterfusion_version": __version__,
    }


def save_adapter(encoder, name, directory):
    """Save adapter `name` of `encoder` to `directory` (atomically; see `io.write_directory`)."""
    if name not in encoder.adapter_configs:
        raise ValueError(f"save_adapter: no adapter {name!r}; expected one of {sorted(encoder.adapter_configs)}.")
    config = encoder.adapter_configs[name]
    rows = _module_rows(encoder, adapter_locations(encoder, config), "adapter", name)
    _write(directory, "adapter", _meta("adapter", name, config.to_dict(), encoder), gather_weights(rows))


def save_fusion(encoder, fusion, directory):
    """Save a fusion of `encoder` (its key, `AdapterSetup`, or adapters' names) to `directory` (atomically)."""
    key = encoder.fusion_key(fusion)
    spec = encoder.fusion_specs[key]
    rows = _module_rows(encoder, fusion_locations(encoder, spec["adapters"], spec["config"]), "fusion", key)
    config = {"adapters": list(spec["adapters"]), "fusion": spec["config"].to_dict(), "fusion_name": spec["name"]}
    _write(directory, "fusion", _meta("fusion", key, config, encoder), gather_weights(rows))


def save_head(head, directory, encoder, name=None):
    """Save a head layer (any of this package's heads) to `directory` (atomically)."""
    if not getattr(head, "built", False) or not hasattr(head, "dense_layers"):
        raise ValueError(f"save_head: got {type(head).__name__}; expected a built head of this package.")
    name = check_name(name if name is not None else head.name, "head name")
    config = keras.saving.serialize_keras_object(head)
    _write(directory, "head", _meta("head", name, config, encoder), gather_weights(_head_rows(head)))


def read_module(directory, expected_kind=None):
    """`(path of module.json, meta, WeightsFile)` of a saved module, its format and kind checked."""
    directory = saved_directory(directory)
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: no such directory; expected a saved {expected_kind or 'module'}.")
    path = os.path.join(directory, CONFIG_FILE)
    meta = read_json(path, "keras_adapterfusion module description")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: field 'format' is {meta.get('format')!r}; expected {FORMAT!r}.")
    version = json_field(meta, "format_version", path, int, check=lambda v: v >= 1, expected="an integer >= 1")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {version} is newer than this package reads ({FORMAT_VERSION}).")
    kind = json_field(meta, "kind", path, str, check=lambda v: v in KINDS, expected=f"one of {list(KINDS)}")
    if expected_kind is not None and kind != expected_kind:
        raise CheckpointError(f"{path}: holds a {kind}; expected a {expected_kind}.")
    name = json_field(meta, "name", path, str)
    if kind != "fusion":  # a fusion's name is its key; its adapters' names are checked when it loads
        try:
            check_name(name, f"{path}: field 'name'")
        except ValueError as e:
            raise CheckpointError(str(e)) from e
    json_field(meta, "config", path, dict)
    json_field(meta, "encoder", path, dict)
    return path, meta, read_weights(directory, "weights")


def check_encoder(meta, path, encoder):
    """Raise if the module described by `meta` (read from `path`) was saved from an encoder unlike `encoder`."""
    found = meta["encoder"]
    expected = encoder_signature(encoder)
    diffs = {k: (expected[k], found.get(k)) for k in expected if found.get(k) != expected[k]}
    if diffs:
        detail = ", ".join(f"{k}: expected {e!r}, found {f!r}" for k, (e, f) in diffs.items())
        raise CheckpointError(f"{path}: saved from a different encoder ({detail}).")


def load_adapter(encoder, directory, load_as=None, allow_nonfinite=False):
    """Load a saved adapter into `encoder`; returns its name. Nothing changes on error."""
    path, meta, weights = read_module(directory, "adapter")
    check_encoder(meta, path, encoder)
    try:
        config = adapter_config(meta["config"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: config: {e}") from e
    name = check_name(load_as, "load_as") if load_as is not None else meta["name"]
    if name in encoder.adapter_configs:
        raise CheckpointError(f"{directory}: the encoder already has an adapter {name!r}; pass load_as=...")
    for i in config.leave_out:
        if i >= encoder.num_layers:
            raise CheckpointError(f"{path}: config: leave_out has block {i}; the encoder has {encoder.num_layers}.")
    rows = _module_rows(encoder, adapter_locations(encoder, config), "adapter", name)
    staged = stage_weights(rows, weights.tensors, weights.path, allow_nonfinite=allow_nonfinite)
    encoder.add_adapter(name, config)
    staged.assign()
    return name


def load_fusion(encoder, directory, name=None, allow_nonfinite=False):
    """Load a saved fusion into `encoder` (its adapters must be there).

    Args:
        name: load it under this fusion name (default: the saved fusion's name, if any).

    Returns:
        The `AdapterSetup` that runs the fusion.
    """
    path, meta, weights = read_module(directory, "fusion")
    check_encoder(meta, path, encoder)
    where = f"{path}: config"
    names = json_field(meta["config"], "adapters", where, list)
    stored = json_field(meta["config"], "fusion_name", where, (str, type(None)), default=None)
    try:
        setup = AdapterSetup.fuse(names, name if name is not None else stored)
        config = FusionConfig.from_dict(json_field(meta["config"], "fusion", where, dict))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{where}: {e}") from e
    missing = [n for n in setup.adapters if n not in encoder.adapter_configs]
    if missing:
        raise CheckpointError(f"{path}: fuses adapter(s) {missing} that the encoder lacks; it has "
                              f"{sorted(encoder.adapter_configs)}.")
    if setup.fusion_key in encoder.fusion_specs:
        raise CheckpointError(f"{directory}: the encoder already has the fusion {setup.fusion_key!r}; "
                              "pass name=... to load it under another name.")
    rows = _module_rows(encoder, fusion_locations(encoder, list(setup.adapters), config), "fusion",
                        setup.fusion_key)
    staged = stage_weights(rows, weights.tensors, weights.path, allow_nonfinite=allow_nonfinite)
    encoder.add_fusion(list(setup.adapters), config, name=setup.fusion_name)
    staged.assign()
    return setup


def load_head(directory, encoder, allow_nonfinite=False):
    """Load a saved head; returns the built head layer."""
    path, meta, weights = read_module(directory, "head")
    check_encoder(meta, path, encoder)
    try:
        head = keras.saving.deserialize_keras_object(meta["config"])
    except Exception as e:
        raise CheckpointError(f"{path}: config: cannot rebuild the head ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:300]}).") from e
    if not isinstance(head, ClassificationHead):
        raise CheckpointError(f"{path}: config: describes a {type(head).__name__}; expected a head of this package.")
    if not head.built:
        head.build((None, None, encoder.hidden_size), (None, encoder.hidden_size))
    stage_weights(_head_rows(head), weights.tensors, weights.path, allow_nonfinite=allow_nonfinite).assign()
    return head


def save_trained_weights(model, path):
    """Save `model`'s trainable weights to one safetensors file keyed by variable path (atomically).

    float64 weights stay float64; every other dtype is stored as float32 (exact
    for float16 and bfloat16).

    Args:
        model: a built Keras model.
        path: the file (replaced whole, or left as it was on failure).

    Example:

    ```python
    save_trained_weights(model, "trial_0/trained.weights.safetensors")
    ```
    """
    from safetensors.numpy import save_file

    tensors = {}
    for v in model.trainable_weights:
        value = np.asarray(keras.ops.convert_to_numpy(v.value))
        tensors[v.path] = np.ascontiguousarray(value if value.dtype == np.float64 else value.astype(np.float32))
    with atomic_file(path) as tmp:
        save_file(tensors, tmp)


def load_trained_weights(model, path):
    """Assign `model`'s trainable weights from `save_trained_weights`'s file: all of them or none.

    Args:
        model: a model of the same set-up (the same variable paths and shapes).
        path: the file.

    Raises:
        CheckpointError: naming the file, when a weight is missing, unexpected, of another shape or not finite.

    Example:

    ```python
    load_trained_weights(tuner.hypermodel.build(trial.hyperparameters), "trial_0/trained.weights.safetensors")
    ```
    """
    rows = [WeightRow(v.path, tuple(v.shape), v) for v in model.trainable_weights]
    return load_weights(rows, read_safetensors(path), os.fspath(path))
