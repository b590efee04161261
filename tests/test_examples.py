"""Every script in examples/ runs: `--help` answers, and `--smoke` ends with its own checks passed.

Each example has a `--smoke` mode (the tiny test encoder, a few steps, no network)
that runs the same code as a real run and then asserts on its results; it prints
`smoke OK` as its last step. This test finds the examples by name
(`examples/*.py`, except helpers starting with `_`), so a new example is covered
as soon as it exists, and runs each in a subprocess on the TensorFlow backend,
in a temporary working directory. The smoke runs go two at a time
(`KAF_EXAMPLES_PARALLEL`), which keeps the whole test near a minute and a half
on two CPU cores.
"""

import concurrent.futures
import glob
import os
import subprocess
import sys
import time
import warnings

import pytest

pytestmark = pytest.mark.backend_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(p for p in glob.glob(os.path.join(ROOT, "examples", "*.py"))
                  if not os.path.basename(p).startswith("_"))
NAMES = [os.path.basename(p) for p in EXAMPLES]
SMOKE_OK = "smoke OK"
BUDGET_S = 40  # what one smoke run should take on two CPU cores
TIMEOUT_S = 300
PARALLEL = max(1, int(os.environ.get("KAF_EXAMPLES_PARALLEL", "2")))


def _env():
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


def _run(path, flag, cwd):
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, path, flag], cwd=cwd, env=_env(), capture_output=True, text=True,
                              timeout=TIMEOUT_S)
        code, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as e:
        code, out, err = "timeout", e.stdout or "", e.stderr or ""
        out, err = [s.decode(errors="replace") if isinstance(s, bytes) else s for s in (out, err)]
    return {"code": code, "stdout": out, "stderr": err, "seconds": time.perf_counter() - started}


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Every example's `--smoke` run, two at a time, each in its own empty working directory."""
    def run(path):
        return _run(path, "--smoke", str(tmp_path_factory.mktemp(os.path.basename(path)[:-3])))

    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        results = dict(zip(NAMES, pool.map(run, EXAMPLES)))
    print("\nexample smoke runs (seconds): " + ", ".join(f"{n} {r['seconds']:.1f}" for n, r in results.items()))
    return results


def test_examples_exist():
    assert "quickstart.py" in NAMES and len(NAMES) >= 7, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_smoke(name, smoke_runs):
    result = smoke_runs[name]
    detail = f"examples/{name} --smoke: exit {result['code']}\n--- stdout\n{result['stdout'][-3000:]}\n" \
             f"--- stderr\n{result['stderr'][-5000:]}"
    assert result["code"] == 0, detail
    lines = [line.strip() for line in result["stdout"].splitlines()]
    assert SMOKE_OK in lines, f"examples/{name} --smoke did not print {SMOKE_OK!r}\n{detail}"
    if result["seconds"] > BUDGET_S:
        warnings.warn(f"examples/{name} --smoke took {result['seconds']:.0f} s (budget {BUDGET_S} s on 2 cores)")


@pytest.mark.parametrize("name", NAMES)
def test_help(name, tmp_path):
    result = _run(os.path.join(ROOT, "examples", name), "--help", str(tmp_path))
    assert result["code"] == 0, result["stderr"][-3000:]
    assert "usage:" in result["stdout"] and "--smoke" in result["stdout"], result["stdout"]
    # --help answers before anything heavy is imported.
    assert result["seconds"] < 15, f"examples/{name} --help took {result['seconds']:.1f} s"
