"""Data-parallel training under tf.distribute.MirroredStrategy (two logical CPU devices)."""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "distributed_fit.py")


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
