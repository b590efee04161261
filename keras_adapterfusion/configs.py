"""Configuration dataclasses for bottleneck adapters and AdapterFusion.

The fields and their meaning follow AdapterHub `adapters` 1.3.0 (`BnConfig` and
`AdapterFusionConfig`), restricted to the fields that change the computation.
Every config validates itself on construction, raising a `ValueError` that
names the bad field, the value found and what is allowed, and round-trips
through JSON (`to_json` / `from_json`, `to_dict` / `from_dict`).

Example:

```python
from keras_adapterfusion.configs import AdapterConfig, FusionConfig

pfeiffer = AdapterConfig.from_preset("seq_bn", reduction_factor=8)
houlsby = AdapterConfig.from_preset("houlsby")
parallel = AdapterConfig.from_preset("par_bn")      # He et al. (2022), scaling 4
fusion = FusionConfig.from_preset("dynamic", regularization_weight=0.02)
assert AdapterConfig.from_json(pfeiffer.to_json()) == pfeiffer
```
"""

import dataclasses
import json
from typing import Any, Dict, List, Optional, Union

ACTIVATIONS = (
    "relu",
    "swish",
    "silu",
    "gelu",
    "gelu_new",
    "gelu_fast",
    "gelu_pytorch_tanh",
    "quick_gelu",
    "tanh",
    "sigmoid",
    "leakyrelu",
    "linear",
)
INIT_WEIGHTS = ("bert", "mam_adapter", "houlsby")
SCALING_MODES = ("learned", "channel")
RESIDUAL_BEFORE_LN = (True, False, "post_add")


def _fail(cls_name, field, value, allowed):
    raise ValueError(
        f"{cls_name}.{field}: got {value!r}; expected {allowed}."
    )


def _check_bool(cls_name, field, value):
    if not isinstance(value, bool):
        _fail(cls_name, field, value, "True or False")


def _check_leave_out_and_dropout(config):
    """The `leave_out` (sorted, deduplicated) and `dropout` fields both adapter configs have."""
    name = type(config).__name__
    if not isinstance(config.leave_out, (list, tuple)) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in config.leave_out):
        _fail(name, "leave_out", config.leave_out, "a list of block indices (ints >= 0)")
    object.__setattr__(config, "leave_out", sorted(set(config.leave_out)))
    if isinstance(config.dropout, bool) or not isinstance(config.dropout, (int, float)) or not (
            0.0 <= config.dropout < 1.0):
        _fail(name, "dropout", config.dropout, "a rate in [0, 1)")


