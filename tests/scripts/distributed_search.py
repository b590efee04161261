"""One process of a distributed fusion search on the tiny encoder: the chief or a worker, from
KERASTUNER_TUNER_ID (keras-tuner's chief/worker mode), with TensorFlow blocked. Prints a JSON report as its
last line. Used by tests/test_tuning.py.

Usage: distributed_search.py DIRECTORY MAX_TRIALS COMPILATION_CACHE
"""

import json
import os
import sys

# As if TensorFlow were not installed: `import tensorflow` fails, `importlib.util.find_spec` finds nothing.
for blocked in ("tensorflow", "tensorflow_datasets", "tensorflow_text"):
    sys.modules[blocked] = None
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import keras  # noqa: E402

from keras_adapterfusion import load_encoder, tuning  # noqa: E402
from test_tuning import FIXED, TINY_BERT, token_data  # noqa: E402

directory, max_trials, cache = sys.argv[1], int(sys.argv[2]), sys.argv[3]
keras.utils.set_random_seed(0)
encoder = load_encoder(TINY_BERT)
for name in ("a", "b"):
    encoder.add_adapter(name)
hypermodel = tuning.FusionHyperModel(encoder, ["a", "b"], num_labels=2, space=FIXED)
tuner = tuning.search(hypermodel, token_data(24, 0), token_data(12, 1), tuner="random", max_trials=max_trials,
                      directory=directory, compilation_cache_dir=cache, verbose=0)
report = {"role": tuning.role(), "trials_run": list(tuner.trials_run), "backend": keras.backend.backend(),
          "tensorflow": sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow" and sys.modules[m] is not None)}
if tuning.role() == "chief":
    report["completed"] = sorted(t.trial_id for t in tuner.oracle.trials.values() if t.status == "COMPLETED")
print(json.dumps(report))
