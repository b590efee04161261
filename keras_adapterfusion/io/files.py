"""Single files: strict JSON reads with field checks, and atomic file writes.

`atomic_file` writes to a hidden sibling and moves it over the target with
`os.replace`, so a reader (or a kill -9 at any moment) sees the old file or the
new one, never a half-written one. `write_json` is the package's one JSON writer
and goes through it.
"""

import contextlib
import json
import math
import os

from keras_adapterfusion.errors import CheckpointError

MISSING = object()


def read_json(path, what):
    """A JSON object from `path`; `CheckpointError` naming the file otherwise.

    Args:
        path: the file.
        what: what the file should hold, for the messages (e.g. `"AdapterHub adapter config"`).

    Raises:
        CheckpointError: the file is missing, not UTF-8, not JSON, or not a JSON object.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: missing; expected the {what}.")
    try:
        with open(path, "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: is not UTF-8 text (byte {e.start}); expected the {what} as JSON.") from e
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e}); expected the {what}.") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                              f"expected the {what}.") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: holds a JSON {type(data).__name__}; expected a JSON object ({what}).")
    return data


def _describe(kind):
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a JSON object",
             list: "a JSON list", type(None): "null"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def json_field(data, key, path, kind, default=MISSING, check=None, expected=None):
    """`data[key]`, checked; `CheckpointError` naming `path` and the field otherwise.

    Args:
        data: a dict read from `path`.
        key: the field; a dotted label for nested fields is only used in messages
            (pass the inner dict as `data`).
        path: the file, for messages (may carry a field prefix, e.g. `"f.json: config"`).
        kind: a type or tuple of types the value must have (`bool` is not an
            `int` here, and an `int` is accepted where `float` is asked for).
        default: returned when the field is absent; without it the field is required.
        check: an optional predicate the value must satisfy.
        expected: what `check` wants, for the message.
    """
    if key not in data:
        if default is not MISSING:
            return default
        raise CheckpointError(f"{path}: field {key!r} is missing; expected {expected or _describe(kind)}.")
    value = data[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and int not in kinds:
        kinds = kinds + (int,)
    type_ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if isinstance(value, float) and not math.isfinite(value) and float in kinds:
        type_ok = False
    if not type_ok:
        raise CheckpointError(f"{path}: field {key!r} is {value!r}; expected {_describe(kind)}"
                              + (f" ({expected})." if expected else "."))
    if check is not None and not check(value):
        raise CheckpointError(f"{path}: field {key!r} is {value!r}; expected {expected or _describe(kind)}.")
    return value


def _fsync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def partial_path(path):
    """The hidden sibling that `atomic_file` writes `path` to before moving it into place."""
    directory, base = os.path.split(os.path.abspath(os.fspath(path)))
    # The whole name stays at the end: Keras decides the format from suffixes like `.weights.h5`.
    return os.path.join(directory, f".kaf-partial-{base}")


@contextlib.contextmanager
def atomic_file(path):
    """Write a file atomically: yields a temporary sibling path to write to.

    When the block ends without an error, the temporary file is flushed to disk
    and moved over `path` with `os.replace`; on an error it is removed and
    `path` is left as it was. A temporary file left by a killed process is
    replaced by the next write.
    """
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = partial_path(path)
    if os.path.lexists(tmp):
        os.remove(tmp)
    try:
        yield tmp
        if not os.path.isfile(tmp):
            raise FileNotFoundError(f"{tmp}: the writer produced no file.")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise
    _fsync_directory(os.path.dirname(path))


def write_json(path, data):
    """Write `data` as indented, key-sorted JSON to `path`, atomically."""
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
