"""LoRAs published in PEFT's format: `adapter_config.json` and `adapter_model.safetensors`.

`load_peft_lora(encoder, directory)` reads a PEFT LoRA of one of the supported encoders into the encoder as
a LoRA adapter (`configs.LoRAConfig`), which then runs, merges (`merge_lora`), saves and exports like any
other. What PEFT adapted is read from the weights themselves: every `<module>.lora_A.weight` /
`<module>.lora_B.weight` pair must sit on a block projection (`backbones.converters.projection_paths`),
the same projections in every block that has any (the others are left out). The scaling is PEFT's:
`lora_alpha / r`, or `lora_alpha / sqrt(r)` with `use_rslora`.

Refused, with the field named: other PEFT methods, DoRA, LoRA biases (`bias` other than `"none"`,
`lora_bias`), `fan_in_fan_out`, per-module ranks or alphas (`rank_pattern`, `alpha_pattern`), extra
trained modules (`modules_to_save`: a PEFT task head), trainable tokens, and any other field this package
does not know set to a non-empty value.

Example:

```python
encoder = load_encoder("bert-base-uncased")
name = load_peft_lora(encoder, "path/to/peft_lora", name="sst2")
model = AdapterModel(encoder, head, adapter_setup=name)
```
"""

import math
import os

from keras_adapterfusion.backbones.converters import CONVERTERS, projection_paths
from keras_adapterfusion.configs import LoRAConfig
from keras_adapterfusion.errors import CheckpointError
from keras_adapterfusion.io import WeightRow, read_json, read_weights, stage_weights
from keras_adapterfusion.names import check_name

# PEFT LoraConfig fields read here.
_READ = ("peft_type", "r", "lora_alpha", "lora_dropout", "use_rslora", "layers_to_transform", "target_modules")
# Fields that must keep these values (the computation this package implements).
_REQUIRED = {
    "bias": ("none",),
    "lora_bias": (False,),
    "use_dora": (False,),
    "fan_in_fan_out": (False,),
    "use_qalora": (False,),
}
# Fields that describe the run, not the computation (read and ignored).
_IGNORED = ("base_model_name_or_path", "revision", "task_type", "inference_mode", "auto_mapping",
            "init_lora_weights", "layers_pattern", "megatron_core", "qalora_group_size", "loftq_config")
_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


