"""The end-to-end demo: AdapterFusion transferring from real source tasks to a small real target.

On the offline MiniLM encoder and the offline tasks it trains one adapter per
source task, then, for several seeds and a low-resource target (a few hundred
labelled examples), trains and evaluates:

- `head_only`: a head on the frozen encoder;
- `full_finetune`: every encoder weight and a head;
- `st_a`: a target adapter and its head (single-task adapter);
- `fusion`: AdapterFusion over the source adapters and the target adapter, with a new head.

It prints a results table (mean and standard deviation over the seeds) and writes
`results.json`, `fusion_heatmap.png` and `report.md` to the output directory.

Sizes: `quick` (a first look; measured 4.1 minutes on 2 CPU cores), `default`
(11 minutes on 2 CPU cores, measured; the budget is 20) and `full` (for a GPU).
"""

import dataclasses
import os
import platform
import time

import numpy as np

from keras_adapterfusion.io import check_destination, write_directory, write_json

SOURCES = ("vader_movie", "subjectivity", "bbc_topic")
TARGET = "vader_tweets"
SETUPS = ("head_only", "full_finetune", "st_a", "fusion")


@dataclasses.dataclass(frozen=True)
class DemoSize:
    """How much the demo trains. Learning rates are per stage."""

    source_train: int
    source_epochs: int
    target_train: int
    target_epochs: int
    seeds: int
    max_length: int
    batch_size: int
    test_limit: int
    lr_head_only: float = 2e-3
    lr_full_finetune: float = 5e-5
    lr_adapter: float = 1e-3
    lr_fusion: float = 5e-4
    sources: tuple = SOURCES


SIZES = {
    # A first look: few examples and steps, so higher learning rates. Measured 4.1 minutes on
    # 2 CPU cores (the aim is 5), about half of it tracing the 16 models' training steps.
    "quick": DemoSize(source_train=192, source_epochs=3, target_train=96, target_epochs=4, seeds=3,
                      max_length=24, batch_size=16, test_limit=128, lr_head_only=5e-3, lr_full_finetune=2e-4,
                      lr_adapter=3e-3, lr_fusion=2e-3),
    "default": DemoSize(source_train=640, source_epochs=2, target_train=300, target_epochs=5, seeds=3,
                        max_length=40, batch_size=16, test_limit=None),
    "full": DemoSize(source_train=100_000, source_epochs=3, target_train=300, target_epochs=20, seeds=5,
                     max_length=128, batch_size=32, test_limit=None),
}


