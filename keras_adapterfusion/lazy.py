"""The one way a package here exposes names that load on first use (module `__getattr__`, PEP 562).

Package `__init__`s use it so that importing a package imports neither Keras nor
TensorFlow; every other module imports at its top.

Example:

```python
# in a package's __init__.py
from keras_adapterfusion.lazy import lazy_attributes

_LAZY = {"LinearDecay": "keras_adapterfusion.training.optimizers"}
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
```
"""

import importlib
import sys


def lazy_attributes(package, names, modules=None):
    """Module `__getattr__` and `__dir__` functions for `package`.

    Args:
        package: the package's `__name__`.
        names: `{public name: module}`: the name is that module's attribute of the same name.
        modules: `{public name: module}`: the name is that module itself (e.g. a submodule).

    Returns:
        `(__getattr__, __dir__)`, to assign in the package's namespace.
    """
    modules = dict(modules or {})

    def __getattr__(name):
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
        elif name in modules:
            value = importlib.import_module(modules[name])
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(names) | set(modules))

    return __getattr__, __dir__
