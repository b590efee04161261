"""Serving exported models: the TF Serving client (`client.py`) and its HTTP transport (`http.py`).

`keras_adapterfusion.serving.ServingClient` builds TF Serving's REST and gRPC
requests from raw text and turns the responses into labels; see
`keras_adapterfusion.serving.client`.
"""

from keras_adapterfusion.serving.client import (
    INPUT_NAMES,
    PROBLEM_TYPES,
    ServingClient,
    ServingError,
    expects_pairs,
)

__all__ = ["INPUT_NAMES", "PROBLEM_TYPES", "ServingClient", "ServingError", "expects_pairs"]
