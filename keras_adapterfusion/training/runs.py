"""Running one stage on one task: data, training, evaluation and artefacts.

The command line (`keras_adapterfusion.cli`) and the demo (`keras_adapterfusion.applications.demo`)
are thin layers over these functions. A *run directory* holds what a stage
produced:

```
run.json        what ran: stage, task, encoder, arguments, adapters used
metrics.json    metrics on the evaluation split (and the training losses)
adapter/        the trained adapter (train-adapter), native format
fusion/         the trained fusion (fuse), native format
adapters/<n>/   copies of the adapters a fusion uses (fuse)
head/           the trained head
model.keras     the whole model (finetune only: its encoder changed)
```
"""

import os
import sys

import numpy as np

from keras_adapterfusion.io import json_field, saved_directory
from keras_adapterfusion.names import check_name
from keras_adapterfusion.training.callbacks import ValidationMetrics
from keras_adapterfusion.training.run_files import STAGE_TO_OPTIMIZER, read_run, run_task  # noqa: F401  (runs' names)
from keras_adapterfusion.training.evaluation import evaluate, predict_logits  # noqa: F401  (runs' names)


def progress_verbosity():
    """Keras `verbose`: progress bars on a terminal, one line per epoch otherwise."""
    return 1 if sys.stdout.isatty() else 2


def default_cache_dir():
    """Where tokenized data is cached: `tokenized/` in `$KERAS_ADAPTERFUSION_CACHE` (`~/.cache/keras_adapterfusion`)."""
    return os.path.join(os.environ.get("KERAS_ADAPTERFUSION_CACHE", os.path.expanduser("~/.cache/keras_adapterfusion")),
                        "tokenized")


