"""This package against the reference (AdapterHub `adapters` 1.3.0 on PyTorch), timed in turns in one run.

Two long-lived worker processes hold one workload each: this package's (`bench.py --serve`) and the reference's
(`peer_worker.py`, which builds and steps exactly as `shared/bench/peer_bench.py` does). For every scenario both
build their model and run their 2 warm-up steps; then, round after round, each runs a few timed steps while the
other waits, the order swapping every round. Machine noise (other jobs, frequency changes) so falls on both
alike; each row reports the median, the quartiles and the range of the step times, and the ratio of the medians
with the range of the per-round ratios. The load average is recorded before and after every scenario.

Usage (from the repository root; `make bench` runs the first line):

    python3 benchmarks/compare.py --threads 2 --table benchmarks/results/cpu2_table.md
    python3 benchmarks/compare.py --scenarios infer_fusion,train_fusion --seqs 64,128,256,512
    python3 benchmarks/compare.py --scenarios infer_fusion,train_fusion --adapter-counts 2,4,8,16
    python3 benchmarks/compare.py --memory --scenarios train_fusion
    python3 benchmarks/compare.py --variant xla="--jit on" --scenarios infer_base   # extra workers of ours
    python3 benchmarks/compare.py --before /tmp/before --no-reference       # against an older checkout

Every result goes to `--out` as JSON lines (one per worker and workload, plus one `comparison` line each).
"""

import argparse
import itertools
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCENARIOS = ("train_full", "train_adapter", "train_fusion", "infer_base", "infer_adapter", "infer_fusion")
REFERENCE = "reference"
OURS = "ours"


