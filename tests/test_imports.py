"""`import keras_adapterfusion` must not import TensorFlow (the GPU image runs it on JAX)."""

import os
import subprocess
import sys


def test_import_does_not_pull_tensorflow():
    code = (
        "import sys, keras_adapterfusion, keras_adapterfusion.adapterhub, keras_adapterfusion.builders, "
        "keras_adapterfusion.saving, keras_adapterfusion.analysis, keras_adapterfusion.tasks; "
        "print(sorted(m for m in ('tensorflow', 'tensorflow_datasets', 'torch') if m in sys.modules))"
    )
    env = dict(os.environ, KERAS_BACKEND="jax")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
