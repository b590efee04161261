"""The one directory writer: atomic, crash-safe, and never deletes what it did not write.

Every save that produces a directory goes through `write_directory`: native
adapters, fusions and heads, AdapterHub exports, command-line run directories,
the demo's output and SavedModel exports. It

1. refuses `""` and `"."`, and refuses to replace a directory unless it is empty
   or an earlier save of the same kind whose files are all the package's own (a
   save lists its files in a hidden manifest, `.keras_adapterfusion.json`);
2. writes the new contents into a hidden sibling, `.<name>.kaf-staging`, and
   writes the manifest last, so a staging directory with a manifest is complete;
3. swaps it in with two renames (the earlier save moves aside to
   `.<name>.kaf-old`, the new one moves in), then deletes the earlier save.

Single files written beside a user's own files (an export's `models.config`)
follow the same rule through `write_own_file`: a hidden ledger beside them,
`.keras_adapterfusion.files.json`, records the SHA-256 of each file the package
wrote, and a file that is not in it, or was changed since, is never replaced
(`own_file` tells which).

A process killed at any point leaves the path, or one of the two siblings,
holding a complete save: `saved_directory(path)` is what every loader calls to
find it (the path itself when it exists; otherwise the complete new save, or
the earlier one), and the next save of the path finishes or rolls back the
interrupted swap and removes the leftovers.

Example:

```python
from keras_adapterfusion.io import saved_directory, write_directory

with write_directory("artefacts/sentiment", kind="adapter") as tmp:
    ...write files into tmp...
config = os.path.join(saved_directory("artefacts/sentiment"), "module.json")
```
"""

import contextlib
import hashlib
import json
import os
import shutil

from keras_adapterfusion.errors import SaveError
from keras_adapterfusion.io.files import _fsync_directory, atomic_file
from keras_adapterfusion.version import __version__

MANIFEST = ".keras_adapterfusion.json"
MANIFEST_FORMAT = "keras_adapterfusion.save"
OWN_FILES = ".keras_adapterfusion.files.json"
OWN_FILES_FORMAT = "keras_adapterfusion.files"

# Called with the name of each file-system step just before it happens; the
# crash tests set it to kill the process at a chosen step. None otherwise.
_step_hook = None


def _step(name):
    if _step_hook is not None:
        _step_hook(name)


def staging_path(directory):
    """The hidden sibling a save of `directory` is written into."""
    parent, base = os.path.split(directory)
    return os.path.join(parent, f".{base}.kaf-staging")


def old_path(directory):
    """The hidden sibling an earlier save of `directory` moves to during the swap."""
    parent, base = os.path.split(directory)
    return os.path.join(parent, f".{base}.kaf-old")


def _normalized(directory):
    if not isinstance(directory, (str, os.PathLike)):
        raise SaveError(f"save directory: got {directory!r}; expected a path.")
    raw = os.fspath(directory)
    if raw.strip() == "" or os.path.normpath(raw) in (".", os.curdir):
        raise SaveError(f"save directory: got {raw!r}; expected a named directory (not '' or '.', which would "
                        "replace the current directory).")
    path = os.path.abspath(raw)
    if path == os.path.dirname(path):
        raise SaveError(f"save directory: got {raw!r}, the file-system root; expected a directory of its own.")
    return path


def read_manifest(directory):
    """The manifest of a save in `directory`, or None when there is none (or it is unreadable)."""
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("files"), list):
        return None
    return data


def _is_complete(directory):
    return os.path.isdir(directory) and not os.path.islink(directory) and read_manifest(directory) is not None


def _entries(directory):
    """Relative paths of every file and link under `directory` (empty folders are not listed)."""
    out = []
    for root, dirs, files in os.walk(directory):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            out.append(os.path.relpath(os.path.join(root, name), directory).replace(os.sep, "/"))
    return sorted(out)


def saved_kind(directory):
    """The kind of the save in `directory` (e.g. `"adapter"`), or None if it is not one."""
    manifest = read_manifest(directory)
    return None if manifest is None else manifest.get("kind")


