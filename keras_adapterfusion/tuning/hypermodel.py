"""`FusionHyperModel`: the keras-tuner hypermodel of stage 2 (fusion set-ups over trained adapters).

`build` makes one trial's model on a copy of the loaded encoder that holds only
the trial's adapters (`backbones.copy_encoder`); `fit` compiles and trains it
and returns the objective with the trial's timings. The space it declares is
`tuning.space.FusionSearchSpace`; `tuning.tuners.search` runs a tuner over it.

Every training batch has one shape (`tasks.batches.FullBatches`) and the
learning rate and the length of its decay are optimizer variables
(`LinearDecay.hold_in`), so trials that differ only in them run the same
compiled program.

Example:

```python
from keras_adapterfusion.tuning.hypermodel import FusionHyperModel

hypermodel = FusionHyperModel(encoder, ["movie", "news", "subj"], task="vader_tweets")
```
"""

import time

import keras
import keras_tuner
import numpy as np

from keras_adapterfusion.backbones.copying import copy_encoder
from keras_adapterfusion.configs import check_fusable
from keras_adapterfusion.models.adapter_model import AdapterModel
from keras_adapterfusion.models.trainable import make_spec
from keras_adapterfusion.tasks import Task, get_task
from keras_adapterfusion.tasks.batches import FullBatches
from keras_adapterfusion.training.builders import build_fusion_model, resolve_encoder
from keras_adapterfusion.training.callbacks import EpochTimer, ValidationMetrics
from keras_adapterfusion.training.losses import compile_arguments, make_head
from keras_adapterfusion.training.optimizers import LinearDecay, make_optimizer
from keras_adapterfusion.training.runs import progress_verbosity
from keras_adapterfusion.tuning.space import FusionSearchSpace, trial_seed

__all__ = ["FusionHyperModel"]


class FusionHyperModel(keras_tuner.HyperModel):
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

    def __init__(self, encoder, adapter_names, num_labels=None, space=None, task=None, seed=0,
                 dtype_policy=None, distribution=None, eval_batch_size=64, name="fusion"):
        super().__init__(name=name, tunable=True)
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
        return copy_encoder(self.encoder, adapters, dtype=self.dtype_policy)

    def build(self, hp):
        """The uncompiled stage-2 model of one trial (fusion layers and a new head train).

        Args:
            hp: the trial's `keras_tuner.HyperParameters`.

        Returns:
            An `AdapterModel` (a fusion over the trial's adapters, or one frozen adapter).
        """
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
        return build_fusion_model(encoder, list(setup.adapters), head=head,
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
        try:
            setup = self.setup(hp)
            epochs = setup.epochs if epochs is None else int(epochs)
            batches = FullBatches(train[0], train[1], setup.batch_size, self.seed)
            remaining = max(1, epochs - initial_epoch)
            schedule = LinearDecay(setup.learning_rate * remaining / epochs, max(1, len(batches) * remaining))
            optimizer = make_optimizer("fusion", learning_rate=schedule)
            schedule.hold_in(optimizer)
            model.compile(optimizer=optimizer, **compile_arguments(model.head))
            timer = EpochTimer()
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
