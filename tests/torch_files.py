"""PyTorch `.bin` files built byte by byte, without PyTorch, for the tests.

The opcode builders write the pickles `torch.save` writes (protocol 2), so tests
can make well-formed, malformed and malicious files; `write_torch_zip` writes a
whole float32 state dict in the zip format.
"""

import pickle
import struct
import zipfile

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C


def op_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_str(text):
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def op_int(n):
    return b"J" + struct.pack("<i", n)


def op_tuple(*items):
    return b"(" + b"".join(items) + b"t"


def op_call(func, *args):
    return func + op_tuple(*args) + b"R"


NONE, FALSE, TRUE = b"N", b"\x89", b"\x88"


def op_ordered_dict():
    return op_call(op_global("collections", "OrderedDict"))


def op_dict(entries):
    return b"}(" + b"".join(op_str(k) + v for k, v in entries.items()) + b"u"


def op_storage(key, numel, stype="FloatStorage", legacy=False, module="torch", view=NONE):
    fields = [op_str("storage"), op_global(module, stype), op_str(key), op_str("cpu"), op_int(numel)]
    return op_tuple(*(fields + [view] if legacy else fields)) + b"Q"


def op_tensor(storage, offset=0, size=(2,), stride=(1,), extra=()):
    return op_call(op_global("torch._utils", "_rebuild_tensor_v2"), storage, op_int(offset),
                   op_tuple(*map(op_int, size)), op_tuple(*map(op_int, stride)), FALSE, op_ordered_dict(), *extra)


def pickled(body):
    return b"\x80\x02" + body + b"."


def write_zip(path, data_pkl, records=(), prefix="archive", byteorder=b"little"):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{prefix}/data.pkl", data_pkl)
        if byteorder is not None:
            z.writestr(f"{prefix}/byteorder", byteorder)
        for key, payload in dict(records).items():
            z.writestr(f"{prefix}/data/{key}", payload)
        z.writestr(f"{prefix}/version", b"3\n")
    return str(path)


def write_legacy(path, main_pkl, storages=(), magic=MAGIC, version=1001, keys=None):
    """`storages`: (key, element count, bytes) in file order."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    parts = [pickle.dumps(magic, protocol=2), pickle.dumps(version, protocol=2),
             pickle.dumps(sys_info, protocol=2), main_pkl,
             pickle.dumps([key for key, _, _ in storages] if keys is None else keys, protocol=2)]
    for _key, count, payload in storages:
        parts += [struct.pack("<q", count), payload]
    with open(path, "wb") as f:
        f.write(b"".join(parts))
    return str(path)




def write_torch_zip(tensors, path):
    """`torch.save(state_dict)` of float32 arrays, without torch: one storage per tensor, zip format."""
    entries, records = {}, {}
    for i, (key, value) in enumerate(tensors.items()):
        value = np.ascontiguousarray(value, dtype="<f4")
        strides = [int(np.prod(value.shape[d + 1:])) for d in range(value.ndim)]
        entries[key] = op_tensor(op_storage(str(i), value.size), size=value.shape, stride=strides)
        records[str(i)] = value.tobytes()
    return write_zip(path, pickled(op_dict(entries)), records)
