"""The fusion search space, and a trial's set-up read from its values (no Keras, no keras-tuner).

The command line reads and checks `--space` before TensorFlow loads, so this
module imports only the standard library and the package's configs.

| name | what it is |
|---|---|
| `FusionSearchSpace` | the space: ranges and choices with documented defaults, checked on construction |
| `TrialSetUp` | one trial's adapters, fusion config, learning rate, batch size and epochs |
| `fusion_config_from_values` | a trial's values as the `FusionConfig` that `fuse --fusion-config` reads |
| `trial_seed` | a trial's Keras seed, from the search's seed and the trial's values |

Example:

```python
from keras_adapterfusion.tuning.space import FusionSearchSpace

space = FusionSearchSpace.from_json('{"presets": ["dynamic"], "batch_size": [16]}')
space.subsets(["movie", "news", "subj"])  # the adapter subsets a search may fuse
```
"""

import dataclasses
import hashlib
import itertools
import json
import math
from typing import Optional, Tuple

from keras_adapterfusion.configs import FusionConfig

__all__ = ["CACHE_DIR", "MAX_SUBSETS", "PRESETS", "REPORT_FILES", "SEARCH_DIR", "SETTINGS_FILE", "TRIAL_METRICS",
           "TUNERS", "FusionSearchSpace", "TrialSetUp", "fusion_config_from_values", "trial_seed"]

TUNERS = ("bayesian", "hyperband", "random")
PRESETS = ("dynamic", "static")
# Trial metrics recorded beside the objective (see `FusionHyperModel.fit`).
TRIAL_METRICS = ("best_epoch", "epochs_run", "seconds", "first_epoch_seconds", "later_epoch_seconds")
# The most adapter subsets a default space enumerates (a larger set needs explicit `adapter_subsets`).
MAX_SUBSETS = 256
# What `write_reports` writes, and what else the command line keeps in a tune directory.
REPORT_FILES = ("trials.csv", "trials.md", "trials.png", "best_fusion_config.json", "best_trial.json")
SETTINGS_FILE = "tune.json"  # the arguments of the search (the command line compares them when continuing)
SEARCH_DIR = "search"  # keras-tuner's project
CACHE_DIR = "xla_cache"  # JAX's persistent compilation cache (the default of `search`)


