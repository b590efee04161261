"""Plots and tables from compare.py's JSON lines: how cost grows with the sequence and the adapter count.

    python3 benchmarks/plots.py --seq-sweep benchmarks/results/cpu2_scaling_seq.jsonl \
        --adapter-sweep benchmarks/results/cpu2_scaling_adapters.jsonl --batch 8 --out-dir docs

writes `scaling_seq.png` (time per step against the sequence length) and `scaling_adapters.png` (against
the number of fused adapters), each with this package and the reference, and the ratio below; and prints
the numbers as markdown tables. Needs matplotlib (in this package's dev extras).
"""

import argparse
import json
import os

LABELS = {"ours": "keras_adapterfusion", "reference": "adapters (PyTorch)"}
STYLE = {"ours": "-", "reference": "--"}


def read(paths):
    rows = []
    for path in paths:
        with open(path) as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return [r for r in rows if r.get("kind") == "timing"]


def series(rows, scenario, key, fixed):
    """{worker: [(x, median ms, p25, p75)]} for one scenario along `key`, the other size fixed."""
    out = {}
    for r in rows:
        if r["scenario"] != scenario or any(r.get(k) != v for k, v in fixed.items()):
            continue
        out.setdefault(r["worker"], {})[r[key]] = (r["ms_median"], r["ms_p25"], r["ms_p75"])
    return {w: sorted((x, *v) for x, v in points.items()) for w, points in out.items()}


def plot(rows, key, scenarios, fixed, path, xlabel, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 7), sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = False
    for color, scenario in zip(colors, scenarios):
        data = series(rows, scenario, key, fixed)
        for worker in ("ours", "reference"):
            if worker not in data:
                continue
            xs = [p[0] for p in data[worker]]
            top.plot(xs, [p[1] for p in data[worker]], STYLE[worker], color=color, marker="o",
                     label=f"{scenario}, {LABELS[worker]}")
            top.fill_between(xs, [p[2] for p in data[worker]], [p[3] for p in data[worker]], color=color,
                             alpha=0.15)
            drawn = True
        if "ours" in data and "reference" in data:
            ref = {p[0]: p[1] for p in data["reference"]}
            pairs = [(p[0], p[1] / ref[p[0]]) for p in data["ours"] if p[0] in ref]
            bottom.plot([p[0] for p in pairs], [p[1] for p in pairs], "-", color=color, marker="o", label=scenario)
    if not drawn:
        plt.close(fig)
        return None
    top.set_yscale("log")
    top.set_ylabel("ms per step (median; band: p25–p75)")
    top.set_title(title)
    top.legend(fontsize=8)
    top.grid(True, which="both", alpha=0.3)
    bottom.axhline(1.0, color="gray", lw=1)
    bottom.set_ylabel("ours / reference")
    bottom.set_xlabel(xlabel)
    bottom.set_xscale("log", base=2)
    xs = sorted({r[key] for r in rows if r[key] is not None and all(r.get(k) == v for k, v in fixed.items())})
    bottom.set_xticks(xs, [str(x) for x in xs])
    bottom.grid(True, alpha=0.3)
    bottom.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table(rows, key, scenarios, fixed):
    lines = [f"| scenario | {key} | ours ms (p25–p75) | reference ms (p25–p75) | ours / reference |", "|---|---|---|---|---|"]
    for scenario in scenarios:
        data = series(rows, scenario, key, fixed)
        ref = {p[0]: p for p in data.get("reference", [])}
        for p in data.get("ours", []):
            r = ref.get(p[0])
            lines.append(f"| {scenario} | {p[0]} | {p[1]:.0f} ({p[2]:.0f}–{p[3]:.0f}) | "
                         + (f"{r[1]:.0f} ({r[2]:.0f}–{r[3]:.0f}) | {p[1] / r[1]:.2f} |" if r else "– | – |"))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-sweep", nargs="+", default=[], help="compare.py --out files of the sequence sweep")
    parser.add_argument("--adapter-sweep", nargs="+", default=[], help="... of the adapter-count sweep")
    parser.add_argument("--out-dir", default="docs")
    parser.add_argument("--adapters", type=int, default=8, help="the adapter count of the sequence sweep")
    parser.add_argument("--seq", type=int, default=128, help="the sequence length of the adapter sweep")
    parser.add_argument("--batch", type=int, default=None, help="only rows of this batch size")
    args = parser.parse_args()
    if not args.seq_sweep and not args.adapter_sweep:
        parser.error("pass --seq-sweep and/or --adapter-sweep files")

    def rows_of(files):
        return [r for r in read(files) if args.batch is None or r["batch"] == args.batch]

    if args.seq_sweep:
        seq_scenarios = ["infer_base", "infer_fusion", "train_fusion"]
        rows = [r for r in rows_of(args.seq_sweep) if r["n_adapters"] in (None, args.adapters)]
        path = plot(rows, "seq", seq_scenarios, {}, os.path.join(args.out_dir, "scaling_seq.png"),
                    "sequence length (tokens)", f"Cost against sequence length (fusion over {args.adapters} adapters)")
        print(f"## sequence ({path})\n\n" + table(rows, "seq", seq_scenarios, {}))
    if args.adapter_sweep:
        fusion = ["infer_fusion", "train_fusion"]
        rows = rows_of(args.adapter_sweep)
        path = plot(rows, "n_adapters", fusion, {"seq": args.seq}, os.path.join(args.out_dir, "scaling_adapters.png"),
                    "fused adapters", f"Cost against the number of fused adapters (sequence {args.seq})")
        print(f"\n## adapters ({path})\n\n" + table(rows, "n_adapters", fusion, {"seq": args.seq}))


if __name__ == "__main__":
    main()
