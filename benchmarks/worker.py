"""The timing loop both benchmark workers share (standard library only, so the reference's venv can import it).

A worker reads one JSON request per line on stdin and answers one JSON line on stdout:

- `{"op": "setup", ...spec}`: build the workload the spec names, run its 2 warm-up steps, answer
  `{"ok": true, "trainable_params": ..., "setup_s": ...}`;
- `{"op": "time", "steps": k}`: run k timed steps, answer `{"ms": [...], "cpu_ms": [...]}` (wall and
  process CPU time of each step);
- `{"op": "rss"}`: answer `{"peak_rss_mb": ..., "rss_mb": ...}`, the process's peak resident set
  (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) and its current one;
- `{"op": "quit"}`.

Errors are answered as `{"error": "..."}`. Anything the libraries print goes to stderr: the worker keeps
the real stdout for its answers only.
"""

import json
import os
import sys
import time
import traceback

WARMUP = 2


def memory():
    """Peak and current resident set size of this process, in MiB (Linux)."""
    import resource

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return {"peak_rss_mb": round(peak_kb / 1024, 1), "rss_mb": round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)}


def serve(setup):
    """Answer requests until `quit` or end of input.

    Args:
        setup: a function `spec -> (step, info)`: `step()` runs one training or inference step
            (finished when it returns); `info` is a dict merged into the setup answer.
    """
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library output goes to stderr
    sys.stdout = sys.stderr
    step = None
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            op = request.pop("op")
            if op == "quit":
                break
            if op == "setup":
                step = None
                started = time.perf_counter()
                step, info = setup(request)
                for _ in range(WARMUP):
                    step()
                answer = {"ok": True, "setup_s": round(time.perf_counter() - started, 2), **info}
            elif op == "time":
                if step is None:
                    raise ValueError("time: no workload; send setup first")
                wall, cpu = [], []
                for _ in range(int(request.get("steps", 1))):
                    t, c = time.perf_counter(), time.process_time()
                    step()
                    wall.append(round((time.perf_counter() - t) * 1000, 3))
                    cpu.append(round((time.process_time() - c) * 1000, 3))
                answer = {"ms": wall, "cpu_ms": cpu}
            elif op == "rss":
                answer = memory()
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as error:  # answered, so the driver can report it and go on
            traceback.print_exc(file=sys.stderr)
            answer = {"error": f"{type(error).__name__}: {error}"}
        answers.write(json.dumps(answer) + "\n")
