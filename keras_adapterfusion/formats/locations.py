"""Where each variable of an adapter or a fusion lives, for every weight format.

A `Location` is a variable's block, slot, sublayer and attribute in this package's layers, with its shape,
its AdapterHub key (after the slot's prefix, e.g. `adapter_down.0.weight`) and the transform between the
two layouts. The native format (`saving`) keys these tables by location, AdapterHub files
(`adapterhub`) by `hub`: both import them from here, so neither format depends on the other.
"""

import collections

from keras_adapterfusion.configs import is_lora

Location = collections.namedtuple("Location", ["block", "slot", "sub", "attr", "shape", "hub", "transform"])


def lora_locations(encoder, config):
    """`Location`s of every variable of a LoRA with `config`: per block and projection (the `slot` field),
    `lora_A` `[in, r]` and `lora_B` `[r, out]` (AdapterHub and PEFT store both transposed)."""
    out = []
    for i, block in enumerate(encoder.blocks):
        if not config.in_block(i):
            continue
        for projection in config.projections():
            fan_in, units = block._projection_shape(projection)
            out.append(Location(i, projection, None, "lora_A", (fan_in, config.r), "lora_A", "transpose"))
            out.append(Location(i, projection, None, "lora_B", (config.r, units), "lora_B", "transpose"))
    return out


def adapter_locations(encoder, config):
    """`Location`s of every variable of an adapter with `config` in `encoder` (a LoRA's: `lora_locations`)."""
    if is_lora(config):
        return lora_locations(encoder, config)
    h = encoder.hidden_size
    out = []
    for i in range(encoder.num_layers):
        if not config.in_block(i):
            continue
        b = config.bottleneck_size(h, i)
        down = "adapter_down.1." if config.ln_before else "adapter_down.0."
        for slot in config.slots():
            if config.ln_before:
                out.append(Location(i, slot, "norm_before", "gamma", (h,), "adapter_down.0.weight", None))
                out.append(Location(i, slot, "norm_before", "beta", (h,), "adapter_down.0.bias", None))
            out.append(Location(i, slot, "down", "kernel", (h, b), down + "weight", "transpose"))
            out.append(Location(i, slot, "down", "bias", (b,), down + "bias", None))
            out.append(Location(i, slot, "up", "kernel", (b, h), "adapter_up.weight", "transpose"))
            out.append(Location(i, slot, "up", "bias", (h,), "adapter_up.bias", None))
            if config.ln_after:
                out.append(Location(i, slot, "norm_after", "gamma", (h,), "adapter_norm_after.weight", None))
                out.append(Location(i, slot, "norm_after", "beta", (h,), "adapter_norm_after.bias", None))
            if config.scaling == "learned":
                out.append(Location(i, slot, None, "scale", (1,), "scaling", None))
            elif config.scaling == "channel":
                out.append(Location(i, slot, None, "scale", (h,), "scaling", None))
    return out


def fusion_locations(encoder, adapter_names, config):
    """`Location`s of every variable of a fusion over `adapter_names` with `config`."""
    h = encoder.hidden_size
    slots = encoder.adapter_configs[adapter_names[0]].slots()
    out = []
    for i in range(encoder.num_layers):
        for slot in slots:
            for part, attr in (("query", "query_dense"), ("key", "key_dense")):
                if getattr(config, part):
                    out.append(Location(i, slot, attr, "kernel", (h, h), part + ".weight", "transpose"))
                    out.append(Location(i, slot, attr, "bias", (h,), part + ".bias", None))
            if config.value:
                out.append(Location(i, slot, "value_dense", "kernel", (h, h), "value.weight", "transpose"))
    return out


def module_variable(encoder, loc, kind, key):
    """The variable at `loc` of adapter (`kind="adapter"`) or fusion `key` of `encoder`."""
    block = encoder.blocks[loc.block]
    layers = block.adapter_layers(key) if kind == "adapter" else block.fusion_layers(key)
    layer = layers[loc.slot]
    owner = layer if loc.sub is None else getattr(layer, loc.sub)
    return getattr(owner, loc.attr)
