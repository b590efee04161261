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
    python3 benchmarks/compare.py --overhead infer_fusion/infer_base   # both scenarios of each side in turns
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
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench import SCENARIOS, SERVED, inference_scenario  # noqa: E402  (standard library only at import)

# Ours / the reference's median, at most (issue 22); a `serve_*` scenario has its `infer_*` one's goal.
GOALS = {"train_full": 1.0, "train_adapter": 1.0, "train_fusion": 0.45, "infer_base": 0.9, "infer_adapter": 0.9,
         "infer_fusion": 0.45}
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


# The instruction-set extensions that decide which matrix kernels oneDNN, XLA and PyTorch pick, widest last.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "asimd", "sve")


# Environment variables that limit the instructions the libraries use (or their precision): TensorFlow's and
# PyTorch's oneDNN, PyTorch's MKL and own kernels, JAX's XLA, oneDNN's implicit bf16 (TensorFlow).
ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY", "XLA_FLAGS",
              "TF_SET_ONEDNN_FPMATH_MODE")


def cpu_isa(cpuinfo="/proc/cpuinfo", environ=None):
    """The CPU's model and the ISA extensions of `ISA_FLAGS` it has, and any limit set in the environment
    (`ISA_LIMITS`): one line for the result tables."""
    environ = os.environ if environ is None else environ
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "cpu model") and value.strip():
                    model = value.strip()
                elif key in ("flags", "features"):
                    flags |= set(value.split())
    except OSError:
        pass
    line = f"{model}; ISA: {', '.join(f for f in ISA_FLAGS if f in flags) or 'unknown'}"
    limits = [f"{k}={environ[k]}" for k in ISA_LIMITS if environ.get(k)]
    return line + (f"; limited by {' '.join(limits)}" if limits else "; no ISA limit set")


def make_workers(args, log, start=True):
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
    if not start:
        return workers
    return [Worker(name, command, env, log) for name, command, env in workers]


def workloads(args):
    for scenario, seq, adapters in itertools.product(args.scenarios, args.seqs, args.adapter_counts):
        if not scenario.endswith("fusion") and adapters != args.adapter_counts[0]:
            continue  # the adapter count only changes fusion workloads
        yield {"scenario": scenario, "model": args.model, "batch": args.batch, "seq": seq, "adapters": adapters}


