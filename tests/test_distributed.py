"""Training across devices and workers: tf.distribute.MirroredStrategy (two logical CPU devices),
MultiWorkerMirroredStrategy (two worker processes on localhost) and keras.distribution.DataParallel on JAX
(two host devices), each matched against one device."""

import json
import os
import socket
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "distributed_fit.py")
MULTIWORKER = os.path.join(os.path.dirname(__file__), "scripts", "multiworker_fit.py")
DATA_PARALLEL = os.path.join(os.path.dirname(__file__), "scripts", "data_parallel_fit.py")


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_mirrored_strategy_matches_single_device():
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["variable_type"] == "MirroredVariable"
    assert result["trainable"] == 2 * 5 + 4  # fusion Q, K (kernel+bias), V per block; head 2 dense
    for a, b in zip(result["mirrored_loss"], result["single_loss"]):
        assert abs(a - b) < 1e-5
    assert result["max_weight_diff"] < 1e-5


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_multi_worker_mirrored_strategy_matches_one_worker(tmp_path):
    """Stages 1 and 2 under MultiWorkerMirroredStrategy: two worker processes on localhost (TF_CONFIG)."""
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    workers = []
    for index in range(2):
        env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        log = open(tmp_path / f"worker{index}.log", "w")
        workers.append(subprocess.Popen([sys.executable, MULTIWORKER], env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        for worker in workers:
            worker.wait(timeout=300)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    logs = [open(tmp_path / f"worker{i}.log").read() for i in range(2)]
    for worker, log in zip(workers, logs):
        assert worker.returncode == 0, log[-3000:]
    reports = [json.loads(log.strip().splitlines()[-1]) for log in logs]
    # Worker 0 compared stage 1 with one device, worker 1 stage 2.
    for report, stage, trainable in zip(reports, ("adapter", "fusion"), (2 * 4 + 4, 2 * 5 + 4)):
        assert (report["workers"], report["replicas"], report["per_replica_batch"]) == (2, 2, 4)
        result = report[stage]
        assert result["variable_type"] == "MirroredVariable" and result["trainable"] == trainable
        assert len(result["distributed_loss"]) == 2
        for a, b in zip(result["distributed_loss"], result["single_loss"]):
            assert abs(a - b) < 1e-5
        assert result["max_weight_diff"] < 1e-5


@pytest.mark.slow
@pytest.mark.backend_independent
def test_jax_data_parallel_matches_one_device():
    """Stages 1 and 2 under keras.distribution.DataParallel over two host devices, in a JAX process."""
    done = subprocess.run([sys.executable, DATA_PARALLEL], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, KERAS_BACKEND="jax"))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["devices"] == 2 and report["tensorflow"] == []
    for stage, trainable in (("adapter", 2 * 4 + 4), ("fusion", 2 * 5 + 4)):
        result = report[stage]
        assert result["trainable"] == trainable
        assert result["weight_devices"] == 2 and result["batch_axes"] == ["batch", None]  # weights on both, batch split
        for a, b in zip(result["parallel_loss"], result["single_loss"]):
            assert abs(a - b) < 1e-5
        assert result["max_weight_diff"] < 1e-5