def peft_lora_config(data, source="adapter_config.json"):
    """The fields PEFT's `adapter_config.json` gives a LoRA: `(r, scaling, dropout, layers)`; refuses the rest."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: is {type(data).__name__}; expected an object.")
    if data.get("peft_type") != "LORA":
        raise CheckpointError(f"{source}: peft_type {data.get('peft_type')!r}; expected 'LORA'.")
    for key, allowed in _REQUIRED.items():
        if key in data and data[key] not in allowed:
            raise CheckpointError(f"{source}: {key}={data[key]!r} is not supported; expected {allowed[0]!r}.")
    for key, value in data.items():
        if key in _READ or key in _REQUIRED or key in _IGNORED:
            continue
        if value not in (None, {}, [], False, ""):
            raise CheckpointError(f"{source}: {key}={value!r} is not supported; expected it unset (this package "
                                  "reads plain LoRAs of the encoder's projections).")
    r = data.get("r")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise CheckpointError(f"{source}: r={r!r}; expected an int >= 1.")
    alpha = data.get("lora_alpha", 8)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise CheckpointError(f"{source}: lora_alpha={alpha!r}; expected a positive number.")
    scaling = alpha / math.sqrt(r) if data.get("use_rslora") else alpha / r
    return r, scaling, float(data.get("lora_dropout") or 0.0), data.get("layers_to_transform")


def _module_of(key, prefixes):
    for prefix in prefixes:
        if key.startswith(prefix):
            return key[len(prefix):]
    return None


def load_peft_lora(encoder, directory, name=None, allow_nonfinite=False):
    """Load a PEFT LoRA directory into `encoder` as a LoRA adapter; returns its name.

    Args:
        encoder: a `TransformerEncoder` of the model the LoRA was trained on.
        directory: PEFT's `save_pretrained` directory (`adapter_config.json`, `adapter_model.safetensors`
            or `adapter_model.bin`).
        name: the adapter's name (default: the directory's name).
        allow_nonfinite: load weights holding NaN or inf (refused by default).

    Raises:
        CheckpointError: naming the file and the field or tensor at fault; the encoder is then unchanged.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: no such directory; expected a PEFT LoRA directory.")
    config_path = os.path.join(directory, "adapter_config.json")
    r, scaling, dropout, layers = peft_lora_config(read_json(config_path, "PEFT adapter config"), config_path)
    name = check_name(name if name is not None else os.path.basename(os.path.normpath(directory)), "name")
    if name in encoder.adapter_configs:
        raise CheckpointError(f"{directory}: the encoder already has an adapter {name!r}; pass name=...")
    weights = read_weights(directory, "adapter_model")
    # PEFT writes `base_model.model.` and then the wrapped model's own key (a task model adds its prefix).
    prefixes = ("base_model.model." + CONVERTERS[encoder.model_type].prefix, "base_model.model.")
    where = {path: place for place, path in projection_paths(encoder).items()}
    found = {}
    for key in weights.tensors:
        suffix = next((s for s in _SUFFIXES if key.endswith(s)), None)
        module = _module_of(key[:-len(suffix)], prefixes) if suffix else None
        if module not in where:
            raise CheckpointError(f"{weights.path}: tensor {key!r} is not a LoRA of one of the encoder's block "
                                  "projections (attention query, key, value and output, the feed-forward's two).")
        found.setdefault(where[module], set()).add(suffix)
    per_block = {}
    for (block, projection), suffixes in found.items():
        if len(suffixes) != 2:
            raise CheckpointError(f"{weights.path}: block {block} {projection} has only {sorted(suffixes)}; expected "
                                  "both lora_A and lora_B.")
        per_block.setdefault(block, set()).add(projection)
    if not per_block:
        raise CheckpointError(f"{weights.path}: no LoRA tensors; expected <module>.lora_A.weight keys.")
    kinds = {frozenset(p) for p in per_block.values()}
    if len(kinds) != 1:
        raise CheckpointError(f"{weights.path}: the blocks adapt different projections "
                              f"({ {b: sorted(p) for b, p in sorted(per_block.items())} }); expected the same in each.")
    projections = set(next(iter(kinds)))
    if layers is not None and sorted(per_block) != sorted(layers):
        raise CheckpointError(f"{config_path}: layers_to_transform {layers} but the weights adapt blocks "
                              f"{sorted(per_block)}.")
    config = LoRAConfig(
        selfattn_lora=bool(projections & {"query", "key", "value"}),
        attn_matrices=[m for m, p in (("q", "query"), ("k", "key"), ("v", "value")) if p in projections] or ["q", "v"],
        attention_output_lora="attention_output" in projections, intermediate_lora="intermediate" in projections,
        output_lora="output" in projections, r=r, alpha=scaling * r, dropout=dropout,
        leave_out=[i for i in range(encoder.num_layers) if i not in per_block])
    rows = _rows(encoder, name, config, where, weights.tensors, prefixes)
    staged = stage_weights(rows, weights.tensors, weights.path, allow_nonfinite=allow_nonfinite)
    encoder.add_adapter(name, config)
    staged.assign()
    return name


def _rows(encoder, name, config, where, tensors, prefixes):
    """`WeightRow`s of the new LoRA under the file's own keys (whichever prefix it used)."""
    from keras_adapterfusion.formats.locations import lora_locations, module_variable

    key_of = {}
    for key in tensors:
        for suffix in _SUFFIXES:
            if key.endswith(suffix):
                key_of[(where[_module_of(key[:-len(suffix)], prefixes)], suffix)] = key
    return [WeightRow(key_of[((loc.block, loc.slot), f".{loc.hub}.weight")], loc.shape,
                      (lambda loc=loc: module_variable(encoder, loc, "adapter", name)), loc.transform)
            for loc in lora_locations(encoder, config)]
