"""The package's structural rules (docs/architecture.md): every class at module level, lazy names only in package
`__init__`s."""

import ast
import pathlib

import pytest

pytestmark = pytest.mark.backend_independent

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_adapterfusion"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _tree(path):
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_the_package_has_modules():
    assert len(MODULES) > 50


def test_no_class_is_made_inside_a_function():
    """What runs is what a reader, the API reference and a debugger see: no class statement or `type(name, bases,
    namespace)` inside a function."""
    found = []
    for path in MODULES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ClassDef) or (
                            isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name)
                            and inner.func.id == "type" and len(inner.args) == 3):
                        found.append(f"{path.relative_to(PACKAGE)}:{inner.lineno} in {node.name}()")
    assert found == []


def test_module_getattr_only_in_package_inits():
    """Lazy loading (a module-level `__getattr__`) lives only in package `__init__`s."""
    found = [str(path.relative_to(PACKAGE)) for path in MODULES if path.name != "__init__.py"
             and any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in _tree(path).body)]
    found += [str(path.relative_to(PACKAGE)) for path in MODULES if path.name != "__init__.py"
              and any(isinstance(n, (ast.Assign)) and any(getattr(t, "id", None) == "__getattr__" for t in n.targets)
                      for n in _tree(path).body)]
    assert found == []
