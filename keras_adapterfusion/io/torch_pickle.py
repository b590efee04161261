"""The restricted unpickler of PyTorch `.bin` state dicts: nothing named in the file is imported or run.

`io.torch_bin.read_torch_bin` reads the file's layout (zip archive or legacy
stream) and decodes the storages; this module turns the file's pickles into a
flat mapping of names to tensor references, and refuses everything else.

Security: this gives the guarantee of `torch.load(weights_only=True)`. A pickle
file can name any Python callable and have the loader call it (`os.system`,
`builtins.exec`, ...). Here nothing named in the file is imported or looked up:

1. before anything is unpickled, every opcode is read without being executed
   (`pickletools.genops`); opcodes a state dict does not need (`INST`, `OBJ`,
   `NEWOBJ`, `EXT*`, buffers, ...) and every `GLOBAL` outside the allow-list below
   are refused;
2. the unpickler is a `pickle.Unpickler` whose `find_class` answers only from the
   allow-list, with this module's own numpy-side stand-ins, and whose
   `persistent_load` accepts only `('storage', <storage class>, key, location,
   numel)` (plus the legacy format's sixth field, the storage view);
3. the stand-ins check their arguments, and the unpickled object must be a flat
   mapping from `str` names to tensors.

The allow-list: `collections.OrderedDict`; `torch._utils._rebuild_tensor_v2`,
`_rebuild_tensor`, `_rebuild_parameter` and `_rebuild_parameter_with_state`
(all four are in torch's own weights-only allow-list); and the typed storage
classes `torch.<T>Storage` (also `torch.cuda.<T>Storage`, as in files saved from a
GPU) for T in Float, Half, BFloat16, Double, Long, Int, Short, Char, Byte, Bool.
Anything else is refused with a `CheckpointError` naming the file and the global.
"""

import io
import pickle
import pickletools
from collections import OrderedDict

from keras_adapterfusion.errors import CheckpointError

__all__ = ["check_state_dict", "describe", "load_pickle"]



# The opcodes a state dict pickled with protocol 2 (torch.save's default) to 4 may
# use. Everything else (INST, OBJ, NEWOBJ, NEWOBJ_EX, EXT1/2/4, PERSID, buffers,
# sets, text-mode protocol 0 opcodes, 8-byte-length strings) is refused.
_ALLOWED_OPCODES = frozenset({
    "PROTO", "FRAME", "STOP", "MARK",
    "NONE", "NEWTRUE", "NEWFALSE",
    "BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT",
    "BINUNICODE", "SHORT_BINUNICODE", "SHORT_BINSTRING", "BINSTRING", "SHORT_BINBYTES", "BINBYTES",
    "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    "SETITEM", "SETITEMS", "APPEND", "APPENDS", "DICT", "LIST",
    "BINPUT", "LONG_BINPUT", "MEMOIZE", "BINGET", "LONG_BINGET",
    "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "BINPERSID",
})


class _Malformed(Exception):
    """Raised inside the unpickler by the stand-ins; becomes a `CheckpointError`."""


class _Refused(Exception):
    """A global outside the allow-list; becomes a `CheckpointError` naming it."""

    def __init__(self, qualified_name):
        super().__init__(qualified_name)
        self.qualified_name = qualified_name


# --------------------------------------------------------------------------- stand-ins


class _StorageType:
    """Stands for a typed storage class such as `torch.FloatStorage`."""

    __slots__ = ("name", "code", "itemsize")

    def __init__(self, name, code, itemsize):
        self.name = name  # e.g. "FloatStorage"
        self.code = code  # numpy dtype code, or "bf16"
        self.itemsize = itemsize

    def __call__(self, *args):
        raise _Malformed(f"the pickle calls torch.{self.name}, which a state dict never does")

    def __setstate__(self, state):
        raise _Malformed(f"the pickle sets state on torch.{self.name}, which a state dict never does")

    def __repr__(self):
        return f"torch.{self.name}"


_STORAGE_TYPES = {
    t.name: t
    for t in (
        _StorageType("FloatStorage", "f4", 4),
        _StorageType("HalfStorage", "f2", 2),
        _StorageType("BFloat16Storage", "bf16", 2),
        _StorageType("DoubleStorage", "f8", 8),
        _StorageType("LongStorage", "i8", 8),
        _StorageType("IntStorage", "i4", 4),
        _StorageType("ShortStorage", "i2", 2),
        _StorageType("CharStorage", "i1", 1),
        _StorageType("ByteStorage", "u1", 1),
        _StorageType("BoolStorage", "b1", 1),
    )
}


