"""Numeric parity with reference outputs: bounds derived from floating-point precision, and the one check.

Two kinds of parity, with bounds that come from the precision, never from one machine's measurement
(a bound set at ~3x one machine's error failed on another CPU: float32 rounding depends on the
instruction set, thread count and summation order of both libraries).

**float64: exact semantics.** The reference (`adapters` / `transformers` in float64, `model.double()`)
and this package in float64 compute the same function of the same weights; their difference is
float64 rounding, of order sqrt(L * H) * eps64 * |output| (probabilistic rounding analysis: the
error of a length-n dot product grows like sqrt(n) * eps (Higham & Mary 2019); L blocks of width H
in sequence add up in quadrature), amplified by LayerNorm's division by a standard deviation and by
the softmax. For these tiny models sqrt(L * H) <= 16 and the amplification is far below 1e3, so
rounding stays below ~1e4 * eps64 * |output| (measured: ~10-100 * eps64). The bound is

    bound64 = FLOAT64_FACTOR * eps64 * max|reference output|,   FLOAT64_FACTOR = 2**22

that is 9.3e-10 relative: 400x above that rounding estimate, so no machine's rounding reaches it,
and about 1e4x below the smallest semantic difference a test has shown (an adapter LayerNorm
epsilon of 1e-12 instead of 1e-5 moves outputs by ~1e-5). Any semantic difference fails it.

**float32: what users run.** Both libraries round in float32, independently, so

    bound32 = FLOAT32_FACTOR * eps32 * max|reference output| * sqrt(L * H),   FLOAT32_FACTOR = 32

with L the number of blocks and H the hidden size (the probabilistic sqrt(L * H) model above);
32 = 2 implementations x 16 for the amplification by LayerNorm and softmax. For tiny-bert
(L=2, H=64) that is 362 float32 ulps of the output's magnitude, 4.3e-5 for an output of magnitude 1.
It catches float32-path breakage (a cast through float16 or bfloat16, a dropped epsilon, a wrong
constant at the 1e-4 level); small semantic differences are the float64 tests' job.

Softmax outputs (fusion attention probabilities) use magnitude 1, their range, with the same formula.
eps is the machine epsilon (np.finfo(dtype).eps: 2.2e-16 and 1.19e-7).

Every parity test calls `assert_parity`, so a test that shows that a bug fails the bounds
(`test_adapter_layernorm_epsilon_bug_fails_parity`) runs exactly the production check.
"""

import math

import numpy as np

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)
FLOAT64_FACTOR = 2.0**22
FLOAT32_FACTOR = 32.0


def float64_bound(magnitude):
    """The float64 bound for an output whose reference has largest absolute value `magnitude`."""
    return FLOAT64_FACTOR * EPS64 * float(magnitude)


def float32_bound(magnitude, num_layers, hidden_size):
    """The float32 bound for an output of largest absolute value `magnitude` from `num_layers` blocks of
    width `hidden_size`."""
    return FLOAT32_FACTOR * EPS32 * float(magnitude) * math.sqrt(num_layers * hidden_size)


def magnitude(key, reference):
    """The magnitude a bound scales with: 1 for softmax probabilities, else max |reference|."""
    if "attentions" in key:
        return 1.0
    return float(np.max(np.abs(np.asarray(reference, np.float64))))


def bounds_for(reference, keys, dtype, num_layers=None, hidden_size=None):
    """`{key: bound}` for the outputs `keys` of `reference` (a mapping of arrays) at `dtype`."""
    if dtype == "float64":
        return {k: float64_bound(magnitude(k, reference[k])) for k in keys}
    if dtype == "float32":
        return {k: float32_bound(magnitude(k, reference[k]), num_layers, hidden_size) for k in keys}
    raise ValueError(f"dtype: got {dtype!r}; expected 'float32' or 'float64'")


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
    report(label, errors, bounds)
    assert not problems, f"{label}: " + "; ".join(problems)


def report(label, errors, bounds):
    """With PARITY_REPORT=<file>, append `label`, each error and its bound (for the tables in docs)."""
    import json
    import os

    path = os.environ.get("PARITY_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"label": label, "errors": errors, "bounds": bounds,
                                "backend": os.environ.get("KERAS_BACKEND"),
                                "isa": os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("XLA_FLAGS")}) + "\n")
