"""The encoder backbone: embeddings, transformer blocks with adapter slots, pooler."""

import keras
from keras import ops

from keras_adapterfusion.configs import FusionConfig, adapter_config, check_fusable, is_lora
from keras_adapterfusion.layers.adapter_setup import AdapterSetup, call_form
from keras_adapterfusion.layers.disentangled_block import RELATIVE_TYPES, DisentangledBlock, relative_indices
from keras_adapterfusion.layers.text_embeddings import TextEmbeddings
from keras_adapterfusion.layers.transformer_block import TransformerBlock
from keras_adapterfusion.names import check_name


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class TransformerEncoder(keras.layers.Layer):
    """A BERT-family encoder (BERT, RoBERTa, XLM-R, DistilBERT, ELECTRA, ALBERT, DeBERTa-v2/v3) whose blocks carry
    adapters and fusion.

    Usually built from a Hugging Face checkpoint with
    `keras_adapterfusion.backbones.load_encoder`. Adapters and fusions are added
    to every block at once (`add_adapter`, `add_fusion`); which ones run is chosen
    per call with `adapter_setup`.

    Args:
        vocab_size: rows of the token embedding table.
        hidden_size: width of the hidden states.
        num_layers: transformer blocks (each with its own weights and adapters).
        num_heads: attention heads per block.
        intermediate_size: width of the feed-forward layer.
        hidden_act: feed-forward activation (Hugging Face name).
        hidden_dropout: dropout of embeddings and block outputs.
        attention_dropout: dropout of attention probabilities.
        max_positions: rows of the position table.
        type_vocab_size: rows of the token-type table; 0 for none (DistilBERT).
        layer_norm_epsilon: LayerNorm epsilon.
        pad_token_id: padding id (RoBERTa positions depend on it).
        position_style: `"absolute"` (BERT), `"roberta"`, or `"none"` (no position
            table: DeBERTa-v3, whose attention sees relative positions).
        use_pooler: add the `tanh` pooler over the first token.
        embedding_size: width of the embedding tables when it differs from
            `hidden_size` (ELECTRA); a Dense layer projects them to `hidden_size`.
        attention_output_dropout: apply `hidden_dropout` after the attention
            output projection (BERT); DistilBERT does not (`False`).
        feed_forward_dropout: apply `hidden_dropout` after the feed-forward
            output projection (BERT); ALBERT does not (`False`).
        swap_attention_slot_inputs: the blocks' `mh` slot takes the attention's
            input and output in AdapterHub's ALBERT order (see `TransformerBlock`).
        depth: how many blocks the input passes through, a multiple of
            `num_layers` (default: `num_layers`). When larger, the blocks are
            shared as ALBERT shares them: block `i` runs `depth // num_layers`
            times in a row, with the same weights and the same adapters and
            fusions (AdapterHub places adapters in ALBERT's shared layer, so they
            are shared too). `hidden_states` and `fusion_attentions` have one
            entry per pass.
        relative_attention: `None`, or DeBERTa-v2/v3's disentangled attention:
            a dict with `position_buckets` (log buckets of the distance, <= 0
            for none), `max_relative_positions`, `types` (from `"c2p"`,
            `"p2c"`) and `normalize` (a LayerNorm over the relative
            embeddings). The blocks are then `DisentangledBlock`s sharing one
            table of relative embeddings.
        zero_padding_embeddings: zero the embeddings of padding tokens (DeBERTa).
        model_type: Hugging Face `model_type` this encoder mirrors.
        adapters: dict name -> `AdapterConfig` dict, added at construction.
        fusions: dict fusion key -> `{"adapters": [...], "config": {...}, "name": ...}`.
        fusion_reference_form: compute fusion in AdapterHub's literal form.
        checkpoint: the checkpoint directory the weights came from (set by
            `load_encoder`; kept in the config so that a model loaded from a
            `.keras` file still finds its tokenizer, e.g. for `export_saved_model`).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: dict with `input_ids`, optional `attention_mask` and
            `token_type_ids` (int `[batch, tokens]`).
        adapter_setup: `None`, an adapter name, a list of names to fuse, or an
            `AdapterSetup` (e.g. a named fusion, or a per-row setup).
        adapter_index: for a per-row setup, int `[batch]`: which of its
            adapters each example runs.
        output_hidden_states: also return every block's output.
        training: Python bool.

    Returns:
        A dict: `last_hidden_state`; `pooler_output` when `use_pooler`;
        `hidden_states` `[blocks + 1, batch, tokens, hidden]` when asked;
        `fusion_attentions` `[blocks, batch, tokens, N]` when fusing (and
        `mh_fusion_attentions` when the fused adapters sit after attention).
        Blocks without fusion (`leave_out`) give zeros there.

    Example:

    ```python
    encoder = TransformerEncoder(vocab_size=1000, hidden_size=64, num_layers=2,
                                 num_heads=4, intermediate_size=128)
    encoder.add_adapter("a", "seq_bn")
    encoder.add_adapter("b", "seq_bn")
    encoder.add_fusion(["a", "b"], "dynamic")
    out = encoder({"input_ids": keras.ops.ones((2, 5), "int32")},
                  adapter_setup=["a", "b"])
    ```

    References:
        - [Devlin et al., 2019](https://arxiv.org/abs/1810.04805)
        - [Pfeiffer et al., 2020](https://arxiv.org/abs/2005.00247)
    """

    def __init__(
        self,
        vocab_size,
        hidden_size,
        num_layers,
        num_heads,
        intermediate_size,
        hidden_act="gelu",
        hidden_dropout=0.1,
        attention_dropout=0.1,
        max_positions=512,
        type_vocab_size=2,
        layer_norm_epsilon=1e-12,
        pad_token_id=0,
        position_style="absolute",
        use_pooler=True,
        embedding_size=None,
        attention_output_dropout=True,
        feed_forward_dropout=True,
        swap_attention_slot_inputs=False,
        depth=None,
        relative_attention=None,
        zero_padding_embeddings=False,
        model_type="bert",
        adapters=None,
        fusions=None,
        fusion_reference_form=False,
        checkpoint=None,
        merged_lora=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.max_positions = max_positions
        self.type_vocab_size = type_vocab_size
        self.layer_norm_epsilon = layer_norm_epsilon
        self.pad_token_id = pad_token_id
        self.position_style = position_style
        self.use_pooler = use_pooler
        self.embedding_size = None if embedding_size in (None, hidden_size) else embedding_size
        self.attention_output_dropout = attention_output_dropout
        self.feed_forward_dropout = feed_forward_dropout
        self.swap_attention_slot_inputs = swap_attention_slot_inputs
        depth = num_layers if depth is None else depth
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < num_layers or depth % num_layers:
            raise ValueError(f"TransformerEncoder.depth: got {depth!r}; expected a multiple of num_layers "
                             f"{num_layers}.")
        self.depth = depth
        self.relative_attention = self._check_relative(relative_attention, max_positions)
        self.zero_padding_embeddings = zero_padding_embeddings
        self.model_type = model_type
        self.fusion_reference_form = fusion_reference_form
        self.checkpoint = checkpoint
        self.embeddings = TextEmbeddings(
            vocab_size=vocab_size,
            hidden_size=self.embedding_size or hidden_size,
            max_positions=max_positions,
            type_vocab_size=type_vocab_size,
            pad_token_id=pad_token_id,
            position_style=position_style,
            layer_norm_epsilon=layer_norm_epsilon,
            dropout=hidden_dropout,
            zero_padding=zero_padding_embeddings,
            dtype=self.dtype_policy,
            name="embeddings",
        )
        self.embedding_projection = None
        if self.embedding_size:
            self.embedding_projection = keras.layers.Dense(
                hidden_size,
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
                dtype=self.dtype_policy,
                name="embedding_projection",
            )
        block_class, extra = TransformerBlock, {}
        self.relative_embeddings = self.relative_norm = None
        if self.relative_attention is not None:
            block_class, extra = DisentangledBlock, {"relative_types": self.relative_attention["types"]}
            self.relative_embeddings = keras.layers.Embedding(
                2 * self.relative_span(), hidden_size,
                embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
                dtype=self.dtype_policy, name="relative_embeddings",
            )
            if self.relative_attention["normalize"]:
                self.relative_norm = keras.layers.LayerNormalization(
                    epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="relative_norm")
        self.blocks = [
            block_class(
                hidden_size=hidden_size,
                num_heads=num_heads,
                intermediate_size=intermediate_size,
                hidden_act=hidden_act,
                hidden_dropout=hidden_dropout,
                attention_dropout=attention_dropout,
                layer_norm_epsilon=layer_norm_epsilon,
                attention_output_dropout=attention_output_dropout,
                feed_forward_dropout=feed_forward_dropout,
                swap_attention_slot_inputs=swap_attention_slot_inputs,
                block_index=i,
                fusion_reference_form=fusion_reference_form,
                dtype=self.dtype_policy,
                name=f"block_{i}",
                **extra,
            )
            for i in range(num_layers)
        ]
        if use_pooler:
            self.pooler = keras.layers.Dense(
                hidden_size,
                activation="tanh",
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
                dtype=self.dtype_policy,
                name="pooler",
            )
        self.adapter_configs = {}
        self.fusion_specs = {}
        for name, config in (adapters or {}).items():
            self.add_adapter(name, config)
        for spec in (fusions or {}).values():
            self.add_fusion(spec["adapters"], spec["config"], name=spec.get("name"))
        self.merged_lora = None
        if merged_lora is not None:
            # A config written with a LoRA merged: its kernels come with the update already in them.
            self._check_lora(merged_lora, "merged_lora")
            for block in self.blocks:
                if block.loras(merged_lora):
                    block.merged_lora = merged_lora
            self.merged_lora = merged_lora

    def build(self, input_shape=None):
        shape = (None, None, self.hidden_size)
        self.embeddings.build((None, None))
        if self.embedding_projection is not None:
            self.embedding_projection.build((None, None, self.embedding_size))
        if self.relative_embeddings is not None:
            self.relative_embeddings.build((None,))
        if self.relative_norm is not None:
            self.relative_norm.build((None, self.hidden_size))
        for block in self.blocks:
            block.build(shape)
        if self.use_pooler:
            self.pooler.build((None, self.hidden_size))

    def block_order(self):
        """The index of the block each pass runs, in order: `[0, 1, ...]`, or with shared blocks
        (`depth > num_layers`) each block repeated `depth // num_layers` times."""
        repeats = self.depth // self.num_layers
        return [i // repeats for i in range(self.depth)]

    @staticmethod
    def _check_relative(spec, max_positions):
        if spec is None:
            return None
        known = {"position_buckets", "max_relative_positions", "types", "normalize"}
        if not isinstance(spec, dict) or set(spec) - known:
            raise ValueError(f"TransformerEncoder.relative_attention: got {spec!r}; expected None or a dict with "
                             f"keys from {sorted(known)}.")
        out = {"position_buckets": int(spec.get("position_buckets", -1)),
               "max_relative_positions": int(spec.get("max_relative_positions", -1)),
               "types": [t for t in RELATIVE_TYPES if t in spec.get("types", RELATIVE_TYPES)],
               "normalize": bool(spec.get("normalize", True))}
        if set(spec.get("types", RELATIVE_TYPES)) - set(RELATIVE_TYPES):
            raise ValueError(f"TransformerEncoder.relative_attention: types {spec['types']!r}; expected names from "
                             f"{list(RELATIVE_TYPES)}.")
        if out["max_relative_positions"] < 1:
            out["max_relative_positions"] = max_positions
        return out

    def relative_span(self):
        """How many distances each side the relative embeddings hold (DeBERTa's `att_span`)."""
        spec = self.relative_attention
        return spec["position_buckets"] if spec["position_buckets"] > 0 else spec["max_relative_positions"]

    def input_layers(self):
        """The pretrained layers outside the blocks before the pooler: the embeddings, ELECTRA's and ALBERT's
        projection, DeBERTa's relative embeddings (and their LayerNorm)."""
        layers = [self.embeddings, self.embedding_projection, self.relative_embeddings, self.relative_norm]
        return [layer for layer in layers if layer is not None]

    # ------------------------------------------------------------- adapters
    def add_adapter(self, name, config="seq_bn"):
        """Add adapter `name` (an `AdapterConfig`, preset name or dict) to every block.

        Blocks listed in the config's `leave_out` get none. Everything is checked
        first (the name rule of `keras_adapterfusion.names`, the config, its
        `leave_out` and per-block reduction factors); on an error nothing is added.
        """
        check_name(name, "adapter name")
        config = adapter_config(config)
        if name in self.adapter_configs:
            raise ValueError(f"add_adapter: adapter {name!r} already exists; expected a new name.")
        for i in config.leave_out:
            if i >= self.num_layers:
                raise ValueError(
                    f"{type(config).__name__}.leave_out: got block {i}; expected indices below {self.num_layers}."
                )
        if not is_lora(config):
            for block in self.blocks:
                config.bottleneck_size(self.hidden_size, block.block_index)  # validates per-block factors
        for block in self.blocks:
            block.add_adapter(name, config)
        self.adapter_configs[name] = config

    def _check_lora(self, name, what):
        if not is_lora(self.adapter_configs.get(name)):
            loras = sorted(n for n, c in self.adapter_configs.items() if is_lora(c))
            raise ValueError(f"{what}: {name!r} is not a LoRA of the encoder; expected one of {loras}.")

    def merge_lora(self, name):
        """Fold LoRA `name` into the kernels of every block it adapts (see `TransformerBlock.merge_lora`).

        Inference then costs what the plain encoder costs, and every setup runs with the LoRA merged in
        (AdapterHub's `merge_adapter`); `unmerge_lora` takes it out. The state is saved with the encoder.
        """
        self._check_lora(name, "merge_lora")
        if self.merged_lora is not None:
            raise ValueError(f"merge_lora: LoRA {self.merged_lora!r} is merged; expected unmerge_lora() first.")
        for block in self.blocks:
            if block.loras(name):
                block.merge_lora(name)
        self.merged_lora = name

    def unmerge_lora(self):
        """Take the merged LoRA out of the kernels again (to float rounding); returns its name, or None."""
        name = self.merged_lora
        for block in self.blocks:
            block.unmerge_lora()
        self.merged_lora = None
        return name

    def add_fusion(self, adapter_names, config="dynamic", name=None):
        """Add a fusion layer over `adapter_names` to every block. Returns its key.

        Args:
            adapter_names: two or more adapters of this encoder.
            config: a `FusionConfig`, preset name (`"dynamic"`, `"static"`) or dict.
            name: an optional name. Without one the fusion is keyed as AdapterHub
                keys it, by its adapters' names joined by commas, so one fusion
                per set of adapters; with names, several fusions over the same
                adapters (for different targets) coexist. Run a named fusion with
                `AdapterSetup.fuse(adapter_names, name=name)`.
        """
        setup = AdapterSetup.fuse(adapter_names, name)
        names = setup.adapters
        missing = [n for n in names if n not in self.adapter_configs]
        if missing:
            raise ValueError(
                f"add_fusion: unknown adapter(s) {missing}; expected names from {sorted(self.adapter_configs)}."
            )
        config = FusionConfig.get(config)
        key = setup.fusion_key
        if key in self.fusion_specs:
            raise ValueError(f"add_fusion: fusion {key!r} already exists; give the new one another name.")
        check_fusable({n: self.adapter_configs[n] for n in names}, where="add_fusion")
        for block in self.blocks:
            block.add_fusion(names, config, name=name)
        self.fusion_specs[key] = {"adapters": list(names), "config": config, "name": name}
        return key

    @property
    def adapter_names(self):
        return list(self.adapter_configs)

    def adapter_weights(self, name):
        """All variables of adapter `name`, across blocks."""
        out = []
        for block in self.blocks:
            for layer in block.adapter_layers(name).values():
                out.extend(layer.weights)
        return out

    def fusion_weights(self, fusion):
        """All variables of a fusion (its key, an `AdapterSetup`, or its adapters' names), across blocks."""
        key = self.fusion_key(fusion)
        out = []
        for block in self.blocks:
            for layer in block.fusion_layers(key).values():
                out.extend(layer.weights)
        return out

    def fusion_key(self, fusion):
        """The key of a fusion given as its key, an `AdapterSetup`, or a list of its adapters' names."""
        if isinstance(fusion, str) and fusion in self.fusion_specs:
            return fusion
        setup = AdapterSetup.parse(fusion)
        if setup is None or setup.kind != "fuse":
            raise ValueError(f"fusion: got {fusion!r}; expected a fusion key, an AdapterSetup or a list of two "
                             f"or more adapter names (fusions: {sorted(self.fusion_specs)}).")
        if setup.fusion_key not in self.fusion_specs:
            raise ValueError(f"fusion: no fusion {setup.fusion_key!r}; expected one of {sorted(self.fusion_specs)}.")
        return setup.fusion_key

    def check_setup(self, adapter_setup):
        """Parse `adapter_setup` into an `AdapterSetup` and check it against the adapters and fusions present."""
        setup = AdapterSetup.parse(adapter_setup)
        if setup is None:
            return None
        missing = [n for n in setup.names() if n not in self.adapter_configs]
        if missing:
            raise ValueError(
                f"adapter_setup: unknown adapter(s) {missing}; expected names from {sorted(self.adapter_configs)}."
            )
        loras = [n for n in setup.names() if is_lora(self.adapter_configs[n])]
        if loras and setup.kind != "single":
            raise ValueError(f"adapter_setup: {setup} holds the LoRA(s) {loras}; expected a LoRA to run alone (a "
                             "single setup, its name).")
        for fused in setup.fusions():
            spec = self.fusion_specs.get(fused.fusion_key)
            if spec is None:
                raise ValueError(
                    f"adapter_setup: no fusion {fused.fusion_key!r} over {list(fused.member_names())}; expected one "
                    f"of {sorted(self.fusion_specs)} (add it with add_fusion)."
                )
            if tuple(spec["adapters"]) != fused.member_names():
                raise ValueError(
                    f"adapter_setup: fusion {fused.fusion_key!r} fuses {list(spec['adapters'])}; the setup {fused} "
                    f"gives it {list(fused.member_names())}; expected the same adapters in the same order."
                )
        return setup

    # -------------------------------------------------------------- forward
    def __call__(self, inputs, adapter_setup=None, adapter_index=None, **kwargs):
        from keras_adapterfusion.inputs import check_inputs

        setup = self.check_setup(adapter_setup)
        check_inputs(inputs, self, adapter_index=adapter_index,
                     num_adapters=len(setup.adapters) if setup is not None and setup.kind == "per_row" else None)
        token = call_form(setup, inputs)
        if adapter_index is not None:
            kwargs["adapter_index"] = adapter_index
        return super().__call__(inputs, adapter_setup=token, **kwargs)

    def call(self, inputs, adapter_setup=None, adapter_index=None, output_hidden_states=False, training=None):
        if not isinstance(inputs, dict) or "input_ids" not in inputs:
            raise ValueError(
                "TransformerEncoder inputs: expected a dict with 'input_ids' (and optionally "
                f"'attention_mask', 'token_type_ids'); got {type(inputs).__name__}"
                + (f" with keys {sorted(inputs)}" if isinstance(inputs, dict) else "")
                + "."
            )
        setup = AdapterSetup.parse(adapter_setup)
        input_ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        x = self.embeddings(input_ids, inputs.get("token_type_ids"), attention_mask=mask, training=training)
        if self.embedding_projection is not None:
            x = self.embedding_projection(x)
        channels = len(setup.adapters) if setup is not None and setup.kind == "parallel" else 1
        if channels > 1:
            # A parallel setup: one copy of the batch per member (AdapterHub's Parallel repeats it at its
            # first adapter layer; nothing below the blocks depends on the adapters).
            x = ops.tile(x, (channels, 1, 1))
            if mask is not None:
                mask = ops.tile(mask, (channels, 1))
        relative = None
        if self.relative_attention is not None:
            table = self.relative_embeddings.embeddings
            if self.relative_norm is not None:
                table = self.relative_norm(table)
            span = self.relative_span()
            relative = (table, *relative_indices(ops.shape(input_ids)[1], self.relative_attention["position_buckets"],
                                                 self.relative_attention["max_relative_positions"], span))
        extra = {} if relative is None else {"relative": relative}
        hidden = [x]
        mh_probs, out_probs = [], []
        seen = set()
        for i in self.block_order():
            # A shared block adds its fusion regularization once per step, as AdapterHub sums it once per layer.
            out = self.blocks[i](x, attention_mask=mask, adapter_setup=setup, adapter_index=adapter_index,
                                 regularize=i not in seen, training=training, **extra)
            seen.add(i)
            x, p_mh, p_out = out["hidden_states"], out.get("mh_fusion_attention"), out.get("fusion_attention")
            hidden.append(x)
            mh_probs.append(p_mh)
            out_probs.append(p_out)
        outputs = {"last_hidden_state": x}
        if self.use_pooler:
            outputs["pooler_output"] = self.pooler(x[:, 0, :])
        if output_hidden_states:
            outputs["hidden_states"] = ops.stack(hidden, axis=0)
        fusions = [] if setup is None else setup.fusions()
        if fusions:
            n = len(fusions[-1].adapters)  # the last fusion that runs (the one the blocks report)
            for key, probs in (("mh_fusion_attentions", mh_probs), ("fusion_attentions", out_probs)):
                if all(p is None for p in probs):
                    continue
                shape = (ops.shape(x)[0] // channels, ops.shape(x)[1], n)
                filled = [p if p is not None else ops.zeros(shape, dtype=x.dtype) for p in probs]
                outputs[key] = ops.stack(filled, axis=0)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            hidden_act=self.hidden_act,
            hidden_dropout=self.hidden_dropout,
            attention_dropout=self.attention_dropout,
            max_positions=self.max_positions,
            type_vocab_size=self.type_vocab_size,
            layer_norm_epsilon=self.layer_norm_epsilon,
            pad_token_id=self.pad_token_id,
            position_style=self.position_style,
            use_pooler=self.use_pooler,
            embedding_size=self.embedding_size,
            attention_output_dropout=self.attention_output_dropout,
            feed_forward_dropout=self.feed_forward_dropout,
            swap_attention_slot_inputs=self.swap_attention_slot_inputs,
            depth=self.depth,
            relative_attention=self.relative_attention,
            zero_padding_embeddings=self.zero_padding_embeddings,
            model_type=self.model_type,
            adapters={n: c.to_dict() for n, c in self.adapter_configs.items()},
            fusions={
                k: {"adapters": list(s["adapters"]), "config": s["config"].to_dict(), "name": s["name"]}
                for k, s in self.fusion_specs.items()
            },
            fusion_reference_form=self.fusion_reference_form,
            checkpoint=self.checkpoint,
            merged_lora=self.merged_lora,
        )
        return config