class _StorageRef:
    """A storage as a persistent id names it: root key, type, and the slice of the root it covers."""

    __slots__ = ("key", "stype", "start", "length")

    def __init__(self, key, stype, start, length):
        self.key = key
        self.stype = stype
        self.start = start
        self.length = length

    def __setstate__(self, state):
        raise _Malformed("the pickle sets state on a storage, which a state dict never does")


class _TensorRef:
    """A tensor as `_rebuild_tensor_v2` describes it; materialized once the storages are read."""

    __slots__ = ("storage", "offset", "size", "stride", "negate")

    def __init__(self, storage, offset, size, stride, negate=False):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride
        self.negate = negate

    def __setstate__(self, state):
        raise _Malformed("the pickle sets state on a tensor, which a state dict never does")


class _StateDict(OrderedDict):
    """Stands for `collections.OrderedDict`; takes (and drops) a state dict's `_metadata`."""

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:
            parts = state
        else:
            parts = (state,)
        for part in parts:
            if part is not None and not isinstance(part, dict):
                raise _Malformed(f"the pickle sets an OrderedDict's state to a {type(part).__name__}; "
                                 "expected a dict of attributes such as '_metadata'")


def _ordered_dict(*args):
    """`collections.OrderedDict(...)`: no arguments, or one list of (key, value) pairs (Python 2 pickles)."""
    out = _StateDict()
    if not args:
        return out
    if len(args) == 1 and isinstance(args[0], list):
        for pair in args[0]:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise _Malformed(f"collections.OrderedDict is given the item {describe(pair)}; expected a pair")
            out[pair[0]] = pair[1]
        return out
    raise _Malformed(f"collections.OrderedDict is called with {describe(args)}; expected no arguments "
                     "or one list of pairs")


def _check_hooks(func, hooks):
    if not isinstance(hooks, dict) or hooks:
        raise _Malformed(f"torch._utils.{func} is given backward hooks {describe(hooks)}; expected an empty "
                         "OrderedDict")


def _check_flag(func, what, value):
    if type(value) is not bool:
        raise _Malformed(f"torch._utils.{func} is given {what} {describe(value)}; expected True or False")


def _check_arity(func, args, allowed):
    if len(args) not in allowed:
        expected = " or ".join(str(n) for n in allowed)
        raise _Malformed(f"torch._utils.{func} is called with {len(args)} arguments; expected {expected}")


def _new_tensor(func, storage, offset, size, stride, negate=False):
    if not isinstance(storage, _StorageRef):
        raise _Malformed(f"torch._utils.{func} is given {describe(storage)} as its storage; expected a "
                         "storage from a persistent id")
    # offset, size and stride are checked when the tensor is materialized, where
    # the message can name the tensor's key.
    return _TensorRef(storage, offset, size, stride, negate)


def _rebuild_tensor(*args):
    """`torch._utils._rebuild_tensor(storage, storage_offset, size, stride)`."""
    _check_arity("_rebuild_tensor", args, (4,))
    return _new_tensor("_rebuild_tensor", *args)


def _rebuild_tensor_v2(*args):
    """`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks[, metadata])`."""
    func = "_rebuild_tensor_v2"
    _check_arity(func, args, (6, 7))
    storage, offset, size, stride, requires_grad, hooks = args[:6]
    _check_flag(func, "requires_grad", requires_grad)
    _check_hooks(func, hooks)
    negate = False
    if len(args) == 7 and args[6] is not None:
        metadata = args[6]
        if not isinstance(metadata, dict) or any(k not in ("neg", "conj") or type(v) is not bool
                                                 for k, v in metadata.items()):
            raise _Malformed(f"torch._utils.{func} is given tensor metadata {describe(metadata)}; expected a "
                             "dict of 'neg'/'conj' flags")
        if metadata.get("conj"):
            raise _Malformed(f"torch._utils.{func} is given a tensor with its conjugate bit set (a complex "
                             "tensor), which this reader does not support")
        negate = metadata.get("neg", False)
        if negate and isinstance(storage, _StorageRef) and storage.stype.code in ("b1", "u1"):
            raise _Malformed(f"torch._utils.{func} is given a {storage.stype.name} tensor with its negative bit "
                             "set, which torch never writes")
    return _new_tensor(func, storage, offset, size, stride, negate)


def _rebuild_parameter(*args):
    """`torch._utils._rebuild_parameter(data, requires_grad, backward_hooks)`: the parameter's tensor."""
    func = "_rebuild_parameter"
    _check_arity(func, args, (3,))
    data, requires_grad, hooks = args
    if not isinstance(data, _TensorRef):
        raise _Malformed(f"torch._utils.{func} is given {describe(data)}; expected a tensor")
    _check_flag(func, "requires_grad", requires_grad)
    _check_hooks(func, hooks)
    return data


