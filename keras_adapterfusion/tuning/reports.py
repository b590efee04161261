"""The reports of a fusion search: one row per trial, the best trial, and the files `write_reports` writes.

| name | what it gives |
|---|---|
| `trial_rows` | one dict per trial, in the order they started: id, status, values, objective and timings |
| `best_trial` | the best completed trial |
| `write_reports` | `trials.csv`, `trials.md`, `trials.png`, `best_fusion_config.json`, `best_trial.json` |
| `plot_trials` | the objective per trial and the best so far (`trials.png`) |

Example:

```python
from keras_adapterfusion.tuning.reports import trial_rows, write_reports

write_reports(tuner, "search")
[row["status"] for row in trial_rows(tuner)]
```
"""

import csv
import itertools
import os

import numpy as np

from keras_adapterfusion.tuning.space import TRIAL_METRICS, fusion_config_from_values

__all__ = ["best_trial", "plot_trials", "trial_rows", "write_reports"]


def trial_rows(tuner):
    """One row per trial, in the order they started: id, status, values, objective and timings.

    Args:
        tuner: the tuner `search` returned (or any keras-tuner tuner).

    Returns:
        A list of dicts with `trial`, `status`, every hyperparameter (None where
        inactive), the objective (named as it is, e.g. `val_accuracy`), and the
        `TRIAL_METRICS`.

    Example:

    ```python
    for row in trial_rows(tuner):
        print(row["trial"], row["val_accuracy"], row["seconds"])
    ```
    """
    oracle = tuner.oracle
    objective = oracle.objective.name
    names = []
    for hp in oracle.get_space().space:
        if hp.name not in names:
            names.append(hp.name)
    order = list(oracle.start_order) + [t for t in oracle.trials if t not in oracle.start_order]
    rows = []
    for trial_id in dict.fromkeys(order):
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        row = {"trial": trial_id, "status": trial.status}
        row.update({name: values.get(name) for name in names})
        row.update({k: v for k, v in values.items() if k.startswith("tuner/")})
        for metric in (objective, *TRIAL_METRICS):
            value = trial.metrics.get_last_value(metric) if trial.metrics.exists(metric) else None
            if value is not None:
                value = int(value) if metric in ("best_epoch", "epochs_run") else float(value)
            row[metric] = value
        rows.append(row)
    return rows


def _columns(rows):
    columns = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def best_trial(tuner):
    """The best completed trial of a search, or None when none completed.

    Args:
        tuner: the tuner `search` returned.

    Returns:
        A keras-tuner `Trial` or None.

    Example:

    ```python
    best = best_trial(tuner)
    best.score, best.hyperparameters.values
    ```
    """
    trials = [t for t in tuner.oracle.get_best_trials(1) if t.status == "COMPLETED" and t.score is not None]
    return trials[0] if trials else None


