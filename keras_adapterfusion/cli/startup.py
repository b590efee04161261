"""The CLI's start-up: which Keras backend a command will get, asked without importing Keras.

The start-up lines of TensorFlow and transformers are kept off the terminal by
`keras_adapterfusion.startup_logs` (from Python and the CLI alike).
"""

import json
import os
import sys

from keras_adapterfusion.startup_logs import quiet_startup  # noqa: F401  (cli.main calls it)


def keras_backend():
    """The Keras backend that importing Keras would pick (without importing it)."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"
