"""Mixing batches of several tasks into one stream for MT-A (multi-task adapters)."""

SAMPLING_RULES = ("proportional", "uniform", "temperature")


def sampling_weights(sizes, rule="proportional", temperature=2.0):
    """Probabilities of drawing the next batch from each task.

    Args:
        sizes: dict task -> number of batches (or examples) of that task.
        rule: `"proportional"` (p ∝ n), `"uniform"` (p = 1/T) or `"temperature"`
            (p ∝ n^(1/temperature), between the two).
        temperature: used by the `"temperature"` rule.
    """
    if rule not in SAMPLING_RULES:
        raise ValueError(f"sampling rule: got {rule!r}; expected one of {list(SAMPLING_RULES)}.")
    if not sizes or any((not isinstance(n, int)) or n <= 0 for n in sizes.values()):
        raise ValueError(f"sampling_weights: sizes must map tasks to positive ints; got {sizes!r}.")
    if rule == "uniform":
        raw = {t: 1.0 for t in sizes}
    elif rule == "proportional":
        raw = {t: float(n) for t, n in sizes.items()}
    else:
        if temperature <= 0:
            raise ValueError(f"sampling_weights: temperature must be > 0; got {temperature}.")
        raw = {t: float(n) ** (1.0 / temperature) for t, n in sizes.items()}
    total = sum(raw.values())
    return {t: v / total for t, v in raw.items()}


def mix_task_datasets(datasets, rule="proportional", sizes=None, temperature=2.0, seed=None, tasks=None):
    """One `tf.data.Dataset` of batches drawn from several tasks by a sampling rule.

    Each element is one batch of one task, `(x, y)` with `x["task_id"]` set to the
    task's index in `tasks` (the order `MultiTaskModel.tasks` uses). An epoch holds
    as many batches as the tasks together (`sum(sizes)`).

    Args:
        datasets: dict task -> batched `tf.data.Dataset` of `(x, y)`, `x` a dict of
            int tensors with the same keys for every task.
        rule: see `sampling_weights`.
        sizes: dict task -> batches per epoch; by default each dataset's cardinality.
        temperature: for the `"temperature"` rule.
        seed: seed of the sampling (a fixed seed gives a fixed order).
        tasks: task order for `task_id`; default `list(datasets)`.
    """
    import tensorflow as tf

    tasks = list(tasks or datasets)
    if set(tasks) != set(datasets):
        raise ValueError(f"mix_task_datasets: tasks {tasks} do not match the datasets {list(datasets)}.")
    if sizes is None:
        sizes = {}
        for t in tasks:
            n = int(datasets[t].cardinality())
            if n < 0:
                raise ValueError(
                    f"mix_task_datasets: the size of task {t!r} is unknown; pass sizes={{task: batches}}."
                )
            sizes[t] = n
    weights = sampling_weights({t: sizes[t] for t in tasks}, rule, temperature)

    def tag(index):
        def add_task(x, y):
            x = dict(x)
            x["task_id"] = tf.fill(tf.shape(y)[:1], tf.constant(index, tf.int32))
            return x, y

        return add_task

    streams = [datasets[t].map(tag(i)).repeat() for i, t in enumerate(tasks)]
    mixed = tf.data.Dataset.sample_from_datasets(streams, weights=[weights[t] for t in tasks], seed=seed)
    return mixed.take(sum(sizes.values()))
