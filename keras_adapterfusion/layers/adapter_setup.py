"""`AdapterSetup`: which adapters a forward pass runs, and how they compose, parsed once at the edge.

Users write a setup as `None` (no adapter), an adapter name (`"sentiment"`), a
list of two or more names to fuse (`["sentiment", "nli"]`), AdapterHub's fusion
name (`"sentiment,nli"`), an AdapterHub composition dict (`Stack(...).to_dict()`),
or an `AdapterSetup`. Models and the encoder turn that into an `AdapterSetup`
once, with `AdapterSetup.parse`, and everything inside uses that value.

| kind | runs | built with |
|---|---|---|
| `"single"` | one adapter | `AdapterSetup.single("a")`, `"a"` |
| `"stack"` | adapters one after another in each slot (MAD-X: a language adapter under a task adapter) | `AdapterSetup.stack(["lang", "task"])` |
| `"fuse"` | AdapterFusion over two or more adapters (or stacks) | `AdapterSetup.fuse(["a", "b"], name=None)`, `["a", "b"]`, `"a,b"` |
| `"average"` | the weighted mean of adapter (or stack) outputs, as AdapterHub's `Average` | `AdapterSetup.average(["a", "b"], weights=[0.7, 0.3])` |
| `"per_row"` | the adapter each example's `adapter_index` selects (MT-A) | `AdapterSetup.per_row(["a", "b"])` |
| `"parallel"` | each member on its own copy of the batch, in one pass (AdapterHub's `Parallel`; fusions too) | `AdapterSetup.parallel([["a", "b"], "a", "b"])` |

A setup's members (`adapters`) are adapter names or nested setups, nested as
AdapterHub allows: a stack may hold fusions and averages, a fusion or an average
may hold stacks, and below the first level only names and stacks. The slot runs
the tree as AdapterHub's `BottleneckLayer` composes it (see `AdapterSlot`).

A fusion is keyed by its name when it has one, else by AdapterHub's key: the
names of its members joined by commas, a nested stack counting as its last
adapter (`Fuse(Stack(a, b), c)` runs the fusion `"b,c"`). Names let several
fusions over the same adapters (trained for different targets) live in one
encoder; without a name, keys and files stay AdapterHub's.

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
madx = AdapterSetup.stack(["en", AdapterSetup.fuse(["sentiment", "nli"])])
madx.names(), str(madx)                           # ("en", "sentiment", "nli"), "Stack(en, Fuse(sentiment, nli))"
```
"""

import dataclasses
import json
import math
from typing import Optional, Tuple

import keras

from keras_adapterfusion.names import check_name

KINDS = ("single", "stack", "fuse", "average", "per_row", "parallel")
# The setups each kind may hold besides adapter names (AdapterHub's ALLOWED_NESTINGS, for the kinds here; a
# parallel setup also holds fusions, which AdapterHub's Parallel does not: adapters issue #268).
NESTING = {"single": (), "stack": ("fuse", "average"), "fuse": ("stack",), "average": ("stack",), "per_row": (),
           "parallel": ("stack", "fuse", "average")}
# AdapterHub's composition class names (`AdapterCompositionBlock.to_dict()["type"]`) for each kind.
ADAPTERHUB_TYPES = {"stack": "Stack", "fuse": "Fuse", "average": "Average", "parallel": "Parallel"}
_LABELS = {"stack": "Stack", "fuse": "Fuse", "average": "Average", "per_row": "PerRow", "parallel": "Parallel"}


def fusion_key(adapter_names, name=None):
    """The key of a fusion: its `name`, or AdapterHub's key (the adapters' names joined by commas)."""
    return name if name is not None else ",".join(adapter_names)


def _check_depth(setup, level):
    """AdapterHub's depth rule: below the first level, only adapter names and stacks.

    The members of a parallel setup are each a setup of their own (each checked itself, from level 0).
    """
    if setup.kind == "parallel":
        return
    for member in setup.adapters:
        if isinstance(member, AdapterSetup):
            if level >= 1 and member.kind != "stack":
                raise ValueError(f"adapter_setup: {member} is at level {level + 1} of a setup (the top is 0); "
                                 "expected only adapter names and stacks below level 1 (as AdapterHub).")
            _check_depth(member, level + 1)


