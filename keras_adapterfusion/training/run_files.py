"""A run directory's description (`run.json`): read and checked without Keras (the command line reads it first).

`training.runs.rebuild_model` builds the model it describes.

Example:

```python
from keras_adapterfusion.training.run_files import read_run, run_task

run = read_run("runs/sentiment")
run["stage"], run_task(run).name
```
"""

import os

from keras_adapterfusion.errors import CheckpointError
from keras_adapterfusion.io import json_field, read_json, saved_directory
from keras_adapterfusion.tasks import get_task, task_from_config

__all__ = ["STAGE_TO_OPTIMIZER", "read_run", "run_task"]

STAGE_TO_OPTIMIZER = {"head_only": "head_only", "finetune": "full_finetune", "adapter": "adapter",
                      "fusion": "fusion"}


def run_task(run):
    """The `Task` a run directory's `run.json` names: a registry name, or how the user's data was read."""
    task = run.get("task")
    return task_from_config(task) if isinstance(task, dict) else get_task(task)


def read_run(run_dir):
    """The `run.json` of a run directory (a killed save's complete copy if need be)."""
    directory = saved_directory(run_dir)
    path = os.path.join(directory, "run.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"{run_dir}: not a run directory (no run.json).")
    run = read_json(path, "description of a run")
    json_field(run, "stage", path, str, check=lambda v: v in STAGE_TO_OPTIMIZER,
               expected=f"one of {list(STAGE_TO_OPTIMIZER)}")
    json_field(run, "encoder", path, str)
    return run