def _fail(field, value, expected):
    if isinstance(value, (list, tuple)):  # shown as the JSON list it came from
        value = [list(v) if isinstance(v, tuple) else v for v in value]
    raise ValueError(f"FusionSearchSpace.{field}: got {value!r}; expected {expected}.")


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _choices(field, value, check, expected):
    """A non-empty tuple of distinct values that each pass `check`."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        _fail(field, value, f"a non-empty list of {expected}")
    for v in value:
        if not check(v):
            _fail(field, value, f"a non-empty list of {expected}")
    if len(set(value)) != len(value):
        _fail(field, value, f"a list of distinct {expected}")
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class FusionSearchSpace:
    """What a fusion search varies, with defaults taken from the paper where it gives them.

    Every field that lists choices is searched over them; a list with one value
    fixes that value (it is still recorded with each trial). The first value of
    a list is the one a search starts from (keras-tuner's default value).

    Args:
        learning_rate: `(low, high)`, sampled on a log scale. Default
            `(1e-5, 2.5e-4)`, whose geometric middle is the paper's 5e-5 (the
            default value). With a linear decay to 0 over the trial's steps.
        presets: fusion presets to try, `"dynamic"` and/or `"static"`
            (`FusionConfig.PRESETS`). Default both.
        value: for `static`: whether to add a learned value matrix `V` (without
            identity start or regularization). Default `(False, True)`.
        value_initialized: for `dynamic`: whether `V` starts as the identity.
            Default `(True, False)`.
        regularization_weight: for `dynamic`: the weight of
            `||I - V||^2`; 0 turns the regularization off. Default
            `(0.01, 0.0, 0.001, 0.1)` (0.01 is AdapterHub's).
        query_before_ln: take the query before the block's LayerNorm. Default
            `(False, True)`.
        residual_before: add the residual to each adapter's output before the
            attention. Default `(False, True)`.
        dropout: dropout on the fusion's attention scores (`dropout_prob`).
            Default `(0.1, 0.0, 0.2)` (0.1 is BERT's attention dropout, what the
            presets use).
        batch_size: batch sizes. Default `(32, 16)`.
        epochs: the most epochs a trial trains (early stopping may end it
            sooner). Default `(10,)`, the paper's. With Hyperband the tuner
            sets each trial's epochs, up to the largest value here.
        patience: early stopping: end a trial when the objective has not improved
            for this many epochs; `None` turns it off. Not searched. Default 2.
        adapter_subsets: which sets of adapters take part: `None` (every
            subset of at least `min_adapters` of the given adapters, all of
            them first), or a list of lists of adapter names.
        min_adapters: the smallest subset when `adapter_subsets` is `None`.
            Default 2 (a fusion needs two adapters); 1 also tries each adapter
            alone (a frozen adapter and a new head, no fusion).

    Example:

    ```python
    space = FusionSearchSpace(learning_rate=(1e-4, 1e-3), presets=("dynamic",), batch_size=(16,))
    space = FusionSearchSpace.from_json(open("space.json").read())
    ```
    """

    learning_rate: Tuple[float, float] = (1e-5, 2.5e-4)
    presets: Tuple[str, ...] = PRESETS
    value: Tuple[bool, ...] = (False, True)
    value_initialized: Tuple[bool, ...] = (True, False)
    regularization_weight: Tuple[float, ...] = (0.01, 0.0, 0.001, 0.1)
    query_before_ln: Tuple[bool, ...] = (False, True)
    residual_before: Tuple[bool, ...] = (False, True)
    dropout: Tuple[float, ...] = (0.1, 0.0, 0.2)
    batch_size: Tuple[int, ...] = (32, 16)
    epochs: Tuple[int, ...] = (10,)
    patience: Optional[int] = 2
    adapter_subsets: Optional[Tuple[Tuple[str, ...], ...]] = None
    min_adapters: int = 2

    def __post_init__(self):
        lr = self.learning_rate
        if isinstance(lr, (str, bytes)) or not isinstance(lr, (list, tuple)) or len(lr) != 2 \
                or not all(_is_number(v) and v > 0 for v in lr) or lr[0] > lr[1]:
            _fail("learning_rate", lr, "(low, high) with 0 < low <= high")
        object.__setattr__(self, "learning_rate", (float(lr[0]), float(lr[1])))
        object.__setattr__(self, "presets", _choices("presets", self.presets, lambda v: v in PRESETS,
                                                     f"preset names from {list(PRESETS)}"))
        for field in ("value", "value_initialized", "query_before_ln", "residual_before"):
            object.__setattr__(self, field, _choices(field, getattr(self, field), lambda v: isinstance(v, bool),
                                                     "booleans (true, false)"))
        weights = _choices("regularization_weight", self.regularization_weight, lambda v: _is_number(v) and v >= 0,
                           "numbers >= 0")
        object.__setattr__(self, "regularization_weight", tuple(float(v) for v in weights))
        rates = _choices("dropout", self.dropout, lambda v: _is_number(v) and 0 <= v < 1, "rates in [0, 1)")
        object.__setattr__(self, "dropout", tuple(float(v) for v in rates))
        for field in ("batch_size", "epochs"):
            object.__setattr__(self, field, _choices(
                field, getattr(self, field), lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                "integers >= 1"))
        p = self.patience
        if p is not None and (isinstance(p, bool) or not isinstance(p, int) or p < 1):
            _fail("patience", p, "None or an integer >= 1")
        m = self.min_adapters
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            _fail("min_adapters", m, "an integer >= 1")
        subsets = self.adapter_subsets
        if subsets is not None:
            def is_subset(s):
                return (not isinstance(s, (str, bytes)) and isinstance(s, (list, tuple)) and len(s) >= 1
                        and all(isinstance(n, str) and n and "," not in n for n in s) and len(set(s)) == len(s))

            subsets = _choices("adapter_subsets", [tuple(s) if isinstance(s, list) else s for s in subsets],
                               is_subset, "lists of distinct adapter names (one or more each)")
            object.__setattr__(self, "adapter_subsets", subsets)

    # ------------------------------------------------------------ JSON
    def to_dict(self):
        """The fields as JSON-ready values (tuples as lists).

        Returns:
            A dict that `from_dict` reads back.

        Example:

        ```python
        FusionSearchSpace().to_dict()["presets"]  # ["dynamic", "static"]
        ```
        """
        out = dataclasses.asdict(self)
        return json.loads(json.dumps(out))

    @classmethod
    def from_dict(cls, data):
        """A space from a dict of fields (unknown fields are an error).

        Args:
            data: field name -> value, e.g. `{"presets": ["dynamic"], "batch_size": [16]}`.

        Returns:
            A `FusionSearchSpace`.

        Example:

        ```python
        FusionSearchSpace.from_dict({"learning_rate": [1e-4, 1e-3]})
        ```
        """
        if not isinstance(data, dict):
            raise ValueError(f"FusionSearchSpace: got {type(data).__name__}; expected a dict of fields.")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"FusionSearchSpace: unknown field(s) {unknown}; expected fields from {known}.")
        fields = {k: tuple(v) if isinstance(v, list) and k != "adapter_subsets" else v for k, v in data.items()}
        return cls(**fields)

    def to_json(self):
        """The space as indented JSON.

        Returns:
            A string that `from_json` reads back (and `tune --space FILE` reads from a file).

        Example:

        ```python
        open("space.json", "w").write(FusionSearchSpace(presets=("dynamic",)).to_json())
        ```
        """
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        """A space from JSON text (see `from_dict`).

        Args:
            text: a JSON object of fields.

        Returns:
            A `FusionSearchSpace`.

        Example:

        ```python
        FusionSearchSpace.from_json('{"presets": ["dynamic"]}')
        ```
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"FusionSearchSpace: not JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                             "expected a JSON object of fields.") from None
        return cls.from_dict(data)

    # -------------------------------------------------- adapter subsets
    def subsets(self, adapter_names):
        """The adapter subsets a search over `adapter_names` tries, as `"a,b"` strings, the default first.

        Args:
            adapter_names: the adapters available (two or more for a fusion).

        Returns:
            A list of comma-joined subsets (names in the order given).

        Example:

        ```python
        FusionSearchSpace().subsets(["a", "b", "c"])  # ['a,b,c', 'a,b', 'a,c', 'b,c']
        ```
        """
        names = list(adapter_names)
        if self.adapter_subsets is not None:
            out = []
            for subset in self.adapter_subsets:
                missing = [n for n in subset if n not in names]
                if missing:
                    _fail("adapter_subsets", [list(s) for s in self.adapter_subsets],
                          f"subsets of the adapters given ({names}); {missing} not among them")
                out.append(",".join(n for n in names if n in subset))
            if len(set(out)) != len(out):
                _fail("adapter_subsets", [list(s) for s in self.adapter_subsets], "distinct subsets")
            return out
        if self.min_adapters > len(names):
            _fail("min_adapters", self.min_adapters, f"at most the {len(names)} adapters given ({names})")
        count = sum(math.comb(len(names), k) for k in range(self.min_adapters, len(names) + 1))
        if count > MAX_SUBSETS:
            _fail("adapter_subsets", None, f"an explicit list of subsets: {len(names)} adapters make {count} "
                  f"subsets of at least {self.min_adapters}, more than {MAX_SUBSETS}")
        out = []
        for size in range(len(names), self.min_adapters - 1, -1):
            out.extend(",".join(c) for c in itertools.combinations(names, size))
        return out

    # ----------------------------------------------------- hyperparameters
    def declare(self, hp, adapter_names, tuner_sets_epochs=False):
        """Register the space in keras-tuner's `hp` and read one trial's values.

        Every hyperparameter is registered on every call (the conditional ones
        under `hp.conditional_scope`), so one call declares the whole space.

        Args:
            hp: a `keras_tuner.HyperParameters`.
            adapter_names: the adapters available.
            tuner_sets_epochs: Hyperband sets the epochs itself; then `epochs`
                is not declared.

        Returns:
            A `TrialSetUp` for the values in `hp` (the defaults where it has none).

        Example:

        ```python
        import keras_tuner
        setup = FusionSearchSpace().declare(keras_tuner.HyperParameters(), ["a", "b"])
        setup.fusion_config  # FusionConfig of the dynamic preset, dropout_prob 0.1
        ```
        """
        def choice(name, values):
            if len(values) == 1:
                return hp.Fixed(name, values[0])
            if all(isinstance(v, bool) for v in values):  # (False, True) in some order
                return hp.Boolean(name, default=values[0])
            if all(isinstance(v, (int, float)) for v in values):
                return hp.Choice(name, sorted(values), default=values[0])
            return hp.Choice(name, list(values), default=values[0])

        values = {}
        low, high = self.learning_rate
        if low == high:
            values["learning_rate"] = hp.Fixed("learning_rate", low)
        else:
            middle = 5e-5 if low <= 5e-5 <= high else math.sqrt(low * high)  # the paper's rate, if inside
            values["learning_rate"] = hp.Float("learning_rate", low, high, sampling="log", default=middle)
        values["preset"] = choice("preset", self.presets)
        if "static" in self.presets:
            with hp.conditional_scope("preset", ["static"]):
                values["value"] = choice("value", self.value)
        if "dynamic" in self.presets:
            with hp.conditional_scope("preset", ["dynamic"]):
                values["value_initialized"] = choice("value_initialized", self.value_initialized)
                values["regularization_weight"] = choice("regularization_weight", self.regularization_weight)
        values["query_before_ln"] = choice("query_before_ln", self.query_before_ln)
        values["residual_before"] = choice("residual_before", self.residual_before)
        values["dropout"] = choice("dropout", self.dropout)
        values["adapters"] = choice("adapters", self.subsets(adapter_names))
        values["batch_size"] = choice("batch_size", self.batch_size)
        if not tuner_sets_epochs:
            values["epochs"] = choice("epochs", self.epochs)
        return TrialSetUp.from_values({k: v for k, v in values.items() if v is not None}, max(self.epochs))


@dataclasses.dataclass(frozen=True)
class TrialSetUp:
    """One trial's set-up, read from its hyperparameter values.

    Args:
        adapters: the adapters that take part, in order.
        fusion_config: the `FusionConfig` (unused with one adapter).
        learning_rate: the peak learning rate.
        batch_size: examples per batch.
        epochs: the most epochs the trial trains.
        values: the hyperparameter values it was read from.

    Example:

    ```python
    setup = FusionSearchSpace().declare(keras_tuner.HyperParameters(), ["a", "b"])
    setup.adapters, setup.learning_rate  # ("a", "b"), 5e-05
    ```
    """

    adapters: Tuple[str, ...]
    fusion_config: FusionConfig
    learning_rate: float
    batch_size: int
    epochs: int
    values: dict

    @classmethod
    def from_values(cls, values, default_epochs=10):
        """Read a set-up from a trial's values (`hp.values`, or a trial's recorded values).

        Args:
            values: hyperparameter name -> value.
            default_epochs: the epochs when `values` has none (Hyperband's trials).

        Returns:
            A `TrialSetUp`.

        Example:

        ```python
        TrialSetUp.from_values(best_trial(tuner).hyperparameters.values).fusion_config
        ```
        """
        return cls(adapters=tuple(str(values["adapters"]).split(",")),
                   fusion_config=fusion_config_from_values(values),
                   learning_rate=float(values["learning_rate"]), batch_size=int(values["batch_size"]),
                   epochs=int(values.get("epochs", default_epochs)), values=dict(values))


def fusion_config_from_values(values):
    """The `FusionConfig` of a trial's values: its preset with the switches applied.

    | preset | `value` | `value_initialized` | `regularization` |
    |---|---|---|---|
    | `static` | the `value` switch | off | off |
    | `dynamic` | on | the `value_initialized` switch | on unless `regularization_weight` is 0 |

    `query_before_ln`, `residual_before` and `dropout` (as `dropout_prob`) apply to both.

    Args:
        values: hyperparameter name -> value (missing switches keep the preset's).

    Returns:
        A `FusionConfig` (`fuse --fusion-config FILE` reads its `to_dict()` as JSON).

    Example:

    ```python
    fusion_config_from_values({"preset": "dynamic", "regularization_weight": 0.0, "dropout": 0.2})
    ```
    """
    preset = values.get("preset", "dynamic")
    if preset not in PRESETS:
        raise ValueError(f"fusion_config_from_values: preset {preset!r}; expected one of {list(PRESETS)}.")
    fields = dict(FusionConfig.PRESETS[preset])
    for key in ("query_before_ln", "residual_before"):
        if key in values:
            fields[key] = bool(values[key])
    if values.get("dropout") is not None:
        fields["dropout_prob"] = float(values["dropout"])
    if preset == "static":
        fields["value"] = bool(values.get("value", False))
    else:
        fields["value_initialized"] = bool(values.get("value_initialized", True))
        weight = float(values.get("regularization_weight", 0.01))
        fields["regularization"] = weight > 0
        fields["regularization_weight"] = weight
    return FusionConfig.from_dict(fields)


def trial_seed(seed, values):
    """The Keras seed of a trial: from the search's `seed` and the trial's values (not its position).

    Args:
        seed: the search's seed.
        values: the trial's hyperparameter values (keras-tuner's `tuner/...` entries are ignored).

    Returns:
        An integer in [0, 2**31).

    Example:

    ```python
    trial_seed(0, {"preset": "dynamic", "learning_rate": 1e-4})  # the same for the same values
    ```
    """
    kept = {k: v for k, v in values.items() if not str(k).startswith("tuner/")}
    text = json.dumps([int(seed), sorted((str(k), repr(v)) for k, v in kept.items())])
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % (2**31)
