"""Tasks and their data: the task registry, your own data (`from_files`, `from_pandas`,
`from_lists`), the offline datasets (plain files, and TFDS builders), tokenization into
batches (`tf.data`, or a `PyDataset` on any backend), metrics, and mixing task batches
for multi-task training.

TensorFlow, tensorflow-datasets and Keras are imported inside the functions and
modules that need them (`tasks.offline`, `tasks.batches`, the `tf.data` path of
`make_dataset`, ...), so importing this package imports none of them.
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
from keras_adapterfusion.tasks.user_data import DataError, from_files, from_lists, from_pandas, task_from_config

__all__ = [
    "DataError",
    "MISSING_FROM_TFDS",
    "SAMPLING_RULES",
    "TASKS",
    "Task",
    "compute_metrics",
    "from_files",
    "from_lists",
    "from_pandas",
    "get_task",
    "list_tasks",
    "make_dataset",
    "mix_task_datasets",
    "register_task",
    "sampling_weights",
    "task_from_config",
    "tokenize",
]
