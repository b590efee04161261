"""Run every signature of a SavedModel with TensorFlow alone (no Keras, no keras_adapterfusion).

Usage: serve_saved_model.py VERSION_DIR INPUTS.npz OUTPUTS.npz
Writes each output as `<signature>/<output>`; prints the modules it saw imported.
"""

import json
import sys

import numpy as np
import tensorflow as tf

version_dir, inputs_path, outputs_path = sys.argv[1:4]
loaded = tf.saved_model.load(version_dir)
inputs = dict(np.load(inputs_path))
results = {}
for name, fn in loaded.signatures.items():
    args = {k: tf.constant(v) for k, v in inputs.items()}
    for key, value in fn(**args).items():
        results[f"{name}/{key}"] = value.numpy()
np.savez(outputs_path, **results)
print(json.dumps({"signatures": sorted(loaded.signatures),
                  "keras_adapterfusion_imported": "keras_adapterfusion" in sys.modules,
                  "keras_imported": "keras" in sys.modules}))
