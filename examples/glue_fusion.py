"""The paper's recipe on GLUE / SuperGLUE tasks from tensorflow_datasets: ST-A adapters, then Fusion w/ ST-A.

For users with the internet and a GPU. Following Pfeiffer et al. (2020):

1. Knowledge extraction: for every task, one `seq_bn` (Pfeiffer) adapter with
   reduction factor 16 and its head train in frozen BERT-base (learning rate 1e-4,
   AdamW with linear decay, early stopping on the validation loss).
2. Knowledge composition: for every target task, a `dynamic` fusion over *all*
   the adapters (the target's own included) and a new head train, with the
   encoder and the adapters frozen (learning rate 5e-5, early stopping).

It prints a table laid out like the paper's Table 1 (accuracy, %), the paper's
numbers beside yours, and writes `results.json`. The tasks are the paper's that
TFDS builds (12 of its 16; SocialIQA, CSQA, SICK and Argument Mining have no TFDS
builder). GLUE and SuperGLUE hide their test labels, so "test" is the validation
set, as in the paper. Adapters and results are saved as they finish, so a rerun
continues where the last one stopped.

    pip install "keras-adapterfusion"        # TFDS downloads the data on first use
    python examples/glue_fusion.py --download --output-dir glue_fusion_output
    python examples/glue_fusion.py --tasks rte mrpc cb sst2 --targets rte mrpc cb --train-examples 20000

`--encoder` takes a checkpoint directory or a Hugging Face hub id (with
`--download`, a hub id that is not in the local cache is downloaded once).
`--smoke` runs the same code on the tiny test encoder with tiny synthetic
stand-ins for two tasks, without the network.
"""

import argparse
import json
import os

# The paper's Table 1 (BERT-base-uncased; mean accuracy on the development sets, %): full fine-tuning,
# ST-A (reduction factor 16) and Fusion w/ ST-A. Transcribed from arXiv:2005.00247 (EACL 2021 version);
# check a number against the paper before you quote it.
PAPER = {  # registry name: (paper's name, Full, ST-A, Fusion w/ ST-A)
    "mnli": ("MNLI", 84.10, 84.32, 84.28),
    "qqp": ("QQP", 90.87, 90.59, 90.71),
    "sst2": ("SST", 92.39, 91.85, 92.20),
    "winogrande": ("WGrande", 60.01, 61.09, 60.23),
    "imdb": ("IMDB", 94.05, 93.85, 93.82),
    "hellaswag": ("HSwag", 39.25, 38.11, 37.98),
    "cosmosqa": ("CosmosQA", 60.28, 60.01, 60.65),
    "scitail": ("SciTail", 94.32, 93.90, 94.04),
    "boolq": ("BoolQ", 74.84, 75.66, 76.25),
    "mrpc": ("MRPC", 85.14, 85.16, 90.29),
    "rte": ("RTE", 65.41, 71.04, 76.82),
    "cb": ("CB", 82.49, 86.07, 92.14),
}
ALL_TASKS = list(PAPER)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--encoder", default="bert-base-uncased", help="checkpoint directory or hub id")
    parser.add_argument("--download", action="store_true",
                        help="download --encoder from the Hugging Face hub if it is not a directory or cached")
    parser.add_argument("--tasks", nargs="+", default=ALL_TASKS, choices=ALL_TASKS, metavar="TASK",
                        help="tasks that get an adapter (default: all 12)")
    parser.add_argument("--targets", nargs="+", default=None, metavar="TASK",
                        help="tasks that get a fusion (default: every task in --tasks)")
    parser.add_argument("--reduction-factor", type=int, default=16)
    parser.add_argument("--adapter-lr", type=float, default=1e-4)
    parser.add_argument("--fusion-lr", type=float, default=5e-5)
    parser.add_argument("--adapter-epochs", type=int, default=30, help="most epochs for an adapter")
    parser.add_argument("--fusion-epochs", type=int, default=10, help="most epochs for a fusion")
    parser.add_argument("--patience", type=int, default=3, help="early stopping: epochs without a better "
                                                                 "validation loss")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--train-examples", type=int, default=None, help="cap each training set (a quick run)")
    parser.add_argument("--data-dir", default=None, help="tensorflow_datasets data directory")
    parser.add_argument("--output-dir", default="glue_fusion_output")
    parser.add_argument("--smoke", action="store_true", help="tiny encoder and tiny synthetic tasks, no network")
    args = parser.parse_args(argv)
    args.targets = args.targets or list(args.tasks)
    unknown = [t for t in args.targets if t not in args.tasks]
    if unknown:
        parser.error(f"--targets {unknown}: every target needs its own adapter; add them to --tasks")
    return args


