"""Stage 1 (an adapter and its head) and stage 2 (fusion and a new head) under
keras.distribution.DataParallel on JAX, over two host devices (XLA's forced host device count), and the
same models on one device; prints both results as JSON (its last line). TensorFlow is not imported.
Used by tests/test_distributed.py.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
# Two CPU devices; XLA's fastest compilation (the models are tiny).
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0"
for blocked in ("tensorflow", "tensorflow_datasets", "tensorflow_text"):
    sys.modules[blocked] = None  # as if not installed

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_adapterfusion import ClassificationHead, load_encoder  # noqa: E402
from keras_adapterfusion.training import builders

tiny_bert = os.path.join(os.path.dirname(__file__), "..", "fixtures", "backbones", "tiny-bert")
rng = np.random.default_rng(0)
x = {"input_ids": rng.integers(3, 1000, (16, 10)).astype("int32"), "attention_mask": np.ones((16, 10), "int32")}
y = (x["input_ids"][:, 0] % 3).astype("int32")


def train(stage, distribution):
    keras.distribution.set_distribution(distribution)
    keras.utils.set_random_seed(0)
    encoder = load_encoder(tiny_bert, hidden_dropout=0.0, attention_dropout=0.0)
    for name in ("a", "b"):
        encoder.add_adapter(name, "seq_bn")
    head = ClassificationHead(3, dropout=0.0)
    if stage == "adapter":
        model = builders.build_adapter_model(encoder, "a", head=head)
    else:
        model = builders.build_fusion_model(encoder, ["a", "b"], head=head)
    model.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    placement = {"weight_devices": len(model.trainable_weights[0].value.sharding.device_set)}
    if distribution is not None:  # how a batch of 8 is laid out: split along the "batch" mesh axis
        placement["batch_axes"] = list(distribution.get_data_layout((8, 10)).axes)
    return model, history.history["loss"], placement


report = {"devices": len(jax.devices()), "tensorflow": [m for m in sys.modules if m.split(".")[0] == "tensorflow"
                                                          and sys.modules[m] is not None]}
for stage in ("adapter", "fusion"):
    parallel, parallel_loss, placed = train(stage, keras.distribution.DataParallel(devices=jax.devices()))
    single, single_loss, _ = train(stage, None)
    diff = max(float(np.max(np.abs(np.asarray(a.numpy()) - np.asarray(b.numpy()))))
               for a, b in zip(parallel.trainable_weights, single.trainable_weights))
    report[stage] = {"parallel_loss": parallel_loss, "single_loss": single_loss, "max_weight_diff": diff,
                     "trainable": len(parallel.trainable_weights), **placed}
print(json.dumps(report))
