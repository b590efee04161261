"""Search fusion set-ups with keras-tuner over trained adapters, for a small target task.

Stage 2 of AdapterFusion has more to choose than a learning rate: the fusion
preset (`dynamic` or `static`) and its switches, the value matrix's
regularization, dropout, which of the source adapters take part, batch size and
epochs. `keras_adapterfusion.tuning.FusionHyperModel` is a keras-tuner
hypermodel over exactly those; `tuning.search` runs Bayesian optimization (or
Hyperband, or random search) with the target's validation metric as the
objective. Every trial trains on its own copy of the loaded encoder, so nothing
is read from disk again and no trial leaves anything behind for the next.

    # adapters trained before, e.g. by examples/offline_fusion.py or `keras-adapterfusion train-adapter`
    python examples/tune_fusion.py --adapters offline_fusion_output/stage1/*/adapter --target vader_tweets
    python examples/tune_fusion.py --adapters a/ b/ c/ --trials 20 --tuner hyperband --output-dir search

Run it again with the same --output-dir to continue the search (finished trials
are kept; with --trials reached none runs). To search on several machines, run
the same command on each with keras-tuner's variables set: KERASTUNER_TUNER_ID
(`chief` on one machine, `tuner0`, `tuner1`, ... on the others),
KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT (the chief's address); see
docs/tuning.md. `--smoke` searches two trials on the tiny test encoder.
"""

import argparse
import os


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--adapters", nargs="+", help="saved adapter directories (two or more)")
    parser.add_argument("--target", default="vader_tweets", help="the target task (a registry name)")
    parser.add_argument("--encoder", default=None, help="checkpoint directory or cached hub id "
                                                        "(default: the offline MiniLM)")
    parser.add_argument("--target-examples", type=int, default=300, help="target training examples")
    parser.add_argument("--eval-examples", type=int, default=500, help="validation examples (the objective)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--tuner", choices=["bayesian", "hyperband", "random"], default="bayesian")
    parser.add_argument("--trials", type=int, default=10, help="the most trials")
    parser.add_argument("--epochs", type=int, default=5, help="the most epochs per trial (early stopping)")
    parser.add_argument("--output-dir", default="tune_fusion_output")
    parser.add_argument("--smoke", action="store_true", help="two trials on the tiny test encoder")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.smoke:
        from _smoke import scratch_dir, tiny_checkpoint

        vars(args).update(encoder=tiny_checkpoint(), target_examples=32, eval_examples=16, max_length=24,
                          tuner="random", trials=2, epochs=2, output_dir=scratch_dir("search"))
    elif not args.adapters or len(args.adapters) < 2:
        raise SystemExit("tune_fusion.py: pass --adapters with two or more saved adapter directories (or --smoke)")

    import keras_adapterfusion as kaf
    from keras_adapterfusion import tuning
    from keras_adapterfusion.formats import native as saving
    from keras_adapterfusion.backbones.huggingface import DEFAULT_ENCODER
    from keras_adapterfusion.training.runs import prepare

    checkpoint = args.encoder or DEFAULT_ENCODER
    encoder = kaf.load_encoder(checkpoint)  # loaded once: every trial copies it in memory
    tokenizer = kaf.load_tokenizer(checkpoint)
    if args.smoke:  # two untrained adapters, saved and loaded as trained ones would be
        for name in ("movie", "news"):
            encoder.add_adapter(name)
            saving.save_adapter(encoder, name, scratch_dir(f"adapters/{name}"))
        encoder = kaf.load_encoder(checkpoint)
        args.adapters = [scratch_dir("adapters/movie"), scratch_dir("adapters/news")]
    names = [saving.load_adapter(encoder, directory) for directory in args.adapters]

    # The target's data, tokenized once: a small training sample, and the validation split for the objective.
    train = prepare(args.target, tokenizer, "train", args.max_length, sample=args.target_examples, seed=0)
    validation = prepare(args.target, tokenizer, "validation", args.max_length, limit=args.eval_examples)

    # The space: the documented defaults (both presets and their switches, every subset of two or more adapters,
    # regularization weight, dropout, batch size 16 or 32), with learning rates for a few hundred steps.
    space = tuning.FusionSearchSpace(learning_rate=(1e-4, 2e-3), epochs=(args.epochs,))
    hypermodel = tuning.FusionHyperModel(encoder, names, task=args.target, space=space, seed=0)
    tuner = tuning.search(hypermodel, train, validation, tuner=args.tuner, max_trials=args.trials,
                          directory=args.output_dir, verbose=1)

    # trials.csv, trials.md, trials.png and best_fusion_config.json (what `fuse --fusion-config` reads).
    tuning.write_reports(tuner, args.output_dir, adapter_dirs=dict(zip(names, args.adapters)))
    best = tuning.best_trial(tuner)
    if best is not None:
        print(f"best: trial {best.trial_id}, {hypermodel.objective.name} {best.score:.4f}")
        print(tuning.fusion_config_from_values(best.hyperparameters.values).to_json())
        model = tuner.load_model(best)  # its trained fusion and head, at its best epoch
        print(f"the best trial's model: {model.name}, {len(model.trainable_weights)} trained weights")
    print(f"wrote {args.output_dir}")

    if args.smoke:
        rows = tuning.trial_rows(tuner)
        assert [r["trial"] for r in rows] == ["0", "1"] and all(r["status"] == "COMPLETED" for r in rows)
        assert all(0 <= r["val_accuracy"] <= 1 and r["seconds"] > 0 for r in rows)
        for name in tuning.REPORT_FILES:
            assert os.path.isfile(os.path.join(args.output_dir, name)), name
        assert encoder.fusion_specs == {}  # the loaded encoder gained nothing
        again = tuning.search(tuning.FusionHyperModel(encoder, names, task=args.target, space=space, seed=0), train,
                              validation, tuner=args.tuner, max_trials=args.trials, directory=args.output_dir,
                              verbose=0)
        assert again.trials_run == []  # the search continues: both trials are done, none runs again
        print("smoke OK")


if __name__ == "__main__":
    main()
