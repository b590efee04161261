"""AdapterHub-compatible token classification (tagging) head."""

import keras

from keras_adapterfusion.layers.classification_head import ClassificationHead


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class TokenClassificationHead(ClassificationHead):
    """Per-token logits, as AdapterHub's `add_tagging_head` (default `layers=1`).

    The same dense stack as `ClassificationHead` (`layers - 1` times
    `Dropout → Dense(H) → activation`, then `Dropout → Dense(num_labels)`),
    applied to every token instead of the first. Train with
    `keras_adapterfusion.training.losses.MaskedSparseCategoricalCrossentropy`, which skips
    label `-100` (padding and sub-word continuations).

    Args:
        num_labels: tags.
        layers: dense layers.
        activation: activation of the hidden layers.
        dropout: dropout before each dense layer.
        use_bias: give the output layer a bias.
        label_names: optional names of the tags.
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

    def __init__(self, num_labels, layers=1, activation="tanh", dropout=0.1, use_bias=True, label_names=None,
                 **kwargs):
        for key in ("use_pooler", "head_type"):
            if key in kwargs:
                raise ValueError(f"TokenClassificationHead.{key}: got {kwargs[key]!r}; a tagging head scores every "
                                 "token with a softmax, so it takes no such argument.")
        if isinstance(num_labels, int) and not isinstance(num_labels, bool) and num_labels < 2:
            raise ValueError(f"TokenClassificationHead.num_labels: got {num_labels!r}; expected an int >= 2.")
        super().__init__(num_labels, layers=layers, activation=activation, dropout=dropout, use_bias=use_bias,
                         label_names=label_names, **kwargs)

    @property
    def problem_type(self):
        return "token_classification"

    def select(self, hidden_states, pooled_output=None):
        """What the head scores: every token's hidden state."""
        return hidden_states

    def compute_output_shape(self, hidden_states_shape, pooled_output_shape=None):
        return tuple(hidden_states_shape[:-1]) + (self.num_labels,)

    def get_config(self):
        config = super().get_config()
        for key in ("head_type", "use_pooler"):  # fixed for a tagging head
            config.pop(key)
        return config