def seed_everything(seed):
    """Make what follows repeatable: the same `seed` gives the same numbers on every run.

    Seeds Python's `random`, NumPy, TensorFlow and the Keras backend
    (`keras.utils.set_random_seed`), and on the TensorFlow backend turns on
    TensorFlow's op determinism (`tf.config.experimental.enable_op_determinism`),
    which stays on for the rest of the process.

    Call it after loading the data (building a dataset the first time may draw
    from the global random state) and *before* building or loading any model:
    every `Dropout` layer, the encoder's included, takes its seed from Python's
    `random` when it is created, so an encoder loaded before seeding drops out
    differently on every run. That, not the arithmetic, is what made two runs of
    `head-only --seed 0` differ.

    What it costs: on the CPU, nothing measurable. Training MiniLM on 2 CPU
    cores (TensorFlow 2.21, 256 examples, 2 epochs, alternating runs in one
    process) took 5.06 s with op determinism and 5.11 s without for a head,
    18.0 s and 17.5 s for full fine-tuning: within the machine's noise (about
    10%). On the CPU the seeding alone already repeats the numbers (the same
    losses with and without op determinism); op determinism matters on a GPU,
    where TensorFlow then uses deterministic kernels (slower for some ops, e.g.
    scatter and segment sums in embedding gradients) and raises an error for ops
    that have none. It also makes tf.data run stateful map functions serially,
    and TensorFlow then logs a harmless error line when Keras slices NumPy
    arrays ("NodeDef mentions attribute use_unbounded_threadpool"), which is why
    `evaluate` batches with tf.data on TensorFlow.
    On JAX nothing more is done: XLA on the CPU repeats its numbers; on a GPU,
    set `XLA_FLAGS=--xla_gpu_deterministic_ops=true` before JAX starts. The
    numbers repeat on the same machine, software versions and thread count,
    not across them.

    Args:
        seed: an integer from 0 to 2**32 - 1 (NumPy's range).
    """
    import keras

    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def sample_indices(labels, size, seed=0, balanced=False):
    """`size` example indices drawn at random (seeded), sorted.

    With `balanced`, every class gets the same share (classes with fewer
    examples give all they have, and the rest is drawn from the others).
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    if size >= n:
        return np.arange(n)
    if not balanced:
        return np.sort(rng.choice(n, size=size, replace=False))
    classes = np.unique(labels)
    per_class = size // len(classes)
    chosen = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        chosen.extend(rng.choice(members, size=min(per_class, len(members)), replace=False))
    rest = np.setdiff1d(np.arange(n), chosen)
    chosen.extend(rng.choice(rest, size=size - len(chosen), replace=False))
    return np.sort(np.asarray(chosen))


def prepare(task, tokenizer, split, max_length=128, limit=None, sample=None, seed=0, data_dir=None,
            cache_dir=None, balanced=False):
    """Tokenized inputs and labels of a task split.

    Args:
        limit: take the first `limit` examples of the split.
        sample: then draw `sample` examples at random (seeded by `seed`): the
            low-resource training sets.
        balanced: draw the sample with the same number of examples per class
            (single-label tasks only; `ValueError` otherwise).
    """
    from keras_adapterfusion.tasks import get_task, tokenize

    task = get_task(task)
    if balanced and task.kind != "single_label":
        raise ValueError(f"prepare.balanced: task {task.name!r} is {task.kind}; expected a single-label task "
                         "(one class per example)")
    inputs, labels = task.load(split, data_dir=data_dir, limit=limit)
    if sample is not None and sample < len(labels):
        index = sample_indices(labels, sample, seed, balanced)
        inputs, labels = [inputs[i] for i in index], labels[index]
    encoded = tokenize(tokenizer, task, inputs, max_length=max_length,
                       cache_dir=cache_dir if cache_dir is not None else default_cache_dir())
    return encoded, labels


def dataset(encoded, labels, batch_size, shuffle=False, seed=0):
    """Batches for `fit`: length buckets when they pay, else every batch padded alike.

    On TensorFlow (`tf.data`) buckets always pay. On the other backends every
    distinct batch shape compiles the training step anew (XLA), so buckets are
    used only when each of the four holds at least 16 batches; smaller sets are
    padded to their longest example (one shape).
    """
    from keras_adapterfusion.tasks import make_dataset
    from keras_adapterfusion.tasks.pipeline import default_data_path

    path = default_data_path()
    many = len(labels) >= 4 * 16 * batch_size
    buckets = encoded["input_ids"][0].ndim == 1 and (path == "tf.data" or many)
    return make_dataset(encoded, labels, batch_size=batch_size, shuffle=shuffle, seed=seed,
                        padding="buckets" if buckets else "longest", data_path=path)


def fit(model, stage, train, epochs, learning_rate=None, steps_per_epoch=None, verbose=None, validation=None,
        callbacks=()):
    """Compile a builder's model for its stage (AdamW, linear decay) and fit it.

    Args:
        validation: `(task, encoded, labels)`: after every epoch the task's metrics and
            the loss on them are computed and logged as `val_<name>` (see
            `ValidationMetrics`), so they show in the progress output and the history,
            and callbacks such as `EarlyStopping(monitor="val_loss")` can use them.
        callbacks: more Keras callbacks (they see the validation logs).

    Returns:
        The history: metric name -> one value per epoch (`loss`, `val_loss`, `val_accuracy`, ...).
    """
    from keras_adapterfusion.training import optimizers as training

    steps = steps_per_epoch if steps_per_epoch is not None else _batches_per_epoch(train)
    training.compile_for_stage(model, STAGE_TO_OPTIMIZER[stage], total_steps=max(1, steps * epochs),
                               learning_rate=learning_rate)
    callbacks = ([ValidationMetrics(*validation)] if validation is not None else []) + list(callbacks)
    history = model.fit(train, epochs=epochs, verbose=progress_verbosity() if verbose is None else verbose,
                        callbacks=callbacks)
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def _batches_per_epoch(train):
    """Batches in one epoch of a `tf.data.Dataset` or a `keras.utils.PyDataset` (`make_dataset` gives either)."""
    if hasattr(train, "cardinality"):  # tf.data
        steps = int(train.cardinality())
        return steps if steps > 0 else sum(1 for _ in train)  # unknown size: count once
    return len(train)


def rebuild_model(run_dir, encoder=None):
    """The model a run directory describes, on `encoder` (loaded from the run's encoder if None)."""
    import keras

    from keras_adapterfusion import load_encoder
    from keras_adapterfusion.training import builders
    from keras_adapterfusion.formats import native as saving

    run = read_run(run_dir)
    run_dir = saved_directory(run_dir)
    if run["stage"] == "finetune":
        return keras.saving.load_model(os.path.join(run_dir, "model.keras")), run
    encoder = encoder or load_encoder(run["encoder"])
    head = saving.load_head(os.path.join(run_dir, "head"), encoder)
    if run["stage"] == "head_only":
        return builders.build_head_only_model(encoder, head=head), run
    if run["stage"] == "adapter":
        name = saving.load_adapter(encoder, os.path.join(run_dir, "adapter"))
        return builders.build_adapter_model(encoder, name, head=head), run
    path = os.path.join(run_dir, "run.json")
    adapters = json_field(run, "adapters", path, list)
    for n in adapters:
        saving.load_adapter(encoder, os.path.join(run_dir, "adapters", check_name(n, f"{path}: adapters")))
    setup = saving.load_fusion(encoder, os.path.join(run_dir, "fusion"))
    return builders.build_fusion_model(encoder, setup.adapters, head=head, fusion_name=setup.fusion_name), run
