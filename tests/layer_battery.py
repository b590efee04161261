"""One battery that every layer and head goes through (the idea of keras-hub's `run_layer_test`).

`run_layer_battery(case, tmp_path)` runs, for one `LayerCase`:

1. config: `get_config()` is symmetric with `__init__` (every constructor argument is in the config and
   every config entry is a constructor argument), holds the values it was given, and survives
   `from_config` and a JSON `serialize_keras_object` round trip unchanged;
2. symbolic call: a fresh layer called on `KerasTensor`s builds the same variables as an eager call,
   and its output structure, shapes and dtypes are those of the eager output (a symbolic dimension
   may be None; every known one must match);
3. eager call: finite float32 outputs (after the weights are moved off their start, see `perturb`);
4. mixed precision: the same weights under `mixed_float16` and `mixed_bfloat16` give outputs of the
   policy's compute dtype, within `MIXED_PRECISION_TOL` of the float32 output (relative to the output's
   largest magnitude), with float32 variables and the policy on every sublayer;
5. one `fit` step (inside `BatteryModel`, MSE against perturbed targets plus the layer's own losses)
   changes every trainable weight and leaves every non-trainable one alone (a case may freeze weights
   first, as a training stage does);
6. `.keras` round trip of that model gives identical outputs and the same layer config.

It runs on the TensorFlow and JAX backends. Shapes are meant to be tiny (hidden 16 to 32, one batch).
"""

import dataclasses
import inspect
import json
import os
from typing import Any, Callable, Dict, Optional, Sequence

import keras
import numpy as np
from keras import ops

# Mixed precision against float32 with the same weights: max |mixed - float32| / max |float32| over a
# case's float outputs. The bound comes from the compute dtype's machine epsilon (float16 9.8e-4,
# bfloat16 7.8e-3), not from a measurement: inputs and weights are rounded to it (eps/2 relative each),
# and its dot products (at most 64 terms here) add rounding that grows like sqrt(64) = 8 eps/2 in the
# probabilistic model (Higham & Mary 2019); with LayerNorm's and softmax's amplification (x2) that is
# under MIXED_PRECISION_EPS = 16 eps. It catches what mixed precision breaks (an overflow or underflow in
# half precision, a LayerNorm epsilon below float16's range, a layer left in float32) and leaves small
# semantic differences to the float64 parity tests. Measured over every case of tests/test_layers.py on
# TensorFlow and JAX (CPU): 1.3 and 1.4 eps at worst (float16: encoder-plain on JAX; bfloat16: the
# RoBERTa encoder with an adapter on JAX), so the bound is ~11x above today's figures.
MIXED_PRECISION_EPS = 16
# Machine epsilons: float16 2^-10, bfloat16 2^-7 (7 stored mantissa bits).
MIXED_PRECISION_TOL = {"float16": MIXED_PRECISION_EPS * 2.0**-10, "bfloat16": MIXED_PRECISION_EPS * 2.0**-7}
POLICIES = ("mixed_float16", "mixed_bfloat16")
# Keys every keras.layers.Layer config has (not constructor arguments of the subclass).
BASE_CONFIG_KEYS = frozenset(keras.layers.Layer().get_config())


@dataclasses.dataclass
class LayerCase:
    """One layer configuration to run through the battery.

    Args:
        id: the test id.
        cls: the layer class.
        init_kwargs: constructor arguments (JSON-able values, as `get_config` should return them).
        inputs: the tensor call arguments by name (numpy arrays, or a dict of them); tiny, one batch.
        call_kwargs: the non-tensor call arguments (e.g. `adapter_setup`), JSON-able.
        prepare_fit: `f(layer)` run before the fit step, e.g. to freeze the pretrained weights.
        updated_in_training: names of non-trainable variables that training is meant to change.
        may_stay: path endings of trainable variables whose exact gradient is zero, so that whether a
            step moves them depends on rounding (e.g. key biases in front of a softmax: `q · b` is the
            same for every key and cancels).
        check: `f(layer, inputs, outputs)` for case-specific assertions on the eager outputs.
        perturb_scale: standard deviation of the noise added to every weight after the build, so that
            zero biases, zero up projections and identity values do not hide mistakes.
        fit_mixed_precision: also run the fit step under both mixed policies (finite loss, weights move).
        fit_run_eagerly: fit with `run_eagerly=True` (no `tf.function` / `jax.jit` trace: about 0.3 s
            instead of 2 to 4 s for a block), for variants whose compiled training path another case
            of the same layer already runs.
    """

    id: str
    cls: type
    init_kwargs: Dict[str, Any]
    inputs: Dict[str, Any]
    call_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    prepare_fit: Optional[Callable] = None
    updated_in_training: Sequence[str] = ()
    may_stay: Sequence[str] = ()
    check: Optional[Callable] = None
    perturb_scale: float = 0.05
    fit_mixed_precision: bool = False
    fit_run_eagerly: bool = False


