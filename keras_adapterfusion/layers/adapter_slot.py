"""`AdapterSlot`: one adapter location of a transformer block, with its adapters and fusions."""

import keras
from keras import ops

from keras_adapterfusion.layers.adapter_fusion import AdapterFusion
from keras_adapterfusion.layers.adapter_setup import AdapterSetup

LOCATIONS = ("mh", "output")


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class AdapterSlot(keras.layers.Layer):
    """The adapters and fusions at one location of a block, and how they run there.

    A post-LayerNorm block has two locations: after the attention output
    projection (`"mh"`, AdapterHub's `mh_adapter`) and after the feed-forward
    output projection (`"output"`, `output_adapter`). Without adapters the
    location computes the block's own `norm(h + x)`; the slot replaces that
    with what the adapter setup asks for, as AdapterHub's `BottleneckLayer`
    does for one location:

    - nothing active, or no active adapter in this slot: `norm(h + x)`;
    - one adapter: AdapterHub's pre-forward (where the adapter's input and
      residual are taken, `original_ln_before`, `residual_before_ln`), the
      adapter, and the post-forward (`original_ln_after`);
    - a fusion: the pre-forward of the last fused adapter present, every
      present adapter side by side, their `AdapterFusion`, the post-forward;
    - per row (MT-A): each example takes the output of the adapter its
      `adapter_index` selects.

    The slot holds no weights of its own. The block owns the LayerNorm the slot
    uses (a pretrained weight) and passes it to `forward`; the block also
    builds the slot's adapters inside its own name scope, so weight paths stay
    `<block>/<location>_adapter_<name>/...`. Adapters and fusions can be added
    at any time, before or after the block is built.

    Args:
        location: `"mh"` or `"output"`.
        block_index: the index of the enclosing block (for error messages).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:

    ```python
    block = TransformerBlock(hidden_size=64, num_heads=4, intermediate_size=128)
    block.add_adapter("sentiment", "seq_bn")
    block.slots["output"].adapters    # {"sentiment": BottleneckAdapter}
    ```
    """

    def __init__(self, location, block_index=0, **kwargs):
        super().__init__(**kwargs)
        if location not in LOCATIONS:
            raise ValueError(f"AdapterSlot.location: got {location!r}; expected one of {list(LOCATIONS)}.")
        self.location = location
        self.block_index = block_index
        self.adapters = {}
        self.fusions = {}
        self._configs = {}
        # Nothing to build: the slot's own state is its dicts, which stay open for new adapters.
        self.built = True

    def add(self, key, layer, config=None):
        """Put an adapter (with its `AdapterConfig`) or a fusion layer into the slot under `key`."""
        if isinstance(layer, AdapterFusion):
            self.fusions[key] = layer
        else:
            self.adapters[key] = layer
            self._configs[key] = config

    def layers_of(self, key):
        """The adapter or fusion layer called `key` here, or `None`."""
        return self.adapters.get(key, self.fusions.get(key))

    # ------------------------------------------------------------- forward
    @staticmethod
    def pre_forward(config, h, x, norm, query_before_ln=False):
        """AdapterHub's `Adapter.pre_forward`: (adapter input, query, residual).

        A parallel adapter (`is_parallel`, AdapterHub's `ParallelAdapter`) reads the sublayer's
        input: `(x, x, x)`. Alone it takes no residual (`_single` passes none); in a fusion `x`
        is the fusion's residual, and `post_forward` adds the sublayer output `h`.
        """
        if config.is_parallel:
            return x, x, x
        residual = h if config.residual_before_ln is True else None
        query = h if query_before_ln else None
        if config.original_ln_before:
            a = h + x
            if config.residual_before_ln == "post_add":
                residual = a
            a = norm(a)
        else:
            a = h
        if config.residual_before_ln is False:
            residual = a
        if not query_before_ln:
            query = a
        return a, query, residual

    @staticmethod
    def post_forward(config, out, h, x, norm):
        """AdapterHub's `post_forward`: the block's LayerNorm over `out + x` when `original_ln_after`.

        A parallel adapter adds the sublayer output `h` first (AdapterHub's `ParallelAdapter`).
        """
        if config.is_parallel:
            out = out + h
        if config.original_ln_after:
            return norm(out + x)
        return out

    def _single(self, name, h, x, norm, training):
        if name not in self.adapters:
            return norm(h + x)
        config = self._configs[name]
        a, _, residual = self.pre_forward(config, h, x, norm)
        out = self.adapters[name](a, None if config.is_parallel else residual, training=training)
        return self.post_forward(config, out, h, x, norm)

    def _per_row(self, setup, h, x, norm, adapter_index, training):
        # Every example takes the output of the adapter its index selects; the adapters
        # are small, so running each on the whole batch is cheap.
        out = None
        for i, name in enumerate(setup.adapters):
            candidate = self._single(name, h, x, norm, training)
            if out is None:
                out = candidate
            else:
                chosen = ops.reshape(ops.equal(adapter_index, i), (-1, 1, 1))
                out = ops.where(chosen, candidate, out)
        return out

    def _fuse(self, setup, h, x, norm, training, regularize=True):
        present = [n for n in setup.adapters if n in self.adapters]
        if not present:
            return norm(h + x), None
        if setup.fusion_key not in self.fusions:
            raise ValueError(
                f"adapter_setup: no fusion {setup.fusion_key!r} in block {self.block_index}; "
                f"expected one of {sorted(self.fusions)} (add it with add_fusion)."
            )
        fusion = self.fusions[setup.fusion_key]
        # AdapterHub: the last fused adapter's config decides the residual.
        config = self._configs[present[-1]]
        a, query, residual = self.pre_forward(config, h, x, norm, fusion.query_before_ln)
        # (Parallel adapters: AdapterHub's fusion adds their input `x` as its residual, and the
        # post-forward adds `h` and `x` again: `LN(fused + x + h + x)`, reproduced as it is.)
        # All adapters side by side, in a few products (AdapterFusion.fuse_adapters).
        out, probs = fusion.fuse_adapters(query, a, [self.adapters[n] for n in present], residual, training=training,
                                          regularize=regularize)
        return self.post_forward(config, out, h, x, norm), probs

    def forward(self, h, x, norm, setup, adapter_index=None, training=None, regularize=True):
        """The slot's output for sublayer output `h`, sublayer input `x` and the block's LayerNorm `norm`.

        Args:
            h: the sublayer's output after its dropout, `[batch, tokens, hidden]`.
            x: the sublayer's input (the residual), same shape.
            norm: the block's LayerNorm at this location.
            setup: an `AdapterSetup` or `None` (parsed by the caller).
            adapter_index: for a per-row setup, int `[batch]`.
            training: Python bool.
            regularize: let a fusion add its regularization loss (see `AdapterFusion`).

        Returns:
            `(hidden_states, fusion_probs)`; `fusion_probs` is `None` unless a fusion ran.
        """
        if setup is None:
            return norm(h + x), None
        if not isinstance(setup, AdapterSetup):
            raise ValueError(f"AdapterSlot.forward: got setup {setup!r}; expected an AdapterSetup or None "
                             "(parse it with AdapterSetup.parse).")
        if setup.kind == "single":
            return self._single(setup.adapters[0], h, x, norm, training), None
        if setup.kind == "per_row":
            return self._per_row(setup, h, x, norm, adapter_index, training), None
        return self._fuse(setup, h, x, norm, training, regularize)

    def call(self, *args, **kwargs):
        raise NotImplementedError("AdapterSlot runs through AdapterSlot.forward, called by its block.")

    def get_config(self):
        config = super().get_config()
        config.update(location=self.location, block_index=self.block_index)
        return config
