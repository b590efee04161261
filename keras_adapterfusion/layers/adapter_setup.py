"""`AdapterSetup`: which adapters a forward pass runs, parsed once at the edge.

Users write a setup as `None` (no adapter), an adapter name (`"sentiment"`), a
list of two or more names to fuse (`["sentiment", "nli"]`), AdapterHub's fusion
name (`"sentiment,nli"`), or an `AdapterSetup` (e.g. a *named* fusion). Models
and the encoder turn that into an `AdapterSetup` once, with `AdapterSetup.parse`,
and everything inside uses that value: its kind, its adapters, the key of its
fusion layer.

| kind | runs | built with |
|---|---|---|
| `"single"` | one adapter | `AdapterSetup.single("a")`, `"a"` |
| `"fuse"` | AdapterFusion over two or more adapters | `AdapterSetup.fuse(["a", "b"], name=None)`, `["a", "b"]`, `"a,b"` |
| `"per_row"` | the adapter each example's `adapter_index` selects (MT-A) | `AdapterSetup.per_row(["a", "b"])` |

A fusion is keyed by its name when it has one, else by AdapterHub's key, the
adapters' names joined by commas. Names let several fusions over the same
adapters (trained for different targets) live in one encoder; without a name,
keys and files stay AdapterHub's.

The parsed value travels inward as it is: the encoder hands its `AdapterSetup`
to each block, and each block to its slots. The one exception is a symbolic
call (Keras tensors, while a functional model is built): JAX's symbolic calls
take only tensors and built-in Python values, so there `call_form` passes the
setup as its `token()`, a JSON string, which `AdapterSetup.parse` turns back.

Example:

```python
from keras_adapterfusion.layers.adapter_setup import AdapterSetup

setup = AdapterSetup.parse(["sentiment", "nli"])
setup.kind, setup.adapters, setup.fusion_key     # "fuse", ("sentiment", "nli"), "sentiment,nli"
named = AdapterSetup.fuse(["sentiment", "nli"], name="for_tweets")
named.fusion_key                                  # "for_tweets"
```
"""

import dataclasses
import json
from typing import Optional, Tuple

import keras

from keras_adapterfusion.names import check_name

KINDS = ("single", "fuse", "per_row")


def fusion_key(adapter_names, name=None):
    """The key of a fusion: its `name`, or AdapterHub's key (the adapters' names joined by commas)."""
    return name if name is not None else ",".join(adapter_names)


