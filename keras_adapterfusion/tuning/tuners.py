"""The tuners of a fusion search and `search`, which runs one (keras-tuner's public API).

`FusionTuner` is what the package adds to a keras-tuner tuner; each algorithm
is that and keras-tuner's own class, as keras-tuner lays out an algorithm:

| tuner | class |
|---|---|
| `"bayesian"` (the default) | `FusionBayesianOptimization` |
| `"hyperband"` | `FusionHyperband` |
| `"random"` | `FusionRandomSearch` |

Example:

```python
from keras_adapterfusion.tuning.tuners import search

tuner = search(hypermodel, train, validation, tuner="random", max_trials=6, directory="search")
```
"""

import contextlib
import copy
import gc
import os

import keras
import keras_tuner
import numpy as np

from keras_adapterfusion.formats.native import load_trained_weights
from keras_adapterfusion.training.callbacks import SaveBestTrained, TrialHooks
from keras_adapterfusion.tuning.distribution import role, serve_as_chief
from keras_adapterfusion.tuning.hypermodel import FusionHyperModel
from keras_adapterfusion.tuning.space import CACHE_DIR, TUNERS

__all__ = ["TUNER_CLASSES", "FusionBayesianOptimization", "FusionHyperband", "FusionRandomSearch", "FusionTuner",
           "enable_compilation_cache", "search"]

CHECKPOINT_FILE = "trained.weights.safetensors"  # a trial's trained weights at its best epoch


class FusionTuner:
    """What the package changes in a keras-tuner tuner (mixed in before keras-tuner's class).

    - The space is declared without building a model (the hypermodel's
      `declare_hyperparameters`).
    - Each trial saves only its trained weights (fusion and head, not the frozen
      encoder) at its best epoch (`checkpoint_path`), and Hyperband continues a
      trial from the earlier round's.
    - The chief of a distributed search serves trials and ends as soon as the
      last worker is done (`distribution.serve_as_chief`).
    - `trials_run` lists the trials this tuner ran in its last `search`.

    Every trial runs through keras-tuner's public hooks: `run_trial` builds the
    model (`hypermodel.build` after `keras.backend.clear_session()`, in the
    tuner's `distribution_strategy` if any), fits it (`hypermodel.fit`), and the
    tuner's `on_epoch_begin`/`on_epoch_end`/`on_batch_*` see each epoch (`TrialHooks`).
    """

    trials_run = ()

    def _populate_initial_space(self):  # keras-tuner's hook for the space (else it builds a model)
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def checkpoint_path(self, trial_id):
        """The file of trial `trial_id`'s trained weights at its best epoch."""
        return os.path.join(self.get_trial_dir(trial_id), CHECKPOINT_FILE)

    def new_model(self, hp):
        """A fresh model of `hp`'s set-up (Keras's global state cleared first, as keras-tuner does)."""
        keras.backend.clear_session()
        gc.collect()
        strategy = getattr(self, "distribution_strategy", None)
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = self.hypermodel.build(hp)
        if self.max_model_size and model.count_params() > self.max_model_size:
            raise keras_tuner.errors.FailedTrialError(f"Oversized model: {model.count_params()} parameters "
                                                      f"(max_model_size={self.max_model_size}). Skip model.")
        return model

    def run_trial(self, trial, *args, **kwargs):
        """Build and fit the trial's model `executions_per_trial` times; returns the fits' results."""
        self.trials_run.append(trial.trial_id)
        hp = trial.hyperparameters
        if "tuner/epochs" in hp.values:
            kwargs["epochs"] = hp.values["tuner/epochs"]
            kwargs["initial_epoch"] = hp.values["tuner/initial_epoch"]
        checkpoint = SaveBestTrained(self.oracle.objective, self.checkpoint_path(trial.trial_id))
        original = kwargs.pop("callbacks", [])
        results = []
        for _ in range(self.executions_per_trial):
            try:
                callbacks = copy.deepcopy(original)
            except Exception as e:
                raise ValueError(f"search: callbacks must be deep-copyable (each trial gets its own copy); "
                                 f"copying {original!r} failed: {e}") from e
            model = self.new_model(hp)
            if "tuner/trial_id" in hp.values:  # Hyperband: continue from the earlier round's trial
                load_trained_weights(model, self.checkpoint_path(hp.values["tuner/trial_id"]))
            callbacks += [TrialHooks(self, trial), checkpoint]
            results.append(self.hypermodel.fit(hp, model, *args, **dict(kwargs, callbacks=callbacks)))
        return results

    def load_model(self, trial):
        """The trial's model with its trained weights at its best epoch."""
        model = self.new_model(trial.hyperparameters)
        load_trained_weights(model, self.checkpoint_path(trial.trial_id))
        return model

    def search(self, *fit_args, **fit_kwargs):
        """keras-tuner's `search`; in the chief of a distributed search, serve the trials instead."""
        self.trials_run = []
        if role() == "chief":
            if "verbose" in fit_kwargs:
                self.oracle.verbose = fit_kwargs["verbose"]
            self.save()
            serve_as_chief(self.oracle)
            return
        super().search(*fit_args, **fit_kwargs)


class FusionBayesianOptimization(FusionTuner, keras_tuner.BayesianOptimization):
    """keras-tuner's Bayesian optimization over a `FusionHyperModel` (see `FusionTuner`)."""


class FusionHyperband(FusionTuner, keras_tuner.Hyperband):
    """keras-tuner's Hyperband over a `FusionHyperModel` (see `FusionTuner`)."""


class FusionRandomSearch(FusionTuner, keras_tuner.RandomSearch):
    """keras-tuner's random search over a `FusionHyperModel` (see `FusionTuner`)."""


TUNER_CLASSES = {"bayesian": FusionBayesianOptimization, "hyperband": FusionHyperband,
                 "random": FusionRandomSearch}


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
    if keras.backend.backend() != "jax":
        return False
    import jax  # only on JAX
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


def _check_data(name, data):
    if not isinstance(data, (list, tuple)) or len(data) != 2 or not isinstance(data[0], dict) \
            or "input_ids" not in data[0]:
        raise ValueError(f"search: {name} must be (encoded, labels) as training.runs.prepare returns them; "
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
    instance = TUNER_CLASSES[tuner](**kwargs)
    instance.oracle.max_trials = max_trials  # Hyperband's oracle takes no max_trials; it honours one
    instance.search(train, validation, verbose=verbose, callbacks=list(callbacks))
    return instance
