"""AdapterHub-compatible token classification (tagging) head."""

import keras

from keras_adapterfusion.layers.activations import get_activation


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class TokenClassificationHead(keras.layers.Layer):
    """Per-token logits, as AdapterHub's `add_tagging_head` (default `layers=1`).

    `layers - 1` times `Dropout → Dense(H) → activation`, then
    `Dropout → Dense(num_labels)`, applied to every token. Train with
    `keras_adapterfusion.heads.MaskedSparseCategoricalCrossentropy`, which skips
    label `-100` (padding and sub-word continuations).

    Args:
        num_labels: tags.
        layers: dense layers.
        activation: activation of the hidden layers.
        dropout: dropout before each dense layer.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        hidden_states: `[batch, tokens, hidden]`.
        pooled_output: ignored.
        training: Python bool.

    Example:

    ```python
    head = TokenClassificationHead(num_labels=9)
    logits = head(keras.random.normal((2, 7, 64)))   # [2, 7, 9]
    ```

    References:
        - [Tjong Kim Sang and De Meulder, 2003 (CoNLL-2003)](https://aclanthology.org/W03-0419)
    """

    def __init__(self, num_labels, layers=1, activation="tanh", dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 2:
            raise ValueError(f"TokenClassificationHead.num_labels: got {num_labels!r}; expected an int >= 2.")
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise ValueError(f"TokenClassificationHead.layers: got {layers!r}; expected an int >= 1.")
        if activation is not None:
            get_activation(activation)
        self.num_labels = num_labels
        self.num_layers = layers
        self.activation = activation
        self.dropout = dropout

    problem_type = "token_classification"

    def build(self, hidden_states_shape, pooled_output_shape=None):
        hidden = hidden_states_shape[-1]
        init = keras.initializers.RandomNormal(stddev=0.02)
        self.dense_layers = []
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            dense = keras.layers.Dense(self.num_labels if last else hidden, kernel_initializer=init,
                                       dtype=self.dtype_policy, name=f"dense_{i}")
            dense.build((None, None, hidden))
            self.dense_layers.append(dense)
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self._act = get_activation(self.activation) if self.activation else None

    def call(self, hidden_states, pooled_output=None, training=None):
        x = hidden_states
        for i, dense in enumerate(self.dense_layers):
            x = dense(self.dropout_layer(x, training=training))
            if i < self.num_layers - 1 and self._act is not None:
                x = self._act(x)
        return x

    def compute_output_shape(self, hidden_states_shape, pooled_output_shape=None):
        return tuple(hidden_states_shape[:-1]) + (self.num_labels,)

    def get_config(self):
        config = super().get_config()
        config.update(num_labels=self.num_labels, layers=self.num_layers, activation=self.activation,
                      dropout=self.dropout)
        return config
