"""Read PyTorch `.bin` state dicts without PyTorch and without running pickle code.

`torch.save(model.state_dict(), path)` writes a pickle whose tensors point at raw
storage bytes. AdapterHub (`adapters`) writes its adapters, fusions and heads this
way (`pytorch_adapter.bin`, `pytorch_model_adapter_fusion.bin`,
`pytorch_model_head.bin`), and Hugging Face its `pytorch_model.bin`. Both layouts
that `torch.save` has used are read:

- the zip archive (torch >= 1.6): `<prefix>/data.pkl` is the pickle, each storage
  is a record `<prefix>/data/<key>`, and `<prefix>/byteorder` says the byte order
  (little-endian when absent); `<prefix>` is the archive's top folder, any name;
- the legacy stream (`_use_new_zipfile_serialization=False`, and most adapters
  published in 2020): five pickles one after the other (magic number, protocol
  version, system info, the state dict, the list of storage keys), then every
  storage's bytes, little-endian, each after its element count as an 8-byte
  little-endian integer.

Security: this gives the guarantee of `torch.load(weights_only=True)`; the restricted unpickler is
`io.torch_pickle` (nothing named in the file is imported or looked up).

Tensors come back as numpy arrays (always copies, C-contiguous, native byte
order) with torch's dtype: float32, float16, float64, int64, int32, int16, int8,
uint8 and bool. bfloat16, which numpy lacks, becomes float32 exactly (the 16 bits
are the top half of a float32). Views keep their own shape, strides and offset, so
a transposed tensor or two slices of one storage come back as torch would load
them.

Example:

```python
from keras_adapterfusion.io.torch_bin import read_torch_bin

tensors = read_torch_bin("adapters/sentiment/pytorch_adapter.bin")
for name, array in tensors.items():
    print(name, array.dtype, array.shape)
```
"""

import io
import os
import struct
import zipfile

import numpy as np

from keras_adapterfusion.errors import CheckpointError
from keras_adapterfusion.io.torch_pickle import check_state_dict, describe, load_pickle

__all__ = ["read_torch_bin"]

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001
# A tensor may repeat storage elements (stride 0, as `expand()` gives); past this
# size such a tensor is refused rather than materialized.
_MAX_REPEATED_BYTES = 1 << 30
# numpy's limit on the number of dimensions.
_MAX_NDIM = 64

# --------------------------------------------------------------------------- tensors


def _decode_storage(buf, stype, little_endian):
    """The bytes of one storage as a 1-D numpy array of native byte order (bfloat16 -> float32)."""
    order = "<" if little_endian else ">"
    if stype.code == "bf16":
        bits = np.frombuffer(buf, dtype=order + "u2").astype(np.uint32)
        return (bits << 16).view(np.float32)
    if stype.code == "b1":
        return np.frombuffer(buf, dtype=np.uint8) != 0
    return np.frombuffer(buf, dtype=np.dtype(stype.code).newbyteorder(order)).astype(np.dtype(stype.code))


def _is_count(value):
    return type(value) is int and value >= 0


