"""AdapterFusion's two stages on your own CSV files.

Stage 1 trains one adapter per source task (each a CSV, TSV or JSON Lines file
with a text and a label column) in a frozen encoder; stage 2 trains a fusion over
those adapters and a new head for the target task, then reports the target's
metrics on its test file and saves the adapters, the fusion and the head.

    python examples/own_data_fusion.py \
        --source reviews=data/reviews_train.csv,data/reviews_dev.csv \
        --source topics=data/topics_train.csv \
        --target-train data/target_train.csv --target-validation data/target_dev.csv \
        --target-test data/target_test.csv \
        --text-column sentence --label-column sentiment --output-dir runs/own

Labels may be strings or integers (single-label), lists (multi-label, JSON Lines)
or numbers (regression); the label names travel with the saved head. The learning
rates default to the paper's (1e-4 for adapters, 5e-5 for fusion), which suit
thousands of training steps; with a few hundred examples, try 1e-3 for both.
`--smoke` writes tiny CSV files into a temporary directory and runs both stages on
the tiny test encoder.
"""

import argparse
import os


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--source", action="append", default=[], metavar="NAME=TRAIN[,VALIDATION]",
                        help="a source task: its adapter's name and its files (repeatable, two or more)")
    parser.add_argument("--target-train", metavar="FILE", help="the target task's training file")
    parser.add_argument("--target-validation", metavar="FILE", help="validation file (early stopping)")
    parser.add_argument("--target-test", metavar="FILE", help="test file (the reported metrics)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--text-pair-column", default=None, help="a second text column, for sentence pairs")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--encoder", default=None, help="checkpoint directory or cached hub id "
                                                        "(default: the offline MiniLM)")
    parser.add_argument("--output-dir", default="own_data_fusion_output")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per stage (early stopping may end sooner)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--adapter-lr", type=float, default=1e-4)
    parser.add_argument("--fusion-lr", type=float, default=5e-5)
    parser.add_argument("--smoke", action="store_true", help="tiny CSV files and the tiny test encoder")
    args = parser.parse_args(argv)
    if not args.smoke:
        if len(args.source) < 2:
            parser.error("pass two or more --source NAME=TRAIN[,VALIDATION]")
        if not args.target_train:
            parser.error("pass --target-train")
    return args


def write_smoke_files(directory):
    """Tiny CSV files with non-default column names and string labels; returns the matching arguments."""
    import csv

    from _smoke import sentiment_examples

    def write(name, texts, labels):
        path = os.path.join(directory, name)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "sentence", "sentiment"])
            writer.writerows([i, t, y] for i, (t, y) in enumerate(zip(texts, labels)))
        return path

    sources = []
    for seed, name in enumerate(("reviews", "opinions")):
        texts, labels = sentiment_examples(32, seed=seed)
        sources.append(f"{name}={write(name + '.csv', texts, labels)}")
    files = {}
    for seed, split in enumerate(("train", "validation", "test"), start=10):
        texts, labels = sentiment_examples(24, seed=seed)
        files[split] = write(f"target_{split}.csv", texts, ["good" if y == "positive" else "bad" for y in labels])
    return dict(source=sources, target_train=files["train"], target_validation=files["validation"],
                target_test=files["test"], text_column="sentence", label_column="sentiment")


def read_task(train, validation, test, args, name):
    from keras_adapterfusion.tasks import from_files

    return from_files(train, validation_file=validation, test_file=test, text_column=args.text_column,
                      text_pair_column=args.text_pair_column, label_column=args.label_column, name=name)


def batches(task, split, tokenizer, args, shuffle):
    """Tokenized `(x, y)` batches of one split; training batches are shuffled and grouped by length."""
    from keras_adapterfusion.tasks import make_dataset, tokenize

    inputs, labels = task.load(split)
    encoded = tokenize(tokenizer, task, inputs, max_length=args.max_length)
    return make_dataset(encoded, labels, batch_size=args.batch_size, shuffle=shuffle, seed=0,
                        padding="buckets" if shuffle else "longest"), labels


