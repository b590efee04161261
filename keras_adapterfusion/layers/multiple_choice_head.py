"""AdapterHub-compatible multiple-choice head."""

import keras
from keras import ops

from keras_adapterfusion.layers.classification_head import ClassificationHead, check_label_names


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class MultipleChoiceHead(ClassificationHead):
    """One score per answer choice, as AdapterHub's `add_multiple_choice_head`.

    The model flattens inputs `[batch, choices, tokens]` to `[batch * choices,
    tokens]` before the encoder (`AdapterModel` does this when its head has
    `flattens_choices`); this head scores each choice's first token with
    `layers - 1` hidden `Dense(H)` layers and a `Dense(1)`, and reshapes the scores
    to `[batch, choices]`. Train with sparse categorical cross-entropy over choices.

    Args:
        num_choices: answer choices per question.
        layers: dense layers (AdapterHub default 2).
        activation: activation of the hidden layers.
        dropout: dropout before each dense layer.
        use_pooler: read the pooler output instead of the first token.
        use_bias: give the scoring layer a bias.
        label_names: optional names of the choices (e.g. `["A", "B", "C"]`).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        hidden_states: `[batch * choices, tokens, hidden]`.
        pooled_output: `[batch * choices, hidden]`, with `use_pooler`.
        training: Python bool.

    Example:

    ```python
    head = MultipleChoiceHead(num_choices=5)
    scores = head(keras.random.normal((10, 7, 64)))   # [2, 5]
    ```

    References:
        - [Talmor et al., 2019 (CommonsenseQA)](https://arxiv.org/abs/1811.00937)
    """

    flattens_choices = True

    def __init__(self, num_choices, layers=2, activation="tanh", dropout=0.1, use_pooler=False, use_bias=True,
                 label_names=None, **kwargs):
        for key in ("num_labels", "head_type"):
            if key in kwargs:
                raise ValueError(f"MultipleChoiceHead.{key}: got {kwargs[key]!r}; a multiple-choice head gives one "
                                 "score per choice (set num_choices), so it takes no such argument.")
        super().__init__(num_labels=1, layers=layers, activation=activation, dropout=dropout,
                         use_pooler=use_pooler, use_bias=use_bias, **kwargs)
        if isinstance(num_choices, bool) or not isinstance(num_choices, int) or num_choices < 2:
            raise ValueError(f"MultipleChoiceHead.num_choices: got {num_choices!r}; expected an int >= 2.")
        self.num_choices = num_choices
        self.label_names = check_label_names("MultipleChoiceHead", label_names, num_choices)

    @property
    def problem_type(self):
        return "multiple_choice"

    def call(self, hidden_states, pooled_output=None, training=None):
        scores = super().call(hidden_states, pooled_output, training=training)
        return ops.reshape(scores, (-1, self.num_choices))

    def compute_output_shape(self, hidden_states_shape, pooled_output_shape=None):
        rows = hidden_states_shape[0]
        return (None if rows is None else rows // self.num_choices, self.num_choices)

    def get_config(self):
        config = super().get_config()
        config.pop("num_labels")
        config.pop("head_type")
        config["num_choices"] = self.num_choices
        return config
