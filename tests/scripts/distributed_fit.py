"""Fit a fusion model under tf.distribute.MirroredStrategy on two logical CPUs, and
the same model on one device; print both results as JSON. Used by tests/test_distributed.py."""

import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_adapterfusion import ClassificationHead, load_encoder  # noqa: E402
from keras_adapterfusion.training import builders

tiny_bert = os.path.join(os.path.dirname(__file__), "..", "fixtures", "backbones", "tiny-bert")
rng = np.random.default_rng(0)
x = {"input_ids": rng.integers(3, 1000, (16, 10)).astype("int32"), "attention_mask": np.ones((16, 10), "int32")}
y = (x["input_ids"][:, 0] % 3).astype("int32")


def train():
    keras.utils.set_random_seed(0)
    encoder = load_encoder(tiny_bert, hidden_dropout=0.0, attention_dropout=0.0)
    for name in ("a", "b"):
        encoder.add_adapter(name, "seq_bn")
    model = builders.build_fusion_model(encoder, ["a", "b"], head=ClassificationHead(3, dropout=0.0))
    model.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    return model, history.history["loss"]


strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    mirrored, mirrored_loss = train()
    variable_type = type(mirrored.trainable_weights[0].value).__name__
single, single_loss = train()
diff = max(float(np.max(np.abs(np.asarray(a.numpy()) - np.asarray(b.numpy()))))
           for a, b in zip(mirrored.trainable_weights, single.trainable_weights))
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "variable_type": variable_type,
                  "mirrored_loss": mirrored_loss, "single_loss": single_loss, "max_weight_diff": diff,
                  "trainable": len(mirrored.trainable_weights)}))
