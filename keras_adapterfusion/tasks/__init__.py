"""Tasks and their data: the task registry, offline TFDS builders, tokenization into
tf.data, metrics, and mixing task batches for multi-task training.

TensorFlow and tensorflow-datasets are imported inside the functions and modules
that need them (`tasks.offline`, `tasks.pipeline.make_dataset`, ...), so importing
this package does not import them.
"""

from keras_adapterfusion.tasks.mixing import SAMPLING_RULES, mix_task_datasets, sampling_weights
from keras_adapterfusion.tasks.pipeline import compute_metrics, make_dataset, tokenize
from keras_adapterfusion.tasks.registry import (
    MISSING_FROM_TFDS,
    TASKS,
    Task,
    get_task,
    list_tasks,
    register_task,
)

__all__ = [
    "MISSING_FROM_TFDS",
    "SAMPLING_RULES",
    "TASKS",
    "Task",
    "compute_metrics",
    "get_task",
    "list_tasks",
    "make_dataset",
    "mix_task_datasets",
    "register_task",
    "sampling_weights",
    "tokenize",
]
