"""Native save and load of single adapters, fusions and heads (no pickle).

Each module is saved to a small directory:

- `module.json`: the kind (`adapter`, `fusion` or `head`), the name, the config,
  the package version, and the signature of the encoder it was trained on
  (architecture and a digest of its pretrained weights);
- `weights.safetensors`: the module's tensors, keyed by where they live
  (`"{block}.{slot}.{sublayer}.{variable}"`).

Loading checks the kind, the encoder signature, every key and every shape
before changing anything, and names the file, the expected and the found value
when something does not fit. Saving is atomic (see `fileio.atomic_directory`).
For AdapterHub's layout use `keras_adapterfusion.adapterhub` instead.

Example:

```python
from keras_adapterfusion import saving

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

from keras_adapterfusion.adapterhub import _resolve_block_variable as _block_variable
from keras_adapterfusion.adapterhub import adapter_rows, fusion_rows
from keras_adapterfusion.configs import AdapterConfig, FusionConfig
from keras_adapterfusion.errors import CheckpointError
from keras_adapterfusion.fileio import atomic_directory, read_json, write_json
from keras_adapterfusion.layers.transformer_block import fusion_key

FORMAT = "keras_adapterfusion.module"
FORMAT_VERSION = 1
CONFIG_FILE = "module.json"
WEIGHTS_FILE = "weights.safetensors"
KINDS = ("adapter", "fusion", "head")


def _version():
    from keras_adapterfusion import __version__

    return __version__


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
    block, slot, sub, attr = loc
    return ".".join(str(p) for p in (block, slot, sub, attr) if p is not None)


def _head_rows(head):
    return [(f"dense_{i}.{attr}", getattr(d, attr)) for i, d in enumerate(head.dense_layers)
            for attr in ("kernel", "bias") if getattr(d, attr, None) is not None]


def _write(directory, meta, tensors):
    from safetensors.numpy import save_file

    with atomic_directory(directory) as tmp:
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
        "keras_adapterfusion_version": _version(),
    }


def save_adapter(encoder, name, directory):
    """Save adapter `name` of `encoder` to `directory` (atomically)."""
    if name not in encoder.adapter_configs:
        raise ValueError(f"save_adapter: no adapter {name!r}; expected one of {sorted(encoder.adapter_configs)}.")
    config = encoder.adapter_configs[name]
    tensors = {
        _native_key(loc): np.asarray(keras.ops.convert_to_numpy(_block_variable(encoder, loc, "adapter", name)))
        for _, _, _, loc in adapter_rows(encoder, name, config)
    }
    _write(directory, _meta("adapter", name, config.to_dict(), encoder), tensors)


def save_fusion(encoder, adapter_names, directory):
    """Save the fusion over `adapter_names` of `encoder` to `directory` (atomically)."""
    key = fusion_key(adapter_names)
    if key not in encoder.fusion_specs:
        raise ValueError(f"save_fusion: no fusion {key!r}; expected one of {sorted(encoder.fusion_specs)}.")
    spec = encoder.fusion_specs[key]
    tensors = {
        _native_key(loc): np.asarray(keras.ops.convert_to_numpy(_block_variable(encoder, loc, "fusion", key)))
        for _, _, _, loc in fusion_rows(encoder, spec["adapters"], spec["config"])
    }
    config = {"adapters": list(spec["adapters"]), "fusion": spec["config"].to_dict()}
    _write(directory, _meta("fusion", key, config, encoder), tensors)


def save_head(head, directory, encoder, name=None):
    """Save a head layer (any of this package's heads) to `directory` (atomically)."""
    if not getattr(head, "built", False) or not hasattr(head, "dense_layers"):
        raise ValueError(f"save_head: got {type(head).__name__}; expected a built head of this package.")
    tensors = {k: np.asarray(keras.ops.convert_to_numpy(v)) for k, v in _head_rows(head)}
    config = keras.saving.serialize_keras_object(head)
    _write(directory, _meta("head", name or head.name, config, encoder), tensors)


def read_module(directory, expected_kind=None):
    """`(meta, tensors)` of a saved module, checking its format and kind."""
    from keras_adapterfusion.backbones.huggingface import read_tensors

    directory = os.fspath(directory)
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: no such directory; expected a saved {expected_kind or 'module'}.")
    meta = read_json(path, "keras_adapterfusion module description")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format is {meta.get('format')!r}; expected {FORMAT!r}.")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {meta['format_version']} is newer than this package reads ({FORMAT_VERSION})."
        )
    kind = meta.get("kind")
    if kind not in KINDS:
        raise CheckpointError(f"{path}: kind {kind!r}; expected one of {list(KINDS)}.")
    if expected_kind is not None and kind != expected_kind:
        raise CheckpointError(f"{path}: holds a {kind}; expected a {expected_kind}.")
    return meta, read_tensors(directory, "weights")


