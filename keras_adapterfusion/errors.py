"""Exceptions raised by keras_adapterfusion."""


class CheckpointError(ValueError):
    """A checkpoint, adapter, fusion or head file is missing, corrupt or does not fit.

    The message names the file and the problem. It subclasses `ValueError`, so
    `except ValueError` catches it too.
    """
