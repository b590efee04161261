"""Searching fusion set-ups with keras-tuner: the space, the hypermodel, the search and its reports.

Stage 2 of AdapterFusion has more settings than a learning rate: the fusion
preset and its switches, which source adapters take part, the regularization
of the value matrix, dropout, batch size and epochs. `FusionHyperModel` is a
`keras_tuner.HyperModel` over exactly those; `search` runs keras-tuner's
Bayesian optimization (the default), Hyperband or random search over it, with
the target task's validation metric as the objective.

| piece | what it is |
|---|---|
| `FusionSearchSpace` | the space: ranges and choices with documented defaults, checked on construction |
| `FusionHyperModel` | builds one trial's stage-2 model from the loaded encoder (never reloaded from disk) and fits it |
| `search` | runs a tuner (`"bayesian"`, `"hyperband"`, `"random"`); resumes a search in the same directory |
| `fusion_config_from_values` | a trial's values as the `FusionConfig` that `fuse --fusion-config` reads |
| `trial_rows`, `write_reports` | the trials as rows; `trials.csv`, `trials.md`, `trials.png`, `best_fusion_config.json` |

**Trials are independent.** A trial's model runs on its own copy of the
encoder, made from the loaded encoder's configuration (with only the trial's
adapters, and no fusion) whose variables are then assigned the loaded encoder's
values. The loaded encoder itself is never changed: no fusion layer is added to
it, so nothing of one trial is left for the next. Each trial seeds Keras from
the search's seed and the trial's values, so a set-up gives the same result
whichever trials ran before it.

**Trial start-up is kept cheap.** Every training batch has the same shape
(full batches padded to one length: the last batch is topped up with examples
from the start of the epoch's order), validation batches too, so each trial
compiles one training step and one prediction step; the learning rate and the
length of its linear decay are optimizer variables (values), not constants of
the compiled step, so trials that differ only in them compile the same program,
which JAX's persistent compilation cache (`enable_compilation_cache`, or
`search(compilation_cache_dir=...)`) then serves from disk. The other
hyperparameters (the fusion switches, dropout, regularization weight, batch
size, the adapters) change the program; a set-up seen before is served from the
cache too.

**Distributed search** uses keras-tuner's chief/worker mode unchanged: run the
same program on every machine with `KERASTUNER_TUNER_ID` (`chief` on one,
`tuner0`, `tuner1`, ... on the others), `KERASTUNER_ORACLE_IP` and
`KERASTUNER_ORACLE_PORT` (the chief's address). The chief only hands out trials
and records them; the workers train. See `docs/tuning.md`.

Importing this module imports neither Keras, keras-tuner nor TensorFlow: a
`FusionHyperModel` is created as an instance of a subclass that is also a
`keras_tuner.HyperModel`, made when the first one is, and `search` imports
keras-tuner when it runs. Searches run on the TensorFlow and JAX backends (on JAX without
TensorFlow installed).

Example:

```python
from keras_adapterfusion import load_encoder, tuning
from keras_adapterfusion.formats import native as saving
from keras_adapterfusion.training.runs import prepare
from keras_adapterfusion import load_tokenizer

encoder = load_encoder("path/to/bert")
names = [saving.load_adapter(encoder, d) for d in ("adapters/movie", "adapters/news", "adapters/subj")]
tokenizer = load_tokenizer("path/to/bert")
train = prepare("vader_tweets", tokenizer, "train", max_length=64, sample=300)
validation = prepare("vader_tweets", tokenizer, "validation", max_length=64, limit=500)
hypermodel = tuning.FusionHyperModel(encoder, names, task="vader_tweets")
tuner = tuning.search(hypermodel, train, validation, tuner="bayesian", max_trials=20, directory="search")
best = tuning.fusion_config_from_values(tuner.oracle.get_best_trials(1)[0].hyperparameters.values)
```
"""

import csv
import dataclasses
import hashlib
import itertools
import json
import math
import os
import time
from typing import Optional, Tuple

import numpy as np

from keras_adapterfusion.configs import FusionConfig, check_fusable

__all__ = ["CACHE_DIR", "MAX_SUBSETS", "PRESETS", "REPORT_FILES", "SEARCH_DIR", "SETTINGS_FILE", "TRIAL_METRICS",
           "TUNERS", "FusionHyperModel", "FusionSearchSpace", "TrialSetUp", "best_trial", "enable_compilation_cache",
           "fusion_config_from_values", "plot_trials", "role", "search", "serve_as_chief", "trial_rows",
           "trial_seed", "write_reports"]

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


