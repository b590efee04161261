"""Real saves that SIGKILL themselves part-way, for tests/test_saving.py.

    python crash_model_save.py keras PATH WHEN      # AdapterModel.save(PATH); WHEN: mid-write | before-replace
    python crash_model_save.py adapter DIR STEP     # saving.save_adapter(encoder, "a", DIR), killed at STEP

The model is the tiny BERT fixture with an adapter whose weights depend on the
seed 7, so the parent can tell this save from an earlier one.
"""

import os
import signal
import sys
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TINY_BERT = os.path.join(HERE, "..", "fixtures", "backbones", "tiny-bert")


def kill():
    os.kill(os.getpid(), signal.SIGKILL)


def build():
    from keras import ops

    from keras_adapterfusion import load_encoder
    from keras_adapterfusion.training import builders

    encoder = load_encoder(TINY_BERT)
    model = builders.build_adapter_model(encoder, "a", num_labels=2)
    rng = np.random.default_rng(7)
    for v in encoder.adapter_weights("a"):
        v.assign(ops.convert_to_numpy(v) + rng.normal(0, 0.3, v.shape).astype("float32"))
    return encoder, model


def main():
    mode, path, when = sys.argv[1:4]
    encoder, model = build()
    if mode == "keras":
        if when == "mid-write":
            original = zipfile.ZipFile.open
            calls = []

            def open_member(self, name, mode="r", *args, **kwargs):
                if mode == "w":
                    calls.append(name)
                    if len(calls) == 2:  # the archive is open and its first member written
                        kill()
                return original(self, name, mode, *args, **kwargs)

            zipfile.ZipFile.open = open_member
        elif when == "before-replace":
            os.replace = lambda *args, **kwargs: kill()
        model.save(path)
    else:
        from keras_adapterfusion.formats import native as saving
        from keras_adapterfusion.io import directories

        def hook(step):
            if step == when:
                kill()

        directories._step_hook = hook
        saving.save_adapter(encoder, "a", path)


if __name__ == "__main__":
    main()