# ------------------------------------------------------------------ helpers
def flatten(structure, prefix=""):
    """`[(path, value)]` of a nest of tuples, lists and dicts (dict keys sorted); `None` leaves are kept."""
    if isinstance(structure, dict):
        out = []
        for key in sorted(structure):
            out.extend(flatten(structure[key], f"{prefix}{key}/"))
        return out
    if isinstance(structure, (list, tuple)):
        out = []
        for i, value in enumerate(structure):
            out.extend(flatten(value, f"{prefix}{i}/"))
        return out
    return [(prefix.rstrip("/") or "output", structure)]


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def dtype_of(x):
    return keras.backend.standardize_dtype(x.dtype)


def is_float(dtype):
    return "float" in keras.backend.standardize_dtype(dtype)


def symbolic(inputs):
    return keras.tree.map_structure(lambda a: keras.KerasTensor(tuple(a.shape), dtype=str(a.dtype)), inputs)


def input_spec_of(inputs):
    return keras.tree.map_structure(lambda a: [list(a.shape), str(a.dtype)], inputs)


def spec_tensors(spec):
    """KerasTensors from `input_spec_of`'s JSON form (leaves are `[shape, dtype]`)."""
    if isinstance(spec, dict):
        return {k: spec_tensors(v) for k, v in spec.items()}
    shape, dtype = spec
    return keras.KerasTensor(tuple(shape), dtype=dtype)


def call_layer(layer, inputs, call_kwargs, training=False):
    return layer(**inputs, **call_kwargs, training=training)


def call_symbolic(case, layer):
    """The layer's outputs on `KerasTensor`s of the case's input shapes (this builds the layer)."""
    return call_layer(layer, symbolic(case.inputs), case.call_kwargs)


def relative_path(variable, layer):
    """The variable's path below `layer` (layer names differ between instances)."""
    path = variable.path
    marker = layer.name + "/"
    return path[path.index(marker) + len(marker):] if marker in path else path


def perturb(layer, scale, seed=0):
    rng = np.random.default_rng(seed)
    for v in layer.weights:
        if is_float(v.dtype):
            value = to_numpy(v)
            v.assign((value + rng.normal(0.0, scale, value.shape)).astype(value.dtype))


def float_outputs(outputs):
    return [(p, v) for p, v in flatten(outputs) if v is not None and is_float(v.dtype)]


