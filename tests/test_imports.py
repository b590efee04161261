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


# The modules the command line reads before TensorFlow (and Keras) load: the one import rule's exceptions.
KERAS_FREE = ("keras_adapterfusion", "keras_adapterfusion.cli", "keras_adapterfusion.cli.checks", "keras_adapterfusion.cli.command_checks",
              "keras_adapterfusion.configs", "keras_adapterfusion.names", "keras_adapterfusion.errors",
              "keras_adapterfusion.tuning", "keras_adapterfusion.tuning.space",
              "keras_adapterfusion.tuning.distribution", "keras_adapterfusion.tasks.registry", "keras_adapterfusion.training.run_files",
              "keras_adapterfusion.models", "keras_adapterfusion.training", "keras_adapterfusion.formats",
              "keras_adapterfusion.analysis", "keras_adapterfusion.applications", "keras_adapterfusion.serving")


def test_keras_free_modules_import_no_keras():
    code = ("import importlib, sys\n"
            f"for name in {KERAS_FREE!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in ('keras', 'keras_tuner', 'tensorflow', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_old_module_paths_are_the_new_modules():
    """The module paths from before the folders import, and are the same module objects as the new paths."""
    import importlib

    import keras_adapterfusion

    for old, new in keras_adapterfusion._MOVED.items():
        assert importlib.import_module(f"keras_adapterfusion.{old}") is \
            importlib.import_module(f"keras_adapterfusion.{new}"), old


def test_any_module_can_be_imported_first_and_keras_still_learns_every_class():
    """The first `import keras` may come from inside one of the package's modules (here: the module imported
    first); registration then waits until that import is done, instead of importing half-imported modules."""
    code = ("import importlib, sys\n"
            "importlib.import_module(sys.argv[1])\n"
            "import keras\n"
            "names = ('TransformerEncoder', 'AdapterModel', 'ParallelModel', 'LoRA', 'AdapterSlot')\n"
            "print([n for n in names if keras.saving.get_registered_object('keras_adapterfusion>' + n) is None])")
    for first in ("keras_adapterfusion.layers.adapter_setup", "keras_adapterfusion.backbones.transformer_encoder",
                  "keras_adapterfusion.formats.adapterhub"):
        out = subprocess.run([sys.executable, "-c", code, first], capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, KERAS_BACKEND="jax"))
        assert out.returncode == 0, (first, out.stderr[-2000:])
        assert out.stdout.strip().splitlines()[-1] == "[]", (first, out.stdout)
