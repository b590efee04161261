"""The AdapterFusion layer: per-token attention over the outputs of N adapters."""

import math

import keras
import numpy as np
from keras import backend, ops

from keras_adapterfusion.configs import FusionConfig
from keras_adapterfusion.layers import adapter_stack
from keras_adapterfusion.layers.numerics import lowest, softmax_input

TEMPERATURE_START = 50.0


def near_identity(shape, dtype=None):
    """AdapterHub's `value_initialized` start: 1 on the diagonal, 1e-6 elsewhere."""
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"near_identity: got shape {shape}; expected a square [H, H] shape.")
    eye = ops.eye(shape[0], dtype=dtype)
    return eye * (1.0 - 1e-6) + 1e-6


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class AdapterFusion(keras.layers.Layer):
    """AdapterFusion (Pfeiffer et al., 2020): attention over adapter outputs.

    For every token, the query `q = Q(query)` attends over the N adapters'
    up projections `U_n` with keys `K(U_n)` and values `V(U_n)`, without
    `1/sqrt(d)` scaling and without an attention mask, as AdapterHub's
    `BertFusion` does:

        p = softmax(dropout(q · K(U_n)) / T)      (over n)
        out = sum_n p_n V(U_n) + residual

    By default the layer computes the same result in a cheaper exact form:
    `q · (K U_n + b) = (Kᵀ q) · U_n + q · b`, and `sum_n p_n V U_n = V sum_n
    p_n U_n`, so `K` and `V` are applied once per token instead of once per
    adapter. `reference_form=True` computes AdapterHub's literal form.

    Args:
        key: learn a key projection `K` (with bias).
        query: learn a query projection `Q` (with bias).
        value: learn a value projection `V` (without bias).
        query_before_ln: where the enclosing block takes the query from
            (stored here; read by `TransformerBlock`).
        regularization: while training, add
            `regularization_weight * ||I - V||_F^2` through `add_loss`.
        regularization_weight: weight of that loss (AdapterHub: 0.01).
        residual_before: add the residual to each adapter output before the
            attention, instead of to the fused output.
        temperature: anneal the softmax temperature from 50 by 0.05 per
            training call, down to 1 (a shared ALBERT block calls it once per
            pass, as AdapterHub's does).
        value_before_softmax: AdapterHub's flag; both settings give the same
            result since `V` has no bias.
        value_initialized: start `V` near the identity.
        dropout_prob: dropout rate on the attention scores.
        reference_form: compute AdapterHub's literal (slower) form.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        query: `[batch, tokens, hidden]`.
        adapter_outputs: the adapters' up projections, `[batch, tokens, N, hidden]`.
        residual: `[batch, tokens, hidden]`.
        training: Python bool.
        regularize: add the regularization loss while training (default
            True; `False` for a shared block's later passes, see
            `TransformerEncoder.depth`).
        fixed: fixed attention weights, one number per adapter (NaN where
            the fusion decides), or None: per-adapter control at inference
            (`AdapterSetup.controlled`).

    Returns:
        A tuple `(output, attention)`: output `[batch, tokens, hidden]` and the
        attention probabilities `[batch, tokens, N]`.

    Example:

    ```python
    fusion = AdapterFusion.from_fusion_config("dynamic", dropout_prob=0.0)
    q = keras.random.normal((2, 5, 64))
    ups = keras.random.normal((2, 5, 3, 64))
    out, attention = fusion(q, ups, q)
    ```

    References:
        - [Pfeiffer et al., 2020](https://arxiv.org/abs/2005.00247)
    """

    def __init__(
        self,
        key=True,
        query=True,
        value=True,
        query_before_ln=False,
        regularization=True,
        regularization_weight=0.01,
        residual_before=False,
        temperature=False,
        value_before_softmax=True,
        value_initialized=True,
        dropout_prob=0.0,
        reference_form=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # Shared validation with FusionConfig (names the bad field).
        FusionConfig(
            key=key,
            query=query,
            value=value,
            query_before_ln=query_before_ln,
            regularization=regularization,
            regularization_weight=regularization_weight,
            residual_before=residual_before,
            temperature=temperature,
            value_before_softmax=value_before_softmax,
            value_initialized=value_initialized,
            dropout_prob=dropout_prob,
        )
        if not isinstance(reference_form, bool):
            raise ValueError(
                f"AdapterFusion.reference_form: got {reference_form!r}; expected True or False."
            )
        self.use_key = key
        self.use_query = query
        self.use_value = value
        self.query_before_ln = query_before_ln
        self.regularization = regularization
        self.regularization_weight = regularization_weight
        self.residual_before = residual_before
        self.temperature = temperature
        self.value_before_softmax = value_before_softmax
        self.value_initialized = value_initialized
        self.dropout_prob = 0.0 if dropout_prob is None else float(dropout_prob)
        self.reference_form = reference_form

    @classmethod
    def from_fusion_config(cls, config, dropout_prob=None, **kwargs):
        """Build from a `FusionConfig` (or preset name); `dropout_prob` fills a `None` rate."""
        config = FusionConfig.get(config)
        rate = config.dropout_prob if config.dropout_prob is not None else (dropout_prob or 0.0)
        fields = config.to_dict()
        fields["dropout_prob"] = rate
        return cls(**fields, **kwargs)

    def build(self, query_shape, adapter_outputs_shape=None, residual_shape=None):
        hidden = query_shape[-1]
        self.hidden_size = hidden
        normal = keras.initializers.RandomNormal(stddev=0.02)
        if self.use_query:
            self.query_dense = keras.layers.Dense(
                hidden, kernel_initializer=normal, bias_initializer="zeros",
                dtype=self.dtype_policy, name="query",
            )
            self.query_dense.build(query_shape)
        if self.use_key:
            self.key_dense = keras.layers.Dense(
                hidden, kernel_initializer=normal, bias_initializer="zeros",
                dtype=self.dtype_policy, name="key",
            )
            self.key_dense.build(query_shape)
        if self.use_value:
            self.value_dense = keras.layers.Dense(
                hidden,
                use_bias=False,
                kernel_initializer=near_identity if self.value_initialized else normal,
                dtype=self.dtype_policy,
                name="value",
            )
            self.value_dense.build(query_shape)
        if self.temperature:
            self.temperature_value = self.add_weight(
                name="temperature",
                shape=(),
                initializer=keras.initializers.Constant(TEMPERATURE_START),
                trainable=False,
            )
        self.score_dropout = keras.layers.Dropout(self.dropout_prob, dtype=self.dtype_policy)

    def non_trainable_state(self):
        """Weights this layer never trains (the annealed temperature), for `trainable.spec_trainable_weights`."""
        return [self.temperature_value] if self.temperature else []

    def regularization_loss(self):
        """`regularization_weight * ||I - V||_F^2` (0 when there is no `V`)."""
        if not self.use_value:
            return ops.convert_to_tensor(0.0)
        # At least float32 (a float16 / bfloat16 policy keeps float32 variables anyway); float64 stays float64.
        dtype = "float64" if keras.backend.standardize_dtype(self.value_dense.kernel.dtype) == "float64" else "float32"
        kernel = ops.cast(self.value_dense.kernel, dtype)
        eye = ops.eye(self.hidden_size, dtype=dtype)
        return self.regularization_weight * ops.sum(ops.square(eye - kernel))

    def _scores_and_values(self, q, u):
        if self.reference_form:
            keys = self.key_dense(u) if self.use_key else u
            scores = ops.einsum("bth,btnh->btn", q, keys)
            if self.use_value and self.value_before_softmax:
                values = self.value_dense(u)
            else:
                values = u
            return scores, values
        if self.use_key:
            kernel = ops.cast(self.key_dense.kernel, q.dtype)
            bias = ops.cast(self.key_dense.bias, q.dtype)
            r = ops.matmul(q, ops.transpose(kernel))
            scores = ops.einsum("bth,btnh->btn", r, u)
            # q · b is the same for every adapter, so it cancels in the
            # softmax; it is kept so that dropout on the scores sees the
            # same numbers as the reference.
            scores = scores + ops.sum(q * bias, axis=-1, keepdims=True)
        else:
            scores = ops.einsum("bth,btnh->btn", q, u)
        return scores, u

    def _probabilities(self, scores, training, fixed=None):
        """Dropout on the scores, the temperature, and the softmax over the adapters.

        `fixed` (one number per adapter, NaN where the fusion decides) fixes some adapters' weights: they
        get that weight, and the others share the rest in the proportions of the softmax over them alone.
        """
        scores = self.score_dropout(scores, training=training)
        scores = softmax_input(scores)
        if self.temperature:
            t = ops.cast(self.temperature_value, scores.dtype)
            scores = scores / t
            if training:
                self.temperature_value.assign(ops.maximum(t - TEMPERATURE_START / 1000.0, 1.0))
        if fixed is None or all(math.isnan(w) for w in fixed):
            if scores.shape[-1] == 1:  # one adapter (the others excluded): its weight is 1
                return ops.ones_like(scores)
            return ops.softmax(scores, axis=-1)
        is_fixed = np.array([not math.isnan(w) for w in fixed])
        values = ops.convert_to_tensor(np.where(is_fixed, np.nan_to_num(fixed), 0.0), dtype=scores.dtype)
        if is_fixed.all():
            return ops.zeros_like(scores) + values
        free = ops.softmax(ops.where(ops.convert_to_tensor(is_fixed), lowest(scores.dtype), scores), axis=-1)
        free = free * ops.convert_to_tensor(~is_fixed, dtype=scores.dtype)  # exactly 0 where fixed
        return free * (1.0 - float(np.nan_to_num(fixed).sum())) + values

    def _finish(self, context, residual, training, regularize=True):
        if not self.residual_before:
            context = context + residual
        if training and regularize and self.regularization and self.use_value and self.trainable:
            self.add_loss(self.regularization_loss())
        return context

    def call(self, query, adapter_outputs, residual, training=None, regularize=True, fixed=None):
        u = adapter_outputs
        if self.residual_before:
            u = u + ops.expand_dims(residual, 2)
        q = self.query_dense(query) if self.use_query else query
        scores, values = self._scores_and_values(q, u)
        probs = ops.cast(self._probabilities(scores, training, fixed), values.dtype)
        context = ops.einsum("btn,btnh->bth", probs, values)
        if self.use_value and (not self.reference_form or not self.value_before_softmax):
            context = self.value_dense(context)
        return self._finish(context, residual, training, regularize), probs

    # ------------------------------------------------ adapters side by side
    # From this many tokens in a call on, the fusion's Q, K and V are multiplied into the
    # adapters' stacked weights once per call (costs about 3·H²·(S + N) multiply-adds, saves
    # 3·H² per token); below it they are applied token by token. None: from S + N + 1 on,
    # where folding starts to cost less than it saves (S: the adapters' summed bottleneck).
    fold_min_tokens = None

    def fuse_adapters(self, query, adapter_input, adapters, residual, training=None, regularize=True, fixed=None):
        """Fuse `adapters` run on `adapter_input`, without running them one by one.

        Gives the result of
        `self(query, ops.stack([a(adapter_input, up_only=True) for a in adapters], axis=2), residual)`
        (the same function; float rounding differs). With `U_n = d_n W_n + b_n` the
        up projection of adapter n over its bottleneck activation `d_n`:

        - all down projections are one product (`adapter_stack`), giving `d` `[tokens, S]`;
        - `scores_n = r · U_n + q · b_K = (r W_nᵀ) · d_n + r · b_n + q · b_K` with `r = Kᵀ q`:
          the scores come from `[tokens, S + N + 1]` numbers, and no `[tokens, N, H]` tensor
          is formed;
        - `Σ_n p_n V U_n = ([p_n d_n]_n, p) · [W; b] · V`: one product for the mixture.

        From `fold_min_tokens` tokens on, `Q`, `K` and `V` are multiplied into the stacked
        adapter weights first, so the whole fusion costs about three products of width
        `S` per token (and when the query is the adapters' input, the down projections
        and the scores share one product). With a dynamic token count the choice is made
        at run time (`ops.cond`).

        Falls back to running the adapters one by one when they cannot be stacked
        (`adapter_stack.can_stack`), with `residual_before`, and in the reference form.

        Args:
            query: `[batch, tokens, hidden]`.
            adapter_input: the adapters' input `[batch, tokens, hidden]` (pass the same
                tensor as `query` when the query is the adapters' input).
            adapters: the fused `BottleneckAdapter` layers, in the fusion's order.
            residual: `[batch, tokens, hidden]`.
            training: Python bool.
            regularize: add the regularization loss while training (`False` for the later
                passes of a shared block, so that it counts once per step).
            fixed: fixed attention weights, one per adapter (NaN: the fusion decides), or None
                (see `AdapterSetup.controlled`).

        Returns:
            `(output, attention)` as `call` returns them.

        Example:

        ```python
        adapters = [BottleneckAdapter(bottleneck_size=4) for _ in range(3)]
        fusion = AdapterFusion.from_fusion_config("dynamic", dropout_prob=0.0)
        x = keras.random.normal((2, 5, 64))
        for layer in adapters + [fusion]:
            layer.build(x.shape)
        out, attention = fusion.fuse_adapters(x, x, adapters, x)   # [2, 5, 64], [2, 5, 3]
        ```
        """
        if self.reference_form or self.residual_before or not adapter_stack.can_stack(adapters):
            ups = ops.stack([adapter(adapter_input, up_only=True) for adapter in adapters], axis=2)
            return self(query, ups, residual, training=training, regularize=regularize, fixed=fixed)
        dtype = backend.standardize_dtype(adapter_input.dtype)
        weights = adapter_stack.stacked_weights(adapters, dtype)
        h = self.hidden_size
        shape = ops.shape(adapter_input)
        a = ops.reshape(adapter_input, (-1, h))
        q = a if query is adapter_input else ops.reshape(query, (-1, h))
        size, n = weights["selector"].shape
        threshold = size + n + 1 if self.fold_min_tokens is None else self.fold_min_tokens
        tokens = a.shape[0]

        def either(fn):
            if isinstance(tokens, int):
                return fn(tokens >= threshold)
            if tokens is None:  # a dynamic shape (a TensorFlow graph): decided at run time
                return ops.cond(ops.shape(a)[0] >= threshold, lambda: fn(True), lambda: fn(False))
            return fn(False)  # a symbolic dimension (JAX's shape inference): both give the same shapes

        scores, down = either(lambda fold: self._stacked_scores(a, q, weights, fold))
        probs = ops.cast(self._probabilities(scores, training, fixed), dtype)
        context = either(lambda fold: self._stacked_mixture(down, probs, weights, fold))
        context = ops.reshape(context, shape)
        probs = ops.reshape(probs, tuple(shape[:-1]) + (n,))
        return self._finish(context, residual, training, regularize), probs

    def _stacked_scores(self, a, q, w, fold):
        """Scores `[tokens, N]` (before dropout) and the bottleneck activations `d` `[tokens, S]`."""
        dtype = backend.standardize_dtype(a.dtype)
        size, n = w["selector"].shape
        # r · [W_nᵀ | b_n]: the scores' part that depends on the adapter.
        g = ops.concatenate([ops.transpose(w["up_kernel"]), ops.transpose(w["up_bias"])], axis=1)  # [H, S + N]
        if self.use_query:
            wq, bq = ops.cast(self.query_dense.kernel, dtype), ops.cast(self.query_dense.bias, dtype)
        if self.use_key:
            wk, bk = ops.cast(self.key_dense.kernel, dtype), ops.cast(self.key_dense.bias, dtype)
        if fold:
            # query ↦ [r·W_nᵀ | r·b_n | q·b_K] as one matrix m (and bias m0).
            m = g
            if self.use_key:  # q·b_K is the same for every adapter (it cancels in the softmax), but
                # dropout on the scores sees it, as in the reference
                m = ops.concatenate([ops.matmul(ops.transpose(wk), g), ops.expand_dims(bk, 1)], axis=1)
            m0 = ops.zeros((ops.shape(m)[1],), dtype=dtype)
            if self.use_query:
                m0 = ops.squeeze(ops.matmul(ops.expand_dims(bq, 0), m), 0)
                m = ops.matmul(wq, m)
            if q is a:  # the down projections and the scores in one product
                y = ops.matmul(a, ops.concatenate([w["down_kernel"], m], axis=1))
                y = y + ops.concatenate([w["down_bias"], m0], axis=0)
                down, r = ops.split(y, [size], axis=1)  # split, not sliced: cheaper gradients
            else:
                down = ops.matmul(a, w["down_kernel"]) + w["down_bias"]
                r = ops.matmul(q, m) + m0
        else:
            down = ops.matmul(a, w["down_kernel"]) + w["down_bias"]
            q = ops.matmul(q, wq) + bq if self.use_query else q
            if self.use_key:
                r = ops.matmul(ops.matmul(q, ops.transpose(wk)), g)
                r = ops.concatenate([r, ops.sum(q * bk, axis=-1, keepdims=True)], axis=1)
            else:
                r = ops.matmul(q, g)
        d = w["activation"](down)
        parts = ops.split(r, [size, size + n], axis=1)
        scores = ops.matmul(parts[0] * d, w["selector"]) + parts[1]
        if self.use_key:
            scores = scores + parts[2]
        return scores, d

    def _stacked_mixture(self, d, probs, w, fold):
        """`V Σ_n p_n U_n` `[tokens, H]` from the bottleneck activations and the probabilities."""
        z = d * ops.matmul(probs, ops.transpose(w["selector"]))  # p_n d_n, side by side
        zp = ops.concatenate([z, probs], axis=1)
        mix = ops.concatenate([w["up_kernel"], w["up_bias"]], axis=0)  # [S + N, H]
        if not self.use_value:
            return ops.matmul(zp, mix)
        wv = ops.cast(self.value_dense.kernel, backend.standardize_dtype(d.dtype))
        if fold:
            return ops.matmul(zp, ops.matmul(mix, wv))
        return ops.matmul(ops.matmul(zp, mix), wv)

    def compute_output_shape(self, query_shape, adapter_outputs_shape, residual_shape):
        return tuple(query_shape), tuple(adapter_outputs_shape[:-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            key=self.use_key,
            query=self.use_query,
            value=self.use_value,
            query_before_ln=self.query_before_ln,
            regularization=self.regularization,
            regularization_weight=self.regularization_weight,
            residual_before=self.residual_before,
            temperature=self.temperature,
            value_before_softmax=self.value_before_softmax,
            value_initialized=self.value_initialized,
            dropout_prob=self.dropout_prob,
            reference_form=self.reference_form,
        )
        return config