def train(model, task, tokenizer, args, learning_rate):
    """Compile for the model's stage (AdamW, linear decay) and fit, with early stopping on validation loss."""
    import keras

    from keras_adapterfusion import training

    train_data, _ = batches(task, "train", tokenizer, args, shuffle=True)
    validation = batches(task, "validation", tokenizer, args, shuffle=False)[0] \
        if task.has_split("validation") else None
    training.compile_for_stage(model, total_steps=len(train_data) * args.epochs, learning_rate=learning_rate)
    callbacks = []
    if validation is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True))
    history = model.fit(train_data, validation_data=validation, epochs=args.epochs, callbacks=callbacks, verbose=2)
    return history.history


def main(argv=None):
    args = parse_args(argv)
    if args.smoke:
        from _smoke import scratch_dir, tiny_checkpoint

        scratch = scratch_dir()  # removed when the script ends
        vars(args).update(write_smoke_files(scratch), encoder=tiny_checkpoint(),
                          output_dir=os.path.join(scratch, "output"), epochs=2, batch_size=8, max_length=32,
                          adapter_lr=3e-3, fusion_lr=3e-3)

    import numpy as np

    import keras_adapterfusion as kaf
    from keras_adapterfusion.training import builders
    from keras_adapterfusion.training import losses as heads
    from keras_adapterfusion.formats import native as saving
    from keras_adapterfusion.backbones.huggingface import DEFAULT_ENCODER
    from keras_adapterfusion.tasks import compute_metrics

    checkpoint = args.encoder or DEFAULT_ENCODER
    encoder = kaf.load_encoder(checkpoint)
    tokenizer = kaf.load_tokenizer(checkpoint)

    # Stage 1: knowledge extraction, one adapter (and a throw-away head) per source task.
    source_names = []
    for spec in args.source:
        name, _, files = spec.partition("=")
        train_file, _, validation_file = files.partition(",")
        if not name or not train_file:
            raise SystemExit(f"--source {spec!r}: expected NAME=TRAIN[,VALIDATION]")
        task = read_task(train_file, validation_file or None, None, args, name)
        print(f"\n== stage 1: adapter {name!r} on {train_file} ({task.kind}, labels {list(task.label_names)})")
        model = builders.build_adapter_model(encoder, name, head=heads.make_head(task.head_kind, task.num_labels))
        train(model, task, tokenizer, args, args.adapter_lr)
        saving.save_adapter(encoder, name, os.path.join(args.output_dir, "adapters", name))
        source_names.append(name)

    # Stage 2: knowledge composition. The encoder and the adapters stay frozen; fusion and a new head train.
    target = read_task(args.target_train, args.target_validation, args.target_test, args, "target")
    print(f"\n== stage 2: fusion over {source_names} for the target ({list(target.label_names)})")
    head = heads.make_head(target.head_kind, target.num_labels, label_names=list(target.label_names))
    fusion = builders.build_fusion_model(encoder, source_names, head=head)
    history = train(fusion, target, tokenizer, args, args.fusion_lr)
    saving.save_fusion(encoder, source_names, os.path.join(args.output_dir, "fusion"))
    saving.save_head(fusion.head, os.path.join(args.output_dir, "head"), encoder)

    metrics = {}
    if target.has_split("test"):
        test_data, test_labels = batches(target, "test", tokenizer, args, shuffle=False)
        logits = fusion.predict(test_data, verbose=0)
        metrics = compute_metrics(target.metrics, test_labels, logits, kind=target.kind)
        print("target test metrics:", {k: round(v, 4) for k, v in metrics.items()})
    print(f"saved adapters, fusion and head under {args.output_dir}")

    if args.smoke:
        # The saved head carries the label names, and the saved modules load back into a new encoder.
        fresh = kaf.load_encoder(checkpoint)
        for name in source_names:
            saving.load_adapter(fresh, os.path.join(args.output_dir, "adapters", name))
        setup = saving.load_fusion(fresh, os.path.join(args.output_dir, "fusion"))
        reloaded_head = saving.load_head(os.path.join(args.output_dir, "head"), fresh)
        assert list(reloaded_head.label_names) == ["bad", "good"], reloaded_head.label_names
        assert list(setup.adapters) == source_names
        assert len(history["loss"]) >= 1 and np.all(np.isfinite(history["loss"]))
        assert set(metrics) == {"accuracy", "macro_f1"} and 0.0 <= metrics["accuracy"] <= 1.0, metrics
        print("smoke OK")


if __name__ == "__main__":
    main()
