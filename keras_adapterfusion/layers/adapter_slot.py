"""`AdapterSlot`: one adapter location of a transformer block, with its adapters and fusions."""

import collections

import keras
from keras import ops

from keras_adapterfusion.layers.adapter_fusion import AdapterFusion
from keras_adapterfusion.layers.adapter_setup import AdapterSetup

LOCATIONS = ("mh", "output")


def _key(member):
    """A fusion member's name: the adapter's, or a nested stack's last adapter's."""
    return member.last() if isinstance(member, AdapterSetup) else member


class _State(collections.namedtuple("_State", ["hidden", "residual", "up", "last", "probs"],
                                    defaults=(None, None, None))):
    """What flows through a slot's composition (AdapterHub's `BottleneckState`; see `AdapterSlot._compose`)."""


class _Run(collections.namedtuple("_Run", ["x", "norm", "training", "regularize"])):
    """What stays fixed through one slot's composition: the sublayer input, the LayerNorm, the call flags."""


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
    - a stack: each adapter's pre-forward and the adapter, one after
      another, then the last one's post-forward;
    - an average: the first adapter's pre-forward, every member on its
      result, the mean of the weighted outputs (`sum_n w_n out_n / N`, as
      AdapterHub computes it), the last one's post-forward;
    - nested setups (a fusion or an average inside a stack, stacks inside
      a fusion or an average): the same steps on the running state, as
      AdapterHub's `compose` recurses (a stack inside a fusion contributes
      its last adapter's up projection);
    - per row (MT-A): each example takes the output of the adapter its
      `adapter_index` selects;
    - parallel: the batch holds one copy per member (the encoder repeated
      it), and each member runs on its own copy.

    Adapters absent from this block (`leave_out`) are skipped, as in AdapterHub.

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

    # The composition, as AdapterHub's `BottleneckLayer.compose`: a `_State` goes through the setup's tree;
    # each step reads and replaces its `hidden` (the running hidden states) and `residual` (the adapter
    # residual); `up` is the last adapter's up projection (what a fusion attends over), `last` the adapter
    # whose config ends the slot (`post_forward`), `probs` the attention of the last fusion run.
    def _compose(self, setup, state, run):
        if setup.kind in ("single", "stack"):
            for member in setup.adapters:
                if isinstance(member, AdapterSetup):
                    state = self._compose(member, state, run)
                elif member in self.adapters:
                    state = self._apply(member, self._pre_block(member, state, run), run)
            return state
        if setup.kind == "fuse":
            return self._compose_fuse(setup, state, run)
        return self._compose_average(setup, state, run)

    def _present(self, member):
        return any(n in self.adapters for n in member.names()) if isinstance(member, AdapterSetup) \
            else member in self.adapters

    def _pre_block(self, name, state, run):
        a, _, residual = self.pre_forward(self._configs[name], state.hidden, run.x, run.norm)
        return state._replace(hidden=a, residual=residual)

    def _apply(self, name, state, run):
        """Adapter `name` on the state's hidden states (AdapterHub's `compose_single`): its output and up projection."""
        adapter, config = self.adapters[name], self._configs[name]
        residual = None if config.is_parallel else state.residual  # a parallel adapter adds no residual itself
        up = adapter(state.hidden, up_only=True)
        out = adapter.output_from_up(up, residual, training=run.training)
        return state._replace(hidden=out, up=up, last=name)

    def _compose_fuse(self, setup, state, run):
        present = [m for m in setup.adapters if self._present(m)]
        # Per-adapter control at inference (AdapterSetup.controlled): excluded members do not run.
        members = [m for m in present if _key(m) not in setup.exclude]
        if not members:
            return state
        fixed = dict(setup.fixed)
        fixed = tuple(fixed.get(_key(m), float("nan")) for m in members) if fixed else None
        if setup.fusion_key not in self.fusions:
            raise ValueError(
                f"adapter_setup: no fusion {setup.fusion_key!r} in block {self.block_index}; "
                f"expected one of {sorted(self.fusions)} (add it with add_fusion)."
            )
        fusion = self.fusions[setup.fusion_key]
        # AdapterHub: the last fused adapter's config decides the input and the residual.
        last = [n for m in members for n in (m.names() if isinstance(m, AdapterSetup) else (m,))
                if n in self.adapters][-1]
        config = self._configs[last]
        a, query, residual = self.pre_forward(config, state.hidden, run.x, run.norm, fusion.query_before_ln)
        # (Parallel adapters: AdapterHub's fusion adds their input `x` as its residual, and the
        # post-forward adds `h` and `x` again: `LN(fused + x + h + x)`, reproduced as it is.)
        state = state._replace(hidden=a, residual=residual)
        if all(isinstance(m, str) for m in members):
            # All adapters side by side, in a few products (AdapterFusion.fuse_adapters).
            out, probs = fusion.fuse_adapters(query, a, [self.adapters[n] for n in members], residual,
                                              training=run.training, regularize=run.regularize, fixed=fixed)
        else:
            # A stack among the members contributes its last adapter's up projection (AdapterHub: each
            # stack re-runs the pre-forward of its adapters on the fusion's input).
            ups = [(self._compose(m, state, run) if isinstance(m, AdapterSetup) else self._apply(m, state, run)).up
                   for m in members]
            out, probs = fusion(query, ops.stack(ups, axis=2), residual, training=run.training,
                                regularize=run.regularize, fixed=fixed)
        if len(members) < len(present):  # excluded members are reported with attention 0
            columns = iter(ops.unstack(probs, len(members), axis=-1))
            zeros = ops.zeros_like(probs[..., 0])
            probs = ops.stack([next(columns) if m in members else zeros for m in present], axis=-1)
        return state._replace(hidden=out, last=last, probs=probs)

    def _compose_average(self, setup, state, run):
        members = [(m, w) for m, w in zip(setup.adapters, setup.weights) if self._present(m)]
        if not members:
            return state
        # AdapterHub: the first adapter's pre-forward, every member on its result, then the mean of the
        # weighted outputs, `sum_n w_n out_n / N` (torch.mean over the weighted stack).
        state = self._pre_block([n for n in setup.names() if n in self.adapters][0], state, run)
        outs = []
        for m, w in members:
            child = self._compose(m, state, run) if isinstance(m, AdapterSetup) else self._apply(m, state, run)
            outs.append((child, w))
        # The weights in float32, whatever the compute dtype (AdapterHub's `torch.tensor(weights)`; in a
        # float64 model 0.7 is then float32's 0.699999988).
        weights = [ops.cast(ops.convert_to_tensor(w, "float32"), outs[0][0].hidden.dtype) for _, w in outs]
        hidden = outs[0][0].hidden * weights[0]
        for (child, _), w in zip(outs[1:], weights[1:]):
            hidden = hidden + child.hidden * w
        return outs[0][0]._replace(hidden=hidden / len(outs), last=outs[-1][0].last,
                                   probs=next((c.probs for c, _ in reversed(outs) if c.probs is not None), None))

    def _run(self, setup, h, x, norm, training, regularize=True):
        """The slot's output for a composed setup (not per-row), and the last fusion's probabilities."""
        if not any(n in self.adapters for n in setup.names()):
            return norm(h + x), None
        run = _Run(x, norm, training, regularize)
        state = self._compose(setup, _State(hidden=h, residual=x), run)
        return self.post_forward(self._configs[state.last], state.hidden, h, x, norm), state.probs

    def _per_row(self, setup, h, x, norm, adapter_index, training):
        # Every example takes the output of the adapter its index selects; the adapters
        # are small, so running each on the whole batch is cheap.
        out = None
        for i, name in enumerate(setup.adapters):
            candidate, _ = self._run(AdapterSetup.single(name), h, x, norm, training)
            if out is None:
                out = candidate
            else:
                chosen = ops.reshape(ops.equal(adapter_index, i), (-1, 1, 1))
                out = ops.where(chosen, candidate, out)
        return out

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
        if setup.kind == "per_row":
            return self._per_row(setup, h, x, norm, adapter_index, training), None
        if setup.kind == "parallel":
            return self._parallel(setup, h, x, norm, training, regularize)
        return self._run(setup, h, x, norm, training, regularize)

    def _parallel(self, setup, h, x, norm, training, regularize):
        """Each member on its own slice of the batch (the encoder repeated it once per member)."""
        channels = len(setup.adapters)
        outs, probs = [], None
        for member, h_i, x_i in zip(setup.adapters, ops.split(h, channels, axis=0), ops.split(x, channels, axis=0)):
            out, p = self._run(AdapterSetup.parse(member), h_i, x_i, norm, training, regularize)
            outs.append(out)
            probs = p if p is not None else probs  # the last member that fuses reports its attention
        return ops.concatenate(outs, axis=0), probs

    def call(self, *args, **kwargs):
        raise NotImplementedError("AdapterSlot runs through AdapterSlot.forward, called by its block.")

    def get_config(self):
        config = super().get_config()
        config.update(location=self.location, block_index=self.block_index)
        return config