def check_destination(directory, kind, replace=True):
    """Check that a save of `kind` may be written to `directory`, before any work is done.

    Returns the absolute path. Raises `SaveError` when the path is `""`, `"."`
    or the root, is a file, holds files the package did not write, holds a save
    of another kind, or (with `replace=False`) is not empty; and when it cannot
    be created (no writable existing parent).
    """
    path = _normalized(directory)
    if os.path.lexists(path) and (not os.path.isdir(path) or os.path.islink(path)):
        raise SaveError(f"{path}: exists and is not a directory; expected a directory to save a {kind} into.")
    if os.path.isdir(path):
        entries = _entries(path)
        if entries:
            if not replace:
                raise SaveError(f"{path}: exists and is not empty; expected a new or empty directory.")
            manifest = read_manifest(path)
            if manifest is None:
                raise SaveError(
                    f"{path}: holds files this package did not write (e.g. {entries[:3]}); refusing to replace it. "
                    "Save to a new or empty directory, or remove those files yourself."
                )
            if manifest.get("kind") != kind:
                raise SaveError(f"{path}: holds a saved {manifest.get('kind')!r}; refusing to replace it with a "
                                f"{kind!r}. Save to a new or empty directory.")
            foreign = sorted(set(entries) - set(manifest["files"]) - {MANIFEST})
            if foreign:
                raise SaveError(
                    f"{path}: holds files this package did not write beside an earlier {kind} save "
                    f"(e.g. {foreign[:3]}); refusing to replace it. Move them away or save elsewhere."
                )
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise SaveError(f"{path}: cannot be created ({parent} is not a writable directory).")
    return path


def _remove_tree(path, what):
    """Delete a directory tree one entry at a time, with a step before each deletion."""
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            _step(f"{what}:unlink:{os.path.relpath(os.path.join(root, name), path)}")
            os.unlink(os.path.join(root, name))
        for name in dirs:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                _step(f"{what}:rmdir:{os.path.relpath(full, path)}")
                os.rmdir(full)
    _step(f"{what}:rmdir:.")
    os.rmdir(path)


def _recover(path):
    """Finish or roll back a swap a killed save left half-done, then remove leftovers."""
    staging, old = staging_path(path), old_path(path)
    if not os.path.lexists(path):
        if _is_complete(staging):
            _step("recover:roll-forward")
            os.rename(staging, path)
        elif _is_complete(old):
            _step("recover:roll-back")
            os.rename(old, path)
    if os.path.lexists(staging):
        _remove_tree(staging, "clean-staging") if os.path.isdir(staging) else os.remove(staging)
    if os.path.lexists(old) and _is_complete(path):
        _remove_tree(old, "clean-old") if os.path.isdir(old) else os.remove(old)


def saved_directory(directory):
    """The directory that holds the save at `directory`, for loaders.

    The path itself when it exists; when a save of it was killed halfway
    through its swap, the complete new save (or else the earlier one) from its
    hidden siblings. Loaders then report a missing path in their own words.
    """
    path = os.path.abspath(os.fspath(directory))
    if os.path.isdir(path):
        return os.fspath(directory)
    for candidate in (staging_path(path), old_path(path)):
        if _is_complete(candidate):
            return candidate
    return os.fspath(directory)


def add_to_save(directory, name, write):
    """Write one more file into an existing save, listed in its manifest (e.g. a later evaluation's metrics).

    The manifest is updated first, then the file is written atomically, so a kill
    in between leaves a manifest naming a file that is not there (harmless), never
    a file the manifest does not name (which would make the save look foreign).

    Args:
        directory: a save written by `write_directory`.
        name: the file's name inside it (no path separators).
        write: a callable given the temporary path to write the file to.
    """
    from keras_adapterfusion.names import check_name

    path = os.path.abspath(os.fspath(directory))
    manifest = read_manifest(path)
    if manifest is None:
        raise SaveError(f"{path}: is not a save of this package; cannot add {name!r} to it.")
    check_name(name, "file name")
    if name == MANIFEST:
        raise SaveError(f"{path}: {MANIFEST} is reserved.")
    if name not in manifest["files"]:
        manifest = dict(manifest, files=sorted(manifest["files"] + [name]))
        with atomic_file(os.path.join(path, MANIFEST)) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(manifest, f, indent=1)
    with atomic_file(os.path.join(path, name)) as tmp:
        write(tmp)
    return os.path.join(path, name)


