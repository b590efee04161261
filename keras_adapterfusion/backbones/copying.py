"""`copy_encoder`: a new encoder like a given one, with a chosen set of adapters and fusions, holding its values.

The one encoder copy: pruning (fewer adapters, adapters left out of the first blocks) and the tuner's
hypermodel (a fresh copy per trial, no fusion) both call it.
"""

import dataclasses

import keras

from keras_adapterfusion.backbones.transformer_encoder import TransformerEncoder


def copy_encoder(encoder, adapters, fusions=None, leave_out=(), dtype=None):
    """A new, built `TransformerEncoder` with `encoder`'s base, `adapters` and `fusions`, holding copies of its values.

    Args:
        encoder: the `TransformerEncoder` to copy.
        adapters: names of `encoder`'s adapters the copy has (in this order).
        fusions: `{source fusion key: (adapter names, fusion name or None)}`: for each, the copy gets a
            fusion over those adapters (a subset of the source fusion's, in its config) with the source's
            weights (a fusion's weights do not depend on how many adapters it fuses). None: no fusion.
        leave_out: block indices the copy's adapters are left out of, besides their own `leave_out`.
        dtype: a dtype policy for the copy (None: the encoder's).

    Returns:
        The copy. Its values are copies (new buffers), so training either leaves the other alone.

    Raises:
        ValueError: an adapter or fusion that `encoder` does not have, or a copy variable that no layer
            of `encoder` fills.
    """
    from keras_adapterfusion.layers.adapter_setup import AdapterSetup

    adapters = list(adapters)
    missing = [a for a in adapters if a not in encoder.adapter_configs]
    if missing:
        raise ValueError(f"copy_encoder: adapters {missing} are not in the encoder; expected names from "
                         f"{sorted(encoder.adapter_configs)}.")
    fusions = dict(fusions or {})
    config = encoder.get_config()
    drop = set(leave_out)
    config["adapters"] = {
        a: dataclasses.replace(encoder.adapter_configs[a],
                               leave_out=sorted(set(encoder.adapter_configs[a].leave_out) | drop)).to_dict()
        for a in adapters
    }
    new_keys = {}
    config["fusions"] = {}
    for source_key, (names, name) in fusions.items():
        if source_key not in encoder.fusion_specs:
            raise ValueError(f"copy_encoder: fusion {source_key!r} is not in the encoder; expected one of "
                             f"{sorted(encoder.fusion_specs)}.")
        key = AdapterSetup.fuse(list(names), name).fusion_key
        new_keys[source_key] = key
        config["fusions"][key] = {"adapters": list(names),
                                  "config": encoder.fusion_specs[source_key]["config"].to_dict(), "name": name}
    if dtype is not None:
        config["dtype"] = dtype
    copy = TransformerEncoder.from_config(config)
    copy.build()

    filled = set()

    def fill(source, target):
        pairs = list(zip(source.weights, target.weights))
        if len(source.weights) != len(target.weights) or any(
                tuple(s.shape) != tuple(t.shape) for s, t in pairs):
            raise ValueError(f"copy_encoder: cannot copy {source.path!r}: its weights do not match the copy's.")
        for s, t in pairs:
            # A copy of the buffer: a training step donates (frees) the buffers of the variables it updates.
            t.assign(keras.ops.copy(s.value))
            filled.add(id(t))

    for source, target in zip(encoder.input_layers(), copy.input_layers()):
        fill(source, target)
    if encoder.use_pooler:
        fill(encoder.pooler, copy.pooler)
    for old, new in zip(encoder.blocks, copy.blocks):
        for source, target in zip(old.base_layers(), new.base_layers()):
            fill(source, target)
        for a in adapters:
            for slot, target in new.adapter_layers(a).items():
                fill(old.adapter_layers(a)[slot], target)
        for source_key, key in new_keys.items():
            for slot, target in new.fusion_layers(key).items():
                fill(old.fusion_layers(source_key)[slot], target)
    left = [v.path for v in copy.weights if id(v) not in filled]
    if left:
        raise ValueError(f"copy_encoder: no layer of the encoder fills {left[:3]}; expected the same structure.")
    return copy
