"""Adapter methods and compositions on the offline tasks: fusion against merging, averaging and control.

Stage 1 trains one adapter per source task in the frozen offline MiniLM encoder (a `seq_bn` adapter each,
plus, for the first source, a parallel adapter and a LoRA of the same task, to compare the methods). Then,
on a small target task, with a new head each and the adapters frozen:

- `fusion`: AdapterFusion over the source adapters (stage 2 as in the paper);
- `merged`: one adapter whose weights are the mean of the source adapters' (`merge_adapters`);
- `average`: the sources' outputs averaged in every block (`AdapterSetup.average`);
- `stack_on_first`: a new target adapter trained on top of the first source's (`stacked_on`, MAD-X style);
- after training the fusion, each source left out of it at inference (`control_fusion`, no retraining);
- one `ParallelModel` call giving the fusion's prediction and each source adapter's own.

It prints and writes (`results.json`) the target's test metrics of each; the LoRA is also merged into the
encoder and its predictions compared with the unmerged ones.

    python examples/compositions.py --output-dir compositions_output
    python examples/compositions.py --smoke
"""

import argparse
import json
import os


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--sources", nargs="+", default=["vader_movie", "subjectivity", "bbc_topic"],
                        help="offline source tasks, one adapter each")
    parser.add_argument("--target", default="vader_tweets", help="the offline target task")
    parser.add_argument("--encoder", default=None, help="checkpoint (default: the offline MiniLM)")
    parser.add_argument("--source-examples", type=int, default=640)
    parser.add_argument("--target-examples", type=int, default=300)
    parser.add_argument("--eval-examples", type=int, default=None, help="cap the validation and test examples")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--adapter-lr", type=float, default=1e-3)
    parser.add_argument("--target-lr", type=float, default=5e-4, help="the fusion's and the stacked adapter's")
    parser.add_argument("--head-lr", type=float, default=3e-3,
                        help="the heads' on merged and averaged sources, where only a head trains")
    parser.add_argument("--output-dir", default="compositions_output")
    parser.add_argument("--smoke", action="store_true", help="a few steps on the tiny test encoder")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.smoke:
        from _smoke import scratch_dir, tiny_checkpoint

        vars(args).update(encoder=tiny_checkpoint(), sources=["vader_movie", "bbc_topic"], source_examples=24,
                          target_examples=24, eval_examples=16, epochs=1, batch_size=8, max_length=24,
                          output_dir=scratch_dir("compositions"))

    import numpy as np

    import keras_adapterfusion as kaf
    from keras_adapterfusion import AdapterModel, AdapterSetup, ParallelModel, merge_adapters, training
    from keras_adapterfusion.analysis.pruning import control_fusion
    from keras_adapterfusion.backbones.huggingface import DEFAULT_ENCODER
    from keras_adapterfusion.models.trainable import make_spec
    from keras_adapterfusion.tasks import compute_metrics, get_task, make_dataset, tokenize
    from keras_adapterfusion.training import builders
    from keras_adapterfusion.training import losses as heads

    checkpoint = args.encoder or DEFAULT_ENCODER
    encoder = kaf.load_encoder(checkpoint)
    tokenizer = kaf.load_tokenizer(checkpoint)
    os.makedirs(args.output_dir, exist_ok=True)

    def split(task, name, size, shuffle=False):
        inputs, labels = task.load(name, limit=size)
        encoded = tokenize(tokenizer, task, inputs, max_length=args.max_length)
        return make_dataset(encoded, labels, batch_size=args.batch_size, shuffle=shuffle, seed=0), np.asarray(labels)

    def fit(model, data, learning_rate):
        training.compile_for_stage(model, total_steps=len(data) * args.epochs, learning_rate=learning_rate)
        model.fit(data, epochs=args.epochs, verbose=2)

    # Stage 1: the source adapters (and, for the first source, a parallel adapter and a LoRA too).
    source_models = {}
    first = args.sources[0]
    for name in args.sources:
        task = get_task(name)
        train, _ = split(task, "train", args.source_examples, shuffle=True)
        methods = {name: "seq_bn"}
        if name == first:
            methods.update({f"{name}_par": "par_bn", f"{name}_lora": "lora"})
        for adapter, config in methods.items():
            print(f"\n== stage 1: {adapter} ({config}) on {name}")
            model = builders.build_adapter_model(encoder, adapter, head=heads.make_head(task.head_kind, task.num_labels),
                                                 adapter_config=config)
            fit(model, train, args.adapter_lr)
            source_models[adapter] = model

    # The target: each way of combining the frozen sources gets a new head (and only that trains).
    target = get_task(args.target)
    train, _ = split(target, "train", args.target_examples, shuffle=True)
    test, test_labels = split(target, "test", args.eval_examples)

    def new_head():
        return heads.make_head(target.head_kind, target.num_labels, label_names=list(target.label_names))

    def evaluate(model):
        logits = model.predict(test, verbose=0)
        return {k: round(float(v), 4) for k, v in compute_metrics(target.metrics, test_labels, logits,
                                                                   kind=target.kind).items()}

    results = {}
    fusion = builders.build_fusion_model(encoder, args.sources, head=new_head())
    print(f"\n== target {args.target}: fusion over {args.sources}")
    fit(fusion, train, args.target_lr)
    results["fusion"] = evaluate(fusion)

    merge_adapters(encoder, "merged", args.sources)
    for label, setup in (("merged", "merged"), ("average", AdapterSetup.average(args.sources))):
        model = AdapterModel(encoder, new_head(), adapter_setup=setup, output_key="logits",
                             trainable_spec=make_spec(heads=True), name=label)
        print(f"\n== target {args.target}: {setup} (head only)")
        fit(model, train, args.head_lr)
        results[label] = evaluate(model)

    stacked = builders.build_adapter_model(encoder, "target_on_first", head=new_head(), stacked_on=[first])
    print(f"\n== target {args.target}: {stacked.adapter_setup} (the new adapter trains)")
    fit(stacked, train, args.adapter_lr)
    results["stack_on_first"] = evaluate(stacked)

    # The trained fusion without each source, at inference (no retraining).
    for name in args.sources:
        results[f"fusion_without_{name}"] = evaluate(control_fusion(fusion, exclude=[name]))

    # One pass: the fusion's prediction and each source adapter's own head's.
    parallel = ParallelModel.from_models({"fusion": fusion, **{n: source_models[n] for n in args.sources}})
    batch = next(iter(test))[0]
    together = parallel(batch)
    alone = {t: np.asarray(m(batch)) for t, m in [("fusion", fusion)] + [(n, source_models[n]) for n in args.sources]}
    results["parallel_max_difference"] = max(float(np.abs(np.asarray(together[t]) - alone[t]).max()) for t in alone)

    # The LoRA, merged into the kernels: the same predictions at the plain encoder's cost.
    lora_model = source_models[f"{first}_lora"]
    unmerged = np.asarray(lora_model(batch))
    encoder.merge_lora(f"{first}_lora")
    results["lora_merged_max_difference"] = float(np.abs(np.asarray(lora_model(batch)) - unmerged).max())
    encoder.unmerge_lora()

    for label, value in results.items():
        print(f"{label:>32}: {value}")
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {os.path.join(args.output_dir, 'results.json')}")

    if args.smoke:
        assert {"fusion", "merged", "average", "stack_on_first"} <= set(results)
        assert results["parallel_max_difference"] < 1e-4, results["parallel_max_difference"]
        assert results["lora_merged_max_difference"] < 1e-3, results["lora_merged_max_difference"]
        print("smoke OK")


if __name__ == "__main__":
    main()
