"""Train AdapterFusion's two stages on several devices or machines: TensorFlow or JAX, one script.

On TensorFlow the models are built inside a `tf.distribute` strategy's scope:
`MirroredStrategy` over the local devices, or, when `TF_CONFIG` describes a
cluster, `MultiWorkerMirroredStrategy` (run this script once per worker, each
with its own TF_CONFIG). On JAX, `keras.distribution.DataParallel` replicates
the weights on every device and splits each batch between them; across
machines, start every process with --coordinator-address, --num-processes and
--process-id (`keras.distribution.initialize`). Either way each batch is split
between the replicas and the gradients are averaged: the same steps as one
device with the same global batch.

    python examples/distributed.py                                  # every local device
    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}' \\
        python examples/distributed.py                              # worker 0 of two (TensorFlow)
    KERAS_BACKEND=jax python examples/distributed.py --coordinator-address host1:1234 --num-processes 2 \\
        --process-id 0                                              # process 0 of two (JAX)

Stage 1 trains an adapter for each of two offline source tasks; stage 2 a
fusion over them and a new head for the target. `--smoke` runs a few steps on
the tiny test encoder over two CPU devices and checks that they match one device.
"""

import argparse
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--sources", nargs=2, default=["vader_movie", "subjectivity"], help="two source tasks")
    parser.add_argument("--target", default="vader_tweets")
    parser.add_argument("--encoder", default=None, help="checkpoint directory or cached hub id "
                                                        "(default: the offline MiniLM)")
    parser.add_argument("--examples", type=int, default=2048, help="training examples per task")
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch (split between replicas)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--coordinator-address", default=None, help="JAX across machines: process 0's host:port")
    parser.add_argument("--num-processes", type=int, default=None, help="JAX across machines: how many processes")
    parser.add_argument("--process-id", type=int, default=None, help="JAX across machines: this process's index")
    parser.add_argument("--output-dir", default="distributed_output")
    parser.add_argument("--smoke", action="store_true", help="a few steps on two CPU devices, checked against one")
    return parser.parse_args(argv)


