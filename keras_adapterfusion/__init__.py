"""AdapterFusion (Pfeiffer et al., 2020) for Keras 3.

Importing this package is cheap: it imports neither Keras nor TensorFlow. The
public names below load on first use (`keras_adapterfusion.AdapterModel`
imports the models then), so the command line answers `--help` and checks its
arguments at once, and the layers run on the JAX and PyTorch backends without
TensorFlow installed.

So that `keras.saving.load_model` finds this package's layers and models in a
`.keras` file, they register with Keras as soon as Keras itself is imported,
before or after this package (see `_register_with_keras`).

Example:

```python
import keras_adapterfusion as kaf

encoder = kaf.load_encoder("sentence-transformers/all-MiniLM-L6-v2")
encoder.add_adapter("sentiment", "seq_bn")
model = kaf.AdapterModel(encoder, kaf.ClassificationHead(2), adapter_setup="sentiment")
```
"""

import importlib
import importlib.abc
import importlib.util
import sys

from keras_adapterfusion.configs import AdapterConfig, FusionConfig, LoRAConfig
from keras_adapterfusion.errors import (
    CheckpointError,
    ExportError,
    InputError,
    InvalidNameError,
    SaveError,
    ServingError,
)
from keras_adapterfusion.startup_logs import quiet_startup
from keras_adapterfusion.version import __version__

# TensorFlow's and transformers' start-up lines stay off the terminal, from Python as from the CLI
# (KERAS_ADAPTERFUSION_SHOW_STARTUP_LOGS=1 shows them); no logging setting of the user's changes.
quiet_startup()

# Public names that need Keras, and the module each lives in.
_LAZY = {
    "AdapterFusion": "keras_adapterfusion.layers",
    "AdapterSetup": "keras_adapterfusion.layers",
    "LoRA": "keras_adapterfusion.layers",
    "BottleneckAdapter": "keras_adapterfusion.layers",
    "ClassificationHead": "keras_adapterfusion.layers",
    "DisentangledBlock": "keras_adapterfusion.layers",
    "MultipleChoiceHead": "keras_adapterfusion.layers",
    "TextEmbeddings": "keras_adapterfusion.layers",
    "TokenClassificationHead": "keras_adapterfusion.layers",
    "TransformerBlock": "keras_adapterfusion.layers",
    "TransformerEncoder": "keras_adapterfusion.backbones",
    "load_encoder": "keras_adapterfusion.backbones",
    "from_keras_hub": "keras_adapterfusion.backbones",
    "load_tokenizer": "keras_adapterfusion.backbones",
    "merge_adapters": "keras_adapterfusion.backbones",
    "AdapterModel": "keras_adapterfusion.models",
    "MultiTaskModel": "keras_adapterfusion.models",
    "ParallelModel": "keras_adapterfusion.models",
}
_SUBMODULES = ("analysis", "applications", "backbones", "cli", "configs", "errors", "formats", "inputs", "io",
               "layers", "lazy", "models", "names", "serving", "startup_logs", "tasks", "training", "tuning",
               "version")
# Modules that moved into the folders, under the paths they had before (`import keras_adapterfusion.saving`,
# `python -m keras_adapterfusion.learning_curve`): each old path is the moved module itself (`_FindMovedModules`).
_MOVED = {
    "adapterhub": "formats.adapterhub",
    "builders": "training.builders",
    "demo": "applications.demo",
    "experiments": "training.runs",
    "export": "serving.export",
    "graph_tokenizers": "serving.graph_tokenizers",
    "heads": "training.losses",
    "learning_curve": "applications.learning_curve",
    "pruning": "analysis.pruning",
    "saving": "formats.native",
    "trainable": "models.trainable",
}
# The modules that define Keras-serializable classes (`register_keras_serializable`).
_KERAS_SERIALIZABLES = ("keras_adapterfusion.layers", "keras_adapterfusion.backbones.transformer_encoder",
                        "keras_adapterfusion.models.adapter_model", "keras_adapterfusion.training.losses",
                        "keras_adapterfusion.training.optimizers")

