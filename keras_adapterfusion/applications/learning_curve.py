"""Does fusion pay off? A learning curve over target sizes, the paper's six set-ups, several seeds.

AdapterFusion's claim (Pfeiffer et al., 2020, Table 1) is that fusing source adapters helps most where the
target task has little data, and that it beats multi-task learning. This module measures that claim on the
offline tasks and encoder (`keras_adapterfusion.applications.demo`'s sources and target), for each target size and seed:

- `head_only`: a head on the frozen encoder;
- `full_finetune`: every encoder weight and a head;
- `st_a`: a target adapter and its head;
- `mt_a`: one adapter and head per task (the sources and the target) trained together (multi-task, each
  batch mixing tasks; the sources seen as often as in their own stage 1, the target's examples repeated so
  that it is seen as often as in the other set-ups), evaluated through the target's adapter and head;
- `fusion_st_a`: fusion over the source adapters (trained once, alone) and the target's ST-A adapter;
- `fusion_mt_a`: fusion over the MT-A adapters;
- `fusion_tuned` (when a tuned set-up is given): a fusion with the set-up `keras-adapterfusion tune` found.
  Give it `tune`'s `best_trial.json`: its fusion config, its learning rate and the adapters it chose, among the
  sources and the target's own ST-A adapter (named after the target task, e.g. `vader_tweets`; the seed's ST-A
  adapter stands in for it). A bare fusion config (such as `best_fusion_config.json`) is used like
  `fusion_st_a`: all the sources and the target's adapter, at `fusion_st_a`'s learning rate.

Every finished run is appended to `runs.jsonl` in the output directory at once, so an interrupted curve
continues where it stopped when run again with the same arguments; `results.json`, `learning_curve.md` and
`learning_curve.png` (mean ± standard deviation over seeds per set-up and size) are rewritten at the end.

Run it with `python -m keras_adapterfusion.applications.learning_curve --output-dir DIR` (see `--help`).
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time

import numpy as np

SETUPS = ("head_only", "full_finetune", "st_a", "mt_a", "fusion_st_a", "fusion_mt_a", "fusion_tuned")
LABELS = {"head_only": "Head", "full_finetune": "Full", "st_a": "ST-A", "mt_a": "MT-A",
          "fusion_st_a": "Fusion w/ ST-A", "fusion_mt_a": "Fusion w/ MT-A", "fusion_tuned": "Fusion (tuned)"}


@dataclasses.dataclass(frozen=True)
class CurveConfig:
    """What the curve trains.

    Args:
        sizes: target training-set sizes.
        seeds: how many seeds (0, 1, ...) per size; each draws its own training sample.
        sources: the source tasks (one adapter each, trained once on `source_train` balanced examples).
        target: the target task (evaluated on its whole test split).
        min_steps: each run trains for `max(min_epochs, ceil(min_steps / batches per epoch))` epochs, so
            the smallest sets still take enough optimizer steps.
        learning_rates: per set-up (the demo's, tuned for a few hundred examples).
    """

    sizes: tuple = (50, 100, 300, 1000)
    seeds: int = 3
    sources: tuple = ("vader_movie", "subjectivity", "bbc_topic")
    target: str = "vader_tweets"
    source_train: int = 640
    source_epochs: int = 2
    min_epochs: int = 3
    min_steps: int = 60
    max_length: int = 40
    batch_size: int = 16
    learning_rates: dict = dataclasses.field(default_factory=lambda: {
        "head_only": 2e-3, "full_finetune": 5e-5, "st_a": 1e-3, "mt_a": 1e-3, "fusion_st_a": 5e-4,
        "fusion_mt_a": 5e-4, "fusion_tuned": None})

    def epochs(self, size):
        """Epochs for a training set of `size` examples: at least `min_epochs` and `min_steps` steps."""
        batches = math.ceil(size / self.batch_size)
        return max(self.min_epochs, math.ceil(self.min_steps / batches))


def tuned_setup(tuned_fusion, config=CurveConfig()):
    """The `fusion_tuned` set-up: dict with `fusion_config`, `learning_rate` and `adapters`.

    `tuned_fusion` is `tune`'s `best_trial.json` (a path or its dict: its `fusion_config`, its
    `values.learning_rate` and its `adapters`, names from `config.sources` and `config.target`, the
    target's own adapter), or a fusion config (a preset name, a dict, or the path of a JSON file such as
    `best_fusion_config.json`: then `fusion_st_a`'s learning rate, all of `config.sources` and the
    target's adapter). `adapters` in the result name the curve's adapters: the sources, and `"target"` for
    the target's. Raises `ValueError` naming the field for anything else.
    """
    where = "tuned_fusion"
    if isinstance(tuned_fusion, str) and tuned_fusion.endswith(".json"):
        if not os.path.isfile(tuned_fusion):
            raise ValueError(f"tuned_fusion: {tuned_fusion!r} is not a file; expected a best_trial.json or a "
                             "fusion config JSON file")
        where = tuned_fusion
        with open(tuned_fusion) as f:
            try:
                tuned_fusion = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e})") from None
    setup = {"fusion_config": tuned_fusion, "learning_rate": config.learning_rates["fusion_st_a"],
             "adapters": [*config.sources, "target"]}
    if isinstance(tuned_fusion, dict) and "fusion_config" in tuned_fusion:
        setup["fusion_config"] = tuned_fusion["fusion_config"]
        rate = tuned_fusion.get("values", {}).get("learning_rate", setup["learning_rate"])
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 < rate < 1:
            raise ValueError(f"{where}: values.learning_rate is {rate!r}; expected a number in (0, 1)")
        setup["learning_rate"] = float(rate)
        known = [*config.sources, config.target]
        adapters = tuned_fusion.get("adapters", known)
        unknown = [a for a in adapters if a not in known] if isinstance(adapters, list) else adapters
        if not isinstance(adapters, list) or not adapters or unknown:
            raise ValueError(f"{where}: adapters is {adapters!r}; expected a non-empty list of the curve's "
                             f"sources and target {known}")
        setup["adapters"] = ["target" if a == config.target else a for a in adapters]
    from keras_adapterfusion.configs import FusionConfig

    try:
        FusionConfig.get(setup["fusion_config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: fusion_config is not a fusion config ({e})") from None
    return setup


def _log(message):
    print(f"[curve {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _read_runs(path):
    runs = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        runs.append(json.loads(line))
                    except json.JSONDecodeError:  # a line cut by a kill: that run is redone
                        pass
    return runs


def _padded(encoded, max_length):
    """Fixed-width int arrays from tokenized lists (for the multi-task mix)."""
    out = {}
    for key, rows in encoded.items():
        arr = np.zeros((len(rows), max_length), dtype="int32")
        for i, r in enumerate(rows):
            arr[i, :len(r)] = r
        out[key] = arr
    return out


def run_learning_curve(output_dir, config=CurveConfig(), setups=SETUPS, encoder_path=None, tuned_fusion=None,
                       data_dir=None):
    """Train and evaluate every (set-up, size, seed); returns the summary dict.

    Args:
        output_dir: where `runs.jsonl`, `sources/` (the source adapters), `results.json`,
            `learning_curve.md` and `learning_curve.png` go. Runs already in `runs.jsonl` are skipped.
        config: a `CurveConfig`.
        setups: which set-ups to run (names from `SETUPS`).
        encoder_path: checkpoint directory; default the offline MiniLM.
        tuned_fusion: the tuned set-up for `fusion_tuned` (see `tuned_setup`): `tune`'s `best_trial.json`
            (a path or its dict), or a fusion config (dict, preset name, or path of a JSON file such as
            `best_fusion_config.json`); needed for `fusion_tuned`.
        data_dir: TFDS data directory for the offline tasks.

    Returns:
        dict set-up -> size -> {"mean", "std", "values"} of the target's main metric.
    """
    import keras

    from keras_adapterfusion import load_encoder, load_tokenizer
    from keras_adapterfusion.training import builders
    from keras_adapterfusion.formats import native as saving
    from keras_adapterfusion.training import optimizers as training
    from keras_adapterfusion.backbones.huggingface import DEFAULT_ENCODER
    from keras_adapterfusion.training.runs import dataset as make_ds
    from keras_adapterfusion.training.runs import evaluate, fit, prepare, seed_everything
    from keras_adapterfusion.training.losses import make_head
    from keras_adapterfusion.models.adapter_model import AdapterModel
    from keras_adapterfusion.models.trainable import make_spec
    from keras_adapterfusion.tasks import get_task

    unknown = [s for s in setups if s not in SETUPS]
    if unknown:
        raise ValueError(f"setups: unknown {unknown}; expected names from {list(SETUPS)}")
    if "fusion_tuned" in setups and tuned_fusion is None:
        raise ValueError("setups: 'fusion_tuned' needs tuned_fusion (tune's best_trial.json, or a fusion "
                         "config or its JSON file)")
    cfg = config
    tuned = tuned_setup(tuned_fusion, cfg) if "fusion_tuned" in setups else None
    encoder_path = encoder_path or DEFAULT_ENCODER
    os.makedirs(output_dir, exist_ok=True)
    runs_path = os.path.join(output_dir, "runs.jsonl")
    done = {(r["setup"], r["size"], r["seed"]) for r in _read_runs(runs_path)}
    tokenizer = load_tokenizer(encoder_path)

    def load_enc():
        return load_encoder(encoder_path, hidden_dropout=0.1, attention_dropout=0.1)

    target = get_task(cfg.target)
    test_enc, test_y = prepare(target, tokenizer, "test", cfg.max_length, data_dir=data_dir)
    metric = target.metrics[0]
    source_data = {}
    for name in cfg.sources:
        source_data[name] = prepare(get_task(name), tokenizer, "train", cfg.max_length, sample=cfg.source_train,
                                    seed=0, data_dir=data_dir, balanced=True)

    # ---- stage 1 for the sources, once (kept in output_dir/sources/ for the later runs)
    source_dir = os.path.join(output_dir, "sources")
    if not all(os.path.exists(os.path.join(source_dir, n, "module.json")) for n in cfg.sources):
        seed_everything(0)
        enc = load_enc()
        for name in cfg.sources:
            _log(f"source adapter {name}: {len(source_data[name][1])} examples, {cfg.source_epochs} epochs")
            model = builders.build_adapter_model(enc, name, num_labels=get_task(name).num_labels)
            fit(model, "adapter", make_ds(*source_data[name], cfg.batch_size, shuffle=True, seed=0),
                cfg.source_epochs, cfg.learning_rates["st_a"], verbose=0)
            saving.save_adapter(enc, name, os.path.join(source_dir, name))

    def record(setup, size, seed, model, stage, train, epochs, lr, started):
        if stage is not None:
            fit(model, stage, train, epochs, lr, verbose=0)
        metrics = evaluate(model, target, test_enc, test_y)
        row = {"setup": setup, "size": size, "seed": seed, "epochs": epochs, "test": metrics,
               "seconds": round(time.time() - started, 1)}
        with open(runs_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        _log(f"size {size} seed {seed} {setup}: {metric} {metrics[metric]:.4f} ({row['seconds']} s)")

    for size in cfg.sizes:
        epochs = cfg.epochs(size)
        for seed in range(cfg.seeds):
            todo = [s for s in setups if (s, size, seed) not in done]
            if not todo:
                continue
            keras.backend.clear_session()
            train_enc, train_y = prepare(target, tokenizer, "train", cfg.max_length, sample=size, seed=seed,
                                         data_dir=data_dir)
            seed_everything(seed)
            train = make_ds(train_enc, train_y, cfg.batch_size, shuffle=True, seed=seed)
            n = target.num_labels
            shared = load_enc()
            for name in cfg.sources:
                saving.load_adapter(shared, os.path.join(source_dir, name))
            lr = cfg.learning_rates
            if "head_only" in todo:
                t0 = time.time()
                record("head_only", size, seed, builders.build_head_only_model(shared, num_labels=n), "head_only",
                       train, epochs, lr["head_only"], t0)
            if "full_finetune" in todo:
                t0 = time.time()
                record("full_finetune", size, seed, builders.build_full_finetune_model(load_enc(), num_labels=n),
                       "finetune", train, epochs, lr["full_finetune"], t0)
            st_a_needed = {"st_a", "fusion_st_a"} & set(todo) or (
                "fusion_tuned" in todo and "target" in tuned["adapters"])
            if st_a_needed:
                t0 = time.time()
                model = builders.build_adapter_model(shared, "target", num_labels=n)
                if "st_a" in todo:
                    record("st_a", size, seed, model, "adapter", train, epochs, lr["st_a"], t0)
                else:
                    fit(model, "adapter", train, epochs, lr["st_a"], verbose=0)
            fusions = [("fusion_st_a", "dynamic", [*cfg.sources, "target"], lr["fusion_st_a"])]
            if tuned is not None:
                fusions.append(("fusion_tuned", tuned["fusion_config"], tuned["adapters"], tuned["learning_rate"]))
            for setup, fusion_config, adapters, rate in fusions:
                if setup in todo:
                    t0 = time.time()
                    if len(adapters) == 1:  # as in a search's one-adapter trial: that adapter, frozen, a new head
                        model = AdapterModel(shared, make_head("classification", n, name="head"),
                                             adapter_setup=adapters[0], output_key="logits",
                                             trainable_spec=make_spec(heads=True), name=setup)
                        record(setup, size, seed, model, "fusion", train, epochs, rate, t0)
                        continue
                    model = builders.build_fusion_model(shared, adapters, num_labels=n,
                                                        fusion_config=fusion_config, fusion_name=setup)
                    record(setup, size, seed, model, "fusion", train, epochs, rate, t0)
            if {"mt_a", "fusion_mt_a"} & set(todo):
                t0 = time.time()
                tasks = [*cfg.sources, cfg.target]
                names = [f"mt_{t}" for t in tasks]
                mt_enc = load_enc()
                mt = builders.build_multitask_model(mt_enc, {m: get_task(t).num_labels for m, t in zip(names, tasks)})
                # The sources are seen `source_epochs` times, as when trained alone; the target's examples
                # are repeated in the mix so that it, too, is seen `epochs` times, like in the other set-ups.
                repeats = math.ceil(epochs / cfg.source_epochs)
                target_part = ({k: list(v) * repeats for k, v in train_enc.items()}, np.tile(train_y, repeats))
                parts = [source_data[t] for t in cfg.sources] + [target_part]
                xs = [_padded(e, cfg.max_length) for e, _ in parts]
                x = {k: np.concatenate([p[k] for p in xs]) for k in xs[0]}
                x["task_id"] = np.concatenate([np.full(len(y), i, "int32") for i, (_, y) in enumerate(parts)])
                y = np.concatenate([np.asarray(y) for _, y in parts])
                steps = math.ceil(len(y) / cfg.batch_size) * cfg.source_epochs
                training.compile_for_stage(mt, "adapter", total_steps=steps, learning_rate=lr["mt_a"])
                mt.fit(x, y, batch_size=cfg.batch_size, epochs=cfg.source_epochs, shuffle=True, verbose=0)
                mt_seconds = time.time() - t0
                if "mt_a" in todo:
                    st = builders.build_adapter_model(mt_enc, names[-1], head=mt.heads[names[-1]])
                    record("mt_a", size, seed, st, None, None, epochs, None, t0)
                if "fusion_mt_a" in todo:
                    t0 = time.time() - mt_seconds  # the fusion's time includes its MT-A adapters'
                    model = builders.build_fusion_model(mt_enc, names, num_labels=n, fusion_name="fusion_mt_a")
                    record("fusion_mt_a", size, seed, model, "fusion", train, epochs, lr["fusion_mt_a"], t0)

    return write_summary(output_dir, cfg, metric)


def summarize(runs, metric):
    """dict set-up -> size -> {"mean", "std", "values", "seconds"} from `runs.jsonl` rows."""
    summary = {}
    for r in runs:
        summary.setdefault(r["setup"], {}).setdefault(r["size"], []).append(r)
    out = {}
    for setup in SETUPS:
        if setup not in summary:
            continue
        out[setup] = {}
        for size in sorted(summary[setup]):
            rows = sorted(summary[setup][size], key=lambda r: r["seed"])
            values = np.array([r["test"][metric] for r in rows])
            out[setup][size] = {"mean": float(values.mean()),
                                "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                                "values": values.tolist(), "seeds": [r["seed"] for r in rows],
                                "seconds": float(np.mean([r["seconds"] for r in rows]))}
    return out


def write_summary(output_dir, cfg, metric):
    """Rewrite `results.json`, `learning_curve.md` and `learning_curve.png` from `runs.jsonl`."""
    from keras_adapterfusion.io import write_json

    summary = summarize(_read_runs(os.path.join(output_dir, "runs.jsonl")), metric)
    write_json(os.path.join(output_dir, "results.json"),
               {"config": dataclasses.asdict(cfg), "metric": metric,
                "summary": {s: {str(k): v for k, v in d.items()} for s, d in summary.items()}})
    with open(os.path.join(output_dir, "learning_curve.md"), "w") as f:
        f.write(markdown_table(summary, metric, cfg))
    plot(summary, metric, os.path.join(output_dir, "learning_curve.png"), cfg)
    return summary


def markdown_table(summary, metric, cfg):
    """Mean ± std (in %) per set-up (rows) and size (columns), best mean per size in bold."""
    sizes = sorted({s for d in summary.values() for s in d})
    best = {size: max((d[size]["mean"] for d in summary.values() if size in d), default=None) for size in sizes}
    lines = [f"| set-up | " + " | ".join(f"{s} examples" for s in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for setup, d in summary.items():
        cells = []
        for size in sizes:
            if size not in d:
                cells.append("–")
                continue
            c = f"{100 * d[size]['mean']:.1f} ± {100 * d[size]['std']:.1f}"
            cells.append(f"**{c}**" if d[size]["mean"] == best[size] else c)
        lines.append(f"| {LABELS[setup]} | " + " | ".join(cells) + " |")
    seeds = sorted({len(v["values"]) for d in summary.values() for v in d.values()})
    return (f"Target `{cfg.target}`, test {metric} in % (mean ± std over {'/'.join(map(str, seeds))} seeds).\n\n"
            + "\n".join(lines) + "\n")


def plot(summary, metric, path, cfg):
    """The curve: one line per set-up with a band of ± one standard deviation, sizes on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for setup, d in summary.items():
        sizes = sorted(d)
        mean = np.array([d[s]["mean"] for s in sizes]) * 100
        std = np.array([d[s]["std"] for s in sizes]) * 100
        style = "-" if setup.startswith("fusion") else "--"
        line, = ax.plot(sizes, mean, style, marker="o", label=LABELS[setup])
        ax.fill_between(sizes, mean - std, mean + std, color=line.get_color(), alpha=0.12)
    ax.set_xscale("log")
    ax.set_xticks(list(cfg.sizes))
    ax.set_xticklabels([str(s) for s in cfg.sizes])
    ax.set_xlabel(f"{cfg.target} training examples")
    ax.set_ylabel(f"test {metric} (%)")
    ax.set_title("Learning curve: mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    """`python -m keras_adapterfusion.applications.learning_curve`: see `--help`."""
    parser = argparse.ArgumentParser(prog="python -m keras_adapterfusion.applications.learning_curve",
                                     description="Learning curve of the paper's set-ups on the offline tasks.")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--sizes", default="50,100,300,1000", help="comma-separated target sizes")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--setups", default=",".join(SETUPS[:-1]),
                        help=f"comma-separated, from {','.join(SETUPS)} (default: all but fusion_tuned)")
    parser.add_argument("--tuned-fusion", help="the tuned set-up for fusion_tuned: tune's best_trial.json "
                        "(fusion config, learning rate, adapters) or a fusion config JSON file")
    parser.add_argument("--encoder", help="checkpoint directory (default: the offline MiniLM)")
    parser.add_argument("--max-length", type=int, default=40)
    args = parser.parse_args(argv)
    try:
        sizes = tuple(int(s) for s in args.sizes.split(","))
    except ValueError:
        parser.error(f"--sizes: {args.sizes!r}; expected comma-separated integers")
    if any(s < 1 for s in sizes) or args.seeds < 1 or args.max_length < 2:
        parser.error("--sizes, --seeds and --max-length must be positive")
    setups = tuple(s for s in args.setups.split(",") if s)
    bad = [s for s in setups if s not in SETUPS]
    if bad:
        parser.error(f"--setups: unknown {bad}; expected names from {','.join(SETUPS)}")
    if "fusion_tuned" in setups and not args.tuned_fusion:
        parser.error("--setups: fusion_tuned needs --tuned-fusion (tune's best_trial.json)")
    config = CurveConfig(sizes=sizes, seeds=args.seeds, max_length=args.max_length)
    summary = run_learning_curve(args.output_dir, config, setups, args.encoder, args.tuned_fusion)
    print(markdown_table(summary, get_metric(config), config))
    return 0


def get_metric(config):
    """The name of the target task's main metric (its first)."""
    from keras_adapterfusion.tasks import get_task

    return get_task(config.target).metrics[0]


if __name__ == "__main__":
    sys.exit(main())