def backend():
    """The Keras backend that importing Keras will pick (TensorFlow unless KERAS_BACKEND or keras.json say)."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    import json

    try:
        with open(os.path.join(os.path.expanduser("~"), ".keras", "keras.json")) as f:
            return json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


def start(args):
    """Set up the devices (before Keras starts its backend).

    Returns `(scope, replicas, chief)`: a context to build models in, how many
    replicas share each batch, and whether this process writes the results.
    """
    import contextlib

    if backend() == "jax":
        if args.smoke:  # two CPU devices; XLA's quickest compilation, for tiny models
            os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0"
        import jax
        import keras

        if args.coordinator_address:  # several machines: every process calls this first
            keras.distribution.initialize(args.coordinator_address, args.num_processes, args.process_id)
        keras.distribution.set_distribution(keras.distribution.DataParallel())  # every device of every process
        return contextlib.nullcontext(), len(keras.distribution.list_devices()), jax.process_index() == 0
    import tensorflow as tf

    if "TF_CONFIG" in os.environ:  # one worker of a cluster; the strategy comes before any other TensorFlow op
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        return strategy.scope(), strategy.num_replicas_in_sync, strategy.cluster_resolver.task_id == 0
    if args.smoke:  # two logical devices on the one CPU
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy()
    return strategy.scope(), strategy.num_replicas_in_sync, True


def main(argv=None):
    args = parse_args(argv)
    if args.smoke:
        from _smoke import scratch_dir, tiny_checkpoint

        vars(args).update(encoder=tiny_checkpoint(), examples=32, batch_size=8, epochs=1, max_length=24)
    scope, replicas, chief = start(args)

    import contextlib

    import keras
    import numpy as np

    import keras_adapterfusion as kaf
    from keras_adapterfusion import training
    from keras_adapterfusion.training import builders
    from keras_adapterfusion.training import losses as heads
    from keras_adapterfusion.formats import native as saving
    from keras_adapterfusion.backbones.huggingface import DEFAULT_ENCODER
    from keras_adapterfusion.training.runs import dataset, prepare
    from keras_adapterfusion.tasks import get_task

    checkpoint = args.encoder or DEFAULT_ENCODER
    tokenizer = kaf.load_tokenizer(checkpoint)
    print(f"{keras.backend.backend()}: {replicas} replicas; a global batch of {args.batch_size} is split between them")

    def data(task):
        encoded, labels = prepare(task, tokenizer, "train", args.max_length, sample=args.examples, seed=0)
        return dataset(encoded, labels, args.batch_size, shuffle=True, seed=0)

    def fit(model, train, stage):
        steps = len(train) if hasattr(train, "__len__") else int(train.cardinality())
        training.compile_for_stage(model, stage, total_steps=steps * args.epochs)
        return model.fit(train, epochs=args.epochs, verbose=2).history["loss"]

    def run(scope, trained_adapters=None):
        """Both stages, the models built in `scope`; returns the losses, the encoder and the fusion model.

        With `trained_adapters` (name -> saved directory), stage 1 is skipped and they are loaded instead.
        """
        keras.utils.set_random_seed(0)
        losses = {}
        with scope:  # the encoder, adapters, fusion and heads get their variables on every replica
            encoder = kaf.load_encoder(checkpoint, hidden_dropout=0.0, attention_dropout=0.0)
            for name in args.sources:  # stage 1: one adapter (and its head) per source task
                if trained_adapters:
                    saving.load_adapter(encoder, trained_adapters[name])
                    continue
                task = get_task(name)
                head = heads.make_head(task.head_kind, task.num_labels, dropout=dropout)
                losses[name] = fit(builders.build_adapter_model(encoder, name, head=head), data(name), "adapter")
            keras.utils.set_random_seed(1)  # stage 2 starts from the same weights however stage 1 went
            target = get_task(args.target)  # stage 2: fusion over the frozen adapters, and a new head
            head = heads.make_head(target.head_kind, target.num_labels, label_names=list(target.label_names),
                                   dropout=dropout)
            fusion = builders.build_fusion_model(encoder, args.sources, head=head)
            losses["fusion"] = fit(fusion, data(args.target), "fusion")
        return losses, encoder, fusion

    dropout = 0.0 if args.smoke else 0.1  # the smoke run compares two runs step by step: no random dropout
    losses, encoder, fusion = run(scope)
    print("losses per epoch:", {k: [round(v, 4) for v in vs] for k, vs in losses.items()})
    if chief:  # one process writes: the adapters, the fusion and the head (see docs/saving.md)
        out = scratch_dir("output") if args.smoke else args.output_dir
        for name in args.sources:
            saving.save_adapter(encoder, name, os.path.join(out, "adapters", name))
        saving.save_fusion(encoder, args.sources, os.path.join(out, "fusion"))
        saving.save_head(fusion.head, os.path.join(out, "head"), encoder)
        print(f"wrote {out}")
    if not args.smoke:
        return 0

    # Smoke: stage 2 on one device, over the adapters trained on two, gives the same losses and weights.
    assert replicas == 2, replicas
    assert all(np.all(np.isfinite(v)) for v in losses.values()), losses
    if keras.backend.backend() == "jax":
        keras.distribution.set_distribution(None)
        one_device = contextlib.nullcontext()
    else:
        import tensorflow as tf

        one_device = tf.distribute.OneDeviceStrategy("/cpu:0").scope()
    adapters = {name: os.path.join(out, "adapters", name) for name in args.sources}
    single, _, single_fusion = run(one_device, trained_adapters=adapters)
    assert np.allclose(losses["fusion"], single["fusion"], atol=1e-4), (losses["fusion"], single["fusion"])
    diff = max(float(np.max(np.abs(keras.ops.convert_to_numpy(a) - keras.ops.convert_to_numpy(b))))
               for a, b in zip(fusion.trainable_weights, single_fusion.trainable_weights))
    assert diff < 1e-4, diff
    print(f"stage 2 on two replicas matches one device: losses to 1e-4, fusion weights to {diff:.1e}")
    print("smoke OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