def _fsync_tree(directory):
    for root, _, files in os.walk(directory):
        for name in files:
            full = os.path.join(root, name)
            if os.path.islink(full):
                continue
            with open(full, "rb") as f:
                os.fsync(f.fileno())
        _fsync_directory(root)


@contextlib.contextmanager
def write_directory(directory, kind, replace=True):
    """Save a directory atomically and crash-safely; yields the staging directory to write into.

    Args:
        directory: where the save goes.
        kind: what is saved (`"adapter"`, `"fusion"`, `"head"`, `"run"`, ...). A
            directory is only replaced by a save of the same kind.
        replace: allow replacing an earlier save of the same kind; with
            `False` the directory must be new or empty.

    Raises:
        SaveError: see `check_destination`. On any error inside the block the
            staging directory is removed and `directory` is left as it was.
    """
    path = _normalized(directory)
    _recover(path)
    check_destination(path, kind, replace)
    staging = staging_path(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _step("stage:create")
    os.mkdir(staging)
    try:
        yield staging
        files = _entries(staging)
        if MANIFEST in files:
            raise SaveError(f"{path}: the writer produced a file named {MANIFEST}, which the package reserves.")
        _fsync_tree(staging)
        _step("stage:manifest")
        with atomic_file(os.path.join(staging, MANIFEST)) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"format": MANIFEST_FORMAT, "kind": kind, "files": files,
                           "keras_adapterfusion_version": __version__}, f, indent=1)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = old_path(path)
    moved_aside = False
    if os.path.lexists(path):
        _step("swap:move-aside")
        os.rename(path, old)
        moved_aside = True
    _step("swap:move-in")
    os.rename(staging, path)
    _fsync_directory(os.path.dirname(path))
    if moved_aside:
        _remove_tree(old, "swap:remove-old")
    _step("done")


# ------------------------------------------------------ single files beside a user's
def _ledger(directory):
    """File name -> SHA-256 of the files the package wrote in `directory` ({} when none or unreadable)."""
    try:
        with open(os.path.join(directory, OWN_FILES), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    files = data.get("files") if isinstance(data, dict) and data.get("format") == OWN_FILES_FORMAT else None
    return {k: v for k, v in files.items() if isinstance(v, str)} if isinstance(files, dict) else {}


def _write_ledger(directory, files):
    from keras_adapterfusion.io.files import write_json

    write_json(os.path.join(directory, OWN_FILES), {"format": OWN_FILES_FORMAT, "files": files})


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def own_file(path):
    """Whether `path` is a file this package wrote (with `write_own_file`) and nobody has changed since."""
    path = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(path)
    recorded = _ledger(directory).get(name)
    return recorded is not None and os.path.isfile(path) and not os.path.islink(path) and _sha256(path) == recorded


def write_own_file(path, text, own=True):
    """Write `text` to `path` atomically, refusing to replace a file the package did not write.

    Args:
        path: the file.
        text: its new content.
        own: record the file as the package's own (the default). `False` writes a file that
            stays the user's (for example their TF Serving config with a model merged in): it is
            replaced even though the package did not write it, and is not recorded, so later
            writes treat it as the user's again.

    Raises:
        SaveError: `path` is a directory or a link, or (with `own=True`) a file the package did
            not write or that was changed since it did.
    """
    from keras_adapterfusion.io.files import atomic_file

    path = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(path)
    if os.path.islink(path) or (os.path.exists(path) and not os.path.isfile(path)):
        raise SaveError(f"{path}: is not a plain file; refusing to replace it.")
    if own and os.path.exists(path) and not own_file(path):
        raise SaveError(f"{path}: is not a file this package wrote (or was changed since); refusing to replace "
                        "it. Move it away or write elsewhere.")
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    ledger = _ledger(directory)
    if own:
        ledger[name] = _sha256(path)
    else:
        ledger.pop(name, None)
    _write_ledger(directory, ledger)