__all__ = sorted(["AdapterConfig", "CheckpointError", "ExportError", "FusionConfig", "InputError", "LoRAConfig",
                  "InvalidNameError", "SaveError", "ServingError", "__version__", *_LAZY])


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"keras_adapterfusion.{name}")
    if name in _MOVED:
        return importlib.import_module(f"keras_adapterfusion.{_MOVED[name]}")
    raise AttributeError(f"module 'keras_adapterfusion' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES) | set(_MOVED))


def _register_with_keras():
    """Import the modules whose classes Keras must know to load `.keras` files."""
    for module in _KERAS_SERIALIZABLES:
        importlib.import_module(module)


# Registration waits while one of this package's modules is importing: the first `import keras` usually comes
# from inside one (`import keras_adapterfusion.layers` runs `layers/adapter_fusion.py`, which imports Keras),
# and the modules registration imports need that one finished. `_OwnModuleLoader` registers when the last of
# them is done.
_registration_pending = False


def _own_modules_importing(besides=None):
    """Whether a module of this package (other than `besides`) is being imported right now."""
    prefix = __name__ + "."
    return any(name.startswith(prefix) and name != besides
               and getattr(getattr(module, "__spec__", None), "_initializing", False)
               for name, module in list(sys.modules.items()))


def _register_when_ready(besides=None):
    global _registration_pending
    if _own_modules_importing(besides):
        _registration_pending = True
    else:
        _registration_pending = False
        _register_with_keras()


class _LoaderThen(importlib.abc.Loader):
    """Another loader, and `after(module)` once it has run the module."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        self.after(module)

    def after(self, module):
        raise NotImplementedError

    def __getattr__(self, name):  # `python -m`'s get_code, resource readers and the like: the loader answers
        return getattr(self._loader, name)


class _RunAfterKerasLoads(_LoaderThen):
    """Keras's own loader, then `_register_with_keras` once Keras has finished importing."""

    def after(self, module):
        _register_when_ready()


class _OwnModuleLoader(_LoaderThen):
    """A module of this package's own loader; after the module ran, a pending registration runs (see above)."""

    def after(self, module):
        if _registration_pending:
            _register_when_ready(besides=module.__name__)


class _WatchOwnModules(importlib.abc.MetaPathFinder):
    """Wraps the loader of every module of this package in `_OwnModuleLoader`."""

    def find_spec(self, fullname, path, target=None):
        if not fullname.startswith(__name__ + "."):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _OwnModuleLoader):
                    spec.loader = _OwnModuleLoader(spec.loader)
                return spec
        return None


class _WatchForKeras(importlib.abc.MetaPathFinder):
    """Removes itself at the first import of `keras` and wraps that import's loader."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("keras")
        if spec is not None and spec.loader is not None:
            spec.loader = _RunAfterKerasLoads(spec.loader)
        return spec


class _MovedModule(importlib.abc.Loader):
    """Loads an old module path as the module it moved to: one module object under both names."""

    def __init__(self, target):
        self._target = target  # the full name the module has now
        self._spec = None

    def create_module(self, spec):
        module = importlib.import_module(self._target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self._spec  # the import system set the old path's spec; the module keeps its own

    def get_code(self, fullname):  # `python -m keras_adapterfusion.<old path>` runs the moved module's code
        return importlib.util.find_spec(self._target).loader.get_code(self._target)

    def is_package(self, fullname):
        return False


class _FindMovedModules(importlib.abc.MetaPathFinder):
    """Finds `keras_adapterfusion.<old path>` for the modules in `_MOVED`."""

    def find_spec(self, fullname, path, target=None):
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in _MOVED:
            return None
        moved = f"{__name__}.{_MOVED[name]}"
        origin = importlib.util.find_spec(moved).origin
        return importlib.util.spec_from_loader(fullname, _MovedModule(moved), origin=origin)


if not any(isinstance(finder, _FindMovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_FindMovedModules())
if not any(isinstance(finder, _WatchOwnModules) for finder in sys.meta_path):
    sys.meta_path.insert(0, _WatchOwnModules())
if "keras" in sys.modules:
    _register_with_keras()
elif not any(isinstance(finder, _WatchForKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _WatchForKeras())
