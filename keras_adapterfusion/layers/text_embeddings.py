"""BERT/RoBERTa/DeBERTa input embeddings: word (+ position) (+ token type), LayerNorm, dropout."""

import keras
from keras import ops

from keras_adapterfusion.layers.fused import LayerNorm

POSITION_STYLES = ("absolute", "roberta", "none")


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class TextEmbeddings(keras.layers.Layer):
    """Word, position and token-type embeddings followed by LayerNorm and dropout.

    With `type_vocab_size=0` there is no token-type table (DistilBERT) and
    `token_type_ids` are ignored.

    With `position_style="roberta"` positions count only non-padding tokens and
    start at `pad_token_id + 1`, as in Hugging Face's RoBERTa and XLM-R;
    padding tokens get position `pad_token_id`. With `position_style="none"` there
    is no position table (DeBERTa-v3, whose attention sees relative positions).
    With `zero_padding=True` the embeddings of padding tokens (`attention_mask`
    0) are set to zero after the LayerNorm, as DeBERTa does.

    Args:
        vocab_size: word vocabulary size.
        hidden_size: embedding width (ELECTRA's `embedding_size` where it differs
            from the encoder's width; the encoder projects it).
        max_positions: rows of the position table.
        type_vocab_size: rows of the token-type table; 0 for none.
        pad_token_id: id of the padding token.
        position_style: `"absolute"` (BERT), `"roberta"` or `"none"`.
        layer_norm_epsilon: LayerNorm epsilon.
        dropout: dropout rate after the LayerNorm.
        zero_padding: multiply the output by `attention_mask` (DeBERTa).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        input_ids: int `[batch, tokens]`.
        token_type_ids: int `[batch, tokens]` or `None` (zeros).
        attention_mask: `[batch, tokens]` or `None`; used with `zero_padding`.
        training: Python bool.

    Example:

    ```python
    emb = TextEmbeddings(vocab_size=1000, hidden_size=64, max_positions=128)
    x = emb(keras.ops.ones((2, 7), "int32"))
    ```

    References:
        - [Devlin et al., 2019](https://arxiv.org/abs/1810.04805)
        - [Liu et al., 2019](https://arxiv.org/abs/1907.11692)
    """

    def __init__(
        self,
        vocab_size,
        hidden_size,
        max_positions,
        type_vocab_size=2,
        pad_token_id=0,
        position_style="absolute",
        layer_norm_epsilon=1e-12,
        dropout=0.1,
        zero_padding=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if position_style not in POSITION_STYLES:
            raise ValueError(
                f"TextEmbeddings.position_style: got {position_style!r}; expected one of {list(POSITION_STYLES)}."
            )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.max_positions = max_positions
        self.type_vocab_size = type_vocab_size
        self.pad_token_id = pad_token_id
        self.position_style = position_style
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout
        self.zero_padding = zero_padding

    def build(self, input_shape=None):
        init = keras.initializers.RandomNormal(stddev=0.02)
        self.word_embeddings = keras.layers.Embedding(
            self.vocab_size, self.hidden_size, embeddings_initializer=init,
            dtype=self.dtype_policy, name="word_embeddings",
        )
        self.position_embeddings = None
        if self.position_style != "none":
            self.position_embeddings = keras.layers.Embedding(
                self.max_positions, self.hidden_size, embeddings_initializer=init,
                dtype=self.dtype_policy, name="position_embeddings",
            )
        tables = [t for t in (self.word_embeddings, self.position_embeddings) if t is not None]
        self.token_type_embeddings = None
        if self.type_vocab_size:
            self.token_type_embeddings = keras.layers.Embedding(
                self.type_vocab_size, self.hidden_size, embeddings_initializer=init,
                dtype=self.dtype_policy, name="token_type_embeddings",
            )
            tables.append(self.token_type_embeddings)
        for layer in tables:
            layer.build((None, None))
        self.norm = LayerNorm(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="norm"
        )
        self.norm.build((None, None, self.hidden_size))
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def position_ids(self, input_ids):
        """Position ids `[batch, tokens]`: 0, 1, ... (BERT); from `pad_token_id + 1`, skipping padding (RoBERTa)."""
        if self.position_style == "roberta":
            mask = ops.cast(ops.not_equal(input_ids, self.pad_token_id), "int32")
            return ops.cumsum(mask, axis=1) * mask + self.pad_token_id
        t = ops.shape(input_ids)[1]
        return ops.expand_dims(ops.arange(t, dtype="int32"), 0)

    def call(self, input_ids, token_type_ids=None, attention_mask=None, training=None):
        input_ids = ops.cast(input_ids, "int32")
        x = self.word_embeddings(input_ids)
        if self.position_embeddings is not None:
            x = x + self.position_embeddings(self.position_ids(input_ids))
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = ops.zeros_like(input_ids)
            x = x + self.token_type_embeddings(ops.cast(token_type_ids, "int32"))
        x = self.norm(x)
        if self.zero_padding and attention_mask is not None:
            x = x * ops.cast(attention_mask, x.dtype)[:, :, None]
        return self.dropout_layer(x, training=training)

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return tuple(input_shape) + (self.hidden_size,)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            max_positions=self.max_positions,
            type_vocab_size=self.type_vocab_size,
            pad_token_id=self.pad_token_id,
            position_style=self.position_style,
            layer_norm_epsilon=self.layer_norm_epsilon,
            dropout=self.dropout,
            zero_padding=self.zero_padding,
        )
        return config
