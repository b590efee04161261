"""AdapterHub-compatible classification head."""

import keras

from keras_adapterfusion.layers.activations import get_activation

HEAD_TYPES = ("classification", "multilabel_classification", "regression")


def check_label_names(owner, label_names, count):
    """`label_names` as a list of `count` distinct non-empty strings (or None); `ValueError` otherwise."""
    if label_names is None:
        return None
    if isinstance(label_names, str) or not isinstance(label_names, (list, tuple)):
        raise ValueError(f"{owner}.label_names: got {label_names!r}; expected a list of {count} names.")
    names = list(label_names)
    if len(names) != count or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"{owner}.label_names: got {names!r}; expected {count} distinct non-empty strings, "
                         "one per output.")
    return names


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class ClassificationHead(keras.layers.Layer):
    """A classification head on the first token, as AdapterHub's `add_classification_head`.

    With `layers=2` it computes `Dense(num_labels)(Dropout(tanh(Dense(H)(Dropout(x)))))`
    on the first token's final hidden state (or the pooler output when
    `use_pooler`); `layers=1` is `Dense(num_labels)(Dropout(x))`. In general,
    `layers - 1` hidden `Dense(H) + activation` layers, each after a dropout.

    Args:
        num_labels: number of outputs.
        layers: number of dense layers (AdapterHub's `layers`).
        activation: activation of the hidden layers (`None` for none).
        dropout: dropout rate before each dense layer.
        use_pooler: read the pooler output instead of the first token.
        use_bias: give the output layer a bias (hidden layers always have one),
            as AdapterHub's `bias`.
        head_type: `"classification"` (softmax cross-entropy; mean squared
            error when `num_labels == 1`, as AdapterHub), `"multilabel_classification"`
            (sigmoid cross-entropy) or `"regression"` (one output, MSE).
        label_names: optional names of the outputs (one per label), kept in
            the config so that saved heads, `.keras` files and exports carry them.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        hidden_states: `[batch, tokens, hidden]`.
        pooled_output: `[batch, hidden]`, used when `use_pooler`.
        training: Python bool.

    Example:

    ```python
    head = ClassificationHead(num_labels=3)
    logits = head(keras.random.normal((2, 5, 64)))
    ```

    References:
        - [Pfeiffer et al., 2020 (AdapterHub)](https://arxiv.org/abs/2007.07779)
    """

    def __init__(
        self,
        num_labels,
        layers=2,
        activation="tanh",
        dropout=0.1,
        use_pooler=False,
        use_bias=True,
        head_type="classification",
        label_names=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if head_type not in HEAD_TYPES:
            raise ValueError(f"ClassificationHead.head_type: got {head_type!r}; expected one of {list(HEAD_TYPES)}.")
        if head_type == "regression" and num_labels != 1:
            raise ValueError(f"ClassificationHead.num_labels: got {num_labels} for a regression head; expected 1.")
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"ClassificationHead.num_labels: got {num_labels!r}; expected an int >= 1.")
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise ValueError(f"ClassificationHead.layers: got {layers!r}; expected an int >= 1.")
        if activation is not None:
            get_activation(activation)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"{type(self).__name__}.dropout: got {dropout!r}; expected a rate in [0, 1).")
        for flag, value in (("use_pooler", use_pooler), ("use_bias", use_bias)):
            if not isinstance(value, bool):
                raise ValueError(f"{type(self).__name__}.{flag}: got {value!r}; expected True or False.")
        self.label_names = check_label_names(type(self).__name__, label_names, num_labels)
        self.num_labels = num_labels
        self.num_layers = layers
        self.activation = activation
        self.dropout = dropout
        self.use_pooler = use_pooler
        self.use_bias = use_bias
        self.head_type = head_type

    def build(self, hidden_states_shape, pooled_output_shape=None):
        hidden = hidden_states_shape[-1]
        init = keras.initializers.RandomNormal(stddev=0.02)
        self.dense_layers = []
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            dense = keras.layers.Dense(
                self.num_labels if last else hidden,
                use_bias=self.use_bias or not last,
                kernel_initializer=init,
                dtype=self.dtype_policy,
                name=f"dense_{i}",
            )
            dense.build((None, hidden))
            self.dense_layers.append(dense)
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self._act = get_activation(self.activation) if self.activation else None

    @property
    def problem_type(self):
        """`"single_label"`, `"multi_label"` or `"regression"`: what loss fits this head."""
        if self.head_type == "multilabel_classification":
            return "multi_label"
        if self.head_type == "regression" or self.num_labels == 1:
            return "regression"
        return "single_label"

    def select(self, hidden_states, pooled_output=None):
        """What the dense stack reads: the first token (or the pooler output)."""
        if self.use_pooler:
            if pooled_output is None:
                raise ValueError("ClassificationHead: use_pooler=True but no pooled_output was given.")
            return pooled_output
        return hidden_states[:, 0, :]

    def call(self, hidden_states, pooled_output=None, training=None):
        x = self.select(hidden_states, pooled_output)
        for i, dense in enumerate(self.dense_layers):
            x = dense(self.dropout_layer(x, training=training))
            if i < self.num_layers - 1 and self._act is not None:
                x = self._act(x)
        return x

    def compute_output_shape(self, hidden_states_shape, pooled_output_shape=None):
        return (hidden_states_shape[0], self.num_labels)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_labels=self.num_labels,
            layers=self.num_layers,
            activation=self.activation,
            dropout=self.dropout,
            use_pooler=self.use_pooler,
            use_bias=self.use_bias,
            head_type=self.head_type,
            label_names=self.label_names,
        )
        return config
