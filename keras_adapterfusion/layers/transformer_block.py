"""A post-LayerNorm transformer block (BERT, RoBERTa, XLM-R, DistilBERT, ELECTRA, ALBERT) with adapter slots."""

import keras
from keras import ops

from keras_adapterfusion.configs import FusionConfig, adapter_config, check_fusable, is_lora
from keras_adapterfusion.layers.activations import get_activation
from keras_adapterfusion.layers.adapter_fusion import AdapterFusion
from keras_adapterfusion.layers.adapter_setup import AdapterSetup, call_form
from keras_adapterfusion.layers.adapter_slot import LOCATIONS, AdapterSlot
from keras_adapterfusion.layers.bottleneck_adapter import BottleneckAdapter
from keras_adapterfusion.layers.fused import LayerNorm, bias_add, dense
from keras_adapterfusion.layers.lora import LoRA, LoRALayers
from keras_adapterfusion.layers.numerics import lowest, softmax_input
from keras_adapterfusion.names import check_name, path_part

SLOTS = LOCATIONS


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class TransformerBlock(keras.layers.Layer):
    """A BERT-style post-LayerNorm transformer block with two adapter slots.

    The block is attention, feed-forward and two `AdapterSlot`s:
    `x1 = slots["mh"](attention(x), x, LN_att)` followed by
    `out = slots["output"](FFN(x1), x1, LN_out)`. A slot with nothing active
    computes the block's own `LN(h + x)`; with one adapter it applies AdapterHub's
    pre-forward, the adapter and the post-forward; with several adapters it runs
    AdapterFusion over their up projections (see `AdapterSlot`). Which adapters
    are active is a call argument, so models that share one block can use
    different setups.

    Adapters and fusion layers can be added after the block is built
    (`add_adapter`, `add_fusion`); their weights are created at once.

    Args:
        hidden_size: model width.
        num_heads: attention heads.
        intermediate_size: feed-forward width.
        hidden_act: feed-forward activation (Hugging Face name; `"gelu"` is exact).
        hidden_dropout: dropout after the attention output and FFN projections.
        attention_dropout: dropout on attention probabilities; also the fusion
            dropout when a fusion config leaves `dropout_prob` unset.
        layer_norm_epsilon: epsilon of the block's LayerNorms.
        attention_output_dropout: apply `hidden_dropout` after the attention
            output projection too (BERT); DistilBERT applies it only after the
            feed-forward (`False`).
        feed_forward_dropout: apply `hidden_dropout` after the feed-forward
            output projection (BERT); ALBERT does not (`False`).
        swap_attention_slot_inputs: give the `mh` slot the attention's input as
            its sublayer output and the attention output as its residual, as
            AdapterHub's ALBERT does (the reverse of BERT's order; without an
            adapter the result is the same `LN(h + x)`, with one it is what
            `adapters` computes for ALBERT).
        block_index: index of this block in the encoder (for `leave_out` and
            per-block reduction factors).
        adapters: dict adapter name -> `AdapterConfig` dict (for `from_config`).
        fusions: dict fusion key -> `{"adapters": [...], "config": {...}, "name": ...}`.
        fusion_reference_form: compute fusion in AdapterHub's literal form.
        merged_lora: the LoRA whose update is folded into the projections' kernels (`merge_lora`), or None.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        hidden_states: `[batch, tokens, hidden]`.
        attention_mask: `[batch, tokens]`, 1 for real tokens, 0 for padding.
        adapter_setup: `None`, an adapter name, a list of names to fuse, or an
            `AdapterSetup`.
        adapter_index: for a per-row setup, int `[batch]`: which of its
            adapters each example runs.
        regularize: let fusion layers add their regularization loss while
            training (an encoder that runs a shared block several times passes
            `False` after the first pass, so that it counts once).
        relative: the relative-position inputs of a `DisentangledBlock` (unused here).
        training: Python bool.

    Returns:
        A dict: `hidden_states` `[batch, tokens, hidden]`, and, when a slot runs a
        fusion, its attention probabilities `[batch, tokens, N]` as
        `mh_fusion_attention` / `fusion_attention` (absent otherwise, so that every
        output is a tensor and the block works in functional models too).

    Example:

    ```python
    block = TransformerBlock(hidden_size=64, num_heads=4, intermediate_size=128)
    block.add_adapter("sentiment", "seq_bn")
    out = block(keras.random.normal((2, 5, 64)), adapter_setup="sentiment")["hidden_states"]
    ```

    References:
        - [Devlin et al., 2019](https://arxiv.org/abs/1810.04805)
        - [Pfeiffer et al., 2020](https://arxiv.org/abs/2005.00247)
    """

    def __init__(
        self,
        hidden_size,
        num_heads,
        intermediate_size,
        hidden_act="gelu",
        hidden_dropout=0.1,
        attention_dropout=0.1,
        layer_norm_epsilon=1e-12,
        attention_output_dropout=True,
        feed_forward_dropout=True,
        swap_attention_slot_inputs=False,
        block_index=0,
        adapters=None,
        fusions=None,
        fusion_reference_form=False,
        merged_lora=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_size % num_heads:
            raise ValueError(
                f"TransformerBlock.num_heads: got {num_heads} for hidden_size {hidden_size}; "
                "expected a divisor of hidden_size."
            )
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        get_activation(hidden_act)  # an unknown name fails here, by name
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.attention_output_dropout = attention_output_dropout
        self.feed_forward_dropout = feed_forward_dropout
        self.swap_attention_slot_inputs = swap_attention_slot_inputs
        self.block_index = block_index
        self.fusion_reference_form = fusion_reference_form
        self.adapter_configs = {}
        self.fusion_specs = {}
        # One slot per adapter location; each holds that location's adapters and fusions.
        self.slots = {loc: AdapterSlot(loc, block_index, dtype=self.dtype_policy, name=f"{loc}_slot")
                      for loc in LOCATIONS}
        # LoRAs change the block's projections: `lora_slot` holds their layers by weight-path key,
        # `_lora_keys` maps a LoRA's name to {projection: key}.
        self.lora_slot = LoRALayers(dtype=self.dtype_policy, name="lora_slot")
        self._lora_keys = {}
        for name, config in (adapters or {}).items():
            self.add_adapter(name, config)
        if merged_lora is not None and merged_lora not in self._lora_keys:
            raise ValueError(f"TransformerBlock.merged_lora: got {merged_lora!r}; expected one of the block's LoRAs "
                             f"{sorted(self._lora_keys)}.")
        self.merged_lora = merged_lora
        for spec in (fusions or {}).values():
            self.add_fusion(spec["adapters"], spec["config"], name=spec.get("name"))

    # ------------------------------------------------------------------ build
    def _dense(self, units, name):
        return keras.layers.Dense(
            units,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape, *args, **kwargs):
        shape = tuple(input_shape)
        h = self.hidden_size
        self.query_dense = self._dense(h, "query")
        self.key_dense = self._dense(h, "key")
        self.value_dense = self._dense(h, "value")
        self.attention_output_dense = self._dense(h, "attention_output")
        self.attention_norm = LayerNorm(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="attention_norm"
        )
        self.intermediate_dense = self._dense(self.intermediate_size, "intermediate")
        self.output_dense = self._dense(h, "output")
        self.output_norm = LayerNorm(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="output_norm"
        )
        for layer in (
            self.query_dense,
            self.key_dense,
            self.value_dense,
            self.attention_output_dense,
            self.intermediate_dense,
        ):
            layer.build(shape)
        self.output_dense.build(shape[:-1] + (self.intermediate_size,))
        self.attention_norm.build(shape)
        self.output_norm.build(shape)
        self.attention_probs_dropout = keras.layers.Dropout(self.attention_dropout, dtype=self.dtype_policy)
        self.hidden_dropout_layer = keras.layers.Dropout(self.hidden_dropout, dtype=self.dtype_policy)
        self._adapter_input_shape = shape
        for slot in self.slots.values():
            for layer in (*slot.adapters.values(), *slot.fusions.values()):
                self._build_adapter_layer(layer)
        for keys in self._lora_keys.values():
            for projection, key in keys.items():
                self._build_lora(projection, self.lora_slot.layers_by_key[key])

    # The slots' layers under the attribute names they had before the slots existed: Keras's `.keras`
    # format stores weights by the first attribute path that reaches them, in name order, so these keep
    # files written by earlier versions loadable (tests/test_format_fixtures.py).
    @property
    def mh_adapters(self):
        """The adapters after attention: adapter name -> `BottleneckAdapter`."""
        return self.slots["mh"].adapters

    @property
    def output_adapters(self):
        """The adapters after the feed-forward: adapter name -> `BottleneckAdapter`."""
        return self.slots["output"].adapters

    @property
    def mh_fusions(self):
        """The fusion layers after attention: fusion key -> `AdapterFusion`."""
        return self.slots["mh"].fusions

    @property
    def output_fusions(self):
        """The fusion layers after the feed-forward: fusion key -> `AdapterFusion`."""
        return self.slots["output"].fusions

    def _build_adapter_layer(self, layer):
        """Build an adapter or fusion layer inside this block's name scope, so that its
        weights get paths like `encoder/block_3/output_adapter_s/down/kernel`."""
        if layer.built:
            return
        shape = self._adapter_input_shape
        with keras.name_scope(self.name, caller=self):
            if isinstance(layer, AdapterFusion):
                layer.build(shape, shape[:-1] + (None, shape[-1]), shape)
            else:
                layer.build(shape)

    def projection(self, name):
        """The block's `Dense` layer for a LoRA projection name (`configs.LORA_PROJECTIONS`)."""
        return {"query": self.query_dense, "key": self.key_dense, "value": self.value_dense,
                "attention_output": self.attention_output_dense, "intermediate": self.intermediate_dense,
                "output": self.output_dense}[name]

    def _projection_shape(self, projection):
        """`(input width, output width)` of a projection."""
        if projection == "intermediate":
            return self.hidden_size, self.intermediate_size
        if projection == "output":
            return self.intermediate_size, self.hidden_size
        return self.hidden_size, self.hidden_size

    def _build_lora(self, projection, layer):
        if layer.built:
            return
        shape = self._adapter_input_shape
        with keras.name_scope(self.name, caller=self):
            layer.build(tuple(shape[:-1]) + (self._projection_shape(projection)[0],))

    # ------------------------------------------------------- adding adapters
    def _attach(self, slot, key, layer, config=None):
        self.slots[slot].add(key, layer, config)
        if self.built:
            self._build_adapter_layer(layer)

    def add_adapter(self, name, config="seq_bn"):
        """Add a bottleneck adapter called `name` in the slots `config` asks for.

        Everything is checked before the block changes. Returns True when the
        adapter went into this block, False when the config's `leave_out`
        excludes the block.
        """
        check_name(name, "adapter name")
        if name in self.adapter_configs:
            raise ValueError(f"adapter name: {name!r} is already in block {self.block_index}; expected a new name.")
        config = adapter_config(config)
        if not config.in_block(self.block_index):
            self.adapter_configs[name] = config
            return False
        if is_lora(config):
            return self._add_lora(name, config)
        layers = {
            slot: BottleneckAdapter.from_adapter_config(
                config, self.hidden_size, self.block_index, dtype=self.dtype_policy, name=f"{slot}_adapter_{path_part(name)}",
            )
            for slot in config.slots()
        }
        self.adapter_configs[name] = config
        for slot, layer in layers.items():
            self._attach(slot, name, layer, config)
        return True

    def _add_lora(self, name, config):
        layers = {
            p: LoRA.from_lora_config(config, self._projection_shape(p)[1], dtype=self.dtype_policy,
                                     name=f"{p}_lora_{path_part(name)}")
            for p in config.projections()
        }
        self.adapter_configs[name] = config
        self._lora_keys[name] = {}
        for projection, layer in layers.items():
            key = f"{projection}_lora_{path_part(name)}"
            self.lora_slot.layers_by_key[key] = layer
            self._lora_keys[name][projection] = key
            if self.built:
                self._build_lora(projection, layer)
        return True

    def loras(self, name):
        """The `LoRA` layers of LoRA `name` in this block, by projection (empty when it is left out)."""
        return {p: self.lora_slot.layers_by_key[k] for p, k in self._lora_keys.get(name, {}).items()}

    def merge_lora(self, name):
        """Fold LoRA `name`'s update into the kernels of its projections: `W += scaling · A B`.

        The merged block computes the LoRA at no extra cost; it then runs it whatever the setup (its
        projections are changed), as AdapterHub's `merge_adapter`. One LoRA at a time; `unmerge_lora`
        takes it out again (to float rounding: `W + D - D`).
        """
        if name not in self._lora_keys:
            raise ValueError(f"merge_lora: no LoRA {name!r} in block {self.block_index}; expected one of "
                             f"{sorted(self._lora_keys)}.")
        if self.merged_lora is not None:
            raise ValueError(f"merge_lora: LoRA {self.merged_lora!r} is merged into block {self.block_index}; "
                             "expected unmerge_lora() first.")
        for projection, layer in self.loras(name).items():
            kernel = self.projection(projection).kernel
            kernel.assign(kernel + ops.cast(layer.delta(), kernel.dtype))
        self.merged_lora = name

    def unmerge_lora(self):
        """Take the merged LoRA's update out of the kernels again (`W -= scaling · A B`); returns its name."""
        name = self.merged_lora
        if name is None:
            return None
        for projection, layer in self.loras(name).items():
            kernel = self.projection(projection).kernel
            kernel.assign(kernel - ops.cast(layer.delta(), kernel.dtype))
        self.merged_lora = None
        return name

    def add_fusion(self, adapter_names, config="dynamic", name=None):
        """Add a fusion layer over `adapter_names` (in every slot they share); returns its key.

        `name` names the fusion (several fusions over the same adapters can then
        coexist); without it the key is AdapterHub's, the names joined by commas.
        """
        setup = AdapterSetup.fuse(adapter_names, name)
        names = setup.adapters
        for n in names:
            if n not in self.adapter_configs:
                raise ValueError(
                    f"add_fusion: adapter {n!r} is not in block {self.block_index}; "
                    f"expected one of {sorted(self.adapter_configs)}."
                )
        key = setup.fusion_key
        if key in self.fusion_specs:
            raise ValueError(f"add_fusion: a fusion {key!r} already exists; expected a new name or set of adapters.")
        configs = [self.adapter_configs[n] for n in names]
        check_fusable(dict(zip(names, configs)), where="add_fusion")
        config = FusionConfig.get(config)
        # Like AdapterHub, every block gets the fusion layer, also blocks whose
        # adapters are all left out (there it holds weights but does not run).
        layers = {
            slot: AdapterFusion.from_fusion_config(
                config,
                dropout_prob=self.attention_dropout,
                reference_form=self.fusion_reference_form,
                dtype=self.dtype_policy,
                name=f"{slot}_fusion_{path_part(key)}",
            )
            for slot in configs[0].slots()
        }
        self.fusion_specs[key] = {"adapters": list(names), "config": config, "name": name}
        for slot, layer in layers.items():
            self._attach(slot, key, layer)
        return key

    def base_layers(self):
        """The block's own pretrained layers (attention, feed-forward, LayerNorms)."""
        return [
            self.query_dense,
            self.key_dense,
            self.value_dense,
            self.attention_output_dense,
            self.attention_norm,
            self.intermediate_dense,
            self.output_dense,
            self.output_norm,
        ]

    def adapter_layers(self, name):
        """The layers of adapter `name` in this block: `BottleneckAdapter`s by slot, or a LoRA's `LoRA`
        layers by projection."""
        if name in self._lora_keys:
            return self.loras(name)
        return {s: slot.adapters[name] for s, slot in self.slots.items() if name in slot.adapters}

    def fusion_layers(self, key):
        """The `AdapterFusion` layers of the fusion with key `key` in this block, by slot."""
        return {s: slot.fusions[key] for s, slot in self.slots.items() if key in slot.fusions}

    # ------------------------------------------------------------- forward
    def _project(self, projection, x, lora=None, training=None, activation=None):
        """One of the block's projections of `x` (then `activation`, a name), with LoRA `lora`'s update when it
        adapts it.

        Computed as one 2-D product (`layers/fused.dense`), so that the product, the bias and the activation
        meet in one kernel where the backend fuses them (oneDNN on TensorFlow); a LoRA's update goes in
        before the activation.
        """
        layer = self.projection(projection)
        layers = self.loras(lora) if lora is not None else {}
        if projection not in layers:
            return dense(x, layer.kernel, layer.bias if layer.use_bias else None, activation)
        y = dense(x, layer.kernel, layer.bias if layer.use_bias else None) + layers[projection](x, training=training)
        return y if activation is None else get_activation(activation)(y)

    def _active_lora(self, setup):
        """The LoRA `setup` runs here (a single setup naming one of this block's LoRAs, not merged), or None."""
        if setup is None or setup.kind != "single":
            return None
        name = setup.adapters[0]
        return name if name in self._lora_keys and name != self.merged_lora else None

    def _qkv(self, x, lora=None, training=None):
        """Queries, keys and values `[batch, heads, tokens, head_dim]`, as one product over the three
        kernels side by side (and LoRA `lora`'s updates of them)."""
        b, t = ops.shape(x)[0], ops.shape(x)[1]
        kernel = ops.concatenate([self.query_dense.kernel, self.key_dense.kernel, self.value_dense.kernel], axis=1)
        bias = ops.concatenate([self.query_dense.bias, self.key_dense.bias, self.value_dense.bias], axis=0)
        x2 = ops.reshape(x, (-1, self.hidden_size))
        qkv = bias_add(ops.matmul(x2, kernel), bias)
        layers = self.loras(lora) if lora is not None else {}
        if any(p in layers for p in ("query", "key", "value")):
            updates = [layers[p](x2, training=training) if p in layers else None for p in ("query", "key", "value")]
            zeros = ops.zeros_like(next(u for u in updates if u is not None))
            qkv = qkv + ops.concatenate([zeros if u is None else u for u in updates], axis=1)
        qkv = ops.reshape(qkv, (b, t, 3, self.num_heads, self.head_dim))
        # [3, batch, heads, tokens, head_dim], unstacked (not sliced: a slice's gradient is a
        # full-size scatter, an unstack's a stack).
        return ops.unstack(ops.transpose(qkv, (2, 0, 3, 1, 4)), 3, axis=0)

    def _attention(self, x, attention_mask, training, relative=None, lora=None):
        b, t = ops.shape(x)[0], ops.shape(x)[1]
        h = self.hidden_size
        q, k, v = self._qkv(x, lora, training)
        # 1/sqrt(d) on the queries (a quarter of the scores' size at 128 tokens and 32-wide heads), as torch's
        # scaled_dot_product_attention does.
        q = q * ops.convert_to_tensor(1.0 / self.head_dim ** 0.5, dtype=q.dtype)
        scores = softmax_input(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))))
        if attention_mask is not None:
            # A subtracted mask: 0 for real tokens, the largest number for padding (equal to selecting the
            # lowest number wherever a row has a real token). A subtraction, not an addition, keeps it out of
            # the product's kernel: TensorFlow's oneDNN fuses an added [batch, 1, 1, tokens] tensor into the
            # batched product as a broadcast post-op, which doubles the product's time on AVX2 CPUs (3.8 against
            # 1.9 ms a block at MiniLM size, batch 16 x 128) where a separate pass costs 0.7 ms.
            keep = ops.cast(attention_mask, scores.dtype)[:, None, None, :]
            scores = scores - (1.0 - keep) * -lowest(scores.dtype)
        probs = ops.cast(ops.softmax(scores, axis=-1), x.dtype)
        probs = self.attention_probs_dropout(probs, training=training)
        ctx = ops.matmul(probs, v)
        ctx = ops.reshape(ops.transpose(ctx, (0, 2, 1, 3)), (b, t, h))
        return ctx

    def __call__(self, hidden_states, attention_mask=None, adapter_setup=None, **kwargs):
        # The encoder passes its parsed `AdapterSetup`, which goes through as it is; the other forms
        # (a name, a list) are parsed here, for a block called on its own.
        setup = AdapterSetup.parse(adapter_setup)
        return super().__call__(hidden_states, attention_mask, adapter_setup=call_form(setup, hidden_states),
                                **kwargs)

    def call(self, hidden_states, attention_mask=None, adapter_setup=None, adapter_index=None, regularize=True,
             relative=None, training=None):
        setup = AdapterSetup.parse(adapter_setup)  # an AdapterSetup as it is; a symbolic call's token decoded
        if setup is not None and setup.kind == "per_row" and adapter_index is None:
            raise ValueError("TransformerBlock: a per-row adapter setup needs adapter_index ([batch] ints).")
        x = hidden_states
        lora = self._active_lora(setup)
        h = self._project("attention_output", self._attention(x, attention_mask, training, relative, lora), lora,
                          training)
        if self.attention_output_dropout:
            h = self.hidden_dropout_layer(h, training=training)
        if self.swap_attention_slot_inputs:
            h, x = x, h
        x1, mh_probs = self.slots["mh"].forward(h, x, self.attention_norm, setup, adapter_index, training,
                                                regularize)
        inter = self._project("intermediate", x1, lora, training, activation=self.hidden_act)
        h2 = self._project("output", inter, lora, training)
        if self.feed_forward_dropout:
            h2 = self.hidden_dropout_layer(h2, training=training)
        out, out_probs = self.slots["output"].forward(h2, x1, self.output_norm, setup, adapter_index, training,
                                                      regularize)
        outputs = {"hidden_states": out}
        if mh_probs is not None:
            outputs["mh_fusion_attention"] = mh_probs
        if out_probs is not None:
            outputs["fusion_attention"] = out_probs
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_size=self.hidden_size,
            num_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            hidden_act=self.hidden_act,
            hidden_dropout=self.hidden_dropout,
            attention_dropout=self.attention_dropout,
            layer_norm_epsilon=self.layer_norm_epsilon,
            attention_output_dropout=self.attention_output_dropout,
            feed_forward_dropout=self.feed_forward_dropout,
            swap_attention_slot_inputs=self.swap_attention_slot_inputs,
            block_index=self.block_index,
            adapters={n: c.to_dict() for n, c in self.adapter_configs.items()},
            fusions={
                k: {"adapters": list(s["adapters"]), "config": s["config"].to_dict(), "name": s["name"]}
                for k, s in self.fusion_specs.items()
            },
            fusion_reference_form=self.fusion_reference_form,
            merged_lora=self.merged_lora,
        )
        return config