@dataclasses.dataclass(frozen=True)
class AdapterSetup:
    """Which adapters run, and how (see the module docstring).

    Args:
        adapters: the adapter names, in order (the order of a fusion's attention).
        kind: `"single"`, `"fuse"` or `"per_row"`.
        fusion_name: for `"fuse"`, the fusion's name, or `None` for AdapterHub's key.
    """

    adapters: Tuple[str, ...]
    kind: str = "single"
    fusion_name: Optional[str] = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"AdapterSetup.kind: got {self.kind!r}; expected one of {list(KINDS)}.")
        if isinstance(self.adapters, str) or not isinstance(self.adapters, (list, tuple)):
            raise ValueError(f"AdapterSetup.adapters: got {self.adapters!r}; expected a list of adapter names.")
        object.__setattr__(self, "adapters", tuple(self.adapters))
        for name in self.adapters:
            check_name(name, "adapter name")
        if len(set(self.adapters)) != len(self.adapters):
            raise ValueError(f"adapter_setup: got {list(self.adapters)} with repeated names; expected distinct "
                             "adapter names.")
        if self.kind == "single" and len(self.adapters) != 1:
            raise ValueError(f"adapter_setup: a single adapter setup needs one name; got {list(self.adapters)}.")
        if self.kind == "fuse" and len(self.adapters) < 2:
            raise ValueError(f"adapter_setup: got {list(self.adapters)}; a fusion needs at least two adapters "
                             "(pass the name alone to run one adapter).")
        if self.kind == "per_row" and not self.adapters:
            raise ValueError("adapter_setup: a per-row setup needs at least one adapter.")
        if self.fusion_name is not None:
            if self.kind != "fuse":
                raise ValueError(f"adapter_setup: fusion_name {self.fusion_name!r} given for a {self.kind!r} setup; "
                                 "only a fusion has a name.")
            check_name(self.fusion_name, "fusion name")

    # ---------------------------------------------------------- constructors
    @classmethod
    def single(cls, name):
        """One adapter, `name`."""
        return cls((name,), "single")

    @classmethod
    def fuse(cls, adapter_names, name=None):
        """AdapterFusion over `adapter_names` (a list, or AdapterHub's `"a,b"`); `name` names the fusion."""
        if isinstance(adapter_names, str):
            adapter_names = adapter_names.split(",")
        return cls(tuple(adapter_names), "fuse", name)

    @classmethod
    def per_row(cls, adapter_names):
        """MT-A: each example runs the adapter of `adapter_names` its `adapter_index` selects."""
        return cls(tuple(adapter_names), "per_row")

    @classmethod
    def parse(cls, value):
        """An `AdapterSetup` (or `None`) from any of the forms users and configs write.

        Accepts `None`, an `AdapterSetup`, an adapter name, AdapterHub's fusion
        name `"a,b"`, a list of two or more names, a `token()` string, or a
        `to_config()` dict.
        """
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, str):
            if value.startswith("{"):
                try:
                    return cls.parse(json.loads(value))
                except json.JSONDecodeError:
                    pass  # fall through: an ordinary (invalid) name
            if "," in value:
                return cls.fuse(value.split(","))
            return cls.single(value)
        if isinstance(value, dict):
            if set(value) - {"adapters", "kind", "fusion_name"} or "adapters" not in value:
                raise ValueError(f"adapter_setup: got {value!r}; expected keys 'adapters', 'kind' and optionally "
                                 "'fusion_name'.")
            return cls(tuple(value["adapters"]), value.get("kind", "single"), value.get("fusion_name"))
        if isinstance(value, (list, tuple)) and all(isinstance(n, str) for n in value):
            return cls.fuse(value)
        raise ValueError(
            f"adapter_setup: got {value!r}; expected None, an adapter name, a list of two or more adapter names "
            "to fuse, or an AdapterSetup."
        )

    # ---------------------------------------------------------------- views
    @property
    def fusion_key(self):
        """The key of the fusion layer this setup runs (`"fuse"` only)."""
        if self.kind != "fuse":
            raise ValueError(f"adapter_setup: a {self.kind!r} setup has no fusion.")
        return fusion_key(self.adapters, self.fusion_name)

    def to_config(self):
        """A JSON-able form `parse` reads back: a name, a list of names, or a dict when needed."""
        if self.kind == "single":
            return self.adapters[0]
        if self.kind == "fuse" and self.fusion_name is None:
            return list(self.adapters)
        out = {"adapters": list(self.adapters), "kind": self.kind}
        if self.fusion_name is not None:
            out["fusion_name"] = self.fusion_name
        return out

    def token(self):
        """The setup as one string, for passing through a layer call (see the module docstring)."""
        return json.dumps({"adapters": list(self.adapters), "kind": self.kind, "fusion_name": self.fusion_name},
                          separators=(",", ":"))

    def __str__(self):
        if self.kind == "single":
            return self.adapters[0]
        if self.kind == "fuse":
            label = f"Fuse({', '.join(self.adapters)})"
            return label if self.fusion_name is None else f"{label} named {self.fusion_name!r}"
        return f"PerRow({', '.join(self.adapters)})"


def call_form(setup, inputs):
    """How a layer's `__call__` hands a parsed `setup` (or `None`) to its `call`.

    The `AdapterSetup` itself, or its `token()` when `inputs` hold Keras tensors
    (a symbolic call; see the module docstring).
    """
    if setup is None:
        return None
    if any(keras.backend.is_keras_tensor(t) for t in keras.tree.flatten(inputs)):
        return setup.token()
    return setup


def setup_token(value):
    """`AdapterSetup.parse(value).token()`, or `None`."""
    setup = AdapterSetup.parse(value)
    return None if setup is None else setup.token()