def time_workload(workers, spec, args, emit, specs=None):
    """Set every worker up for `spec` (or its own in `specs`, by name), time them in turns;
    returns {worker name: row}."""
    load_before = load_average()
    specs = specs or {}
    rows = {}
    for w in workers:
        request = specs.get(w.name, spec)
        if w.name == REFERENCE:  # the reference has no SavedModel: its forward is what a served call is timed against
            request = {**request, "scenario": inference_scenario(request["scenario"])}
        answer = w.ask({"op": "setup", **request})
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
        own = specs.get(name, spec)
        line = {"kind": "timing", "worker": name, "impl": info.get("impl", name), **own,
                "n_adapters": own["adapters"] if own["scenario"].endswith("fusion") else None,
                **summary(row["ms"]), "cpu_ms_median": round(statistics.median(row["cpu_ms"]), 2),
                "ex_per_s": round(own["batch"] / statistics.median(row["ms"]) * 1000, 2),
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


def overhead_run(args, log, emit):
    """`--overhead A/B`: scenario A against scenario B of each implementation, all four timed in turns.

    Cost ratios between two scenarios (e.g. fusion inference against the plain encoder) drift with the
    machine's load when the scenarios run one after the other; here every round runs each of them once.
    """
    first, second = args.overhead.split("/")
    workers, specs = [], {}
    for name, command, env in make_workers(args, log, start=False):
        for scenario in (first, second):
            label = f"{name}:{scenario}"
            workers.append(Worker(label, command, env, log))
            specs[label] = {"scenario": scenario, "model": args.model, "batch": args.batch, "seq": args.seqs[0],
                            "adapters": args.adapter_counts[0]}
    try:
        rows = time_workload(workers, None, args, emit, specs=specs)
    finally:
        for w in workers:
            w.close()
    lines = [f"| implementation | {first} ms | {second} ms | {first} / {second} (per-round range) |",
             "|---|---|---|---|"]
    for name in dict.fromkeys(label.split(":")[0] for label in rows):
        a, b = rows.get(f"{name}:{first}"), rows.get(f"{name}:{second}")
        if a is None or b is None:
            continue
        per_round = [x / y for x, y in zip(a["round_medians"], b["round_medians"])]
        ratio = a["ms_median"] / b["ms_median"]
        emit({"kind": "overhead", "worker": name, "scenarios": [first, second], "ratio": round(ratio, 3),
              "round_ratio_min": round(min(per_round), 3), "round_ratio_max": round(max(per_round), 3),
              "load_before": a["load_before"], "load_after": a["load_after"]})
        lines.append(f"| {name} | {a['ms_median']:.0f} | {b['ms_median']:.0f} | **{ratio:.2f}** "
                     f"({min(per_round):.2f}–{max(per_round):.2f}) |")
    return "\n".join(lines)


def memory_runs(args, log, emit):
    """Peak RSS of each implementation, a fresh process per workload (ru_maxrss only grows)."""
    commands = make_workers(args, log, start=False)
    for spec in workloads(args):
        for name, command, env in commands:
            w = Worker(name, command, env, log)  # a fresh process per run: ru_maxrss never goes down
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
    """The side-by-side table (and, for the issue's scenarios, the targets) as markdown."""
    names = [w for w in workers if w != REFERENCE]
    has_ref = REFERENCE in workers
    head = "| scenario | seq | N | " + " | ".join(f"{n} ms (p25–p75)" for n in names)
    if has_ref:
        head += " | reference ms (p25–p75) | " + " | ".join(f"{n} / reference (per-round range)" for n in names)
    lines = [head + " |", "|" + "---|" * (3 + len(names) + (1 + len(names) if has_ref else 0))]
    for spec, rows in results:
        cells = [spec["scenario"], str(spec["seq"]), str(spec["adapters"]) if spec["scenario"].endswith("fusion")
                 else "–"]
        for n in names + ([REFERENCE] if has_ref else []):
            r = rows.get(n)
            cells.append("failed" if r is None else f"{r['ms_median']:.0f} ({r['ms_p25']:.0f}–{r['ms_p75']:.0f})")
        if has_ref:
            for n in names:
                r = rows.get(n)
                cells.append("–" if r is None or "ratio" not in r else
                             f"**{r['ratio']:.2f}** ({r['round_ratio_min']:.2f}–{r['round_ratio_max']:.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + targets(results)


def targets(results, worker=OURS):
    """The CPU targets (`GOALS`), checked on the medians of this run."""
    rows = {spec["scenario"]: r for spec, r in results if spec["seq"] == 128 and spec["adapters"] == 8}
    if REFERENCE not in next(iter(rows.values()), {}):
        return ""

    def mark(ok):
        return "met" if ok else "**not met**"

    out = ["", "", "Targets (medians of this run):", ""]
    for scenario, r in rows.items():
        if worker in r and "ratio" in r[worker]:
            goal = GOALS[inference_scenario(scenario)]
            out.append(f"- {scenario}: {r[worker]['ratio']:.2f}× the reference (target ≤ {goal}): "
                       f"{mark(r[worker]['ratio'] <= goal)}")
    if "infer_base" in rows and "infer_fusion" in rows and worker in rows["infer_base"]:
        ours = rows["infer_fusion"][worker]["ms_median"] / rows["infer_base"][worker]["ms_median"]
        line = f"- infer_fusion / infer_base: {ours:.2f} (target ≤ 1.35): {mark(ours <= 1.35)}"
        if REFERENCE in rows["infer_base"] and REFERENCE in rows["infer_fusion"]:
            ref = rows["infer_fusion"][REFERENCE]["ms_median"] / rows["infer_base"][REFERENCE]["ms_median"]
            line += f"; the reference's own: {ref:.2f}"
        out.append(line)
    return "\n".join(out)


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
    parser.add_argument("--overhead", default=None, metavar="A/B",
                        help="time scenario A against scenario B of each implementation, all in turns "
                             "(e.g. infer_fusion/infer_base)")
    parser.add_argument("--out", default=None, help="JSON lines file to write (see --append)")
    parser.add_argument("--append", action="store_true", help="append to --out instead of replacing it")
    parser.add_argument("--table", default=None, help="also write the markdown table here")
    parser.add_argument("--log", default=os.path.join(tempfile.gettempdir(), "keras_adapterfusion_bench_workers.log"),
                        help="where the workers' own output goes")
    args = parser.parse_args()
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    for s in args.scenarios:
        if s not in SCENARIOS + SERVED:
            parser.error(f"--scenarios: unknown {s!r}; expected from {list(SCENARIOS + SERVED)}")
    if args.overhead and (args.overhead.count("/") != 1 or any(
            s not in SCENARIOS for s in args.overhead.split("/"))):
        parser.error(f"--overhead: got {args.overhead!r}; expected A/B with A and B from {list(SCENARIOS)}")
    args.seqs = [int(v) for v in args.seqs.split(",")]
    args.adapter_counts = [int(v) for v in args.adapter_counts.split(",")]
    for path, what in ((args.ours_python, "--ours-python"), (args.peer_python, "--peer-python"),
                       (args.peer_bench, "--peer-bench")):
        if (what != "--ours-python" and args.no_reference) or os.path.exists(path):
            continue
        parser.error(f"{what}: {path} does not exist (see benchmarks/README.md for the reference's venv)")
    os.makedirs(os.path.dirname(os.path.abspath(args.log)), exist_ok=True)
    log = open(args.log, "a")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    out = open(args.out, "a" if args.append else "w") if args.out else None
    run_info = {"kind": "run", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "host_cpus": os.cpu_count(),
                "cpu": platform.processor() or platform.machine(), "isa": cpu_isa(), "argv": sys.argv[1:],
                "load": load_average()}

    def emit(line):
        if out:
            out.write(json.dumps(line) + "\n")
            out.flush()

    emit(run_info)
    print(f"load average {run_info['load']} on {os.cpu_count()} CPUs; {run_info['isa']}", flush=True)
    if args.memory:
        memory_runs(args, log, emit)
        return
    if args.overhead:
        table = overhead_run(args, log, emit)
        footer = (f"\n\n{args.rounds} rounds × {args.steps} timed steps per worker, in turns; batch {args.batch}, "
                  f"seq {args.seqs[0]}, {args.adapter_counts[0]} adapters, {args.model}, {args.threads} threads; "
                  f"load average {run_info['load']} at the start, {load_average()} at the end.\n"
                  f"CPU: {run_info['isa']}.\n")
        publish(table + footer, args.table)
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
              f"{run_info['load']} at the start, {load_average()} at the end; {run_info['started']}.\n"
              f"CPU: {run_info['isa']}.\n")
    publish(table + footer, args.table)


def publish(text, path):
    """Print a result table and, when `path` is given (`--table`), write it there too."""
    print(text)
    if path:
        with open(path, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
