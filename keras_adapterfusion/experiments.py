"""Running one stage on one task: data, training, evaluation and artefacts.

The command line (`keras_adapterfusion.cli`) and the demo (`keras_adapterfusion.demo`)
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

import json
import os
import sys

import numpy as np

STAGE_TO_OPTIMIZER = {"head_only": "head_only", "finetune": "full_finetune", "adapter": "adapter",
                      "fusion": "fusion"}


def progress_verbosity():
    """Keras `verbose`: progress bars on a terminal, one line per epoch otherwise."""
    return 1 if sys.stdout.isatty() else 2


def default_cache_dir():
    return os.path.join(os.environ.get("KERAS_ADAPTERFUSION_CACHE", os.path.expanduser("~/.cache/keras_adapterfusion")),
                        "tokenized")


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
        balanced: draw the sample with the same number of examples per class.
    """
    from keras_adapterfusion.tasks import get_task, tokenize

    task = get_task(task)
    inputs, labels = task.load(split, data_dir=data_dir, limit=limit)
    if sample is not None and sample < len(labels):
        index = sample_indices(labels, sample, seed, balanced)
        inputs, labels = [inputs[i] for i in index], labels[index]
    encoded = tokenize(tokenizer, task, inputs, max_length=max_length,
                       cache_dir=cache_dir if cache_dir is not None else default_cache_dir())
    return encoded, labels


def dataset(encoded, labels, batch_size, shuffle=False, seed=0):
    from keras_adapterfusion.tasks import make_dataset

    return make_dataset(encoded, labels, batch_size=batch_size, shuffle=shuffle, seed=seed,
                        padding="longest" if encoded["input_ids"][0].ndim == 2 else "buckets")


def fit(model, stage, train, epochs, learning_rate=None, steps_per_epoch=None, verbose=None):
    """Compile a builder's model for its stage (AdamW, linear decay) and fit it. Returns the losses."""
    from keras_adapterfusion import training

    steps = steps_per_epoch if steps_per_epoch is not None else int(train.cardinality())
    if steps <= 0:  # a dataset of unknown size: count once
        steps = sum(1 for _ in train)
    training.compile_for_stage(model, STAGE_TO_OPTIMIZER[stage], total_steps=max(1, steps * epochs),
                               learning_rate=learning_rate)
    history = model.fit(train, epochs=epochs, verbose=progress_verbosity() if verbose is None else verbose)
    return [float(v) for v in history.history["loss"]]


def evaluate(model, task, encoded, labels, batch_size=64):
    """The task's metrics of `model` on tokenized data.

    Every batch is padded to the longest example of the whole set, so the
    prediction function is traced once rather than once per batch shape.
    """
    from keras_adapterfusion.tasks import compute_metrics, get_task

    task = get_task(task)
    x = {k: _pad([np.asarray(v) for v in encoded[k]]) for k in encoded}
    logits = np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)
    return compute_metrics(task.metrics, np.asarray(labels), logits)


def _pad(values):
    """Stack ragged int arrays ([tokens] or [choices, tokens]) with zero padding on the last axis."""
    longest = max(v.shape[-1] for v in values)
    out = np.zeros((len(values),) + values[0].shape[:-1] + (longest,), np.int32)
    for i, v in enumerate(values):
        out[i, ..., : v.shape[-1]] = v
    return out


def write_json(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_run(run_dir):
    path = os.path.join(run_dir, "run.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir}: not a run directory (no run.json)")
    with open(path) as f:
        return json.load(f)


def rebuild_model(run_dir, encoder=None):
    """The model a run directory describes, on `encoder` (loaded from the run's encoder if None)."""
    import keras

    from keras_adapterfusion import builders, load_encoder, saving

    run = read_run(run_dir)
    if run["stage"] == "finetune":
        return keras.saving.load_model(os.path.join(run_dir, "model.keras")), run
    encoder = encoder or load_encoder(run["encoder"])
    head = saving.load_head(os.path.join(run_dir, "head"), encoder)
    if run["stage"] == "head_only":
        return builders.build_head_only_model(encoder, head=head), run
    if run["stage"] == "adapter":
        name = saving.load_adapter(encoder, os.path.join(run_dir, "adapter"))
        return builders.build_adapter_model(encoder, name, head=head), run
    names = [saving.load_adapter(encoder, os.path.join(run_dir, "adapters", n)) for n in run["adapters"]]
    saving.load_fusion(encoder, os.path.join(run_dir, "fusion"))
    return builders.build_fusion_model(encoder, names, head=head), run