def resolve_encoder(args):
    """A local checkpoint directory for `--encoder`, downloading it with `--download` if need be."""
    from keras_adapterfusion import CheckpointError
    from keras_adapterfusion.backbones.checkpoint import resolve_checkpoint

    try:
        return resolve_checkpoint(args.encoder)
    except CheckpointError:
        if not args.download:
            raise
    from huggingface_hub import snapshot_download

    return snapshot_download(args.encoder, allow_patterns=["*.json", "*.safetensors", "vocab.txt", "*.model"])


def smoke_tasks():
    """Tiny synthetic stand-ins for SST-2 (single sentences) and RTE (sentence pairs), built with `from_lists`."""
    from _smoke import sentiment_examples

    from keras_adapterfusion.tasks import from_lists

    sst2 = from_lists(*sentiment_examples(32, 0), validation=sentiment_examples(16, 1),
                      test=sentiment_examples(16, 2), name="sst2")
    pairs = []
    for seed in (3, 4, 5):
        texts, labels = sentiment_examples(32 if seed == 3 else 16, seed)
        hypotheses = ["it is good" if i % 3 else "it is bad" for i in range(len(texts))]
        same = ["entailment" if (y == "positive") == (h == "it is good") else "not_entailment"
                for y, h in zip(labels, hypotheses)]
        pairs.append((texts, hypotheses, same))
    rte = from_lists(pairs[0][0], pairs[0][2], text_pairs=pairs[0][1], validation=pairs[1], test=pairs[2], name="rte")
    return {"sst2": sst2, "rte": rte}


class TaskData:
    """One task's tokenized splits, made once and used in both stages."""

    def __init__(self, task, tokenizer, args):
        from keras_adapterfusion.tasks import make_dataset, tokenize

        self.task = task
        cache = os.path.join(args.output_dir, "tokenized")
        self.splits = {}
        for split in ("train", "validation", "test"):
            inputs, labels = task.load(split, data_dir=args.data_dir,
                                       limit=args.train_examples if split == "train" else None)
            encoded = tokenize(tokenizer, task, inputs, max_length=args.max_length, cache_dir=cache)
            train = split == "train"
            self.splits[split] = (make_dataset(encoded, labels, batch_size=args.batch_size, shuffle=train, seed=0,
                                               padding="buckets" if train else "longest"), labels)

    def head(self):
        from keras_adapterfusion.training import losses as heads

        return heads.make_head(self.task.head_kind, self.task.num_labels, label_names=list(self.task.label_names))


def fit_and_test(model, data, learning_rate, epochs, args):
    """Train with early stopping on the validation loss; return test accuracy in % and the epochs run."""
    import keras

    from keras_adapterfusion import training
    from keras_adapterfusion.tasks import compute_metrics

    train, _ = data.splits["train"]
    validation, _ = data.splits["validation"]
    training.compile_for_stage(model, total_steps=len(train) * epochs, learning_rate=learning_rate)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=args.patience, restore_best_weights=True)
    history = model.fit(train, validation_data=validation, epochs=epochs, callbacks=[stop], verbose=2)
    test, labels = data.splits["test"]
    logits = model.predict(test, verbose=0)
    accuracy = compute_metrics(["accuracy"], labels, logits, kind=data.task.kind)["accuracy"]
    return 100.0 * accuracy, len(history.history["loss"])


