"""Is the input pipeline a bottleneck of `fit`? Examples/s of a real `fit` against the step time alone.

On a real offline task and the real MiniLM encoder it measures, in one process:

1. `pipeline`: iterating over the batches `experiments.dataset` makes for `fit` (tokenized data from
   the cache, length buckets, shuffling; `tf.data` on TensorFlow, a `PyDataset` elsewhere), with no model;
2. `fit`: `model.fit` for one epoch on that dataset (after a first epoch that traces the step);
3. `steps`: the same batches taken out of the pipeline beforehand and run with `train_on_batch`, one
   after another: the training step alone.

If `fit` is as fast as `steps`, the pipeline costs nothing; `pipeline` shows how much faster than the
step it delivers. Usage:

    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/pipeline_check.py --threads 2
    KERAS_BACKEND=jax .venv/bin/python benchmarks/pipeline_check.py --stage fusion --examples 256
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="vader_movie")
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--stage", choices=["adapter", "fusion"], default="adapter",
                        help="adapter: one seq_bn adapter trains (ST-A); fusion: 4 adapters, the fusion trains")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2, help="timed epochs of each kind, in turns")
    args = parser.parse_args()
    from bench import set_threads

    set_threads(args.threads)
    import keras
    import numpy as np

    from keras_adapterfusion import load_encoder, load_tokenizer
    from keras_adapterfusion.training import builders
    from keras_adapterfusion.backbones.huggingface import DEFAULT_ENCODER
    from keras_adapterfusion.training.runs import dataset, fit, prepare
    from keras_adapterfusion.tasks.pipeline import default_data_path

    keras.utils.set_random_seed(0)
    tokenizer = load_tokenizer(DEFAULT_ENCODER)
    encoded, labels = prepare(args.task, tokenizer, "train", args.max_length, sample=args.examples, seed=0)
    train = dataset(encoded, labels, args.batch_size, shuffle=True, seed=0)
    encoder = load_encoder(DEFAULT_ENCODER)
    num_labels = int(np.max(labels)) + 1
    if args.stage == "adapter":
        model = builders.build_adapter_model(encoder, "a0", num_labels=num_labels)
    else:
        names = [f"a{i}" for i in range(4)]
        for name in names:
            encoder.add_adapter(name, "seq_bn")
        model = builders.build_fusion_model(encoder, names, num_labels=num_labels)

    def batches_of(data):
        if isinstance(data, keras.utils.PyDataset):
            return (data[i] for i in range(len(data)))
        return iter(data)

    def pipeline_epoch():
        count = 0
        for x, y in batches_of(train):
            keras.ops.convert_to_numpy(x["input_ids"])
            count += len(y)
        return count

    batches = list(batches_of(train))  # materialized once: the step's inputs with no pipeline left
    fit(model, "fusion" if args.stage == "fusion" else "adapter", train, epochs=1, verbose=0)  # traces the step

    def fit_epoch():
        model.fit(train, epochs=1, verbose=0)
        return len(labels)

    def steps_epoch():
        for x, y in batches:
            model.train_on_batch(x, y)
        return len(labels)

    steps_epoch()  # the shapes train_on_batch has not seen yet
    results = {name: [] for name in ("pipeline", "fit", "steps")}
    for _ in range(args.repeats):
        for name, run in (("pipeline", pipeline_epoch), ("fit", fit_epoch), ("steps", steps_epoch)):
            started = time.perf_counter()
            n = run()
            results[name].append(n / (time.perf_counter() - started))
    summary = {name: round(float(np.median(v)), 2) for name, v in results.items()}
    line = {"backend": keras.backend.backend(), "data_path": default_data_path(), "task": args.task,
            "stage": args.stage, "examples": len(labels), "batch_size": args.batch_size,
            "max_length": args.max_length, "batches": len(batches), "threads": args.threads,
            "examples_per_s": summary, "fit_over_steps": round(summary["fit"] / summary["steps"], 3),
            "load": [round(v, 2) for v in os.getloadavg()]}
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
