"""Numeric parity with reference outputs: per-case, per-output bounds and the one check that applies them.

A flat bound (it was 1e-4) lets real bugs through: an adapter LayerNorm epsilon of 1e-12 instead of
PyTorch's 1e-5 moves the logits of a reference case by 1e-5 to 2e-5 and passed every parity test.
So each case has a bound per output, about 3x the larger max-abs error measured on the TensorFlow
and JAX backends, and never below 4 float32 ulps of the output's largest magnitude (where the
measured error is 0 or tiny). The tables live beside the tests (test_adapterhub.py,
test_backbones.py), with the measured errors in comments; `bound_for` is how they were computed.

Every parity test calls `assert_parity`, so a test that shows that a bug fails the bounds
(`test_adapter_layernorm_epsilon_bug_fails_parity`) runs exactly the production check.
"""

import math

import numpy as np

FACTOR = 3.0
FLOOR_ULPS = 4


def bound_for(measured_errors, magnitude):
    """The bound for one output: `FACTOR` x the largest measured error, at least `FLOOR_ULPS` float32
    ulps of `magnitude` (the reference output's largest absolute value), rounded up to 2 digits."""
    bound = max(FACTOR * max(measured_errors), FLOOR_ULPS * float(np.spacing(np.float32(magnitude))))
    step = 10.0 ** (math.floor(math.log10(bound)) - 1)
    return math.ceil(bound / step - 1e-9) * step


def parity_failures(errors, bounds):
    """What is wrong with `errors` (output -> max-abs error) against `bounds` (output -> bound), as
    sentences; empty when parity holds. Outputs must match the table both ways, and NaN fails."""
    problems = []
    missing, unbounded = sorted(set(bounds) - set(errors)), sorted(set(errors) - set(bounds))
    if missing:
        problems.append(f"outputs {missing} were not compared")
    if unbounded:
        problems.append(f"outputs {unbounded} have no bound")
    for key in sorted(set(errors) & set(bounds)):
        if not errors[key] <= bounds[key]:
            problems.append(f"{key}: max-abs error {errors[key]:.3g} > bound {bounds[key]:.3g}")
    return problems


def assert_parity(label, errors, bounds):
    """Fail, naming the case and each output over its bound, unless `errors` are within `bounds`."""
    problems = parity_failures(errors, bounds)
    assert not problems, f"{label}: " + "; ".join(problems)