def _show(value):
    """`repr` of a tensor's offset, size or stride, cut short, for messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _materialize(path, name, tensor, storages):
    """The numpy array of one tensor: a strided view of its storage, copied."""
    ref = tensor.storage
    root = storages[ref.key]
    base = root[ref.start:ref.start + ref.length]
    offset, size, stride = tensor.offset, tensor.size, tensor.stride
    if not _is_count(offset):
        raise CheckpointError(f"{path}: tensor {name!r} has the storage offset {_show(offset)}; expected an "
                              "int >= 0.")
    if type(size) is not tuple or not all(_is_count(n) for n in size) or len(size) > _MAX_NDIM:
        raise CheckpointError(f"{path}: tensor {name!r} has the size {_show(size)}; expected a tuple of at "
                              f"most {_MAX_NDIM} ints >= 0.")
    if type(stride) is not tuple or len(stride) != len(size) or not all(_is_count(s) for s in stride):
        raise CheckpointError(f"{path}: tensor {name!r} has the stride {_show(stride)}; expected a tuple of "
                              f"{len(size)} ints >= 0.")
    numel = 1
    for n in size:
        numel *= n
    if numel == 0:
        if offset > base.size:
            raise CheckpointError(f"{path}: tensor {name!r} starts at element {offset} of a storage of "
                                  f"{base.size} elements.")
        return np.zeros(size, dtype=base.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= base.size:
        raise CheckpointError(
            f"{path}: tensor {name!r} (offset {offset}, size {list(size)}, stride {list(stride)}) reaches element "
            f"{last} of its {ref.stype.name} {ref.key!r}, which has {base.size} elements."
        )
    if numel > base.size and numel * base.itemsize > _MAX_REPEATED_BYTES:
        raise CheckpointError(
            f"{path}: tensor {name!r} (size {list(size)}, stride {list(stride)}) repeats the {base.size} "
            f"elements of its storage into {numel}; refused as larger than {_MAX_REPEATED_BYTES} bytes."
        )
    view = np.lib.stride_tricks.as_strided(
        base[offset:], shape=size, strides=tuple(s * base.itemsize for s in stride), writeable=False
    )
    out = np.array(view, copy=True, order="C")
    if tensor.negate:
        out = np.negative(out)
    return out


def _materialize_all(path, state, storages):
    return {name: _materialize(path, name, tensor, storages) for name, tensor in state.items()}


def _users(state, key):
    """The names of the tensors on storage `key`, for messages."""
    names = [name for name, t in state.items() if t.storage.key == key]
    if not names:
        return "no tensor"
    return "tensor " + ", ".join(repr(n) for n in names[:3]) + (", ..." if len(names) > 3 else "")


# --------------------------------------------------------------------------- formats


def _read_zip(path, f):
    try:
        archive = zipfile.ZipFile(f)
        names = archive.namelist()
    except Exception as e:  # BadZipFile, OSError, ... on a truncated or corrupt archive
        raise CheckpointError(f"{path}: starts like a zip archive but cannot be read as one (truncated or "
                              f"corrupt file?): {type(e).__name__}: {e}") from e
    if not names or "/" not in names[0]:
        raise CheckpointError(f"{path}: is a zip archive but not one written by torch.save (its records are not "
                              "in one top folder).")
    prefix = names[0].split("/", 1)[0]
    pkl_name = f"{prefix}/data.pkl"
    if pkl_name not in names:
        hint = " It looks like a TorchScript archive (torch.jit.save), not a state dict." \
            if f"{prefix}/constants.pkl" in names else ""
        raise CheckpointError(f"{path}: the zip archive has no record {pkl_name!r}, so it is not a state dict "
                              f"written by torch.save.{hint}")

    def read_record(info):
        try:
            return archive.read(info)
        except Exception as e:  # BadZipFile (bad CRC, truncation), NotImplementedError (compression), ...
            raise CheckpointError(f"{path}: record {info.filename!r} cannot be read (truncated or corrupt file?): "
                                  f"{type(e).__name__}: {e}") from e

    byteorder = b"little"  # what torch assumes for archives without the record
    if f"{prefix}/byteorder" in names:
        byteorder = read_record(archive.getinfo(f"{prefix}/byteorder"))
        if byteorder not in (b"little", b"big"):
            raise CheckpointError(f"{path}: record '{prefix}/byteorder' holds {byteorder[:20]!r}; expected "
                                  "b'little' or b'big'.")
    data = io.BytesIO(read_record(archive.getinfo(pkl_name)))
    obj, unpickler = load_pickle(path, data, f"record {pkl_name!r}", storages="zip")
    state = check_state_dict(path, obj)

    storages = {}
    for name, tensor in state.items():
        key = tensor.storage.key
        if key in storages:
            continue
        stype, numel = unpickler.roots[key]
        record_name = f"{prefix}/data/{key}"
        nbytes = numel * stype.itemsize
        try:
            info = archive.getinfo(record_name)
        except KeyError:
            raise CheckpointError(f"{path}: tensor {name!r} lives in storage {key!r}, but the archive has no "
                                  f"record {record_name!r} (truncated or corrupt file?).") from None
        if info.file_size != nbytes:  # checked before reading: a forged size cannot make us allocate
            raise CheckpointError(f"{path}: tensor {name!r} lives in a {stype.name} of {numel} elements "
                                  f"({nbytes} bytes), but record {record_name!r} holds {info.file_size} bytes.")
        storages[key] = _decode_storage(read_record(info), stype, byteorder == b"little")
    return _materialize_all(path, state, storages)


def _read_legacy(path, f):
    f.seek(0, os.SEEK_END)
    file_size = f.tell()
    f.seek(0)
    magic, _ = load_pickle(path, f, "the magic number")
    if type(magic) is not int or magic != _MAGIC_NUMBER:
        raise CheckpointError(f"{path}: bad magic number {describe(magic)}; this is a pickle but not a file "
                              "written by torch.save.")
    version, _ = load_pickle(path, f, "the protocol version")
    if type(version) is not int or version != _PROTOCOL_VERSION:
        raise CheckpointError(f"{path}: unknown torch.save protocol version {describe(version)}; expected "
                              f"{_PROTOCOL_VERSION}.")
    sys_info, _ = load_pickle(path, f, "the system info")
    if not isinstance(sys_info, dict):
        raise CheckpointError(f"{path}: the system info is {describe(sys_info)}; expected a dict.")
    obj, unpickler = load_pickle(path, f, "the state dict pickle", storages="legacy")
    state = check_state_dict(path, obj)
    keys, _ = load_pickle(path, f, "the list of storage keys")
    if not isinstance(keys, list) or not all(type(k) is str for k in keys) or len(set(keys)) != len(keys):
        raise CheckpointError(f"{path}: the list of storage keys is {describe(keys)}; expected a list of "
                              "distinct strings.")

    roots = unpickler.roots
    storages = {}
    for key in keys:
        if key not in roots:
            raise CheckpointError(f"{path}: the file holds storage {key!r}, which no tensor uses (corrupt file?).")
        stype, numel = roots[key]
        header = f.read(8)
        if len(header) < 8:
            raise CheckpointError(f"{path}: the file ends before the data of storage {key!r} ({_users(state, key)}) "
                                  "(truncated file?).")
        (count,) = struct.unpack("<q", header)
        if count != numel:
            raise CheckpointError(f"{path}: storage {key!r} ({_users(state, key)}) holds {count} elements, but the "
                                  f"pickle declares a {stype.name} of {numel}.")
        nbytes = numel * stype.itemsize
        if f.tell() + nbytes > file_size:
            raise CheckpointError(f"{path}: the file ends inside the data of storage {key!r} "
                                  f"({_users(state, key)}): {nbytes} bytes needed, {file_size - f.tell()} left "
                                  "(truncated file?).")
        storages[key] = _decode_storage(f.read(nbytes), stype, little_endian=True)
    missing = [key for key in roots if key not in storages]
    if missing:
        raise CheckpointError(f"{path}: storage {missing[0]!r} ({_users(state, missing[0])}) is not in the file's "
                              "list of storages (corrupt file?).")
    return _materialize_all(path, state, storages)


def read_torch_bin(path):
    """Read the tensors of a PyTorch `.bin` state dict as numpy arrays, without PyTorch.

    Reads what `torch.save(state_dict, path)` writes, in the zip format (torch >= 1.6)
    or the legacy format, and never runs code from the file: only the globals a
    tensor state dict needs are resolved, to this module's own stand-ins (see the
    module docstring for the allow-list).

    Args:
        path: a `str` or path-like naming the file (e.g. `pytorch_adapter.bin`,
            `pytorch_model_head.bin`, `pytorch_model.bin`).

    Returns:
        A dict from each tensor's name to a numpy array (a copy, native byte order,
        C-contiguous) of torch's dtype: float32, float16, float64, int64, int32,
        int16, int8, uint8 or bool; bfloat16 tensors come back as float32, exactly.
        Parameters saved as `nn.Parameter` come back as their tensors.

    Raises:
        CheckpointError: naming the file, if it is missing or unreadable, is not a
            `torch.save` file (neither zip nor legacy format, bad magic number,
            missing `data.pkl` or storage record), is truncated or corrupt, holds
            anything but a flat mapping from names to tensors, or its pickle asks
            for any global outside the allow-list (the message names the global).
    """
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be opened ({type(e).__name__}: {e.strerror or e}).") from e
    try:
        with f:
            head = f.read(512)
            f.seek(0)
            if not head:
                raise CheckpointError(f"{path}: is empty, not a PyTorch checkpoint.")
            if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
                return _read_zip(path, f)
            if head[:1] == b"\x80":  # pickle PROTO opcode: the legacy format
                return _read_legacy(path, f)
            if head[257:262] == b"ustar":
                raise CheckpointError(f"{path}: is a tar archive: torch.save's format before torch 0.4, which is "
                                      "not read; re-save it with a newer torch.")
            raise CheckpointError(f"{path}: is neither a zip archive nor a pickle (starts with {head[:8]!r}), so "
                                  "not a PyTorch checkpoint written by torch.save.")
    except CheckpointError:
        raise
    except Exception as e:  # a last net: every failure names the file
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({type(e).__name__}: {e}).") from e
