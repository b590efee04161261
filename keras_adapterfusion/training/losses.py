"""Task heads and the loss and metrics that fit each of them.

| kind | layer | output | loss | metrics |
|---|---|---|---|---|
| `classification` | `ClassificationHead` | `[batch, labels]` logits | sparse softmax cross-entropy | accuracy |
| `multilabel` | `ClassificationHead(head_type="multilabel_classification")` | `[batch, labels]` logits | sigmoid cross-entropy | binary accuracy |
| `regression` | `ClassificationHead(1, head_type="regression")` | `[batch, 1]` | mean squared error | mean absolute error |
| `multiple_choice` | `MultipleChoiceHead` | `[batch, choices]` scores | sparse softmax cross-entropy | accuracy |
| `token_classification` | `TokenClassificationHead` | `[batch, tokens, labels]` | masked sparse cross-entropy (label -100 skipped) | masked accuracy |

Example:

```python
from keras_adapterfusion.training import losses as heads

head = heads.make_head("classification", num_labels=3)
model.compile(optimizer="adam", **heads.compile_arguments(head))
```
"""

import keras
from keras import ops

from keras_adapterfusion.layers.classification_head import ClassificationHead
from keras_adapterfusion.layers.multiple_choice_head import MultipleChoiceHead
from keras_adapterfusion.layers.token_classification_head import TokenClassificationHead

HEAD_KINDS = ("classification", "multilabel", "regression", "multiple_choice", "token_classification")
IGNORE_INDEX = -100


def make_head(kind, num_labels=None, **kwargs):
    """A head layer of `kind` (see the module table); `num_labels` is the number of
    classes, labels or choices (`None` for regression)."""
    if kind == "classification":
        return ClassificationHead(num_labels, **kwargs)
    if kind == "multilabel":
        return ClassificationHead(num_labels, head_type="multilabel_classification", **kwargs)
    if kind == "regression":
        if num_labels not in (None, 1):
            raise ValueError(f"make_head: got num_labels={num_labels!r} for regression; expected 1 or None.")
        return ClassificationHead(1, head_type="regression", **kwargs)
    if kind == "multiple_choice":
        return MultipleChoiceHead(num_labels, **kwargs)
    if kind == "token_classification":
        return TokenClassificationHead(num_labels, **kwargs)
    raise ValueError(f"make_head: got kind {kind!r}; expected one of {list(HEAD_KINDS)}.")


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class MaskedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Sparse softmax cross-entropy over tokens, skipping positions labelled `ignore_index`.

    The mean is over the kept positions of the batch (as PyTorch's
    `CrossEntropyLoss(ignore_index=-100)`).
    """

    def __init__(self, ignore_index=IGNORE_INDEX, name="masked_sparse_categorical_crossentropy", **kwargs):
        super().__init__(name=name, reduction="sum", **kwargs)
        self.ignore_index = ignore_index

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        keep = ops.not_equal(y_true, self.ignore_index)
        safe = ops.where(keep, y_true, 0)
        losses = keras.losses.sparse_categorical_crossentropy(safe, ops.cast(y_pred, "float32"), from_logits=True)
        keep_f = ops.cast(keep, losses.dtype)
        return ops.sum(losses * keep_f) / ops.maximum(ops.sum(keep_f), 1.0)

    def get_config(self):
        config = super().get_config()
        config.pop("reduction", None)
        config["ignore_index"] = self.ignore_index
        return config


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class MaskedAccuracy(keras.metrics.Mean):
    """Token accuracy over positions whose label is not `ignore_index`."""

    def __init__(self, ignore_index=IGNORE_INDEX, name="masked_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_index = ignore_index

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        keep = ops.cast(ops.not_equal(y_true, self.ignore_index), "float32")
        hit = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), y_true), "float32")
        return super().update_state(hit, sample_weight=keep)

    def get_config(self):
        config = super().get_config()
        config["ignore_index"] = self.ignore_index
        return config


def compile_arguments(head):
    """`dict(loss=..., metrics=[...])` for `model.compile` that fit `head`."""
    problem = getattr(head, "problem_type", None)
    if problem in ("single_label", "multiple_choice"):
        return dict(
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    if problem == "multi_label":
        return dict(
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="binary_accuracy")],
        )
    if problem == "regression":
        return dict(loss=keras.losses.MeanSquaredError(), metrics=[keras.metrics.MeanAbsoluteError(name="mae")])
    if problem == "token_classification":
        return dict(loss=MaskedSparseCategoricalCrossentropy(), metrics=[MaskedAccuracy()])
    raise ValueError(
        f"compile_arguments: got a {type(head).__name__} without a known problem_type; expected one of "
        "ClassificationHead, MultipleChoiceHead, TokenClassificationHead."
    )
