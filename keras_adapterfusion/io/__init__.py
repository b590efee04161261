"""Reading and writing files: the one place for both.

- `weights`: the one weight loader (check every tensor, then assign all or none);
  each format supplies only its key table of `WeightRow`s.
- `tensors`: reading weights files (safetensors, PyTorch `.bin` without PyTorch).
- `torch_bin`: PyTorch's `.bin` files (zip and legacy layouts); `torch_pickle`, their restricted unpickler.
- `directories`: the one directory writer (atomic, crash-safe, refuses to replace
  what the package did not write), `write_own_file` for single files beside a
  user's (the same rule), and `saved_directory` for loaders.
- `files`: strict JSON reads with field checks, atomic single-file writes.

Nothing here imports TensorFlow.
"""

from keras_adapterfusion.io.directories import (check_destination, own_file, saved_directory, write_directory,
                                                write_own_file)
from keras_adapterfusion.io.files import atomic_file, json_field, read_json, write_json
from keras_adapterfusion.io.tensors import WeightsFile, read_safetensors, read_weights
from keras_adapterfusion.io.weights import WeightRow, gather_weights, load_weights, stage_weights

__all__ = [
    "WeightRow",
    "WeightsFile",
    "atomic_file",
    "check_destination",
    "gather_weights",
    "json_field",
    "load_weights",
    "own_file",
    "read_json",
    "read_safetensors",
    "read_weights",
    "saved_directory",
    "stage_weights",
    "write_directory",
    "write_json",
    "write_own_file",
]
