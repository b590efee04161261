"""Run every signature of a SavedModel with TensorFlow alone (no Keras, no keras_adapterfusion).

Usage: serve_saved_model.py VERSION_DIR INPUTS.npz OUTPUTS.npz [TEXTS.json]
Writes each output as `<signature>/<output>`; prints the modules it saw imported.
With TEXTS.json, TensorFlow Text is imported (as TF Serving links its ops) for the raw-text
signatures, which get those texts (a list of strings, or of [text, pair] for pair signatures);
without it, only TensorFlow is imported: a default export must load so.
"""

import json
import sys

import numpy as np
import tensorflow as tf

version_dir, inputs_path, outputs_path = sys.argv[1:4]
texts = json.load(open(sys.argv[4])) if len(sys.argv) > 4 else None
if texts is not None:
    import tensorflow_text  # noqa: F401  (registers the ops of the raw-text signatures)
loaded = tf.saved_model.load(version_dir)
inputs = dict(np.load(inputs_path))
results = {}
for name, fn in loaded.signatures.items():
    if name.endswith("_text"):
        if texts is None:
            continue
        pairs = "text_pair" in fn.structured_input_signature[1]
        given = ({"text": tf.constant([t for t, _ in texts]), "text_pair": tf.constant([p for _, p in texts])}
                 if pairs else {"text": tf.constant(texts)})
        for key, value in fn(**given).items():
            results[f"{name}/{key}"] = value.numpy()
        continue
    args = {k: tf.constant(v) for k, v in inputs.items()}
    for key, value in fn(**args).items():
        results[f"{name}/{key}"] = value.numpy()
np.savez(outputs_path, **results)
print(json.dumps({"signatures": sorted(loaded.signatures),
                  "keras_adapterfusion_imported": "keras_adapterfusion" in sys.modules,
                  "keras_imported": "keras" in sys.modules,
                  "tensorflow_text_imported": "tensorflow_text" in sys.modules}))