# ------------------------------------------------------------ the fit / save wrapper
@keras.saving.register_keras_serializable(package="keras_adapterfusion_tests")
class BatteryModel(keras.Model):
    """A `keras.Model` around one layer: calls it with fixed non-tensor arguments, returns its outputs
    as a flat list (None dropped), and trains on the sum of the outputs' mean squared errors plus the
    layer's own losses. Serializable, so the battery can save and load it as `.keras`."""

    def __init__(self, layer, layer_inputs, call_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer
        self.layer_inputs = layer_inputs
        self.call_kwargs = dict(call_kwargs or {})
        # Build the layer (a no-op when it is built) so that saved variables have somewhere to go.
        self(spec_tensors(layer_inputs))

    def call(self, inputs, training=None):
        outputs = call_layer(self.layer, inputs, self.call_kwargs, training=training)
        return [v for _, v in flatten(outputs) if v is not None]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = ops.zeros((), "float32")
        for pred, target in zip(y_pred, y):
            if is_float(pred.dtype):
                loss = loss + ops.mean(ops.square(ops.cast(pred, "float32") - ops.cast(target, "float32")))
        for extra in self.losses:
            loss = loss + ops.cast(extra, "float32")
        return loss

    def get_config(self):
        config = super().get_config()
        config.update(layer=keras.saving.serialize_keras_object(self.layer), layer_inputs=self.layer_inputs,
                      call_kwargs=self.call_kwargs)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        return cls(**config)


class _OneBatch(keras.utils.PyDataset):
    """One batch as a dataset, so inputs and targets may have different leading sizes (multiple choice)."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return self.x, self.y


# ------------------------------------------------------------------ the checks
def check_config(case):
    layer = case.cls(**case.init_kwargs)
    config = layer.get_config()
    signature = inspect.signature(case.cls.__init__)
    arguments = {name for name, p in signature.parameters.items()
                 if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    own = set(config) - BASE_CONFIG_KEYS
    assert not arguments - own, f"{case.cls.__name__}.get_config drops __init__ arguments {sorted(arguments - own)}"
    assert not own - arguments, f"{case.cls.__name__}.get_config has entries {sorted(own - arguments)} " \
                                "that __init__ does not take"
    for key, value in case.init_kwargs.items():
        assert json.loads(json.dumps(config[key])) == json.loads(json.dumps(value)), (key, config[key], value)
    config_json = json.dumps(config, sort_keys=True)
    revived = case.cls.from_config(config)
    assert json.dumps(revived.get_config(), sort_keys=True) == config_json
    assert set(dir(revived)) == set(dir(layer))
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is case.cls
    assert json.dumps(revived.get_config(), sort_keys=True) == config_json
    return config


def compare_structures(symbolic_out, eager_out, what):
    sym, eag = flatten(symbolic_out), flatten(eager_out)
    assert [p for p, _ in sym] == [p for p, _ in eag], (what, [p for p, _ in sym], [p for p, _ in eag])
    for (path, s), (_, e) in zip(sym, eag):
        assert (s is None) == (e is None), (what, path, s, e)
        if s is None:
            continue
        s_shape, e_shape = tuple(s.shape), tuple(ops.shape(e))
        assert len(s_shape) == len(e_shape), (what, path, s_shape, e_shape)
        # A symbolic dimension may be unknown (None); every known one must be the eager one.
        assert all(a is None or a == b for a, b in zip(s_shape, e_shape)), (what, path, s_shape, e_shape)
        assert dtype_of(s) == dtype_of(e), (what, path, dtype_of(s), dtype_of(e))


def check_symbolic(case, config, eager_layer, eager_out):
    fresh = case.cls.from_config(config)
    sym_out = call_symbolic(case, fresh)
    assert fresh.built
    ours = [(relative_path(v, fresh), tuple(v.shape)) for v in fresh.weights]
    theirs = [(relative_path(v, eager_layer), tuple(v.shape)) for v in eager_layer.weights]
    assert ours == theirs, f"the symbolic build made other variables than the eager one: {ours} != {theirs}"
    compare_structures(sym_out, eager_out, "symbolic vs eager")
    return fresh, sym_out


def check_mixed_precision(case, config, layer, reference, policy):
    """Returns the relative error against float32 (the weights copied from `layer`)."""
    policy = keras.DTypePolicy(policy)
    mixed = case.cls.from_config({**config, "dtype": policy.name})
    sym_out = call_symbolic(case, mixed)
    mixed.set_weights(layer.get_weights())
    out = call_layer(mixed, case.inputs, case.call_kwargs)
    compare_structures(sym_out, out, f"{policy.name} symbolic vs eager")
    for path, value in float_outputs(out):
        assert dtype_of(value) == policy.compute_dtype, (policy.name, path, dtype_of(value))
    for path, value in float_outputs(sym_out):
        assert dtype_of(value) == policy.compute_dtype, (policy.name, "symbolic", path, dtype_of(value))
    for v in mixed.weights:
        if is_float(v.dtype):
            assert dtype_of(v) == policy.variable_dtype, (policy.name, v.path, dtype_of(v))
    for sub in mixed._flatten_layers():
        assert (sub.compute_dtype, sub.variable_dtype) == (policy.compute_dtype, policy.variable_dtype), \
            (policy.name, sub.name, sub.compute_dtype, sub.variable_dtype)
    worst = 0.0
    ref = dict(float_outputs(reference))
    for path, value in float_outputs(out):
        expected = to_numpy(ref[path]).astype(np.float64)
        got = to_numpy(value).astype(np.float64)
        assert np.all(np.isfinite(got)), (policy.name, path)
        scale = max(float(np.max(np.abs(expected))), 1e-6)
        worst = max(worst, float(np.max(np.abs(got - expected))) / scale)
    tol = MIXED_PRECISION_TOL[policy.compute_dtype]
    assert worst <= tol, f"{policy.name}: relative error {worst:.3g} > {tol:.3g}"
    return mixed, worst


def fit_step(case, layer, targets, dtype=None):
    """One `fit` step; returns the model. Every trainable weight moves, every other stays."""
    model = BatteryModel(layer, input_spec_of(case.inputs), case.call_kwargs,
                         **({} if dtype is None else {"dtype": dtype}))
    if case.prepare_fit is not None:
        case.prepare_fit(layer)
    trainable = {id(v) for v in layer.trainable_weights}
    assert trainable or not layer.weights, "the layer has weights but nothing to train"
    if not layer.weights:
        return model  # nothing to train (a fusion without Q, K and V)
    before = [(v, to_numpy(v).copy()) for v in layer.weights]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=case.fit_run_eagerly)
    history = model.fit(_OneBatch(case.inputs, targets), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]), history.history
    for v, old in before:
        moved = not np.array_equal(to_numpy(v), old)
        if id(v) in trainable:
            assert moved or v.path.endswith(tuple(case.may_stay)), f"fit did not change trainable {v.path}"
        elif v.name not in case.updated_in_training:
            assert not moved, f"fit changed non-trainable {v.path}"
    return model


def check_saving(model, inputs, tmp_path):
    path = os.path.join(str(tmp_path), "battery.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert type(loaded.layer) is type(model.layer)
    assert loaded.layer.get_config() == model.layer.get_config()
    ours, theirs = model(inputs), loaded(inputs)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def run_layer_battery(case, tmp_path):
    """Run every check on `case`; returns `{policy: relative error}` of the mixed-precision outputs."""
    config = check_config(case)

    layer = case.cls(**case.init_kwargs)
    call_layer(layer, case.inputs, case.call_kwargs)  # build
    perturb(layer, case.perturb_scale)
    eager_out = call_layer(layer, case.inputs, case.call_kwargs)
    for path, value in float_outputs(eager_out):
        assert dtype_of(value) == "float32", (path, dtype_of(value))
        assert np.all(np.isfinite(to_numpy(value))), path
    if case.check is not None:
        case.check(layer, case.inputs, eager_out)

    check_symbolic(case, config, layer, eager_out)

    errors = {}
    for policy in POLICIES:
        mixed, errors[policy] = check_mixed_precision(case, config, layer, eager_out, policy)
        if case.fit_mixed_precision:
            fit_step(case, mixed, _targets(eager_out), dtype=policy)
    _report(case, errors)

    model = fit_step(case, layer, _targets(eager_out))
    check_saving(model, case.inputs, tmp_path)
    return errors


def _targets(outputs):
    rng = np.random.default_rng(1)
    return tuple(to_numpy(v).astype("float32") + rng.normal(0.0, 0.1, tuple(v.shape)).astype("float32")
                 for _, v in flatten(outputs) if v is not None)


def _report(case, errors):
    """With BATTERY_REPORT=<file>, append the measured mixed-precision errors (to set the tolerances)."""
    target = os.environ.get("BATTERY_REPORT")
    if target:
        with open(target, "a") as f:
            f.write(json.dumps({"backend": keras.backend.backend(), "case": case.id, **errors}) + "\n")