class _ConfigBase:
    """Shared JSON/dict round trip and preset handling."""

    PRESETS: Dict[str, Dict[str, Any]] = {}

    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any]):
        if not isinstance(data, dict):
            raise ValueError(
                f"{cls.__name__}.from_dict: got {type(data).__name__}; expected a dict."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"{cls.__name__}: unknown field(s) {unknown}; "
                f"allowed fields are {sorted(known)}."
            )
        return cls(**data)

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_preset(cls, name: str, **overrides):
        """Build a config from a named preset, optionally overriding fields."""
        if name not in cls.PRESETS:
            raise ValueError(
                f"{cls.__name__}: unknown preset {name!r}; "
                f"allowed presets are {sorted(cls.PRESETS)}."
            )
        fields = dict(cls.PRESETS[name])
        fields.update(overrides)
        return cls.from_dict(fields)

    @classmethod
    def get(cls, spec):
        """Accept a config instance, a preset name or a dict of fields."""
        if isinstance(spec, cls):
            return spec
        if isinstance(spec, str):
            return cls.from_preset(spec)
        if isinstance(spec, dict):
            return cls.from_dict(spec)
        raise ValueError(
            f"{cls.__name__}: got {spec!r}; expected a {cls.__name__}, a preset "
            f"name from {sorted(cls.PRESETS)} or a dict of fields."
        )

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class AdapterConfig(_ConfigBase):
    """Configuration of a bottleneck adapter (AdapterHub `BnConfig`), sequential or parallel.

    Args:
        mh_adapter: put an adapter in the slot after multi-head attention.
        output_adapter: put an adapter in the slot after the feed-forward block.
        reduction_factor: hidden size divided by the bottleneck size. A number, or
            a dict mapping block indices (as strings) to numbers, with a
            `"default"` entry for the blocks not listed.
        non_linearity: activation between the down and up projections.
        original_ln_before: apply the block's pretrained LayerNorm to
            `h + x` before the adapter.
        original_ln_after: apply the block's pretrained LayerNorm to the
            adapter output plus the sublayer input `x`.
        residual_before_ln: where the adapter residual is taken: `True` (the
            sublayer output `h`), `False` (the adapter input) or `"post_add"`
            (`h + x`, before the LayerNorm).
        ln_before: add a new LayerNorm in front of the down projection.
        ln_after: add a new LayerNorm after the up projection.
        adapter_residual_before_ln: add the residual before `ln_after` rather
            than after it.
        scaling: a float multiplier of the up projection, or `"learned"` (one
            learned scalar) or `"channel"` (one learned value per channel).
        init_weights: `"bert"` (N(0, 0.02) kernels, zero biases),
            `"mam_adapter"` (Kaiming-uniform down, zero up) or `"houlsby"`
            (truncated N(0, 0.01)).
        leave_out: block indices that get no adapter.
        dropout: dropout rate on the adapter output.
        is_parallel: a parallel adapter (He et al., 2022; AdapterHub's `ParallelAdapter`): it reads
            the sublayer's input `x` instead of its output and adds `ln_after(dropout(up))` beside
            the sublayer, `LN(h + x + up(x))` with `original_ln_after`. `original_ln_before`,
            `residual_before_ln` and `adapter_residual_before_ln` do not apply to it (AdapterHub
            ignores them too).
    """

    mh_adapter: bool = False
    output_adapter: bool = True
    reduction_factor: Union[float, int, Dict[str, Union[float, int]]] = 16
    non_linearity: str = "relu"
    original_ln_before: bool = True
    original_ln_after: bool = True
    residual_before_ln: Union[bool, str] = True
    ln_before: bool = False
    ln_after: bool = False
    adapter_residual_before_ln: bool = False
    scaling: Union[float, str] = 1.0
    init_weights: str = "bert"
    leave_out: List[int] = dataclasses.field(default_factory=list)
    dropout: float = 0.0
    is_parallel: bool = False

    def __post_init__(self):
        name = type(self).__name__
        for f in (
            "is_parallel",
            "mh_adapter",
            "output_adapter",
            "original_ln_before",
            "original_ln_after",
            "ln_before",
            "ln_after",
            "adapter_residual_before_ln",
        ):
            _check_bool(name, f, getattr(self, f))
        if not (self.mh_adapter or self.output_adapter):
            raise ValueError(
                f"{name}: mh_adapter and output_adapter are both False; "
                "expected at least one of them to be True."
            )
        rf = self.reduction_factor
        if isinstance(rf, dict):
            for key, value in rf.items():
                if key != "default" and not str(key).isdigit():
                    _fail(name, f"reduction_factor[{key!r}]", key,
                          "block indices as strings or 'default'")
                self._check_reduction(name, f"reduction_factor[{key!r}]", value)
            # JSON turns int keys into strings; normalise now so that round
            # trips compare equal.
            object.__setattr__(
                self, "reduction_factor", {str(k): v for k, v in rf.items()}
            )
        else:
            self._check_reduction(name, "reduction_factor", rf)
        if not isinstance(self.non_linearity, str) or (
            self.non_linearity.lower() not in ACTIVATIONS
        ):
            _fail(name, "non_linearity", self.non_linearity, f"one of {list(ACTIVATIONS)}")
        object.__setattr__(self, "non_linearity", self.non_linearity.lower())
        if self.residual_before_ln not in RESIDUAL_BEFORE_LN or (
            isinstance(self.residual_before_ln, (int, float))
            and not isinstance(self.residual_before_ln, bool)
        ):
            _fail(name, "residual_before_ln", self.residual_before_ln,
                  "True, False or 'post_add'")
        if self.residual_before_ln == "post_add" and not self.original_ln_before:
            raise ValueError(
                f"{name}.residual_before_ln: got 'post_add' with original_ln_before=False; "
                "expected True or False ('post_add' takes the residual between the add and "
                "the original LayerNorm, so it needs original_ln_before=True)."
            )
        if isinstance(self.scaling, bool) or not (
            isinstance(self.scaling, (int, float)) or self.scaling in SCALING_MODES
        ):
            _fail(name, "scaling", self.scaling, "a number, 'learned' or 'channel'")
        if isinstance(self.scaling, int):
            object.__setattr__(self, "scaling", float(self.scaling))
        if self.init_weights not in INIT_WEIGHTS:
            _fail(name, "init_weights", self.init_weights, f"one of {list(INIT_WEIGHTS)}")
        _check_leave_out_and_dropout(self)

    @staticmethod
    def _check_reduction(name, field, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            _fail(name, field, value, "a positive number")

    def reduction_for_block(self, index: int) -> float:
        """The reduction factor for block `index`."""
        rf = self.reduction_factor
        if isinstance(rf, dict):
            if str(index) in rf:
                return rf[str(index)]
            if "default" in rf:
                return rf["default"]
            raise ValueError(
                f"AdapterConfig.reduction_factor: no entry for block {index} and no "
                f"'default' in {rf}; expected a 'default' key."
            )
        return rf

    def bottleneck_size(self, hidden_size: int, index: int = 0) -> int:
        """The bottleneck width, `int(hidden_size // reduction_factor)` (at least 1)."""
        return max(1, int(hidden_size // self.reduction_for_block(index)))

    def in_block(self, index: int) -> bool:
        """Whether block `index` gets this adapter (it is not in `leave_out`)."""
        return index not in self.leave_out

    def slots(self) -> List[str]:
        """Slot names this adapter occupies: `"mh"` and/or `"output"`."""
        out = []
        if self.mh_adapter:
            out.append("mh")
        if self.output_adapter:
            out.append("output")
        return out


AdapterConfig.PRESETS = {
    "seq_bn": dict(
        mh_adapter=False,
        output_adapter=True,
        original_ln_before=True,
        original_ln_after=True,
        residual_before_ln=True,
        non_linearity="relu",
        reduction_factor=16,
    ),
    "double_seq_bn": dict(
        mh_adapter=True,
        output_adapter=True,
        original_ln_before=False,
        original_ln_after=True,
        residual_before_ln=True,
        non_linearity="swish",
        reduction_factor=16,
    ),
}
# He et al. (2022)'s parallel adapter, as AdapterHub's `ParBnConfig`; `scaled_par_bn` learns its scaling.
AdapterConfig.PRESETS["par_bn"] = dict(
    mh_adapter=False,
    output_adapter=True,
    original_ln_before=False,
    original_ln_after=True,
    non_linearity="relu",
    reduction_factor=2,
    init_weights="mam_adapter",
    is_parallel=True,
    scaling=4.0,
)
AdapterConfig.PRESETS["scaled_par_bn"] = dict(AdapterConfig.PRESETS["par_bn"], scaling="learned")
AdapterConfig.PRESETS["pfeiffer"] = AdapterConfig.PRESETS["seq_bn"]
AdapterConfig.PRESETS["houlsby"] = AdapterConfig.PRESETS["double_seq_bn"]


@dataclasses.dataclass(frozen=True)
class FusionConfig(_ConfigBase):
    """Configuration of an AdapterFusion layer (AdapterHub `AdapterFusionConfig`).

    Args:
        key: project adapter outputs with a learned key matrix `K`.
        query: project the query with a learned matrix `Q`.
        value: project the mixed adapter outputs with a learned matrix `V`
            (no bias).
        query_before_ln: take the query before the block's LayerNorm.
        regularization: add `regularization_weight * ||I - V||_F^2` to the
            training loss (needs `value`).
        regularization_weight: weight of that term (AdapterHub uses 0.01).
        residual_before: add the residual to every adapter output before the
            attention, instead of to the fused output.
        temperature: anneal a softmax temperature from 50 down to 1.
        value_before_softmax: apply `V` per adapter before mixing (the same
            result as after, since `V` has no bias).
        value_initialized: start `V` as the identity (1e-6 elsewhere).
        dropout_prob: dropout on the attention scores; `None` takes the
            encoder's attention dropout.
    """

    key: bool = True
    query: bool = True
    value: bool = True
    query_before_ln: bool = False
    regularization: bool = True
    regularization_weight: float = 0.01
    residual_before: bool = False
    temperature: bool = False
    value_before_softmax: bool = True
    value_initialized: bool = True
    dropout_prob: Optional[float] = None

    def __post_init__(self):
        name = type(self).__name__
        for f in (
            "key",
            "query",
            "value",
            "query_before_ln",
            "regularization",
            "residual_before",
            "temperature",
            "value_before_softmax",
            "value_initialized",
        ):
            _check_bool(name, f, getattr(self, f))
        w = self.regularization_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
            _fail(name, "regularization_weight", w, "a number >= 0")
        p = self.dropout_prob
        if p is not None and (
            isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0
        ):
            _fail(name, "dropout_prob", p, "None or a rate in [0, 1)")


FusionConfig.PRESETS = {
    "static": dict(
        key=True,
        query=True,
        value=False,
        query_before_ln=False,
        regularization=False,
        residual_before=False,
        temperature=False,
        value_before_softmax=True,
        value_initialized=False,
    ),
    "dynamic": dict(
        key=True,
        query=True,
        value=True,
        query_before_ln=False,
        regularization=True,
        residual_before=False,
        temperature=False,
        value_before_softmax=True,
        value_initialized=True,
    ),
}


# The block projections a LoRA can adapt, in `TransformerBlock` order: AdapterHub's `selfattn_lora` ("q", "k",
# "v" of `attn_matrices`), `intermediate_lora`, `output_lora`; PEFT may also target the attention output.
LORA_PROJECTIONS = ("query", "key", "value", "attention_output", "intermediate", "output")
LORA_ATTN_MATRICES = {"q": "query", "k": "key", "v": "value"}
LORA_INIT_WEIGHTS = ("lora", "bert")


@dataclasses.dataclass(frozen=True)
class LoRAConfig(_ConfigBase):
    """Configuration of a LoRA (Hu et al., 2021; AdapterHub's `LoRAConfig`, `architecture: "lora"`).

    A LoRA adds `scaling · dropout(x) A B` (`A` `[in, r]`, `B` `[r, out]`, `scaling = alpha / r`) to the
    output of each adapted projection `x W + b` of a block; `merge_lora` folds `scaling · A B` into `W`.

    Args:
        selfattn_lora: adapt the attention projections named in `attn_matrices`.
        intermediate_lora: adapt the feed-forward's first projection.
        output_lora: adapt the feed-forward's output projection.
        attention_output_lora: adapt the attention's output projection (PEFT can target it; AdapterHub
            cannot, so such a LoRA has no AdapterHub file).
        r: the rank.
        alpha: the scaling numerator (`scaling = alpha / r`).
        dropout: dropout rate on the LoRA's input.
        attn_matrices: which of `"q"`, `"k"`, `"v"` `selfattn_lora` adapts.
        init_weights: `"lora"` (`A` Kaiming-uniform, `B` zeros: the LoRA starts as a no-op) or `"bert"`
            (both N(0, 0.02)).
        leave_out: block indices that get no LoRA.
        architecture: always `"lora"` (AdapterHub's marker, kept so a config dict says what it is).
    """

    selfattn_lora: bool = True
    intermediate_lora: bool = False
    output_lora: bool = False
    attention_output_lora: bool = False
    r: int = 8
    alpha: float = 8
    dropout: float = 0.0
    attn_matrices: List[str] = dataclasses.field(default_factory=lambda: ["q", "v"])
    init_weights: str = "lora"
    leave_out: List[int] = dataclasses.field(default_factory=list)
    architecture: str = "lora"

    def __post_init__(self):
        name = type(self).__name__
        for f in ("selfattn_lora", "intermediate_lora", "output_lora", "attention_output_lora"):
            _check_bool(name, f, getattr(self, f))
        if self.architecture != "lora":
            _fail(name, "architecture", self.architecture, "'lora'")
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            _fail(name, "r", self.r, "an int >= 1")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            _fail(name, "alpha", self.alpha, "a positive number")
        if not isinstance(self.attn_matrices, (list, tuple)) or not self.attn_matrices or not all(
                m in LORA_ATTN_MATRICES for m in self.attn_matrices) or len(set(self.attn_matrices)) != len(
                self.attn_matrices):
            _fail(name, "attn_matrices", self.attn_matrices, "a non-empty list of distinct 'q', 'k', 'v'")
        object.__setattr__(self, "attn_matrices", [m for m in "qkv" if m in self.attn_matrices])
        if self.init_weights not in LORA_INIT_WEIGHTS:
            _fail(name, "init_weights", self.init_weights, f"one of {list(LORA_INIT_WEIGHTS)}")
        _check_leave_out_and_dropout(self)
        if not self.projections():
            raise ValueError(f"{name}: selfattn_lora, intermediate_lora, output_lora and attention_output_lora are "
                             "all False; expected at least one projection to adapt.")

    @property
    def scaling(self):
        """`alpha / r`, the factor of `A B`."""
        return self.alpha / self.r

    def projections(self):
        """The block projections this LoRA adapts, in `LORA_PROJECTIONS` order."""
        wanted = set()
        if self.selfattn_lora:
            wanted.update(LORA_ATTN_MATRICES[m] for m in self.attn_matrices)
        if self.attention_output_lora:
            wanted.add("attention_output")
        if self.intermediate_lora:
            wanted.add("intermediate")
        if self.output_lora:
            wanted.add("output")
        return [p for p in LORA_PROJECTIONS if p in wanted]

    def in_block(self, index: int) -> bool:
        """Whether block `index` gets this LoRA (it is not in `leave_out`)."""
        return index not in self.leave_out

    def slots(self) -> List[str]:
        """A LoRA sits in no adapter slot (it changes the block's projections)."""
        return []


LoRAConfig.PRESETS = {"lora": {}}


def adapter_config(spec):
    """The config of an adapter of any method: an `AdapterConfig` or a `LoRAConfig`.

    Accepts a config instance, a preset name of either class (`"seq_bn"`, `"par_bn"`, `"lora"`, ...), or
    a dict of fields (a LoRA's has `architecture: "lora"`, or LoRA-only fields such as `r`).
    """
    if isinstance(spec, (AdapterConfig, LoRAConfig)):
        return spec
    if isinstance(spec, str) and spec in LoRAConfig.PRESETS:
        return LoRAConfig.from_preset(spec)
    if isinstance(spec, dict):
        lora_only = {f.name for f in dataclasses.fields(LoRAConfig)} - {f.name for f in dataclasses.fields(AdapterConfig)}
        if spec.get("architecture") == "lora" or (set(spec) & lora_only and "architecture" not in spec):
            return LoRAConfig.from_dict(spec)
        if spec.get("architecture") not in (None, "bottleneck"):
            raise ValueError(f"adapter config: architecture {spec['architecture']!r}; expected 'bottleneck' or "
                             "'lora'.")
        return AdapterConfig.from_dict({k: v for k, v in spec.items() if k != "architecture"})
    if isinstance(spec, str) and spec not in AdapterConfig.PRESETS:
        raise ValueError(f"adapter config: unknown preset {spec!r}; allowed presets are "
                         f"{sorted([*AdapterConfig.PRESETS, *LoRAConfig.PRESETS])}.")
    return AdapterConfig.get(spec)


class AdapterMethodConfig:
    """An adapter config of any method, where one value takes either (the command line's `--adapter-config`):
    the presets of `AdapterConfig` and `LoRAConfig`, and `adapter_config` for dicts."""

    PRESETS = {**AdapterConfig.PRESETS, **LoRAConfig.PRESETS}
    from_dict = staticmethod(adapter_config)
    get = staticmethod(adapter_config)


def is_lora(config):
    """Whether `config` (an adapter's config) is a LoRA's."""
    return isinstance(config, LoRAConfig)


def check_fusable(adapter_configs, where=None, error=ValueError):
    """Raise `error` unless the adapters can be fused: they must sit in the same slots.

    A fusion combines its adapters' outputs in each slot (after attention: `mh_adapter`, after the
    feed-forward: `output_adapter`), so every fused adapter must have the same two flags. The one
    fusability check: the encoder, its blocks, the AdapterHub loader and the tuner's hypermodel call it.

    Args:
        adapter_configs: adapter names to their `AdapterConfig`s, in the fusion's order.
        where: what the message starts with (the caller, a file), or None.
        error: the exception class to raise (`ValueError` or a subclass).
    """
    loras = [n for n, c in adapter_configs.items() if isinstance(c, LoRAConfig)]
    if loras:
        raise error((f"{where}: " if where else "") + f"adapters {loras} are LoRAs; expected bottleneck adapters "
                    "(a fusion attends over adapter outputs at a slot, which a LoRA does not have).")
    flags = {n: (c.mh_adapter, c.output_adapter) for n, c in adapter_configs.items()}
    if len(set(flags.values())) > 1:
        raise error(
            (f"{where}: " if where else "")
            + "fused adapters have different slot flags (mh_adapter, output_adapter): "
            + ", ".join(f"{n}: {f}" for n, f in flags.items())
            + "; expected the same for all."
        )
