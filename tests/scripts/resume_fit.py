"""Train ST-A on tiny-bert with BackupAndRestore; used by tests/test_resume.py.

Usage: resume_fit.py BACKUP_DIR RESULT.npz LOG [KILL_MARKER]
With KILL_MARKER, after epoch 2 is backed up the script writes the marker and
waits to be killed (the test sends SIGKILL).
"""

import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_adapterfusion import ClassificationHead, load_encoder, training  # noqa: E402
from keras_adapterfusion.training import builders

EPOCHS, KILL_AFTER_EPOCH = 5, 2

backup_dir, result_path, log_path = sys.argv[1:4]
kill_marker = sys.argv[4] if len(sys.argv) > 4 else None
tiny_bert = os.path.join(os.path.dirname(__file__), "..", "fixtures", "backbones", "tiny-bert")

keras.utils.set_random_seed(0)
encoder = load_encoder(tiny_bert, hidden_dropout=0.0, attention_dropout=0.0)
model = builders.build_adapter_model(encoder, "task", head=ClassificationHead(2, dropout=0.0))
training.compile_for_stage(model, "adapter", total_steps=EPOCHS * 4, learning_rate=1e-2)

rng = np.random.default_rng(0)
x = {"input_ids": rng.integers(3, 1000, (32, 10)).astype("int32"), "attention_mask": np.ones((32, 10), "int32")}
y = (x["input_ids"][:, 0] % 2).astype("int32")


class Log(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        with open(log_path, "a") as f:
            f.write(f"begin {epoch} iterations={int(self.model.optimizer.iterations.numpy())}\n")


class KillPoint(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if kill_marker and epoch == KILL_AFTER_EPOCH - 1:
            open(kill_marker, "w").write(str(os.getpid()))
            time.sleep(600)


model.fit(x, y, batch_size=8, epochs=EPOCHS, shuffle=False, verbose=0,
          callbacks=[keras.callbacks.BackupAndRestore(backup_dir), Log(), KillPoint()])
np.savez(result_path, *[np.asarray(v.numpy()) for v in model.trainable_weights],
         iterations=int(model.optimizer.iterations.numpy()))
