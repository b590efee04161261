"""Interrupted training resumes from the backup (a fit killed with SIGKILL, then restarted)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "resume_fit.py")


def run(*args, wait=True):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, SCRIPT, *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if wait:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out.decode()[-3000:]
    return proc


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_fit_resumes_after_sigkill(tmp_path):
    run(tmp_path / "backup_full", tmp_path / "full.npz", tmp_path / "full.log")

    proc = run(tmp_path / "backup", tmp_path / "resumed.npz", tmp_path / "resumed.log", tmp_path / "marker",
               wait=False)
    deadline = time.time() + 600
    while not (tmp_path / "marker").exists():
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.time() < deadline, "the training never reached the kill point"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "resumed.npz").exists()

    run(tmp_path / "backup", tmp_path / "resumed.npz", tmp_path / "resumed.log")
    log = (tmp_path / "resumed.log").read_text().splitlines()
    # first run: epochs 0, 1 (killed after epoch 1 was backed up); restart: from epoch 2, step 8
    assert log == [
        "begin 0 iterations=0", "begin 1 iterations=4",
        "begin 2 iterations=8", "begin 3 iterations=12", "begin 4 iterations=16",
    ], log
    full, resumed = np.load(tmp_path / "full.npz"), np.load(tmp_path / "resumed.npz")
    assert int(resumed["iterations"]) == int(full["iterations"]) == 20
    keys = [k for k in full.files if k != "iterations"]
    assert keys and keys == [k for k in resumed.files if k != "iterations"]
    for k in keys:
        np.testing.assert_allclose(resumed[k], full[k], rtol=0, atol=1e-6)