def table(results, tasks):
    """Table 1's layout: one row per task, the paper's numbers beside these."""
    def cell(value):
        return "-" if value is None else f"{value:.2f}"

    rows = ["| task | paper Full | paper ST-A | ST-A (yours) | paper Fusion w/ ST-A | Fusion w/ ST-A (yours) |",
            "|---|---|---|---|---|---|"]
    for name in tasks:
        paper = PAPER.get(name, (name, None, None, None))
        mine = results.get(name, {})
        rows.append(f"| {paper[0]} | {cell(paper[1])} | {cell(paper[2])} | {cell(mine.get('st_a'))} | "
                    f"{cell(paper[3])} | {cell(mine.get('fusion_st_a'))} |")
    return "\n".join(rows)


def main(argv=None):
    args = parse_args(argv)
    tasks_by_name = None
    if args.smoke:
        from _smoke import scratch_dir, tiny_checkpoint

        args.encoder, args.download = tiny_checkpoint(), False
        args.tasks, args.targets = ["sst2", "rte"], ["rte"]
        vars(args).update(adapter_epochs=1, fusion_epochs=2, patience=1, batch_size=8, max_length=32,
                          adapter_lr=3e-3, fusion_lr=3e-3, output_dir=scratch_dir("output"))
        tasks_by_name = smoke_tasks()

    import keras_adapterfusion as kaf
    from keras_adapterfusion import AdapterConfig
    from keras_adapterfusion.training import builders
    from keras_adapterfusion.formats import native as saving
    from keras_adapterfusion.tasks import get_task

    checkpoint = resolve_encoder(args)
    encoder = kaf.load_encoder(checkpoint)
    tokenizer = kaf.load_tokenizer(checkpoint)
    os.makedirs(args.output_dir, exist_ok=True)
    results_path = os.path.join(args.output_dir, "results.json")
    results = {}
    if os.path.isfile(results_path):
        with open(results_path) as f:
            results = json.load(f)

    def record(name, key, value, epochs):
        results.setdefault(name, {})[key] = value
        results[name][key + "_epochs"] = epochs
        with open(results_path, "w") as f:
            json.dump(results, f, indent=1)

    data = {name: TaskData(tasks_by_name[name] if tasks_by_name else get_task(name), tokenizer, args)
            for name in args.tasks}
    adapter_config = AdapterConfig.from_preset("seq_bn", reduction_factor=args.reduction_factor)

    # Stage 1: one ST-A adapter per task (skipped when an earlier run saved it).
    for name in args.tasks:
        directory = os.path.join(args.output_dir, "adapters", name)
        if os.path.isdir(directory) and "st_a" in results.get(name, {}):
            saving.load_adapter(encoder, directory)
            print(f"adapter {name!r}: loaded from {directory}")
            continue
        print(f"\n== stage 1: ST-A adapter for {name}")
        model = builders.build_adapter_model(encoder, name, head=data[name].head(), adapter_config=adapter_config)
        accuracy, epochs = fit_and_test(model, data[name], args.adapter_lr, args.adapter_epochs, args)
        saving.save_adapter(encoder, name, directory)
        record(name, "st_a", accuracy, epochs)

    # Stage 2: for each target, a fusion over every adapter, named after the target so all live in one encoder.
    for name in args.targets:
        if "fusion_st_a" in results.get(name, {}):
            continue
        print(f"\n== stage 2: Fusion w/ ST-A for {name} over {args.tasks}")
        model = builders.build_fusion_model(encoder, args.tasks, head=data[name].head(), fusion_name=name,
                                            name=f"fusion_{name}")
        accuracy, epochs = fit_and_test(model, data[name], args.fusion_lr, args.fusion_epochs, args)
        saving.save_fusion(encoder, model.adapter_setup, os.path.join(args.output_dir, "fusions", name))
        record(name, "fusion_st_a", accuracy, epochs)

    print("\nAccuracy (%) on the test split (GLUE/SuperGLUE: validation), the paper's Table 1 beside yours:\n")
    print(table(results, args.tasks))
    print(f"\nwrote {results_path}")

    if args.smoke:
        assert set(results) == {"sst2", "rte"} and "fusion_st_a" in results["rte"], results
        assert all(0.0 <= v["st_a"] <= 100.0 for v in results.values())
        assert "| RTE | 65.41 | 71.04 |" in table(results, args.tasks)
        print("smoke OK")


if __name__ == "__main__":
    main()