def enable_compilation_cache(directory):
    """Turn on JAX's persistent compilation cache in `directory` (every program, however quick to compile).

    A trial whose compiled programs were compiled before (by this search, an
    earlier one, or another process) then loads them from disk instead of
    compiling. Does nothing on other backends. JAX trusts what it finds there:
    use a directory that only you can write to.

    Args:
        directory: where the compiled programs are kept (created if needed).

    Returns:
        True if the cache was turned on (JAX backend), else False.

    Example:

    ```python
    tuning.enable_compilation_cache("~/.cache/kaf-xla")
    ```
    """
    import keras

    if keras.backend.backend() != "jax":
        return False
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
    os.makedirs(directory, exist_ok=True)
    compilation_cache.set_cache_dir(directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    # JAX decides once, at its first compilation, whether the cache is used; anything compiled before
    # this call (loading the encoder, adding adapters) made it decide "no". Ask it to decide again.
    compilation_cache.reset_cache()
    return True


class FusionHyperModel:
    """A `keras_tuner.HyperModel` for stage 2: fusion set-ups over trained adapters, on a loaded encoder.

    Each trial's model runs on a copy of `encoder` that holds only the
    trial's adapters: the copy is made from the encoder's configuration and
    its variables are assigned copies of the encoder's values (in memory),
    so nothing is read from disk and `encoder` itself is never changed (no
    fusion is added to it). `build` returns the uncompiled model;
    `fit` compiles it (AdamW, the trial's learning rate decaying linearly to
    0), trains it with early stopping on the objective, and returns the
    objective at the best epoch with the trial's timings.

    Args:
        encoder: a `TransformerEncoder` holding the adapters (or a checkpoint
            path, loaded once here).
        adapter_names: the trained adapters the search may fuse (two or more,
            or one with `space.min_adapters=1`); they must share their slots
            (`mh_adapter`, `output_adapter`).
        num_labels: classes of a single-label classification target, when
            `task` is not given.
        space: a `FusionSearchSpace` or a dict of its fields (default: the
            documented defaults).
        task: the target `Task` (or registry name): its head, loss and
            validation metric (the objective is `val_<its first metric>`).
        seed: the search's seed: data order and each trial's initialization
            (`trial_seed`).
        dtype_policy: e.g. `"mixed_bfloat16"` for mixed precision (set for
            every trial; keras-tuner clears Keras's global settings before
            each trial).
        distribution: a `keras.distribution.Distribution` (JAX), set for every
            trial, e.g. `keras.distribution.DataParallel()` to train each trial
            on all local accelerators.
        eval_batch_size: examples per validation batch.
        name: the hypermodel's name.

    Example:

    ```python
    hypermodel = FusionHyperModel(encoder, ["movie", "news", "subj"], task="vader_tweets",
                                  space={"presets": ["dynamic"], "batch_size": [16]})
    tuner = search(hypermodel, train, validation, max_trials=10, directory="search")
    ```
    """

    def __new__(cls, *args, **kwargs):
        # Instances are of a subclass that is also a `keras_tuner.HyperModel`, made when first needed, so
        # that importing this module imports neither Keras nor keras-tuner.
        if cls is FusionHyperModel:
            cls = _parts()["FusionHyperModel"]
        return object.__new__(cls)

    def __init__(self, encoder, adapter_names, num_labels=None, space=None, task=None, seed=0,
                 dtype_policy=None, distribution=None, eval_batch_size=64, name="fusion"):
        import keras_tuner

        super().__init__(name=name, tunable=True)  # keras_tuner.HyperModel's
        from keras_adapterfusion.training.builders import resolve_encoder
        from keras_adapterfusion.tasks import Task, get_task

        self.encoder = resolve_encoder(encoder)
        if isinstance(adapter_names, str) or not isinstance(adapter_names, (list, tuple)) or not adapter_names:
            raise ValueError(f"FusionHyperModel.adapter_names: got {adapter_names!r}; expected a list of "
                             "adapter names.")
        names = list(adapter_names)
        missing = [n for n in names if n not in self.encoder.adapter_configs]
        if missing or len(set(names)) != len(names):
            raise ValueError(f"FusionHyperModel.adapter_names: got {names}; expected distinct adapters of the "
                             f"encoder ({sorted(self.encoder.adapter_configs)})"
                             + (f"; {missing} are not there" if missing else "") + ".")
        check_fusable({n: self.encoder.adapter_configs[n] for n in names}, where="FusionHyperModel.adapter_names")
        self.adapter_names = names
        if space is None:
            space = FusionSearchSpace()
        elif isinstance(space, dict):
            space = FusionSearchSpace.from_dict(space)
        elif not isinstance(space, FusionSearchSpace):
            raise ValueError(f"FusionHyperModel.space: got {type(space).__name__}; expected a "
                             "FusionSearchSpace, a dict of its fields or None.")
        self.space = space
        self.space.subsets(names)  # checks the subsets against the adapters now
        if task is None:
            if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 2:
                raise ValueError(f"FusionHyperModel.num_labels: got {num_labels!r}; expected an integer >= 2 "
                                 "(or pass task=).")
            task = Task("target", None, "single", ("text",), tuple(str(i) for i in range(num_labels)),
                        ("accuracy",), data={"train": ([], [])})
        else:
            task = get_task(task)
            if num_labels is not None and num_labels != task.num_labels:
                raise ValueError(f"FusionHyperModel.num_labels: got {num_labels!r}; task {task.name!r} has "
                                 f"{task.num_labels}.")
        self.task = task
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ValueError(f"FusionHyperModel.seed: got {seed!r}; expected an integer from 0 to 2**32-1.")
        self.seed = seed
        self.dtype_policy = dtype_policy
        self.distribution = distribution
        self.eval_batch_size = int(eval_batch_size)
        metric = task.metrics[0]
        self.objective = keras_tuner.Objective(f"val_{metric}", "min" if metric == "mse" else "max")
        self.tuner_sets_epochs = False
        self._started = None
        self._previous_policy = None

    # ---------------------------------------------------------- space
    def declare_hyperparameters(self, hp):
        """Register the whole space in `hp` (no model is built).

        Args:
            hp: a `keras_tuner.HyperParameters` (keras-tuner calls this with its oracle's space).

        Example:

        ```python
        hp = keras_tuner.HyperParameters()
        hypermodel.declare_hyperparameters(hp)
        [p.name for p in hp.space]  # learning_rate, preset, value, ..., batch_size, epochs
        ```
        """
        self.space.declare(hp, self.adapter_names, self.tuner_sets_epochs)

    def setup(self, hp):
        """The set-up of one trial (registering the space in `hp`).

        Args:
            hp: the trial's `keras_tuner.HyperParameters`.

        Returns:
            A `TrialSetUp`: adapters, fusion config, learning rate, batch size, epochs.

        Example:

        ```python
        hypermodel.setup(best_trial(tuner).hyperparameters).fusion_config
        ```
        """
        return self.space.declare(hp, self.adapter_names, self.tuner_sets_epochs)

    # ---------------------------------------------------------- models
    def encoder_copy(self, adapters):
        """A new encoder like `self.encoder` with only `adapters` (and no fusion), holding its values.

        Args:
            adapters: the adapter names to keep.

        Returns:
            A built `TransformerEncoder`; its variables hold copies of the encoder's values.

        Example:

        ```python
        copy = hypermodel.encoder_copy(["movie", "news"])
        copy.fusion_specs, list(copy.adapter_configs)  # {}, ["movie", "news"]
        ```
        """
        from keras_adapterfusion.backbones.copying import copy_encoder

        return copy_encoder(self.encoder, adapters, dtype=self.dtype_policy)

    def build(self, hp):
        """The uncompiled stage-2 model of one trial (fusion layers and a new head train).

        Args:
            hp: the trial's `keras_tuner.HyperParameters`.

        Returns:
            An `AdapterModel` (a fusion over the trial's adapters, or one frozen adapter).
        """
        import keras

        from keras_adapterfusion.training import builders
        from keras_adapterfusion.training.losses import make_head
        from keras_adapterfusion.models.adapter_model import AdapterModel
        from keras_adapterfusion.models.trainable import make_spec

        self._started = time.perf_counter()
        setup = self.setup(hp)
        self._previous_policy = keras.config.dtype_policy()
        if self.dtype_policy is not None:
            keras.config.set_dtype_policy(self.dtype_policy)
        if self.distribution is not None:
            keras.distribution.set_distribution(self.distribution)
        keras.utils.set_random_seed(trial_seed(self.seed, hp.values))
        encoder = self.encoder_copy(setup.adapters)
        task = self.task
        labels = None if task.kind == "regression" else list(task.label_names)
        head = make_head(task.head_kind, task.num_labels if task.kind != "regression" else None,
                         label_names=labels, name="head")
        if len(setup.adapters) == 1:
            return AdapterModel(encoder, head, adapter_setup=setup.adapters[0], output_key="logits",
                                trainable_spec=make_spec(heads=True), name="fusion_trial")
        return builders.build_fusion_model(encoder, list(setup.adapters), head=head,
                                           fusion_config=setup.fusion_config, name="fusion_trial")

    def fit(self, hp, model, train, validation, callbacks=None, epochs=None, initial_epoch=0, verbose=1,
            **kwargs):
        """Compile and train one trial's model; returns its objective and timings.

        Args:
            hp: the trial's hyperparameters.
            model: what `build` returned.
            train: `(encoded, labels)`, tokenized (`experiments.prepare`).
            validation: `(encoded, labels)`: the objective is measured on it after every epoch.
            callbacks: more Keras callbacks (keras-tuner's own come here).
            epochs: the epochs (Hyperband's); default the trial's `epochs` value.
            initial_epoch: the epoch to start from (Hyperband's continued trials).
            verbose: 0 quiet, else Keras progress (bars on a terminal, a line per epoch otherwise).

        Returns:
            A dict: the objective (its best value over the epochs), `val_loss` at that epoch,
            `best_epoch`, `epochs_run`, `seconds` (the trial: build, compile, training,
            validation), `first_epoch_seconds` and, after two or more epochs,
            `later_epoch_seconds` (the median of the others).
        """
        import keras

        from keras_adapterfusion.training import optimizers as training
        from keras_adapterfusion.training.runs import ValidationMetrics, progress_verbosity
        from keras_adapterfusion.training.losses import compile_arguments

        parts = _parts()

        try:
            setup = self.setup(hp)
            epochs = setup.epochs if epochs is None else int(epochs)
            batches = parts["FullBatches"](train[0], train[1], setup.batch_size, self.seed)
            remaining = max(1, epochs - initial_epoch)
            schedule = training.LinearDecay(setup.learning_rate * remaining / epochs, max(1, len(batches) * remaining))
            optimizer = training.make_optimizer("fusion", learning_rate=schedule)
            schedule.hold_in(optimizer)
            model.compile(optimizer=optimizer, **compile_arguments(model.head))
            timer = parts["EpochTimer"]()
            own = [ValidationMetrics(self.task, *validation), timer]
            if self.space.patience is not None:
                own.append(keras.callbacks.EarlyStopping(monitor=self.objective.name,
                                                         mode=self.objective.direction,
                                                         patience=self.space.patience))
            history = model.fit(batches, epochs=epochs, initial_epoch=initial_epoch,
                                callbacks=own + list(callbacks or []),
                                verbose=0 if not verbose else progress_verbosity())
        finally:
            if self._previous_policy is not None:
                keras.config.set_dtype_policy(self._previous_policy)
        scores = [float(v) for v in history.history[self.objective.name]]
        best = int(np.argmin(scores) if self.objective.direction == "min" else np.argmax(scores))
        out = {self.objective.name: scores[best], "val_loss": float(history.history["val_loss"][best]),
               "best_epoch": initial_epoch + best + 1, "epochs_run": len(scores),
               "seconds": time.perf_counter() - (self._started or time.perf_counter()),
               "first_epoch_seconds": timer.seconds[0]}
        if len(timer.seconds) > 1:
            out["later_epoch_seconds"] = float(np.median(timer.seconds[1:]))
        return out


# ----------------------------------------------------------- lazy parts
_PARTS = {}


def _parts():
    """Make (once) the classes that need Keras and keras-tuner."""
    if not _PARTS:
        _PARTS.update(_make_parts())
    return _PARTS


def _make_parts():  # noqa: C901  (the Keras-dependent classes, made together on first use)
    import keras
    import keras_tuner
    from keras_tuner.src.engine import tuner_utils

    from keras_adapterfusion.tasks.batches import TokenBatches

    class FullBatches(TokenBatches):
        """Batches that all have one shape: full (the last one topped up from the epoch's start), one length.

        The examples are reshuffled every epoch (`seed`, as `TokenBatches`); an
        epoch has `ceil(n / batch_size)` batches, so every example is seen at
        least once per epoch.
        """

        def __init__(self, encoded, labels, batch_size, seed):
            super().__init__(encoded, labels, batch_size=batch_size, shuffle=True, seed=seed, padding="longest")

        def _plan(self, epoch):
            n, size = len(self.labels), self.batch_size
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
            count = -(-n // size)
            filled = np.resize(order, count * size)  # repeats the order from its start
            return [filled[i * size:(i + 1) * size] for i in range(count)]

    class EpochTimer(keras.callbacks.Callback):
        """Seconds per epoch (training and the validation after it)."""

        def __init__(self):
            super().__init__()
            self.seconds = []
            self._start = None

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    class SaveBestTrained(keras.callbacks.Callback):
        """Save the trained weights (fusion and head, not the frozen encoder) at the best epoch so far."""

        def __init__(self, objective, path):
            super().__init__()
            self.objective, self.path = objective, path
            self.best = None

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(self.objective.name)
            if value is None or (self.best is not None and not self.objective.better_than(value, self.best)):
                return
            self.best = value
            save_trained_weights(self.model, self.path)

    def save_trained_weights(model, path):
        from keras_adapterfusion.io.files import atomic_file

        weights = model.trainable_weights
        arrays = {f"w{i}": np.asarray(keras.ops.convert_to_numpy(v.value)) for i, v in enumerate(weights)}
        with atomic_file(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, __paths__=np.asarray([v.path for v in weights]), **arrays)

    def load_trained_weights(model, path):
        weights = model.trainable_weights
        with np.load(path, allow_pickle=False) as data:
            paths = [str(p) for p in data["__paths__"]]
            if paths != [v.path for v in weights]:
                raise ValueError(f"{path}: holds the weights of another set-up ({len(paths)} weights); "
                                 f"expected {[v.path for v in weights][:3]}...")
            for i, v in enumerate(weights):
                v.assign(data[f"w{i}"])

    class FusionTunerMixin:
        """What the package changes in keras-tuner's tuners (see `search`).

        - The space is declared without building models (`declare_hyperparameters`).
        - Each trial saves only its trained weights (fusion and head) at its best
          epoch, not the frozen encoder's, and Hyperband continues trials from them.
        - The chief of a distributed search serves trials and ends as soon as the
          last worker is done (keras-tuner's chief polls every 20 seconds).
        """

        def _populate_initial_space(self):
            hp = self.oracle.get_space()
            self.hypermodel.declare_hyperparameters(hp)
            self.oracle.update_space(hp)

        def checkpoint_path(self, trial_id):
            return os.path.join(self.get_trial_dir(trial_id), "trained.weights.npz")

        trials_run = ()  # the ids of the trials this tuner ran in its last `search`, in order

        def run_trial(self, trial, *args, **kwargs):
            self.trials_run.append(trial.trial_id)
            hp = trial.hyperparameters
            if "tuner/epochs" in hp.values:
                kwargs["epochs"] = hp.values["tuner/epochs"]
                kwargs["initial_epoch"] = hp.values["tuner/initial_epoch"]
            checkpoint = SaveBestTrained(self.oracle.objective, self.checkpoint_path(trial.trial_id))
            original = kwargs.pop("callbacks", [])
            results = []
            for _ in range(self.executions_per_trial):
                callbacks = self._deepcopy_callbacks(original)
                callbacks.append(tuner_utils.TunerCallback(self, trial))
                callbacks.append(checkpoint)
                results.append(self._build_and_fit_model(trial, *args, **dict(kwargs, callbacks=callbacks)))
            return results

        def _build_hypermodel(self, hp):
            model = keras_tuner.Tuner._build_hypermodel(self, hp)
            if "tuner/trial_id" in hp.values:  # Hyperband: continue from the earlier round's trial
                load_trained_weights(model, self.checkpoint_path(hp.values["tuner/trial_id"]))
            return model

        def load_model(self, trial):
            """The trial's model with its trained weights at its best epoch."""
            model = self._try_build(trial.hyperparameters)
            load_trained_weights(model, self.checkpoint_path(trial.trial_id))
            return model

        def search(self, *fit_args, **fit_kwargs):
            self.trials_run = []
            if role() == "chief":
                if "verbose" in fit_kwargs:
                    self.oracle.verbose = fit_kwargs["verbose"]
                self.save()
                serve_as_chief(self.oracle)
                return
            super().search(*fit_args, **fit_kwargs)

    class KerasTunerFusionHyperModel(FusionHyperModel, keras_tuner.HyperModel):
        __doc__ = FusionHyperModel.__doc__

    KerasTunerFusionHyperModel.__name__ = KerasTunerFusionHyperModel.__qualname__ = "FusionHyperModel"
    KerasTunerFusionHyperModel.__module__ = __name__
    classes = {
        "bayesian": type("FusionBayesianOptimization", (FusionTunerMixin, keras_tuner.BayesianOptimization), {}),
        "hyperband": type("FusionHyperband", (FusionTunerMixin, keras_tuner.Hyperband), {}),
        "random": type("FusionRandomSearch", (FusionTunerMixin, keras_tuner.RandomSearch), {}),
    }
    return {"FusionHyperModel": KerasTunerFusionHyperModel, "tuners": classes, "FullBatches": FullBatches,
            "EpochTimer": EpochTimer,
            "load_trained_weights": load_trained_weights}


def role():
    """This process's part in a distributed search: `"chief"`, `"worker"`, or None (not distributed).

    keras-tuner's rule: distributed when `KERASTUNER_ORACLE_IP` is set; the
    chief is the process whose `KERASTUNER_TUNER_ID` contains `chief`.

    Returns:
        `"chief"`, `"worker"` or None.

    Example:

    ```python
    os.environ.update(KERASTUNER_TUNER_ID="tuner0", KERASTUNER_ORACLE_IP="10.0.0.1", KERASTUNER_ORACLE_PORT="8000")
    role()  # "worker"
    ```
    """
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    for name in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        if not os.environ.get(name):
            raise ValueError(f"distributed search: KERASTUNER_ORACLE_IP is set but {name} is not; expected all "
                             "three of KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT.")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def serve_as_chief(oracle, poll_seconds=0.2):
    """Serve `oracle` to the workers over gRPC until the search is over and every worker has been told so.

    keras-tuner's own chief (`oracle_chief.start_server`) does the same with a
    20-second poll once the end is in sight; this one polls every
    `poll_seconds`.

    Args:
        oracle: the chief's oracle.
        poll_seconds: how often to check whether the search is over.

    Example:

    ```python
    serve_as_chief(tuner.oracle)  # what `search` does in the chief (KERASTUNER_TUNER_ID=chief)
    ```
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    if not server.add_insecure_port(address):
        raise RuntimeError(f"distributed search: the chief cannot listen on {address}.")
    server.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(poll_seconds)
    finally:
        server.stop(grace=1.0)


def _check_data(name, data):
    if not isinstance(data, (list, tuple)) or len(data) != 2 or not isinstance(data[0], dict) \
            or "input_ids" not in data[0]:
        raise ValueError(f"search: {name} must be (encoded, labels) as experiments.prepare returns them; "
                         f"got {type(data).__name__}.")
    n, labels = len(data[0]["input_ids"]), np.asarray(data[1])
    if n == 0 or len(labels) != n:
        raise ValueError(f"search: {name} has {n} examples and {len(labels)} labels; expected the same number, "
                         "at least one.")


def search(hypermodel, train, validation, tuner="bayesian", max_trials=10, directory="fusion_search",
           project_name="search", overwrite=False, compilation_cache_dir="auto", verbose=1, callbacks=(),
           hyperband_factor=3, **tuner_kwargs):
    """Search fusion set-ups: run a keras-tuner tuner over `hypermodel`'s space.

    Running it again with the same `directory` and `project_name` (and
    `overwrite=False`) continues that search: completed trials are kept and not
    run again, a trial that was interrupted runs again, and once `max_trials`
    trials exist none is run. With the keras-tuner environment variables set
    (see `role`), this process is the chief (it serves the trials and returns
    when all are done) or a worker (it runs trials it gets from the chief).

    Args:
        hypermodel: a `FusionHyperModel`.
        train: `(encoded, labels)` of the target's training examples.
        validation: `(encoded, labels)` the objective is measured on.
        tuner: `"bayesian"` (keras-tuner's `BayesianOptimization`, the default),
            `"hyperband"` or `"random"`.
        max_trials: the most trials (all runs of the search together). Hyperband
            also stops when its brackets are done.
        directory: where the search is kept (keras-tuner's project directory is
            `directory/project_name`).
        project_name: the project's name.
        overwrite: start over, deleting an earlier search in the same place.
        compilation_cache_dir: where JAX's persistent compilation cache keeps
            compiled programs (`enable_compilation_cache`): `"auto"` (the
            default) is `directory/xla_cache`, `None` leaves the cache off.
            Trials whose programs were compiled before (by this search, an earlier
            run of it, or a trial differing only in learning rate or epochs)
            then skip XLA compilation. JAX's setting is process-wide. Ignored on
            other backends.
        verbose: 0 quiet; 1 keras-tuner's trial tables and Keras progress.
        callbacks: more Keras callbacks for every trial (deep-copied per trial).
        hyperband_factor: Hyperband's reduction factor.
        **tuner_kwargs: more arguments for the keras-tuner tuner, e.g.
            `num_initial_points` (Bayesian optimization's random trials before
            its Gaussian process guides; here by default a third of
            `max_trials`, at least 2, where keras-tuner would take 3 per
            hyperparameter), `executions_per_trial`, or `seed` (the oracle's;
            by default the hypermodel's seed + 1).

    Returns:
        The tuner; `tuner.oracle.trials` holds the trials (`trial_rows` makes a table).

    Example:

    ```python
    tuner = search(FusionHyperModel(encoder, names, task="vader_tweets"), train, validation,
                   tuner="random", max_trials=6, directory="search")
    best = tuner.oracle.get_best_trials(1)[0]
    best.score, fusion_config_from_values(best.hyperparameters.values)
    ```
    """
    if tuner not in TUNERS:
        raise ValueError(f"search: tuner {tuner!r}; expected one of {list(TUNERS)}.")
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
        raise ValueError(f"search: max_trials {max_trials!r}; expected an integer >= 1.")
    parts = _parts()
    if not isinstance(hypermodel, FusionHyperModel):
        raise ValueError(f"search: hypermodel is a {type(hypermodel).__name__}; expected a FusionHyperModel.")
    if role() != "chief":  # the chief trains nothing, and may be started without the data
        _check_data("train", train)
        _check_data("validation", validation)
    if compilation_cache_dir == "auto":
        compilation_cache_dir = os.path.join(os.fspath(directory), CACHE_DIR)
    if compilation_cache_dir is not None:
        enable_compilation_cache(compilation_cache_dir)
    kwargs = dict(hypermodel=hypermodel, objective=hypermodel.objective, directory=os.fspath(directory),
                  project_name=project_name, overwrite=overwrite)
    kwargs["seed"] = hypermodel.seed + 1  # keras-tuner takes a seed of 0 as "none"
    if tuner == "bayesian":  # keras-tuner's default, 3 random trials per hyperparameter, is 33 here
        kwargs["num_initial_points"] = max(2, max_trials // 3)
    kwargs.update(tuner_kwargs)
    if tuner == "hyperband":
        hypermodel.tuner_sets_epochs = True
        kwargs.update(max_epochs=max(hypermodel.space.epochs), factor=hyperband_factor)
    else:
        hypermodel.tuner_sets_epochs = False
        kwargs["max_trials"] = max_trials
    instance = parts["tuners"][tuner](**kwargs)
    instance.oracle.max_trials = max_trials  # Hyperband's oracle takes no max_trials; it honours one
    instance.search(train, validation, verbose=verbose, callbacks=list(callbacks))
    return instance


# ------------------------------------------------------------------ reports
def trial_rows(tuner):
    """One row per trial, in the order they started: id, status, values, objective and timings.

    Args:
        tuner: the tuner `search` returned (or any keras-tuner tuner).

    Returns:
        A list of dicts with `trial`, `status`, every hyperparameter (None where
        inactive), the objective (named as it is, e.g. `val_accuracy`), and the
        `TRIAL_METRICS`.

    Example:

    ```python
    for row in trial_rows(tuner):
        print(row["trial"], row["val_accuracy"], row["seconds"])
    ```
    """
    oracle = tuner.oracle
    objective = oracle.objective.name
    names = []
    for hp in oracle.get_space().space:
        if hp.name not in names:
            names.append(hp.name)
    order = list(oracle.start_order) + [t for t in oracle.trials if t not in oracle.start_order]
    rows = []
    for trial_id in dict.fromkeys(order):
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        row = {"trial": trial_id, "status": trial.status}
        row.update({name: values.get(name) for name in names})
        row.update({k: v for k, v in values.items() if k.startswith("tuner/")})
        for metric in (objective, *TRIAL_METRICS):
            value = trial.metrics.get_last_value(metric) if trial.metrics.exists(metric) else None
            if value is not None:
                value = int(value) if metric in ("best_epoch", "epochs_run") else float(value)
            row[metric] = value
        rows.append(row)
    return rows


def _columns(rows):
    columns = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def best_trial(tuner):
    """The best completed trial of a search, or None when none completed.

    Args:
        tuner: the tuner `search` returned.

    Returns:
        A keras-tuner `Trial` or None.

    Example:

    ```python
    best = best_trial(tuner)
    best.score, best.hyperparameters.values
    ```
    """
    trials = [t for t in tuner.oracle.get_best_trials(1) if t.status == "COMPLETED" and t.score is not None]
    return trials[0] if trials else None


def write_reports(tuner, directory, adapter_dirs=None, title="Fusion search"):
    """Write a search's reports into `directory`, each file atomically.

    - `trials.csv`: one row per trial (`trial_rows`);
    - `trials.md`: the same as a table, the best set-up and the timings;
    - `trials.png`: the objective over trials, with the best so far;
    - `best_fusion_config.json`: the best trial's `FusionConfig` (what `fuse --fusion-config` reads);
    - `best_trial.json`: the best trial's values, objective and timings.

    The last two are written only when a trial completed.

    Args:
        tuner: the tuner `search` returned.
        directory: where the files go (created if needed).
        adapter_dirs: adapter name -> the directory it was loaded from, for the `fuse`
            command line printed in `trials.md`.
        title: the heading of `trials.md`.

    Returns:
        The paths written.

    Example:

    ```python
    write_reports(tuner, "search_report")
    ```
    """
    from keras_adapterfusion.io.files import atomic_file, write_json

    os.makedirs(directory, exist_ok=True)
    rows = trial_rows(tuner)
    objective = tuner.oracle.objective
    columns = _columns(rows)
    written = []
    path = os.path.join(directory, "trials.csv")
    with atomic_file(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    written.append(path)
    best = best_trial(tuner)
    if best is not None:
        values = best.hyperparameters.values
        config = fusion_config_from_values(values)
        path = os.path.join(directory, "best_fusion_config.json")
        write_json(path, config.to_dict())
        written.append(path)
        best_row = next(r for r in rows if r["trial"] == best.trial_id)
        path = os.path.join(directory, "best_trial.json")
        write_json(path, {"trial": best.trial_id, "objective": objective.name, "direction": objective.direction,
                          "score": best.score, "values": values, "adapters": str(values["adapters"]).split(","),
                          "fusion_config": config.to_dict(),
                          **{k: best_row.get(k) for k in TRIAL_METRICS}})
        written.append(path)
    path = os.path.join(directory, "trials.md")
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(_markdown(rows, columns, objective, best, adapter_dirs, title))
    written.append(path)
    path = os.path.join(directory, "trials.png")
    with atomic_file(path) as tmp:
        plot_trials(rows, objective, tmp)
    written.append(path)
    return written


def _markdown(rows, columns, objective, best, adapter_dirs, title):
    done = [r for r in rows if r["status"] == "COMPLETED" and r.get(objective.name) is not None]
    lines = [f"# {title}", "",
             f"{len(rows)} trials ({len(done)} completed); objective: {objective.name} ({objective.direction}).", ""]
    shown = [c for c in columns if any(r.get(c) is not None for r in rows)]
    lines.append("| " + " | ".join(shown) + " |")
    lines.append("|" + "---|" * len(shown))
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in shown) + " |")
    lines.append("")
    seconds = [r["seconds"] for r in done if r.get("seconds") is not None]
    if seconds:
        lines.append(f"Wall time per trial: median {np.median(seconds):.1f} s, mean {np.mean(seconds):.1f} s, "
                     f"total {np.sum(seconds):.1f} s.")
    ratios = [r["first_epoch_seconds"] / r["later_epoch_seconds"] for r in done
              if r.get("first_epoch_seconds") and r.get("later_epoch_seconds")]
    if ratios:
        lines.append(f"First epoch / later epochs (start-up cost), median over trials: {np.median(ratios):.2f}.")
    if best is not None:
        values = best.hyperparameters.values
        lines += ["", f"## Best: trial {best.trial_id}, {objective.name} {best.score:.4f}", ""]
        lines += [f"- {k}: {v}" for k, v in sorted(values.items()) if not k.startswith("tuner/")]
        config = fusion_config_from_values(values)
        lines += ["", "Fusion config (`best_fusion_config.json`):", "", "```json", config.to_json(), "```"]
        names = str(values["adapters"]).split(",")
        if len(names) > 1:
            dirs = [(adapter_dirs or {}).get(n, f"<{n}>") for n in names]
            epochs = values.get("epochs", values.get("tuner/epochs"))
            lines += ["", "To train it:", "", "```",
                      f"keras-adapterfusion fuse --adapters {' '.join(dirs)} --fusion-config best_fusion_config.json "
                      f"--learning-rate {values['learning_rate']:.3g} --batch-size {values['batch_size']} "
                      f"--epochs {epochs} ...", "```"]
        else:
            lines += ["", f"The best set-up uses one adapter ({names[0]}) with a new head: no fusion."]
    return "\n".join(lines) + "\n"


def plot_trials(rows, objective, path):
    """Plot the objective of each trial in the order they started, and the best so far, as a PNG.

    Args:
        rows: `trial_rows(tuner)`.
        objective: the keras-tuner `Objective` (its name and direction).
        path: the PNG file to write.

    Returns:
        `path`.

    Example:

    ```python
    plot_trials(trial_rows(tuner), tuner.oracle.objective, "trials.png")
    ```
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    done = [(i, r) for i, r in enumerate(rows) if r.get(objective.name) is not None]  # ids count from 0 as started
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if done:
        better = min if objective.direction == "min" else max
        x = [i for i, _ in done]
        y = [r[objective.name] for _, r in done]
        ax.step(x, list(itertools.accumulate(y, better)), where="post", color="0.4", label="best so far")
        for preset, marker in (("dynamic", "o"), ("static", "s")):
            points = [(i, r[objective.name]) for i, r in done if r.get("preset") == preset]
            if points:
                ax.plot(*zip(*points), marker, linestyle="none", label=f"trial ({preset})")
        others = [(i, r[objective.name]) for i, r in done if r.get("preset") not in ("dynamic", "static")]
        if others:
            ax.plot(*zip(*others), "^", linestyle="none", label="trial")
        ax.legend(loc="best", fontsize="small")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial (its id: in the order started, from 0)")
    ax.set_ylabel(objective.name)
    ax.set_title(f"{objective.name} over trials")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    return path
