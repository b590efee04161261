"""Stage 1 (an adapter and its head) and stage 2 (fusion and a new head) under
tf.distribute.MultiWorkerMirroredStrategy: run as two processes on localhost, each with its TF_CONFIG. Worker
0 then trains the stage-1 model on one device, worker 1 the stage-2 model (the work shared out); each prints
its results as JSON (its last line). Used by tests/test_distributed.py.
"""

import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402

strategy = tf.distribute.MultiWorkerMirroredStrategy()  # before any other TensorFlow op

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_adapterfusion import ClassificationHead, load_encoder  # noqa: E402
from keras_adapterfusion.training import builders

tiny_bert = os.path.join(os.path.dirname(__file__), "..", "fixtures", "backbones", "tiny-bert")
rng = np.random.default_rng(0)
x = {"input_ids": rng.integers(3, 1000, (16, 10)).astype("int32"), "attention_mask": np.ones((16, 10), "int32")}
y = (x["input_ids"][:, 0] % 3).astype("int32")


def train(stage):
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
    return model, history.history["loss"]


task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
# How the global batch of 8 is split: the strategy's own dataset distribution, which Keras's fit uses.
first = next(iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(x).batch(8))))
report = {"task": task, "workers": strategy.extended._num_workers, "replicas": strategy.num_replicas_in_sync,
          "per_replica_batch": int(strategy.experimental_local_results(first["input_ids"])[0].shape[0])}
distributed = {}
for stage in ("adapter", "fusion"):
    with strategy.scope():
        distributed[stage] = train(stage)
stage = ("adapter", "fusion")[task]
(model, loss), (single, single_loss) = distributed[stage], train(stage)
diff = max(float(np.max(np.abs(np.asarray(a.numpy()) - np.asarray(b.numpy()))))
           for a, b in zip(model.trainable_weights, single.trainable_weights))
report[stage] = {"distributed_loss": loss, "single_loss": single_loss, "max_weight_diff": diff,
                 "trainable": len(model.trainable_weights), "variable_type": type(model.trainable_weights[0].value).__name__}
print(json.dumps(report))
