"""DeBERTa-v2/v3's block: disentangled relative attention, the same two adapter slots as `TransformerBlock`."""

import keras
import numpy as np
from keras import ops

from keras_adapterfusion.layers.numerics import lowest, softmax_input
from keras_adapterfusion.layers.transformer_block import TransformerBlock

RELATIVE_TYPES = ("c2p", "p2c")


def log_bucket_positions(relative, buckets, max_position):
    """DeBERTa's relative positions `relative` (int) put into `buckets` log-spaced buckets.

    Distances below `buckets // 2` keep their value; longer ones share buckets whose width grows
    logarithmically up to `max_position`. Computed in float32, as `transformers` computes it
    (`make_log_bucket_position`). `buckets <= 0` leaves the positions as they are.
    """
    if buckets <= 0 or max_position <= 0:
        return relative
    mid = buckets // 2
    sign = ops.sign(relative)
    inside = ops.logical_and(ops.less(relative, mid), ops.greater(relative, -mid))
    distance = ops.where(inside, ops.full_like(relative, mid - 1), ops.abs(relative))
    ratio = ops.cast(distance, "float32") / float(mid)
    scale = np.float32(np.log(np.float32((max_position - 1) / mid)))
    log_position = ops.ceil(ops.log(ratio) / scale * float(mid - 1)) + float(mid)
    bucketed = ops.cast(log_position, relative.dtype) * sign
    return ops.where(ops.less_equal(distance, mid), relative, bucketed)


def relative_indices(tokens, buckets, max_position, span):
    """For a sequence of `tokens`: the rows of the relative embeddings each (query, key) pair reads,
    `(c2p, p2c)`, both int `[tokens, tokens]` in `[0, 2 * span)`."""
    ids = ops.arange(tokens, dtype="int32")
    relative = log_bucket_positions(ids[:, None] - ids[None, :], buckets, max_position)
    c2p = ops.clip(relative + span, 0, 2 * span - 1)
    p2c = ops.clip(-relative + span, 0, 2 * span - 1)
    return c2p, p2c


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class DisentangledBlock(TransformerBlock):
    """A DeBERTa-v2/v3 block: `TransformerBlock` with disentangled attention over relative positions.

    The attention scores are content-to-content `q·k`, plus content-to-position (`"c2p"`: the query
    against the key projection of the relative embedding of each pair's distance) and
    position-to-content (`"p2c"`: the key against the query projection of it), all divided by
    `sqrt(head_dim * (1 + len(relative_types)))` (the square root taken in float32, as
    `transformers` takes it). The relative embeddings are shared by the blocks: the encoder passes
    them, with each pair's rows, as `relative`. Padding is masked for keys and for queries (a padded
    query attends uniformly, as in `transformers`). The projections reuse the block's query and key
    kernels (DeBERTa-v3's `share_att_key`). Everything else, the adapter slots included, is
    `TransformerBlock`'s.

    Args:
        relative_types: which relative terms to add, from `("c2p", "p2c")`.
        **kwargs: `TransformerBlock` arguments.

    Call arguments:
        relative: `(embeddings [2 * span, hidden], c2p [tokens, tokens], p2c [tokens, tokens])`,
            from the encoder (see `relative_indices`).
        Other arguments as `TransformerBlock`'s.

    Example:

    ```python
    block = DisentangledBlock(hidden_size=64, num_heads=4, intermediate_size=128)
    c2p, p2c = relative_indices(5, buckets=8, max_position=128, span=8)
    out = block(keras.random.normal((2, 5, 64)), relative=(keras.random.normal((16, 64)), c2p, p2c))
    ```

    References:
        - [He et al., 2021](https://arxiv.org/abs/2006.03654) (DeBERTa)
        - [He et al., 2023](https://arxiv.org/abs/2111.09543) (DeBERTa-v3)
    """

    def __init__(self, hidden_size, num_heads, intermediate_size, relative_types=RELATIVE_TYPES, **kwargs):
        super().__init__(hidden_size, num_heads, intermediate_size, **kwargs)
        unknown = [t for t in relative_types if t not in RELATIVE_TYPES]
        if unknown:
            raise ValueError(f"DisentangledBlock.relative_types: got {list(relative_types)}; expected names from "
                             f"{list(RELATIVE_TYPES)}.")
        self.relative_types = tuple(t for t in RELATIVE_TYPES if t in relative_types)
        # transformers: torch.sqrt(torch.tensor(head_dim, dtype=float) * scale_factor), a float32 number.
        self.scale = float(np.sqrt(np.float32(self.head_dim * (1 + len(self.relative_types)))))

    def _heads(self, x):
        """`[batch, tokens, hidden]` -> `[batch, heads, tokens, head_dim]`."""
        b, t = ops.shape(x)[0], ops.shape(x)[1]
        return ops.transpose(ops.reshape(x, (b, t, self.num_heads, self.head_dim)), (0, 2, 1, 3))

    def _attention(self, x, attention_mask, training, relative=None, lora=None):
        if relative is None:
            raise ValueError("DisentangledBlock: needs relative=(embeddings, c2p, p2c) from its encoder.")
        embeddings, c2p_index, p2c_index = relative
        b, t = ops.shape(x)[0], ops.shape(x)[1]
        h = self.hidden_size
        q, k, v = self._qkv(x, lora, training)
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)) / self.scale)
        embeddings = self.hidden_dropout_layer(ops.cast(embeddings, x.dtype)[None], training=training)
        shape = (b, self.num_heads, t, t)
        bias = None
        if "c2p" in self.relative_types:
            # The position projections are the content ones (with a LoRA's update, as AdapterHub wraps them).
            position_keys = self._heads(self._project("key", embeddings, lora, training))  # [1, heads, 2 span, d]
            c2p = ops.matmul(q, ops.transpose(position_keys, (0, 1, 3, 2)))  # [batch, heads, tokens, 2 span]
            c2p = ops.take_along_axis(c2p, ops.broadcast_to(c2p_index[None, None], shape), axis=-1)
            bias = c2p / self.scale
        if "p2c" in self.relative_types:
            position_queries = self._heads(self._project("query", embeddings, lora, training))
            p2c = ops.matmul(k, ops.transpose(position_queries, (0, 1, 3, 2)))  # [batch, heads, key, 2 span]
            p2c = ops.take_along_axis(p2c, ops.broadcast_to(p2c_index[None, None], shape), axis=-1)
            p2c = ops.transpose(p2c, (0, 1, 3, 2)) / self.scale
            bias = p2c if bias is None else bias + p2c
        if bias is not None:
            scores = scores + bias
        scores = softmax_input(scores)
        if attention_mask is not None:
            keep = ops.cast(attention_mask, "bool")
            pairs = ops.logical_and(keep[:, None, :, None], keep[:, None, None, :])
            scores = ops.where(pairs, scores, lowest(scores.dtype))
        probs = ops.cast(ops.softmax(scores, axis=-1), x.dtype)
        probs = self.attention_probs_dropout(probs, training=training)
        ctx = ops.matmul(probs, v)
        return ops.reshape(ops.transpose(ctx, (0, 2, 1, 3)), (b, t, h))

    def get_config(self):
        config = super().get_config()
        config.update(relative_types=list(self.relative_types))
        return config
