"""Accuracy and speed of pruned fusion models (keras_adapterfusion.analysis.pruning) against the unpruned one.

Takes a `fuse` run directory (from `keras-adapterfusion fuse`, e.g. on the demo's target `vader_tweets`),
ranks the adapters on the task's validation split, and compares on the test split:
the unpruned fusion, `prune_fusion(keep=k)` for every k, `drop_adapters(blocks=n)` (AdapterDrop) of the
unpruned and of the `keep=2` model, and the plain encoder with the fusion's head (no adapters: the floor
of the cost). Inference time is the median of `predict_on_batch` on test batches, every model timed in
turns. Usage:

    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/pruning_eval.py /tmp/runs/fusion --threads 2
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a fuse run directory")
    parser.add_argument("--max-length", type=int, default=None, help="default: the run's")
    parser.add_argument("--batch", type=int, default=64, help="batch of the timed inference")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--drop", default="1,2,3", help="AdapterDrop block counts to try")
    parser.add_argument("--out", default=None, help="write the results here as JSON")
    args = parser.parse_args()
    from bench import set_threads

    set_threads(args.threads)
    import keras
    import numpy as np

    from keras_adapterfusion import load_tokenizer
    from keras_adapterfusion.training import builders
    from keras_adapterfusion.analysis import pruning
    from keras_adapterfusion.training.runs import evaluate, prepare, rebuild_model, run_task

    model, run = rebuild_model(args.run_dir)
    task = run_task(run)
    max_length = args.max_length or run.get("max_length") or 128
    tokenizer = load_tokenizer(run["encoder"])
    val, _ = prepare(task, tokenizer, "validation", max_length)
    test, test_y = prepare(task, tokenizer, "test", max_length)
    val_x = {k: val[k] for k in ("input_ids", "attention_mask", "token_type_ids")}

    importance = pruning.adapter_importance(model, _pad(val_x))
    n = len(model.adapter_setup.adapters)
    models = {"fusion (unpruned)": model}
    for keep in range(n - 1, 1, -1):
        models[f"prune keep={keep}"] = pruning.prune_fusion(model, _pad(val_x), keep=keep)
    drops = [int(v) for v in args.drop.split(",") if v]
    for blocks in drops:
        models[f"drop {blocks} blocks"] = pruning.drop_adapters(model, blocks)
    if n > 2:
        for blocks in drops:
            models[f"keep=2 + drop {blocks}"] = pruning.drop_adapters(models["prune keep=2"], blocks)
    base = builders.build_head_only_model(model.encoder, head=model.head, name="no_adapters")
    models["no adapters (plain encoder, same head)"] = base

    results = {}
    for label, m in models.items():
        metrics = evaluate(m, task, test, test_y)
        results[label] = {"test": metrics, "kept": getattr(m, "pruning", {}).get("kept"),
                          "dropped_blocks": getattr(m, "pruning", {}).get("dropped_blocks", 0)}
        print(label, metrics, flush=True)

    # Timing: the same test batches for every model, in turns.
    x = _pad({k: test[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    batches = [{k: v[i:i + args.batch] for k, v in x.items()} for i in range(0, len(test_y) - args.batch + 1,
                                                                             args.batch)]
    for m in models.values():
        keras.ops.convert_to_numpy(m.predict_on_batch(batches[0]))
    times = {label: [] for label in models}
    for r in range(args.rounds):
        for label, m in (models.items() if r % 2 == 0 else reversed(models.items())):
            for b in batches:
                started = time.perf_counter()
                keras.ops.convert_to_numpy(m.predict_on_batch(b))
                times[label].append((time.perf_counter() - started) * 1000)
    unpruned = statistics.median(times["fusion (unpruned)"])
    for label in models:
        ms = statistics.median(times[label])
        results[label].update(ms_per_batch=round(ms, 2), speedup=round(unpruned / ms, 3))
    out = {"run_dir": args.run_dir, "task": task.name, "test_examples": len(test_y), "max_length": max_length,
           "batch": args.batch, "batch_tokens": int(x["input_ids"].shape[1]), "importance": importance,
           "threads": args.threads, "load": [round(v, 2) for v in os.getloadavg()], "models": results}
    metric = task.metrics[0]
    print(f"\nmean fusion attention on {task.name} validation: "
          + ", ".join(f"{k} {v:.3f}" for k, v in importance.items()))
    print(f"\n| model | adapters kept | blocks without adapters | test {metric} | ms per batch of {args.batch} | "
          "speed-up |\n|---|---|---|---|---|---|")
    for label, r in results.items():
        kept = ", ".join(r["kept"]) if r["kept"] else ("all" if "no adapters" not in label else "none")
        print(f"| {label} | {kept} | {r['dropped_blocks']} | {100 * r['test'][metric]:.1f} | "
              f"{r['ms_per_batch']:.0f} | {r['speedup']:.2f}× |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


def _pad(x):
    """Ragged token lists -> one zero-padded int32 array per key."""
    import numpy as np

    longest = max(len(v) for v in x["input_ids"])
    out = {}
    for key, values in x.items():
        array = np.zeros((len(values), longest), np.int32)
        for i, v in enumerate(values):
            array[i, :len(v)] = v
        out[key] = array
    return out


if __name__ == "__main__":
    main()
