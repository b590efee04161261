"""Reading the tensors of a weights file into numpy arrays, by key.

Formats: safetensors (one file, or shards listed in `<stem>.safetensors.index.json`)
read with `safetensors.safe_open(..., framework="np")` (bfloat16 tensors, which
numpy lacks, are widened to float32 exactly); and PyTorch's pickled `.bin` files
(one file or shards), read by `torch_bin.read_torch_bin` without PyTorch and
without running pickle code. Every failure is a `CheckpointError` naming the file.
"""

import collections
import json
import os
import struct

import numpy as np

from keras_adapterfusion.errors import CheckpointError
from keras_adapterfusion.io.files import read_json


def _bfloat16_tensor(path, key):
    """A bfloat16 tensor of a safetensors file, widened to float32 (numpy has no bfloat16)."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        entry = header[key]
        start, end = entry["data_offsets"]
        f.seek(8 + size + start)
        raw = np.frombuffer(f.read(end - start), dtype="<u2")
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])


def read_safetensors(path):
    """Every tensor of one safetensors file, as numpy arrays by key."""
    from safetensors import safe_open

    path = os.fspath(path)
    out = {}
    try:
        with safe_open(path, framework="np") as f:
            for key in f.keys():
                if f.get_slice(key).get_dtype() == "BF16":
                    out[key] = _bfloat16_tensor(path, key)
                else:
                    out[key] = f.get_tensor(key)
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: cannot be read as safetensors ({type(e).__name__}: {e}).") from e
    return out


def _read_shards(index_path, read_one):
    index = read_json(index_path, "index of weight shards")
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index_path}: field 'weight_map' is {weight_map!r}; expected an object mapping "
                              "tensor names to shard file names.")
    directory = os.path.dirname(index_path)
    out = {}
    for shard in sorted(set(weight_map.values())):
        if os.path.basename(shard) != shard:
            raise CheckpointError(f"{index_path}: shard {shard!r} is not a file name in the same directory.")
        shard_path = os.path.join(directory, shard)
        if not os.path.isfile(shard_path):
            raise CheckpointError(f"{shard_path}: missing; {index_path} lists it as a shard.")
        out.update(read_one(shard_path))
    missing = sorted(set(weight_map) - set(out))
    if missing:
        raise CheckpointError(f"{index_path}: lists tensor(s) {missing[:4]} that no shard holds.")
    return out


def weight_files(directory, stem):
    """The weight files `read_tensors` looks for, in order of preference."""
    return (f"{stem}.safetensors", f"{stem}.safetensors.index.json", f"pytorch_{stem}.bin",
            f"pytorch_{stem}.bin.index.json")


class WeightsFile(collections.namedtuple("WeightsFile", ["path", "tensors"])):
    """What `read_weights` found: the file it read (for messages) and its tensors by key."""


def read_weights(directory, stem="model"):
    """All tensors of the weights named `stem` in `directory`, as numpy arrays by key.

    Looks for `{stem}.safetensors`, then `{stem}.safetensors.index.json` (shards),
    then PyTorch's `pytorch_{stem}.bin` and `pytorch_{stem}.bin.index.json`.

    Returns:
        A `WeightsFile(path, tensors)`.

    Raises:
        CheckpointError: no weights file, or one that cannot be read (naming it).
    """
    from keras_adapterfusion.io.torch_bin import read_torch_bin

    directory = os.fspath(directory)
    single, index, pickled, pickled_index = (os.path.join(directory, f) for f in weight_files(directory, stem))
    for path, read in ((single, read_safetensors), (index, lambda p: _read_shards(p, read_safetensors)),
                       (pickled, read_torch_bin), (pickled_index, lambda p: _read_shards(p, read_torch_bin))):
        if os.path.isfile(path):
            return WeightsFile(path, read(path))
    raise CheckpointError(
        f"{directory}: no weights found; expected one of {list(weight_files(directory, stem))}."
    )
