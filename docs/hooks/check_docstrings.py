"""MkDocs hook: every public name on the API reference pages has a docstring.

mkdocstrings leaves out what has no docstring, so a public function or class
without one would silently vanish from the reference. This hook finds every
`::: identifier` on the pages, loads it with griffe (the library mkdocstrings
reads the code with), and logs a warning for each public module, class, function
and method without a docstring. `mkdocs build --strict` turns the warnings into a
failed build.

Public: a name without a leading underscore, defined in the module (not imported
into it); for a module with `__all__`, the names it lists. Methods that override a
Keras or Python method (`call`, `build`, `get_config`, ...) keep the base
class's documentation and need none of their own.
"""

import logging
import re

log = logging.getLogger("mkdocs.plugins.check_docstrings")
IDENTIFIER = re.compile(r"^:::\s+([\w.]+)\s*$", re.MULTILINE)
# Overrides whose meaning the base class (keras.layers.Layer, keras.Model, keras.callbacks.Callback,
# keras.metrics.Metric, keras.utils.PyDataset, LearningRateSchedule, object) documents.
INHERITED_DOCS = {
    "build", "call", "get_config", "from_config", "compute_output_shape", "compute_output_spec",
    "get_build_config", "build_from_config", "compile", "compile_from_config", "fit", "evaluate", "predict",
    "train_on_batch", "test_on_batch", "predict_on_batch", "save", "save_weights", "load_own_variables",
    "save_own_variables", "on_epoch_end", "on_epoch_begin", "on_train_begin", "on_train_end", "on_batch_end",
    "trainable_weights", "non_trainable_weights", "quantize", "compute_mask", "update_state", "result",
    "reset_state",
}

_identifiers = []


def on_pre_build(config):
    _identifiers.clear()


def on_page_markdown(markdown, page, config, files):
    for identifier in IDENTIFIER.findall(markdown):
        _identifiers.append((identifier, page.file.src_path, "members: false" in markdown.split(identifier, 1)[1]
                             .split(":::", 1)[0]))
    return markdown


def _missing(obj, members=True):
    """Dotted paths of the public objects under `obj` (itself included) without a docstring."""
    out = []
    if obj.is_alias:
        return out
    if obj.kind.value in ("module", "class", "function") and not (obj.docstring and obj.docstring.value.strip()):
        if not (obj.kind.value == "function" and obj.name in INHERITED_DOCS):
            out.append(obj.path)
    if not members or obj.kind.value not in ("module", "class"):
        return out
    exported = obj.exports if obj.kind.value == "module" and obj.exports is not None else None
    for name, member in obj.members.items():
        if name.startswith("_") or member.is_alias:
            continue
        if exported is not None and name not in exported:
            continue
        if member.kind.value == "function" and "property" in getattr(member, "labels", set()):
            continue
        out.extend(_missing(member, members=member.kind.value == "class"))
    return out


def on_post_build(config):
    import griffe

    loader = griffe.GriffeLoader(search_paths=["."], docstring_parser=griffe.Parser.google)
    seen = set()
    for identifier, page, no_members in _identifiers:
        package = identifier.split(".")[0]
        try:
            root = loader.modules_collection.get_member(package) if package in loader.modules_collection \
                else loader.load(package)
            obj = root if identifier == package else root[identifier[len(package) + 1:]]
        except Exception as e:  # noqa: BLE001  (any failure to find it is the page's error)
            log.warning(f"{page}: cannot load {identifier!r} to check its docstrings ({e})")
            continue
        for path in _missing(obj, members=not no_members):
            if path not in seen:
                seen.add(path)
                log.warning(f"{page}: {path} has no docstring")
