"""Small file helpers: atomic directory writes and strict JSON reads."""

import contextlib
import json
import os
import shutil
import tempfile

from keras_adapterfusion.errors import CheckpointError


@contextlib.contextmanager
def atomic_directory(directory, overwrite=True):
    """Write a directory atomically.

    Yields a temporary sibling directory to write into. When the block ends
    without an error, the temporary directory replaces `directory` (an earlier
    version is moved aside first and deleted only after the swap). On an error
    the temporary directory is removed and `directory` is left as it was.
    """
    directory = os.path.abspath(os.fspath(directory))
    parent = os.path.dirname(directory)
    if os.path.exists(directory) and not overwrite:
        raise FileExistsError(f"{directory}: already exists; pass overwrite=True to replace it.")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise FileExistsError(f"{directory}: exists and is not a directory.")
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.tmp-", dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(directory):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.old-", dir=parent)
        os.rmdir(old)
        os.rename(directory, old)
    try:
        os.rename(tmp, directory)
    except BaseException:
        if old is not None:
            os.rename(old, directory)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_json(path, what):
    """Read a JSON object from `path`, raising `CheckpointError` naming the file."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: missing; expected the {what}.")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot be read as JSON ({e}).") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: holds a {type(data).__name__}; expected a JSON object ({what}).")
    return data


def write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
