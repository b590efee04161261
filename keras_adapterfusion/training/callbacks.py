"""Every Keras callback of the package.

| callback | what it does |
|---|---|
| `ValidationMetrics` | after every epoch, the task's metrics and loss on validation data as `val_<name>` |
| `FusionAttentionCallback` | snapshots of the mean fusion attention (heatmap and JSON) every few epochs |
| `EpochTimer` | seconds per epoch (a tuning trial's timings) |
| `SaveBestTrained` | the trained weights (not the frozen encoder's) at the best epoch so far |
| `TrialHooks` | forwards Keras's epoch and batch events to a keras-tuner tuner's public hooks |
"""

import os
import time

import keras
import numpy as np

from keras_adapterfusion.analysis.attentions import collect_fusion_attentions, fusion_setup, plot_fusion_heatmap
from keras_adapterfusion.formats.native import save_trained_weights
from keras_adapterfusion.io.files import write_json
from keras_adapterfusion.training.evaluation import predict_logits, task_metrics, validation_loss


class ValidationMetrics(keras.callbacks.Callback):
    """After every epoch: the task's metrics and loss on validation data, as `val_<name>` in the logs.

    So they show in the progress output and the history, and callbacks such as
    `EarlyStopping(monitor="val_loss")` that come after it can use them.

    Args:
        task: the `Task` (its metrics and kind).
        encoded: tokenized validation inputs (`tasks.tokenize`).
        labels: their labels.

    Example:

    ```python
    model.fit(train, epochs=3, callbacks=[ValidationMetrics(task, encoded, labels)])
    ```
    """

    def __init__(self, task, encoded, labels):
        super().__init__()
        self.task, self.encoded, self.labels = task, encoded, np.asarray(labels)

    def on_epoch_end(self, epoch, logs=None):
        logits = predict_logits(self.model, self.encoded)
        if logs is not None:
            logs["val_loss"] = validation_loss(self.task, self.labels, logits)
            for name, value in task_metrics(self.task, self.labels, logits).items():
                logs[f"val_{name}"] = value


class FusionAttentionCallback(keras.callbacks.Callback):
    """After every `every` epochs, writes `epoch_{n}.png` and `epoch_{n}.json` with the mean
    fusion attention of the model being trained over `dataset`.

    Args:
        dataset: validation data, as `collect_fusion_attentions` takes it (arrays,
            `(x, y)` arrays, or batches); read anew every snapshot.
        directory: where the files go.
        every: epochs between two snapshots.
        steps: batches per snapshot.
    """

    def __init__(self, dataset, directory, every=1, steps=None):
        super().__init__()
        if hasattr(dataset, "__next__"):
            raise ValueError("FusionAttentionCallback: got an iterator, which the second snapshot would find empty; "
                             "pass arrays, (x, y) arrays, a tf.data.Dataset, a PyDataset or a list of batches.")
        self.dataset = dataset
        self.directory = directory
        self.every = every
        self.steps = steps
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        names = list(fusion_setup(self.model).adapters)
        mean = collect_fusion_attentions(self.model, self.dataset, self.steps, verbose=0)
        os.makedirs(self.directory, exist_ok=True)
        stem = os.path.join(self.directory, f"epoch_{epoch + 1}")
        plot_fusion_heatmap(mean, names, stem + ".png", title=f"AdapterFusion attention, epoch {epoch + 1}")
        write_json(stem + ".json", {"adapters": names, "mean_attention": mean.tolist()})
        self.history.append(mean)


class EpochTimer(keras.callbacks.Callback):
    """Seconds per epoch (training and the validation after it), in `seconds`.

    Example:

    ```python
    timer = EpochTimer()
    model.fit(train, epochs=3, callbacks=[timer])
    timer.seconds  # [first epoch (with compilation), second, third]
    ```
    """

    def __init__(self):
        super().__init__()
        self.seconds = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        """Start the epoch's clock."""
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        """Record the epoch's seconds."""
        self.seconds.append(time.perf_counter() - self._start)


class SaveBestTrained(keras.callbacks.Callback):
    """Save the trained weights (not the frozen encoder's) at the best epoch so far.

    The file is `formats.native.save_trained_weights`'s (safetensors, keyed by
    variable path), written atomically.

    Args:
        objective: a keras-tuner `Objective` (its `name` is read from the logs, `better_than` compares).
        path: the file.

    Example:

    ```python
    model.fit(train, epochs=3, callbacks=[ValidationMetrics(task, *validation),
                                          SaveBestTrained(keras_tuner.Objective("val_accuracy", "max"), path)])
    ```
    """

    def __init__(self, objective, path):
        super().__init__()
        self.objective, self.path = objective, path
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        """Save the trained weights if this epoch is the best so far."""
        value = (logs or {}).get(self.objective.name)
        if value is None or (self.best is not None and not self.objective.better_than(value, self.best)):
            return
        self.best = value
        save_trained_weights(self.model, self.path)


class TrialHooks(keras.callbacks.Callback):
    """Forward Keras's epoch and batch events to a keras-tuner tuner's public hooks for one trial.

    `tuner.on_epoch_begin(trial, model, epoch, logs)`, `on_batch_begin`,
    `on_batch_end` and `on_epoch_end`: what a subclass of a tuner overrides to
    watch its trials.

    Args:
        tuner: the tuner.
        trial: the trial being trained.

    Example:

    ```python
    model.fit(train, epochs=3, callbacks=[TrialHooks(tuner, trial)])
    ```
    """

    def __init__(self, tuner, trial):
        super().__init__()
        self.tuner, self.trial = tuner, trial

    def on_epoch_begin(self, epoch, logs=None):
        """Calls `tuner.on_epoch_begin(trial, model, epoch, logs)`."""
        self.tuner.on_epoch_begin(self.trial, self.model, epoch, logs=logs)

    def on_batch_begin(self, batch, logs=None):
        """Calls `tuner.on_batch_begin(trial, model, batch, logs)`."""
        self.tuner.on_batch_begin(self.trial, self.model, batch, logs)

    def on_batch_end(self, batch, logs=None):
        """Calls `tuner.on_batch_end(trial, model, batch, logs)`."""
        self.tuner.on_batch_end(self.trial, self.model, batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        """Calls `tuner.on_epoch_end(trial, model, epoch, logs)`."""
        self.tuner.on_epoch_end(self.trial, self.model, epoch, logs=logs)