def check_encoder(meta, directory, encoder):
    """Raise if the module in `directory` was saved from an encoder unlike `encoder`."""
    found = meta.get("encoder") or {}
    expected = encoder_signature(encoder)
    diffs = {k: (expected[k], found.get(k)) for k in expected if found.get(k) != expected[k]}
    if diffs:
        detail = ", ".join(f"{k}: expected {e!r}, found {f!r}" for k, (e, f) in diffs.items())
        raise CheckpointError(
            f"{os.path.join(os.fspath(directory), CONFIG_FILE)}: saved from a different encoder ({detail})."
        )


def _stage(rows, tensors, source, resolve_shape):
    expected = {_native_key(loc) for _, _, _, loc in rows}
    missing = sorted(expected - set(tensors))
    unknown = sorted(set(tensors) - expected)
    if missing or unknown:
        raise CheckpointError(f"{source}: keys do not match (missing {missing[:4]}, unknown {unknown[:4]}).")
    staged = []
    for _, shape, _, loc in rows:
        key = _native_key(loc)
        value = np.asarray(tensors[key])
        if tuple(value.shape) != tuple(resolve_shape(shape)):
            raise CheckpointError(f"{source}: tensor {key!r} has shape {list(value.shape)}; expected {list(shape)}.")
        staged.append((loc, value))
    return staged


def load_adapter(encoder, directory, load_as=None):
    """Load a saved adapter into `encoder`; returns its name. Nothing changes on error."""
    meta, tensors = read_module(directory, "adapter")
    check_encoder(meta, directory, encoder)
    source = os.path.join(os.fspath(directory), WEIGHTS_FILE)
    try:
        config = AdapterConfig.from_dict(meta["config"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{os.path.join(os.fspath(directory), CONFIG_FILE)}: {e}") from e
    name = load_as or meta["name"]
    if name in encoder.adapter_configs:
        raise CheckpointError(f"{directory}: the encoder already has an adapter {name!r}; pass load_as=...")
    staged = _stage(adapter_rows(encoder, name, config), tensors, source, lambda s: s)
    encoder.add_adapter(name, config)
    for loc, value in staged:
        _block_variable(encoder, loc, "adapter", name).assign(value)
    return name


def load_fusion(encoder, directory):
    """Load a saved fusion into `encoder` (its adapters must be there); returns the names."""
    meta, tensors = read_module(directory, "fusion")
    check_encoder(meta, directory, encoder)
    path = os.path.join(os.fspath(directory), CONFIG_FILE)
    names = meta["config"]["adapters"]
    missing = [n for n in names if n not in encoder.adapter_configs]
    if missing:
        raise CheckpointError(f"{path}: fuses adapter(s) {missing} that the encoder lacks; it has "
                              f"{sorted(encoder.adapter_configs)}.")
    try:
        config = FusionConfig.from_dict(meta["config"]["fusion"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: {e}") from e
    if fusion_key(names) in encoder.fusion_specs:
        raise CheckpointError(f"{directory}: the encoder already has the fusion {fusion_key(names)!r}.")
    source = os.path.join(os.fspath(directory), WEIGHTS_FILE)
    staged = _stage(fusion_rows(encoder, names, config), tensors, source, lambda s: s)
    key = encoder.add_fusion(names, config)
    for loc, value in staged:
        _block_variable(encoder, loc, "fusion", key).assign(value)
    return list(names)


def load_head(directory, encoder):
    """Load a saved head; returns the built head layer."""
    meta, tensors = read_module(directory, "head")
    check_encoder(meta, directory, encoder)
    path = os.path.join(os.fspath(directory), CONFIG_FILE)
    try:
        head = keras.saving.deserialize_keras_object(meta["config"])
    except Exception as e:
        raise CheckpointError(f"{path}: cannot rebuild the head ({type(e).__name__}: {e}).") from e
    if not head.built:
        head.build((None, None, encoder.hidden_size), (None, encoder.hidden_size))
    rows = _head_rows(head)
    source = os.path.join(os.fspath(directory), WEIGHTS_FILE)
    expected, found = {k for k, _ in rows}, set(tensors)
    if expected != found:
        raise CheckpointError(f"{source}: keys do not match (missing {sorted(expected - found)[:4]}, "
                              f"unknown {sorted(found - expected)[:4]}).")
    for key, variable in rows:
        if tuple(tensors[key].shape) != tuple(variable.shape):
            raise CheckpointError(f"{source}: tensor {key!r} has shape {list(tensors[key].shape)}; "
                                  f"expected {list(variable.shape)}.")
    for key, variable in rows:
        variable.assign(tensors[key])
    return head