class Worker:
    """One benchmark worker process, spoken to in JSON lines."""

    def __init__(self, name, command, env=None, log=None):
        self.name = name
        self.command = command
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=log or subprocess.DEVNULL, text=True, bufsize=1,
                                        env={**os.environ, **(env or {})}, cwd=ROOT)

    def ask(self, request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name!r} ended (command: {shlex.join(self.command)}); "
                               "see its log for the reason")
        return json.loads(line)

    def close(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()


def quantile(values, q):
    values = sorted(values)
    position = (len(values) - 1) * q
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def summary(ms):
    return {"ms_median": round(statistics.median(ms), 2), "ms_p25": round(quantile(ms, 0.25), 2),
            "ms_p75": round(quantile(ms, 0.75), 2), "ms_min": round(min(ms), 2), "ms_max": round(max(ms), 2)}


def load_average():
    return [round(v, 2) for v in os.getloadavg()]


def make_workers(args, log):
    backend_env = {"KERAS_BACKEND": args.backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    ours = [args.ours_python, os.path.join(HERE, "bench.py"), "--serve"]
    if args.threads:
        ours += ["--threads", str(args.threads)]
    workers = [(OURS, ours + shlex.split(args.ours_args), backend_env)]
    for variant in args.variant:
        name, _, extra = variant.partition("=")
        workers.append((name, ours + shlex.split(extra), backend_env))
    if args.before:  # another checkout of this package (e.g. `git worktree add /tmp/before HEAD~3`)
        before = [args.ours_python, os.path.join(HERE, "bench.py"), "--serve"] + ours[3:]
        workers.append(("before", before + shlex.split(args.ours_args),
                        {**backend_env, "PYTHONPATH": os.path.abspath(args.before)}))
    if not args.no_reference:
        peer = [args.peer_python, os.path.join(HERE, "peer_worker.py"), "--peer-bench", args.peer_bench]
        if args.threads:
            peer += ["--threads", str(args.threads)]
        workers.append((REFERENCE, peer, {}))
    return [Worker(name, command, env, log) for name, command, env in workers]


def workloads(args):
    for scenario, seq, adapters in itertools.product(args.scenarios, args.seqs, args.adapter_counts):
        if not scenario.endswith("fusion") and adapters != args.adapter_counts[0]:
            continue  # the adapter count only changes fusion workloads
        yield {"scenario": scenario, "model": args.model, "batch": args.batch, "seq": seq, "adapters": adapters}


def time_workload(workers, spec, args, emit):
    """Set every worker up for `spec`, time them in turns; returns {worker name: row}."""
    load_before = load_average()
    rows = {}
    for w in workers:
        answer = w.ask({"op": "setup", **spec})
        if "error" in answer:
            print(f"  {w.name}: {spec['scenario']} failed: {answer['error']}", file=sys.stderr, flush=True)
            continue
        rows[w.name] = {"worker": w.name, "answer": answer, "ms": [], "cpu_ms": [], "rounds": []}
    active = [w for w in workers if w.name in rows]
    for r in range(args.rounds):
        order = active if r % 2 == 0 else active[::-1]
        for w in order:
            time.sleep(args.pause)  # let the other process's threads settle
            answer = w.ask({"op": "time", "steps": args.steps})
            if "error" in answer:
                raise RuntimeError(f"{w.name}: {answer['error']}")
            rows[w.name]["ms"] += answer["ms"]
            rows[w.name]["cpu_ms"] += answer["cpu_ms"]
            rows[w.name]["rounds"].append(statistics.median(answer["ms"]))
    load_after = load_average()
    out = {}
    for name, row in rows.items():
        info = row["answer"]
        line = {"kind": "timing", "worker": name, "impl": info.get("impl", name), **spec,
                "n_adapters": spec["adapters"] if spec["scenario"].endswith("fusion") else None,
                **summary(row["ms"]), "cpu_ms_median": round(statistics.median(row["cpu_ms"]), 2),
                "ex_per_s": round(spec["batch"] / statistics.median(row["ms"]) * 1000, 2),
                "trainable_params": info.get("trainable_params"), "steps": len(row["ms"]),
                "rounds": args.rounds, "round_medians": [round(v, 2) for v in row["rounds"]],
                "threads": args.threads, "load_before": load_before, "load_after": load_after,
                "setup_s": info.get("setup_s")}
        line.pop("adapters")
        emit(line)
        out[name] = line
    if REFERENCE in rows:
        ref = rows[REFERENCE]
        for name, row in rows.items():
            if name == REFERENCE:
                continue
            per_round = [a / b for a, b in zip(row["rounds"], ref["rounds"])]
            emit({"kind": "comparison", "worker": name, "against": REFERENCE, **spec,
                  "ratio": round(out[name]["ms_median"] / out[REFERENCE]["ms_median"], 3),
                  "round_ratio_median": round(statistics.median(per_round), 3),
                  "round_ratio_min": round(min(per_round), 3), "round_ratio_max": round(max(per_round), 3),
                  "load_before": load_before, "load_after": load_after})
            out[name]["ratio"] = round(out[name]["ms_median"] / out[REFERENCE]["ms_median"], 3)
            out[name]["round_ratio_min"] = round(min(per_round), 3)
            out[name]["round_ratio_max"] = round(max(per_round), 3)
    return out


def memory_runs(args, log, emit):
    """Peak RSS of each implementation, a fresh process per workload (ru_maxrss only grows)."""
    for spec in workloads(args):
        for w in make_workers(args, log):
            try:
                before = w.ask({"op": "rss"})
                answer = w.ask({"op": "setup", **spec})
                if "error" in answer:
                    print(f"  {w.name}: {answer['error']}", file=sys.stderr)
                    continue
                w.ask({"op": "time", "steps": args.steps})
                after = w.ask({"op": "rss"})
                line = {"kind": "memory", "worker": w.name, "impl": answer.get("impl", w.name), **spec,
                        "peak_rss_mb": after["peak_rss_mb"], "rss_after_import_mb": before["rss_mb"],
                        "peak_minus_import_mb": round(after["peak_rss_mb"] - before["rss_mb"], 1),
                        "timed_steps": args.steps, "load": load_average()}
                emit(line)
                print(f"  {w.name:10s} {spec['scenario']:13s} seq {spec['seq']:4d} peak RSS "
                      f"{line['peak_rss_mb']:8.1f} MiB (after imports {line['rss_after_import_mb']:.1f})",
                      flush=True)
            finally:
                w.close()


def markdown(results, workers):
    names = [w for w in workers if w != REFERENCE]
    head = "| scenario | seq | N | " + " | ".join(f"{n} ms (p25–p75)" for n in names)
    head += " | reference ms (p25–p75) | " + " | ".join(f"{n} / reference (per-round range)" for n in names) + " |"
    lines = [head, "|" + "---|" * (3 + 2 * len(names) + 1)]
    for spec, rows in results:
        cells = [spec["scenario"], str(spec["seq"]), str(spec["adapters"]) if spec["scenario"].endswith("fusion")
                 else "–"]
        for n in names + [REFERENCE]:
            r = rows.get(n)
            cells.append("failed" if r is None else f"{r['ms_median']:.0f} ({r['ms_p25']:.0f}–{r['ms_p75']:.0f})")
        for n in names:
            r = rows.get(n)
            cells.append("–" if r is None or "ratio" not in r else
                         f"**{r['ratio']:.2f}** ({r['round_ratio_min']:.2f}–{r['round_ratio_max']:.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seqs", default="128", help="comma-separated sequence lengths")
    parser.add_argument("--adapter-counts", default="8", help="comma-separated adapter counts (fusion scenarios)")
    parser.add_argument("--rounds", type=int, default=5, help="turns per worker and workload")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per turn")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between two turns")
    parser.add_argument("--threads", type=int, default=2, help="threads each implementation may use (0: default)")
    parser.add_argument("--backend", default="tensorflow", help="KERAS_BACKEND of this package's worker")
    parser.add_argument("--ours-python", default=os.path.join(ROOT, ".venv", "bin", "python"))
    parser.add_argument("--ours-args", default="", help="extra arguments of this package's worker (bench.py)")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=ARGS: one more worker of this package with extra bench.py arguments")
    parser.add_argument("--before", default=None,
                        help="one more worker running the package found in this directory (an older checkout)")
    parser.add_argument("--peer-python", default="/tmp/peer/bin/python")
    parser.add_argument("--peer-bench", default=os.path.join(ROOT, "..", "shared", "bench", "peer_bench.py"))
    parser.add_argument("--no-reference", action="store_true", help="time only this package's workers")
    parser.add_argument("--memory", action="store_true", help="measure peak RSS instead of time")
    parser.add_argument("--out", default=None, help="JSON lines file to append to")
    parser.add_argument("--table", default=None, help="also write the markdown table here")
    parser.add_argument("--log", default=os.path.join(HERE, "results", "workers.log"),
                        help="where the workers' own output goes")
    args = parser.parse_args()
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    for s in args.scenarios:
        if s not in SCENARIOS:
            parser.error(f"--scenarios: unknown {s!r}; expected from {list(SCENARIOS)}")
    args.seqs = [int(v) for v in args.seqs.split(",")]
    args.adapter_counts = [int(v) for v in args.adapter_counts.split(",")]
    for path, what in ((args.ours_python, "--ours-python"), (args.peer_python, "--peer-python"),
                       (args.peer_bench, "--peer-bench")):
        if (what != "--ours-python" and args.no_reference) or os.path.exists(path):
            continue
        parser.error(f"{what}: {path} does not exist (see benchmarks/README.md for the reference's venv)")
    os.makedirs(os.path.dirname(os.path.abspath(args.log)), exist_ok=True)
    log = open(args.log, "a")
    out = open(args.out, "a") if args.out else None
    run_info = {"kind": "run", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "host_cpus": os.cpu_count(),
                "cpu": platform.processor() or platform.machine(), "argv": sys.argv[1:], "load": load_average()}

    def emit(line):
        if out:
            out.write(json.dumps(line) + "\n")
            out.flush()

    emit(run_info)
    print(f"load average {run_info['load']} on {os.cpu_count()} CPUs", flush=True)
    if args.memory:
        memory_runs(args, log, emit)
        return
    workers = make_workers(args, log)
    results = []
    try:
        for spec in workloads(args):
            rows = time_workload(workers, spec, args, emit)
            results.append((spec, rows))
            print("  " + spec["scenario"], f"seq {spec['seq']}", f"N {spec['adapters']}" if
                  spec["scenario"].endswith("fusion") else "", " ".join(
                      f"{n} {r['ms_median']:.0f} ms" for n, r in rows.items()),
                  " ".join(f"ratio {r['ratio']:.2f}" for r in rows.values() if "ratio" in r),
                  f"load {rows[next(iter(rows))]['load_after'][0] if rows else '?'}", flush=True)
    finally:
        for w in workers:
            w.close()
    table = markdown(results, [w.name for w in workers])
    footer = (f"\n\n{args.rounds} rounds × {args.steps} timed steps per implementation and workload, in turns; "
              f"batch {args.batch}, {args.model}, {args.threads} threads each; load average "
              f"{run_info['load']} at the start, {load_average()} at the end; {run_info['started']}.\n")
    print(table + footer)
    if args.table:
        with open(args.table, "w") as f:
            f.write(table + footer)


if __name__ == "__main__":
    main()