def _rebuild_parameter_with_state(*args):
    """`torch._utils._rebuild_parameter_with_state(data, requires_grad, hooks, state)`: the tensor; state dropped."""
    func = "_rebuild_parameter_with_state"
    _check_arity(func, args, (4,))
    data, requires_grad, hooks, state = args
    if not isinstance(data, _TensorRef):
        raise _Malformed(f"torch._utils.{func} is given {describe(data)}; expected a tensor")
    _check_flag(func, "requires_grad", requires_grad)
    _check_hooks(func, hooks)
    if not (state is None or isinstance(state, dict)
            or (isinstance(state, tuple) and all(s is None or isinstance(s, dict) for s in state))):
        raise _Malformed(f"torch._utils.{func} is given the state {describe(state)}; expected dicts of "
                         "attributes")
    return data


class _Callable:
    """An allow-listed callable as the pickle sees it.

    A wrapper rather than the function itself, so that a pickle's BUILD cannot set
    attributes on this module's functions.
    """

    __slots__ = ("qualified_name", "func")

    def __init__(self, qualified_name, func):
        self.qualified_name = qualified_name
        self.func = func

    def __call__(self, *args):
        return self.func(*args)

    def __setstate__(self, state):
        raise _Malformed(f"the pickle sets state on {self.qualified_name}, which a state dict never does")

    def __repr__(self):
        return self.qualified_name


_ALLOWED_GLOBALS = {
    (module, name): _Callable(f"{module}.{name}", func)
    for module, name, func in (
        ("collections", "OrderedDict", _ordered_dict),
        ("torch._utils", "_rebuild_tensor", _rebuild_tensor),
        ("torch._utils", "_rebuild_tensor_v2", _rebuild_tensor_v2),
        ("torch._utils", "_rebuild_parameter", _rebuild_parameter),
        ("torch._utils", "_rebuild_parameter_with_state", _rebuild_parameter_with_state),
    )
}
for _name, _stype in _STORAGE_TYPES.items():
    _ALLOWED_GLOBALS[("torch", _name)] = _stype
    _ALLOWED_GLOBALS[("torch.cuda", _name)] = _stype
del _name, _stype


def describe(obj):
    """A short description of an unpickled object, for messages."""
    if isinstance(obj, _TensorRef):
        return "a tensor"
    if isinstance(obj, _StorageRef):
        return "a bare storage"
    if isinstance(obj, _StorageType):
        return f"the class {obj!r}"
    if isinstance(obj, _Callable):
        return f"the function {obj!r}"
    if isinstance(obj, _StateDict):
        return f"an OrderedDict of {len(obj)} entries"
    if isinstance(obj, dict):
        return f"a dict of {len(obj)} entries"
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)} items"
    if obj is None or isinstance(obj, (bool, int, float)):
        return repr(obj)
    if isinstance(obj, (str, bytes)):
        text = repr(obj)
        return f"the {type(obj).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"
    return f"a {type(obj).__name__}"


# --------------------------------------------------------------------------- unpickling