def write_reports(tuner, directory, adapter_dirs=None, title="Fusion search"):
    """Write a search's reports into `directory`, each file atomically.

    - `trials.csv`: one row per trial (`trial_rows`);
    - `trials.md`: the same as a table, the best set-up and the timings;
    - `trials.png`: the objective over trials, with the best so far;
    - `best_fusion_config.json`: the best trial's `FusionConfig` (what `fuse --fusion-config` reads);
    - `best_trial.json`: the best trial's values, objective and timings.

    The last two are written only when a trial completed.

    Args:
        tuner: the tuner `search` returned.
        directory: where the files go (created if needed).
        adapter_dirs: adapter name -> the directory it was loaded from, for the `fuse`
            command line printed in `trials.md`.
        title: the heading of `trials.md`.

    Returns:
        The paths written.

    Example:

    ```python
    write_reports(tuner, "search_report")
    ```
    """
    from keras_adapterfusion.io.files import atomic_file, write_json

    os.makedirs(directory, exist_ok=True)
    rows = trial_rows(tuner)
    objective = tuner.oracle.objective
    columns = _columns(rows)
    written = []
    path = os.path.join(directory, "trials.csv")
    with atomic_file(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    written.append(path)
    best = best_trial(tuner)
    if best is not None:
        values = best.hyperparameters.values
        config = fusion_config_from_values(values)
        path = os.path.join(directory, "best_fusion_config.json")
        write_json(path, config.to_dict())
        written.append(path)
        best_row = next(r for r in rows if r["trial"] == best.trial_id)
        path = os.path.join(directory, "best_trial.json")
        write_json(path, {"trial": best.trial_id, "objective": objective.name, "direction": objective.direction,
                          "score": best.score, "values": values, "adapters": str(values["adapters"]).split(","),
                          "fusion_config": config.to_dict(),
                          **{k: best_row.get(k) for k in TRIAL_METRICS}})
        written.append(path)
    path = os.path.join(directory, "trials.md")
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(_markdown(rows, columns, objective, best, adapter_dirs, title))
    written.append(path)
    path = os.path.join(directory, "trials.png")
    with atomic_file(path) as tmp:
        plot_trials(rows, objective, tmp)
    written.append(path)
    return written


def _markdown(rows, columns, objective, best, adapter_dirs, title):
    done = [r for r in rows if r["status"] == "COMPLETED" and r.get(objective.name) is not None]
    lines = [f"# {title}", "",
             f"{len(rows)} trials ({len(done)} completed); objective: {objective.name} ({objective.direction}).", ""]
    shown = [c for c in columns if any(r.get(c) is not None for r in rows)]
    lines.append("| " + " | ".join(shown) + " |")
    lines.append("|" + "---|" * len(shown))
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in shown) + " |")
    lines.append("")
    seconds = [r["seconds"] for r in done if r.get("seconds") is not None]
    if seconds:
        lines.append(f"Wall time per trial: median {np.median(seconds):.1f} s, mean {np.mean(seconds):.1f} s, "
                     f"total {np.sum(seconds):.1f} s.")
    ratios = [r["first_epoch_seconds"] / r["later_epoch_seconds"] for r in done
              if r.get("first_epoch_seconds") and r.get("later_epoch_seconds")]
    if ratios:
        lines.append(f"First epoch / later epochs (start-up cost), median over trials: {np.median(ratios):.2f}.")
    if best is not None:
        values = best.hyperparameters.values
        lines += ["", f"## Best: trial {best.trial_id}, {objective.name} {best.score:.4f}", ""]
        lines += [f"- {k}: {v}" for k, v in sorted(values.items()) if not k.startswith("tuner/")]
        config = fusion_config_from_values(values)
        lines += ["", "Fusion config (`best_fusion_config.json`):", "", "```json", config.to_json(), "```"]
        names = str(values["adapters"]).split(",")
        if len(names) > 1:
            dirs = [(adapter_dirs or {}).get(n, f"<{n}>") for n in names]
            epochs = values.get("epochs", values.get("tuner/epochs"))
            lines += ["", "To train it:", "", "```",
                      f"keras-adapterfusion fuse --adapters {' '.join(dirs)} --fusion-config best_fusion_config.json "
                      f"--learning-rate {values['learning_rate']:.3g} --batch-size {values['batch_size']} "
                      f"--epochs {epochs} ...", "```"]
        else:
            lines += ["", f"The best set-up uses one adapter ({names[0]}) with a new head: no fusion."]
    return "\n".join(lines) + "\n"


def plot_trials(rows, objective, path):
    """Plot the objective of each trial in the order they started, and the best so far, as a PNG.

    Args:
        rows: `trial_rows(tuner)`.
        objective: the keras-tuner `Objective` (its name and direction).
        path: the PNG file to write.

    Returns:
        `path`.

    Example:

    ```python
    plot_trials(trial_rows(tuner), tuner.oracle.objective, "trials.png")
    ```
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    done = [(i, r) for i, r in enumerate(rows) if r.get(objective.name) is not None]  # ids count from 0 as started
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if done:
        better = min if objective.direction == "min" else max
        x = [i for i, _ in done]
        y = [r[objective.name] for _, r in done]
        ax.step(x, list(itertools.accumulate(y, better)), where="post", color="0.4", label="best so far")
        for preset, marker in (("dynamic", "o"), ("static", "s")):
            points = [(i, r[objective.name]) for i, r in done if r.get("preset") == preset]
            if points:
                ax.plot(*zip(*points), marker, linestyle="none", label=f"trial ({preset})")
        others = [(i, r[objective.name]) for i, r in done if r.get("preset") not in ("dynamic", "static")]
        if others:
            ax.plot(*zip(*others), "^", linestyle="none", label="trial")
        ax.legend(loc="best", fontsize="small")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial (its id: in the order started, from 0)")
    ax.set_ylabel(objective.name)
    ax.set_title(f"{objective.name} over trials")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    return path