def _log(message):
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_demo(output_dir, size="default", encoder_path=None, sources=None, target=TARGET, data_dir=None,
             seeds=None, target_train=None):
    """Run the demo; returns the results dict (also written to `output_dir/results.json`)."""
    import keras

    from keras_adapterfusion import load_encoder, load_tokenizer
    from keras_adapterfusion.analysis import attentions as analysis
    from keras_adapterfusion.training import builders
    from keras_adapterfusion.backbones.huggingface import DEFAULT_ENCODER
    from keras_adapterfusion.training.runs import evaluate, fit, prepare, seed_everything
    from keras_adapterfusion.training.runs import dataset as make_ds
    from keras_adapterfusion.tasks import get_task

    if size not in SIZES:
        raise ValueError(f"demo size {size!r}; expected one of {list(SIZES)}")
    cfg = SIZES[size]
    if seeds is not None or target_train is not None:
        cfg = dataclasses.replace(cfg, seeds=seeds or cfg.seeds, target_train=target_train or cfg.target_train)
    encoder_path = encoder_path or DEFAULT_ENCODER
    sources = tuple(sources or cfg.sources)
    for name in (*sources, target):
        get_task(name)
    check_destination(output_dir, "demo")  # before the work, not after it
    started = time.time()
    tokenizer = load_tokenizer(encoder_path)
    results = {
        "size": size, "config": dataclasses.asdict(cfg), "encoder": encoder_path, "sources": {},
        "target": target, "runs": {s: [] for s in SETUPS},
        "machine": {"python": platform.python_version(), "keras": keras.__version__,
                    "backend": keras.backend.backend(), "cpu_count": os.cpu_count()},
    }

    def load_enc():
        return load_encoder(encoder_path, hidden_dropout=0.1, attention_dropout=0.1)

    # ---- the data first: building a dataset for the first time can draw from the global random
    # state, so seeding after it makes a first run give the same numbers as later ones.
    source_data = {}
    for name in sources:
        task = get_task(name)
        _log(f"source {name}: preparing {cfg.source_train} training examples (class-balanced)")
        # Balanced, so that a skewed source (subjectivity is 92% one class) still
        # teaches its adapter the distinction rather than the majority class.
        source_data[name] = (
            task,
            prepare(task, tokenizer, "train", cfg.max_length, sample=cfg.source_train, seed=0, data_dir=data_dir,
                    balanced=True),
            prepare(task, tokenizer, "validation", cfg.max_length, limit=cfg.test_limit or 1000, data_dir=data_dir),
        )
    target_task = get_task(target)
    test_enc, test_y = prepare(target_task, tokenizer, "test", cfg.max_length, limit=cfg.test_limit,
                               data_dir=data_dir)
    results["test_examples"] = int(len(test_y))

    # ---- stage 1: one adapter per source task (trained once, seed 0)
    seed_everything(0)
    shared = load_enc()
    for name in sources:
        task, (enc, y), (val_enc, val_y) = source_data[name]
        _log(f"source {name}: training an adapter on {len(y)} examples")
        model = builders.build_adapter_model(shared, name, num_labels=task.num_labels)
        t0 = time.time()
        losses = fit(model, "adapter", make_ds(enc, y, cfg.batch_size, shuffle=True, seed=0), cfg.source_epochs,
                     cfg.lr_adapter)
        metrics = evaluate(model, task, val_enc, val_y)
        results["sources"][name] = {"train_examples": len(y), "losses": losses, "validation": metrics,
                                    "seconds": round(time.time() - t0, 1)}
        _log(f"source {name}: validation {metrics}")

    # ---- the low-resource target
    heatmap = None
    for seed in range(cfg.seeds):
        train_enc, train_y = prepare(target_task, tokenizer, "train", cfg.max_length, sample=cfg.target_train,
                                     seed=seed, data_dir=data_dir)
        seed_everything(seed)  # after the data, as above
        train = make_ds(train_enc, train_y, cfg.batch_size, shuffle=True, seed=seed)
        n = target_task.num_labels

        def record(setup, model, stage, lr):
            t0 = time.time()
            losses = fit(model, stage, train, cfg.target_epochs, lr)
            metrics = evaluate(model, target_task, test_enc, test_y)
            results["runs"][setup].append({"seed": seed, "train_examples": len(train_y), "losses": losses,
                                           "test": metrics, "seconds": round(time.time() - t0, 1)})
            _log(f"seed {seed} {setup}: test {metrics}")
            return model

        record("head_only", builders.build_head_only_model(shared, num_labels=n), "head_only", cfg.lr_head_only)
        record("full_finetune", builders.build_full_finetune_model(load_enc(), num_labels=n), "finetune",
               cfg.lr_full_finetune)
        target_adapter = f"{target}_seed{seed}"
        record("st_a", builders.build_adapter_model(shared, target_adapter, num_labels=n), "adapter",
               cfg.lr_adapter)
        fused = [*sources, target_adapter]
        fusion = record("fusion", builders.build_fusion_model(shared, fused, num_labels=n), "fusion",
                        cfg.lr_fusion)
        if heatmap is None:
            mean = analysis.collect_fusion_attentions(fusion, make_ds(test_enc, test_y, 64), verbose=0)
            heatmap = {"adapters": [*sources, f"{target} (ST-A)"], "mean_attention": mean.tolist(), "seed": seed}

    main_metric = target_task.metrics[0]
    results["summary"] = {}
    for setup in SETUPS:
        values = np.array([r["test"][main_metric] for r in results["runs"][setup]])
        results["summary"][setup] = {"metric": main_metric, "mean": float(values.mean()),
                                     "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                                     "values": values.tolist()}
    results["fusion_attention"] = heatmap
    results["seconds"] = round(time.time() - started, 1)
    table = results_table(results)
    print(table, flush=True)
    with write_directory(output_dir, "demo") as tmp:
        write_json(os.path.join(tmp, "results.json"), results)
        with open(os.path.join(tmp, "report.md"), "w") as f:
            f.write(report_markdown(results, table))
        analysis.plot_fusion_heatmap(np.asarray(heatmap["mean_attention"]), heatmap["adapters"],
                                     os.path.join(tmp, "fusion_heatmap.png"),
                                     title=f"AdapterFusion attention on {target} (seed {heatmap['seed']})")
    return results


def results_table(results):
    """The demo's results as a Markdown table: each set-up's mean ± std over the seeds, and each seed's score."""
    metric = next(iter(results["summary"].values()))["metric"]
    lines = [f"| setup | {metric} (mean ± std over {results['config']['seeds']} seeds) | per seed |",
             "|---|---|---|"]
    for setup, s in results["summary"].items():
        lines.append(f"| {setup} | {100 * s['mean']:.1f} ± {100 * s['std']:.1f} | "
                     + ", ".join(f"{100 * v:.1f}" for v in s["values"]) + " |")
    return "\n".join(lines)


def report_markdown(results, table):
    """The demo's report (`REPORT.md`): the set-up, `table` (`results_table`) and the verdict on fusion."""
    summary = results["summary"]
    best = max(summary, key=lambda k: summary[k]["mean"])
    fusion = summary["fusion"]
    others = {k: summary[k] for k in ("st_a", "full_finetune")}
    if all(fusion["mean"] > o["mean"] for o in others.values()):
        margin = min(fusion["mean"] - o["mean"] for o in others.values())
        spread = max(fusion["std"], *(o["std"] for o in others.values()))
        verdict = (f"Fusion has the best mean, ahead of ST-A and full fine-tuning by at least "
                   f"{100 * margin:.1f} points, as the paper reports for small targets"
                   + (f"; the margin is smaller than the spread over seeds ({100 * spread:.1f}), so "
                      "more seeds would be needed to call it significant." if margin < spread else "."))
    else:
        behind = [k for k, o in others.items() if o["mean"] >= fusion["mean"]]
        verdict = (f"Fusion does not beat {' and '.join(behind)} here, unlike the paper's small-target results.")
    sources = "\n".join(
        f"| {name} | {info['train_examples']} | "
        + ", ".join(f"{k} {100 * v:.1f}" for k, v in info["validation"].items()) + f" | {info['seconds']} |"
        for name, info in results["sources"].items()
    )
    attention = results.get("fusion_attention") or {}
    att_rows = "\n".join(
        f"| block {i} | " + " | ".join(f"{v:.2f}" for v in row) + " |"
        for i, row in enumerate(attention.get("mean_attention", []))
    )
    att_head = "| | " + " | ".join(attention.get("adapters", [])) + " |\n|---|" + "---|" * len(
        attention.get("adapters", []))
    return f"""# AdapterFusion demo ({results['size']})

Encoder: `{results['encoder']}`. Target: `{results['target']}` with {results['config']['target_train']} training
examples per seed, evaluated on {results['test_examples']} test examples. Backend: {results['machine']['backend']},
{results['machine']['cpu_count']} CPUs. Total time: {results['seconds'] / 60:.1f} minutes.

## Target results

{table}

Best: **{best}**. {verdict}

## Source adapters (stage 1)

| source task | training examples | validation | seconds |
|---|---|---|---|
{sources}

## Mean fusion attention on the target test set (seed 0)

{att_head}
{att_rows}

![fusion heatmap](fusion_heatmap.png)
"""
