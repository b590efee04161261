"""Keras models over a shared `TransformerEncoder`: `AdapterModel` and `MultiTaskModel`."""

import contextlib

import keras
from keras import ops

from keras_adapterfusion.layers.transformer_block import normalize_setup

OUTPUT_KEYS = ("last_hidden_state", "pooler_output", "hidden_states", "fusion_attentions",
               "mh_fusion_attentions", "logits")


def _setup_to_json(setup):
    setup = normalize_setup(setup)
    if setup is None:
        return None
    kind, names = setup
    return names if kind == "single" else list(names)


def _apply_spec(model):
    if model.trainable_spec is not None:
        from keras_adapterfusion.builders import apply_trainable_spec

        apply_trainable_spec(model.encoder, model.head_layers(), model.trainable_spec)


def _flatten_choices(inputs):
    """[batch, choices, tokens] inputs -> [batch * choices, tokens]."""
    out = {}
    for key, value in inputs.items():
        if value is None:
            continue
        value = ops.convert_to_tensor(value)
        out[key] = ops.reshape(value, (-1, ops.shape(value)[-1]))
    return out


class _SharedEncoderModel(keras.Model):
    """Shared plumbing: trainable spec, build, fit re-applying the spec."""

    def head_layers(self):
        raise NotImplementedError

    def apply_trainable_spec(self):
        """Set the trainable flags of this model's stage (see `keras_adapterfusion.builders`)."""
        _apply_spec(self)

    @property
    def trainable_weights(self):
        """This model's stage weights (from its trainable spec, not the shared flags)."""
        if getattr(self, "trainable_spec", None) is None or not self.trainable:
            return super().trainable_weights
        from keras_adapterfusion.builders import spec_trainable_weights

        return spec_trainable_weights(self.encoder, self.head_layers(), self.trainable_spec)

    @property
    def non_trainable_weights(self):
        if getattr(self, "trainable_spec", None) is None or not self.trainable:
            return super().non_trainable_weights
        trainable = {id(v) for v in self.trainable_weights}
        return [v for v in self.weights if id(v) not in trainable]

    def compile(self, *args, **kwargs):
        """`keras.Model.compile`, then the optimizer's slots are created right away.

        On TensorFlow, Keras otherwise creates them inside the first traced
        training step, and creating variables there makes `tf.function` trace
        the whole step a second time (about half of a small model's start-up).
        """
        super().compile(*args, **kwargs)
        if self.built and self.optimizer is not None and not self.optimizer.built:
            self.apply_trainable_spec()
            strategy = getattr(self, "distribute_strategy", None)  # TensorFlow only
            with strategy.scope() if strategy is not None else contextlib.nullcontext():
                self.optimizer.build(self.trainable_weights)

    def fit(self, *args, **kwargs):
        # Another model on the same encoder may have changed the flags since.
        self.apply_trainable_spec()
        return super().fit(*args, **kwargs)

    def _build_parts(self):
        if not self.encoder.built:
            self.encoder.build()
        h = self.encoder.hidden_size
        for head in self.head_layers():
            if not head.built:
                head.build((None, None, h), (None, h))

    def build(self, input_shape=None):
        self._build_parts()
        self.built = True

    def get_config(self):
        config = super().get_config()
        config.update(encoder=keras.saving.serialize_keras_object(self.encoder), trainable_spec=self.trainable_spec)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**cls._deserialize_heads(config))

    @staticmethod
    def _deserialize_heads(config):
        return config


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class AdapterModel(_SharedEncoderModel):
    """A `TransformerEncoder` run with one adapter setup, plus an optional head.

    Several `AdapterModel`s can share one encoder (and so its weights): for
    example a stage-1 model with `adapter_setup="sentiment"` and a stage-2 model
    with `adapter_setup=["sentiment", "nli", "topic"]`. The stage builders in
    `keras_adapterfusion.builders` create these with the right trainable weights.

    Args:
        encoder: a `TransformerEncoder`.
        head: a head layer (`ClassificationHead`, `MultipleChoiceHead`,
            `TokenClassificationHead`) or `None`.
        adapter_setup: `None`, an adapter name, or a list of names to fuse.
        output_hidden_states: also return `hidden_states`.
        output_key: return only this entry of the output dict (e.g. `"logits"`
            for `model.fit` with one loss); `None` returns the whole dict.
        trainable_spec: the stage's trainable weights, as the builders make it;
            `None` leaves the flags alone.
        **kwargs: standard `keras.Model` arguments.

    Call arguments:
        inputs: dict with `input_ids`, and optionally `attention_mask` and
            `token_type_ids`, int `[batch, tokens]` (`[batch, choices, tokens]`
            for a multiple-choice head).
        training: Python bool.

    Returns:
        A dict with `last_hidden_state`, `logits` (with a head), `pooler_output`
        (when the encoder has a pooler), `fusion_attentions` (when fusing) and
        `hidden_states` (when asked); or the one entry named by `output_key`.

    Example:

    ```python
    model = AdapterModel(encoder, ClassificationHead(3), adapter_setup=["a", "b"])
    out = model({"input_ids": ids, "attention_mask": mask})
    out["logits"], out["fusion_attentions"]
    ```
    """

    def __init__(self, encoder, head=None, adapter_setup=None, output_hidden_states=False, output_key=None,
                 trainable_spec=None, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.head = head
        self.adapter_setup = _setup_to_json(adapter_setup)
        encoder.check_setup(self.adapter_setup)
        self.output_hidden_states = output_hidden_states
        if output_key is not None and output_key not in OUTPUT_KEYS:
            raise ValueError(f"AdapterModel.output_key: got {output_key!r}; expected None or one of {list(OUTPUT_KEYS)}.")
        if output_key == "logits" and head is None:
            raise ValueError("AdapterModel.output_key: got 'logits' but the model has no head.")
        self.output_key = output_key
        self.trainable_spec = trainable_spec
        self.build()
        self.apply_trainable_spec()

    def head_layers(self):
        return [] if self.head is None else [self.head]

    def call(self, inputs, training=None):
        if getattr(self.head, "flattens_choices", False):
            inputs = _flatten_choices(inputs)
        outputs = dict(
            self.encoder(
                inputs,
                adapter_setup=self.adapter_setup,
                output_hidden_states=self.output_hidden_states,
                training=training,
            )
        )
        if self.head is not None:
            outputs["logits"] = self.head(
                outputs["last_hidden_state"], outputs.get("pooler_output"), training=training
            )
        if self.output_key is not None:
            return outputs[self.output_key]
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            head=None if self.head is None else keras.saving.serialize_keras_object(self.head),
            adapter_setup=self.adapter_setup,
            output_hidden_states=self.output_hidden_states,
            output_key=self.output_key,
        )
        return config

    @staticmethod
    def _deserialize_heads(config):
        if config.get("head") is not None:
            config["head"] = keras.saving.deserialize_keras_object(config["head"])
        return config


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class MultiTaskModel(_SharedEncoderModel):
    """MT-A: one adapter and one classification head per task on a shared encoder.

    Each batch comes from one task and carries its index in `task_id` (the same
    value for every example of the batch; `keras_adapterfusion.tasks.mix_task_datasets`
    makes such batches). The model runs that task's adapter and head only
    (`keras.ops.switch`; on JAX every task runs and the batch's task is selected,
    since dropout state cannot change inside `jax.lax.switch`), and returns its logits padded to the largest label
    count with -1e9, so one sparse cross-entropy loss serves every task.

    Args:
        encoder: a `TransformerEncoder` holding one adapter per task, named after it.
        heads: dict task name -> `ClassificationHead` (single-label).
        trainable_spec: as for `AdapterModel`.
        **kwargs: standard `keras.Model` arguments.

    Call arguments:
        inputs: dict with `input_ids`, `attention_mask`, optional `token_type_ids`,
            and `task_id` (int `[batch]`, index into `tasks`).
        training: Python bool.

    Example:

    ```python
    model = builders.build_multitask_model(encoder, {"sentiment": 2, "topic": 5})
    model.tasks  # ['sentiment', 'topic']; task_id 1 routes a batch to topic
    ```
    """

    def __init__(self, encoder, heads, trainable_spec=None, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.tasks = list(heads)
        for task, head in heads.items():
            if task not in encoder.adapter_configs:
                raise ValueError(f"MultiTaskModel: no adapter {task!r} in the encoder; expected one per task.")
            if getattr(head, "problem_type", None) != "single_label":
                raise ValueError(
                    f"MultiTaskModel: head of task {task!r} is a {type(head).__name__} "
                    f"({getattr(head, 'problem_type', None)}); expected a single-label ClassificationHead."
                )
        self.heads = dict(heads)
        self.max_labels = max(h.num_labels for h in heads.values())
        self.trainable_spec = trainable_spec
        self.build()
        self.apply_trainable_spec()

    def head_layers(self):
        return list(self.heads.values())

    def _branch(self, task, training):
        head = self.heads[task]

        def run(input_ids, attention_mask, token_type_ids):
            out = self.encoder(
                {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids},
                adapter_setup=task,
                training=training,
            )
            logits = ops.cast(head(out["last_hidden_state"], out.get("pooler_output"), training=training), "float32")
            pad = self.max_labels - head.num_labels
            if pad:
                filler = ops.full((ops.shape(logits)[0], pad), -1e9, dtype="float32")
                logits = ops.concatenate([logits, filler], axis=-1)
            return logits

        return run

    def call(self, inputs, training=None):
        if "task_id" not in inputs:
            raise ValueError(f"MultiTaskModel: inputs need a 'task_id' entry (index into {self.tasks}).")
        input_ids = ops.cast(inputs["input_ids"], "int32")
        mask = inputs.get("attention_mask")
        mask = ops.ones_like(input_ids) if mask is None else ops.cast(mask, "int32")
        types = inputs.get("token_type_ids")
        types = ops.zeros_like(input_ids) if types is None else ops.cast(types, "int32")
        index = ops.cast(ops.reshape(inputs["task_id"], (-1,))[0], "int32")
        branches = [self._branch(task, training) for task in self.tasks]
        if keras.backend.backend() == "jax":
            # Dropout's seed state cannot be updated inside jax.lax.switch, so on
            # JAX every task's branch runs and the batch's task is selected.
            stacked = ops.stack([branch(input_ids, mask, types) for branch in branches], axis=0)
            return ops.take(stacked, index, axis=0)
        return ops.switch(index, branches, input_ids, mask, types)

    def get_config(self):
        config = super().get_config()
        config["heads"] = {t: keras.saving.serialize_keras_object(h) for t, h in self.heads.items()}
        return config

    @staticmethod
    def _deserialize_heads(config):
        config["heads"] = {t: keras.saving.deserialize_keras_object(h) for t, h in config["heads"].items()}
        return config