@dataclasses.dataclass(frozen=True)
class AdapterSetup:
    """Which adapters run, and how (see the module docstring).

    Args:
        adapters: the members, in order (the order of a fusion's attention): adapter names, or nested
            `AdapterSetup`s where the kind allows them.
        kind: one of `"single"`, `"stack"`, `"fuse"`, `"average"`, `"per_row"`.
        fusion_name: for `"fuse"`, the fusion's name, or `None` for AdapterHub's key.
        weights: for `"average"`, one weight per member (summing to 1 once normalized, see `average`).
        exclude: for `"fuse"`, members the trained fusion leaves out at inference (see `controlled`).
        fixed: for `"fuse"`, `(member, weight)` pairs whose attention weight is fixed (see `controlled`).
    """

    adapters: Tuple
    kind: str = "single"
    fusion_name: Optional[str] = None
    weights: Optional[Tuple[float, ...]] = None
    exclude: Tuple[str, ...] = ()
    fixed: Tuple[Tuple[str, float], ...] = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"AdapterSetup.kind: got {self.kind!r}; expected one of {list(KINDS)}.")
        if isinstance(self.adapters, str) or not isinstance(self.adapters, (list, tuple)):
            raise ValueError(f"AdapterSetup.adapters: got {self.adapters!r}; expected a list of adapter names.")
        object.__setattr__(self, "adapters", tuple(self.adapters))
        for member in self.adapters:
            if isinstance(member, AdapterSetup):
                if member.kind not in NESTING[self.kind]:
                    allowed = NESTING[self.kind]
                    raise ValueError(f"adapter_setup: cannot nest {member} in a {self.kind!r} setup; expected "
                                     + (f"adapter names or {' or '.join(allowed)} setups." if allowed
                                        else "adapter names."))
            else:
                check_name(member, "adapter name")
        keys = self.adapters if self.kind == "parallel" else self.member_names()
        if len(set(keys)) != len(keys):
            raise ValueError(f"adapter_setup: got {list(keys)} with repeated names; expected distinct "
                             "adapter names.")
        if self.kind == "single" and len(self.adapters) != 1:
            raise ValueError(f"adapter_setup: a single adapter setup needs one name; got {list(self.adapters)}.")
        if self.kind in ("fuse", "average") and len(self.adapters) < 2:
            what = "a fusion" if self.kind == "fuse" else "an average"
            raise ValueError(f"adapter_setup: got {list(self.adapters)}; {what} needs at least two adapters (pass "
                             "the name alone to run one adapter).")
        if self.kind in ("stack", "per_row", "parallel") and not self.adapters:
            raise ValueError(f"adapter_setup: a {self.kind} setup needs at least one adapter.")
        if self.fusion_name is not None:
            if self.kind != "fuse":
                raise ValueError(f"adapter_setup: fusion_name {self.fusion_name!r} given for a {self.kind!r} setup; "
                                 "only a fusion has a name.")
            check_name(self.fusion_name, "fusion name")
        if self.kind == "average":
            weights = self.weights if self.weights is not None else [1.0 / len(self.adapters)] * len(self.adapters)
            if isinstance(weights, (str, dict)) or not hasattr(weights, "__len__") or len(weights) != len(
                    self.adapters) or not all(isinstance(w, (int, float)) and not isinstance(w, bool)
                                              and math.isfinite(w) for w in weights):
                raise ValueError(f"adapter_setup: average weights {self.weights!r}; expected {len(self.adapters)} "
                                 "finite numbers, one per member.")
            object.__setattr__(self, "weights", tuple(float(w) for w in weights))
        elif self.weights is not None:
            raise ValueError(f"adapter_setup: weights {self.weights!r} given for a {self.kind!r} setup; only an "
                             "average has weights.")
        self._check_control()
        _check_depth(self, 0)

    def _check_control(self):
        if (self.exclude or self.fixed) and self.kind != "fuse":
            raise ValueError(f"adapter_setup: exclude / fixed given for a {self.kind!r} setup; only a fusion has "
                             "them.")
        members = self.member_names()
        exclude = (self.exclude,) if isinstance(self.exclude, str) else tuple(self.exclude)
        unknown = [n for n in exclude if n not in members]
        if unknown or len(set(exclude)) != len(exclude):
            raise ValueError(f"adapter_setup: exclude {list(exclude)}; expected distinct members of the fusion "
                             f"{list(members)}.")
        if len(exclude) >= len(members):
            raise ValueError(f"adapter_setup: exclude {list(exclude)} leaves no adapter in the fusion "
                             f"{list(members)}; expected at least one kept.")
        fixed = self.fixed.items() if isinstance(self.fixed, dict) else self.fixed
        try:
            fixed = dict((str(k), v) for k, v in fixed)
        except (TypeError, ValueError):
            raise ValueError(f"adapter_setup: fixed {self.fixed!r}; expected a dict member -> weight.") from None
        for name, w in fixed.items():
            if name not in members or name in exclude:
                raise ValueError(f"adapter_setup: fixed weight for {name!r}; expected a kept member of the fusion "
                                 f"{[m for m in members if m not in exclude]}.")
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= w <= 1.0:
                raise ValueError(f"adapter_setup: fixed weight {name}={w!r}; expected a number in [0, 1].")
        total = sum(fixed.values())
        kept = [m for m in members if m not in exclude]
        if total > 1.0 + 1e-6 or (len(fixed) == len(kept) and abs(total - 1.0) > 1e-6):
            raise ValueError(f"adapter_setup: fixed weights {fixed} sum to {total:g}; expected at most 1 (exactly 1 "
                             "when every kept adapter is fixed).")
        object.__setattr__(self, "exclude", tuple(m for m in members if m in exclude))
        object.__setattr__(self, "fixed", tuple((m, float(fixed[m])) for m in members if m in fixed))

    # ---------------------------------------------------------- constructors
    @classmethod
    def single(cls, name):
        """One adapter, `name`."""
        return cls((name,), "single")

    @classmethod
    def stack(cls, members):
        """The `members` (names, fusions or averages) one after another in each slot; one name is `single`."""
        members = tuple(_member(m) for m in members) if isinstance(members, (list, tuple)) else members
        if isinstance(members, tuple) and len(members) == 1 and isinstance(members[0], str):
            return cls.single(members[0])
        return cls(members, "stack")

    @classmethod
    def fuse(cls, adapter_names, name=None):
        """AdapterFusion over `adapter_names` (a list of names or stacks, or AdapterHub's `"a,b"`); `name` names it."""
        if isinstance(adapter_names, str):
            adapter_names = adapter_names.split(",")
        if isinstance(adapter_names, (list, tuple)):
            adapter_names = tuple(_member(m) for m in adapter_names)
        return cls(adapter_names, "fuse", name)

    @classmethod
    def average(cls, members, weights=None, normalize_weights=True):
        """The weighted mean of the `members`' outputs (names or stacks), as AdapterHub's `Average`.

        `weights` default to equal; with `normalize_weights` they are divided by their sum (AdapterHub's
        default). AdapterHub then takes the *mean* of the weighted outputs, `sum_n w_n out_n / N`, and the
        slot does the same (see `AdapterSlot`).
        """
        if isinstance(members, (list, tuple)):
            members = tuple(_member(m) for m in members)
        if weights is not None and normalize_weights:
            if isinstance(weights, (list, tuple)) and all(isinstance(w, (int, float)) for w in weights):
                total = sum(weights)
                if total == 0:
                    raise ValueError(f"adapter_setup: average weights {list(weights)} sum to 0; expected weights "
                                     "with a non-zero sum (or normalize_weights=False).")
                weights = [w / total for w in weights]
        return cls(members, "average", None, None if weights is None else tuple(weights))

    @classmethod
    def parallel(cls, members):
        """Each member (a name, stack, fusion or average) on its own copy of the batch, in one encoder pass.

        The encoder repeats the batch once per member (AdapterHub's `Parallel`): its outputs hold the
        members' results one after another along the batch (`ParallelModel` splits them and runs a head on
        each). A fusion may be a member, so one pass gives a fusion's output and each fused adapter's own.
        """
        if isinstance(members, (list, tuple)):
            members = tuple(_member(m) for m in members)
        return cls(members, "parallel")

    @classmethod
    def per_row(cls, adapter_names):
        """MT-A: each example runs the adapter of `adapter_names` its `adapter_index` selects."""
        return cls(tuple(adapter_names), "per_row")

    def controlled(self, exclude=(), fixed=None):
        """This fusion with some adapters left out, or some attention weights fixed, at inference.

        The trained fusion layer runs as it is (its key does not change); nothing is retrained.

        - `exclude`: members that do not run; the attention is a softmax over the rest (the same function as
          a fusion trained over the rest, since the fusion's Q, K and V do not depend on the adapters).
        - `fixed`: `{member: weight}`; those members get that attention weight on every token, and the others
          share `1 - sum(fixed)` in the proportions the fusion's softmax over them gives. When every kept
          member is fixed, the weights must sum to 1.

        Excluded members are reported with attention 0. Returns a new `AdapterSetup`.

        Example:

        ```python
        setup = AdapterSetup.fuse(["sentiment", "nli", "topic"])
        setup.controlled(exclude=["topic"])                 # the fusion over sentiment and nli
        setup.controlled(fixed={"sentiment": 0.5})          # half sentiment, the rest as the fusion decides
        ```
        """
        if self.kind != "fuse":
            raise ValueError(f"adapter_setup: {self} is not a fusion; expected a fusion to control.")
        return dataclasses.replace(self, exclude=tuple(exclude) if not isinstance(exclude, str) else (exclude,),
                                   fixed=tuple((fixed or {}).items()) if isinstance(fixed, dict) else fixed or ())

    @classmethod
    def parse(cls, value):
        """An `AdapterSetup` (or `None`) from any of the forms users and configs write.

        Accepts `None`, an `AdapterSetup`, an adapter name, AdapterHub's fusion
        name `"a,b"`, a list of two or more names, a `token()` string, a
        `to_config()` dict, or an AdapterHub composition dict (`to_dict()` of
        `Stack`, `Fuse`, `Average`).
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
            if "type" in value and "children" in value:
                return cls.from_adapterhub(value)
            if set(value) - {"adapters", "kind", "fusion_name", "weights", "exclude", "fixed"} or "adapters" not in value:
                raise ValueError(f"adapter_setup: got {value!r}; expected keys 'adapters', 'kind' and optionally "
                                 "'fusion_name', 'weights', 'exclude', 'fixed'.")
            members = value["adapters"]
            if isinstance(members, (list, tuple)):
                members = tuple(_member(m) for m in members)
            weights = value.get("weights")
            fixed = value.get("fixed") or ()
            return cls(members, value.get("kind", "single"), value.get("fusion_name"),
                       tuple(weights) if isinstance(weights, list) else weights, tuple(value.get("exclude") or ()),
                       tuple(fixed.items()) if isinstance(fixed, dict) else tuple(tuple(p) for p in fixed))
        if isinstance(value, (list, tuple)) and all(isinstance(n, str) for n in value):
            return cls.fuse(value)
        raise ValueError(
            f"adapter_setup: got {value!r}; expected None, an adapter name, a list of two or more adapter names "
            "to fuse, or an AdapterSetup."
        )

    @classmethod
    def from_adapterhub(cls, data):
        """The setup of an AdapterHub composition dict (`Stack(...).to_dict()`; `Stack`, `Fuse`, `Average`)."""
        kinds = {v: k for k, v in ADAPTERHUB_TYPES.items()}
        if not isinstance(data, dict) or "type" not in data or not isinstance(data.get("children"), list):
            raise ValueError(f"adapter_setup: got {data!r}; expected an AdapterHub composition dict with 'type' and "
                             "'children'.")
        kind = data["type"]
        if kind == "single":
            if len(data["children"]) != 1:
                raise ValueError(f"adapter_setup: a 'single' AdapterHub block holds one name; got {data['children']}.")
            return cls.single(data["children"][0])
        if kind not in kinds:
            raise ValueError(f"adapter_setup: AdapterHub composition {kind!r} is not supported; expected one of "
                             f"{sorted(kinds)} (or 'single').")
        members = [cls.from_adapterhub(c) for c in data["children"]]
        kwargs = data.get("kwargs") or {}
        if kind == "Average":
            return cls.average(members, kwargs.get("weights"), normalize_weights=False)
        if kwargs:
            raise ValueError(f"adapter_setup: unexpected kwargs {kwargs} for AdapterHub's {kind}; expected none.")
        return {"Stack": cls.stack, "Fuse": cls.fuse, "Parallel": cls.parallel}[kind](members)

    def to_adapterhub(self):
        """The AdapterHub composition dict of this setup (what `AdapterCompositionBlock.to_dict()` writes)."""
        if self.kind == "single":
            return {"type": "Stack", "children": [{"type": "single", "children": [self.adapters[0]]}]}
        if self.kind not in ADAPTERHUB_TYPES or self.exclude or self.fixed:
            raise ValueError(f"adapter_setup: {self} has no AdapterHub composition dict (AdapterHub has no "
                             f"{'per-row setups' if self.kind == 'per_row' else 'fusion control'}).")
        out = {"type": ADAPTERHUB_TYPES[self.kind],
               "children": [m.to_adapterhub() if isinstance(m, AdapterSetup) else {"type": "single", "children": [m]}
                            for m in self.adapters]}
        if self.kind == "average":
            out["kwargs"] = {"weights": list(self.weights)}
        return out

    # ---------------------------------------------------------------- views
    def names(self):
        """Every adapter name the setup runs, in order of first appearance."""
        out = []
        for member in self.adapters:
            for name in (member.names() if isinstance(member, AdapterSetup) else (member,)):
                if name not in out:
                    out.append(name)
        return tuple(out)

    def last(self):
        """The last adapter name of the setup (AdapterHub's `last()`: the one whose config ends a slot)."""
        member = self.adapters[-1]
        return member.last() if isinstance(member, AdapterSetup) else member

    def first(self):
        """The first adapter name of the setup (AdapterHub's `first()`)."""
        member = self.adapters[0]
        return member.first() if isinstance(member, AdapterSetup) else member

    def member_names(self):
        """Each member's name, a nested setup counting as its last adapter (the keys of a fusion)."""
        return tuple(m.last() if isinstance(m, AdapterSetup) else m for m in self.adapters)

    def is_flat(self):
        """Whether every member is an adapter name."""
        return not any(isinstance(m, AdapterSetup) for m in self.adapters)

    def fusions(self):
        """The fusion setups in this setup (itself included), in the order they run."""
        out = [f for m in self.adapters if isinstance(m, AdapterSetup) for f in m.fusions()]
        return out + [self] if self.kind == "fuse" else out

    @property
    def fusion_key(self):
        """The key of the fusion layer this setup runs (`"fuse"` only)."""
        if self.kind != "fuse":
            raise ValueError(f"adapter_setup: a {self.kind!r} setup has no fusion.")
        return fusion_key(self.member_names(), self.fusion_name)

    def to_config(self):
        """A JSON-able form `parse` reads back: a name, a list of names, or a dict when needed."""
        if self.kind == "single":
            return self.adapters[0]
        if self.kind == "fuse" and self.fusion_name is None and self.is_flat() and not (self.exclude or self.fixed):
            return list(self.adapters)
        out = {"adapters": [m.to_config() if isinstance(m, AdapterSetup) else m for m in self.adapters],
               "kind": self.kind}
        if self.fusion_name is not None:
            out["fusion_name"] = self.fusion_name
        if self.weights is not None:
            out["weights"] = list(self.weights)
        if self.exclude:
            out["exclude"] = list(self.exclude)
        if self.fixed:
            out["fixed"] = dict(self.fixed)
        return out

    def token(self):
        """The setup as one string, for passing through a layer call (see the module docstring)."""
        return json.dumps(self._token_dict(), separators=(",", ":"))

    def _token_dict(self):
        return {"adapters": [m._token_dict() if isinstance(m, AdapterSetup) else m for m in self.adapters],
                "kind": self.kind, "fusion_name": self.fusion_name,
                "weights": None if self.weights is None else list(self.weights),
                "exclude": list(self.exclude), "fixed": [list(p) for p in self.fixed]}

    def __str__(self):
        if self.kind == "single":
            return self.adapters[0]
        inner = ", ".join(str(m) for m in self.adapters)
        if self.kind == "average":
            inner += f"; weights {', '.join(f'{w:g}' for w in self.weights)}"
        if self.exclude:
            inner += f"; without {', '.join(self.exclude)}"
        if self.fixed:
            inner += f"; fixed {', '.join(f'{n}={w:g}' for n, w in self.fixed)}"
        label = f"{_LABELS[self.kind]}({inner})"
        return label if self.fusion_name is None else f"{label} named {self.fusion_name!r}"


def _member(value):
    """A member of a setup: an adapter name as it is, a nested form parsed (a single setup becomes its name)."""
    if isinstance(value, str):
        return value
    setup = AdapterSetup.parse(value)
    if setup is None:
        raise ValueError("adapter_setup: got None as a member of a setup; expected an adapter name or a setup.")
    return setup.adapters[0] if setup.kind == "single" else setup


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
