"""TensorFlow's and transformers' start-up lines kept off the terminal, from Python and the CLI alike.

While they load, before `TF_CPP_MIN_LOG_LEVEL` can apply, TensorFlow writes
lines such as `All log messages before absl::InitializeLog() is called`,
`oneDNN custom operations are on`, `cudart_stub`, `cpu_feature_guard`, and
transformers writes `PyTorch was not found`. `import keras_adapterfusion` calls
`quiet_startup`, an import hook that runs those two imports, whenever and by
whomever they happen, with file descriptor 2 captured, and writes back every
other line afterwards. Nothing else changes: not `TF_CPP_MIN_LOG_LEVEL`, not
Python's `logging`, not absl's settings; a library imported before this
package is not affected.

Set `KERAS_ADAPTERFUSION_SHOW_STARTUP_LOGS=1` to see the lines. Keras-free: it
imports only the standard library.
"""

import contextlib
import importlib.abc
import os
import sys

# What TensorFlow (and transformers) write to stderr while they load, before
# TF_CPP_MIN_LOG_LEVEL applies: absl's pre-initialization notice and INFO lines.
STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "cudart_stub.cc",
    "cpu_feature_guard.cc",
    "To enable the following instructions:",  # cpu_feature_guard's second line
    "[transformers] PyTorch was not found",
)
NO_CUDA_DRIVER = "Could not find cuda drivers on your machine"


def startup_lines_to_keep(text):
    """The lines of `text` that are not start-up noise (cuInit's failure counts as noise only without a driver)."""
    no_driver = NO_CUDA_DRIVER in text
    kept = []
    for line in text.splitlines(keepends=True):
        if any(marker in line for marker in STARTUP_NOISE):
            continue
        if no_driver and "failed call to cuInit" in line:
            continue
        kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def startup_lines_filtered():
    """Send file descriptor 2 to a temporary file, then write back all but the start-up lines.

    At the file-descriptor level, because the lines come from C++ (absl) while
    the libraries load, before TensorFlow reads TF_CPP_MIN_LOG_LEVEL.
    """
    import tempfile

    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 to redirect
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = startup_lines_to_keep(capture.read().decode("utf-8", "replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


QUIET_IMPORTS = ("tensorflow", "transformers")
SHOW_ENV = "KERAS_ADAPTERFUSION_SHOW_STARTUP_LOGS"


class _QuietLoader(importlib.abc.Loader):
    """A module's own loader, run with its start-up lines filtered (and TensorFlow's devices found)."""

    def __init__(self, loader, finder):
        self._loader, self._finder = loader, finder

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._finder.pending.discard(module.__name__)
        if not self._finder.pending and self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        with startup_lines_filtered():
            self._loader.exec_module(module)
            if module.__name__ == "tensorflow":
                module.config.list_physical_devices()  # device discovery logs too (cuInit without a driver)

    def __getattr__(self, name):  # resource readers and the like: the module's loader answers
        return getattr(self._loader, name)


class _QuietImports(importlib.abc.MetaPathFinder):
    """Wraps the loaders of `QUIET_IMPORTS` in `_QuietLoader`, whenever and by whomever they are imported."""

    def __init__(self, names):
        self.pending = set(names)

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.pending:
            return None
        for finder in sys.meta_path:  # the finder that would load it without us
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _QuietLoader(spec.loader, self)
        return spec


def quiet_startup():
    """Keep TensorFlow's (and transformers') start-up lines off the terminal, whoever imports them later.

    `TF_CPP_MIN_LOG_LEVEL` (the CLI sets it) hides TensorFlow's later INFO and
    WARNING lines, but not those it writes while it loads: `All log messages
    before absl::InitializeLog()`, `oneDNN custom operations are on`,
    `cudart_stub`, `cpu_feature_guard` (and transformers' `PyTorch was not
    found`). An import hook runs those imports with `startup_lines_filtered`;
    any other line written meanwhile still reaches stderr, after the import.
    """
    if startup_logs_wanted():
        return
    names = [n for n in QUIET_IMPORTS if n not in sys.modules]
    if names and not any(isinstance(f, _QuietImports) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImports(names))


def startup_logs_wanted():
    """Whether the user asked to see the start-up lines (`KERAS_ADAPTERFUSION_SHOW_STARTUP_LOGS=1`)."""
    return os.environ.get(SHOW_ENV, "").strip().lower() in ("1", "true", "yes", "on")