class _Unpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals, to stand-ins.

    With `storages=None` it accepts no global and no persistent id (for the legacy
    format's plain-data pickles). Otherwise `storages` is the format ("zip" or
    "legacy") and every storage the persistent ids name is recorded in `roots`
    (key -> (storage type, element count)).
    """

    def __init__(self, data, storages=None):
        super().__init__(io.BytesIO(data), fix_imports=False)
        self._format = storages
        self.roots = {}
        self._views = {}

    def find_class(self, module, name):
        target = _ALLOWED_GLOBALS.get((module, name)) if self._format is not None else None
        if target is None:
            raise _Refused(f"{module}.{name}")
        return target

    def persistent_load(self, pid):
        if self._format is None:
            raise _Malformed("a persistent id appears where only plain data is expected")
        fields = 6 if self._format == "legacy" else 5
        if type(pid) is not tuple or len(pid) != fields or pid[0] != "storage":
            raise _Malformed(f"the persistent id {describe(pid)} is not of the form ('storage', storage class, "
                             f"key, location, numel{', view' if fields == 6 else ''}); only storages are loaded")
        stype, key, location, numel = pid[1:5]
        if not isinstance(stype, _StorageType):
            raise _Malformed(f"the persistent id names {describe(stype)} as its storage class; expected one of "
                             f"torch.{', torch.'.join(_STORAGE_TYPES)}")
        if type(key) is not str or not key or "/" in key or not key.isprintable():
            raise _Malformed(f"the persistent id has the storage key {describe(key)}; expected a non-empty string")
        if type(location) is not str:
            raise _Malformed(f"the persistent id has the location {describe(location)}; expected a string such "
                             "as 'cpu'")
        if type(numel) is not int or numel < 0:
            raise _Malformed(f"storage {key!r} has the element count {describe(numel)}; expected an int >= 0")
        known = self.roots.setdefault(key, (stype, numel))
        if known != (stype, numel):
            raise _Malformed(f"storage {key!r} is declared as {known[0]!r} of {known[1]} elements and again as "
                             f"{stype!r} of {numel} elements")
        view = pid[5] if fields == 6 else None
        if view is None:
            return _StorageRef(key, stype, 0, numel)
        # Legacy storage view (torch < 0.4): (view key, offset, size) in elements of the root.
        if (type(view) is not tuple or len(view) != 3 or type(view[0]) is not str
                or any(type(v) is not int or v < 0 for v in view[1:])):
            raise _Malformed(f"storage {key!r} has the view {describe(view)}; expected None or (key, offset, "
                             "size)")
        view_key, start, length = view
        if start + length > numel:
            raise _Malformed(f"storage {key!r} of {numel} elements has a view {view_key!r} of elements "
                             f"[{start}, {start + length}), past its end")
        known_view = self._views.setdefault(view_key, (key, start, length))
        if known_view != (key, start, length):
            raise _Malformed(f"storage view {view_key!r} is declared twice, differently")
        return _StorageRef(key, stype, start, length)


def _scan_pickle(path, f, what, allow_globals):
    """Read one pickle's opcodes from `f` without executing any; return the offset just past its STOP.

    Refuses opcodes outside `_ALLOWED_OPCODES` and GLOBALs outside the allow-list.
    """
    try:
        for opcode, arg, pos in pickletools.genops(f):
            name = opcode.name
            if name not in _ALLOWED_OPCODES:
                raise CheckpointError(f"{path}: {what} uses the pickle opcode {name} at byte {pos}, which a "
                                      "tensor state dict never needs; refused to load (the guarantee of "
                                      "torch.load(weights_only=True)).")
            if name == "GLOBAL":
                module, _, attr = arg.partition(" ")
                if not allow_globals or (module, attr) not in _ALLOWED_GLOBALS:
                    raise _refusal(path, f"{module}.{attr}")
            if name == "STOP":
                return pos + 1
    except CheckpointError:
        raise
    except Exception as e:  # pickletools raises ValueError and others on garbage or truncation
        raise CheckpointError(f"{path}: {what} is not a valid pickle (truncated or corrupt file?): "
                              f"{type(e).__name__}: {e}") from e
    raise CheckpointError(f"{path}: {what} ends before its pickle does (truncated file?).")


def _refusal(path, qualified_name):
    return CheckpointError(
        f"{path}: refused to load: the pickle asks for {qualified_name!r}, which is not a tensor; only tensor "
        "state dicts are read (the guarantee of torch.load(weights_only=True))."
    )


def load_pickle(path, f, what, storages=None):
    """Scan, then unpickle, the pickle that starts at `f`'s position; leave `f` just past it.

    Returns `(object, unpickler)`.
    """
    start = f.tell()
    end = _scan_pickle(path, f, what, allow_globals=storages is not None)
    f.seek(start)
    data = f.read(end - start)
    f.seek(end)
    unpickler = _Unpickler(data, storages)
    try:
        obj = unpickler.load()
    except _Refused as e:
        raise _refusal(path, e.qualified_name) from None
    except _Malformed as e:
        raise CheckpointError(f"{path}: {what}: {e}; refused to load.") from None
    except Exception as e:  # pickle raises UnpicklingError, TypeError, ValueError, ... on garbage
        raise CheckpointError(f"{path}: {what} is not a valid pickle of a state dict: {type(e).__name__}: {e}") \
            from e
    return obj, unpickler


def check_state_dict(path, obj):
    """The unpickled object must be a flat mapping from str names to tensors."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: the pickle holds {describe(obj)}, not a state dict (a mapping from "
                              "names to tensors).")
    for key, value in obj.items():
        if type(key) is not str:
            raise CheckpointError(f"{path}: the state dict has the key {describe(key)}; expected string keys.")
        if not isinstance(value, _TensorRef):
            raise CheckpointError(
                f"{path}: entry {key!r} holds {describe(value)}, not a tensor; only flat state dicts "
                "(name -> tensor, as AdapterHub and Hugging Face write them) are read, not training "
                "checkpoints or nested dicts."
            )
    return obj
