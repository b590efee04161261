"""Keras models over a shared `TransformerEncoder`: `AdapterModel`, `MultiTaskModel` and `ParallelModel`."""

import contextlib
import os

import keras
from keras import ops

from keras_adapterfusion import inputs as model_inputs
from keras_adapterfusion.errors import SaveError
from keras_adapterfusion.io.files import atomic_file
from keras_adapterfusion.layers.adapter_setup import AdapterSetup
from keras_adapterfusion.models.trainable import apply_trainable_spec, spec_trainable_weights

OUTPUT_KEYS = ("last_hidden_state", "pooler_output", "hidden_states", "fusion_attentions",
               "mh_fusion_attentions", "logits")


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
    """Shared plumbing: the trainable spec, input checks at fit/evaluate/predict, atomic saves."""

    def head_layers(self):
        raise NotImplementedError

    def apply_trainable_spec(self):
        """Set the trainable flags of this model's stage (see `keras_adapterfusion.models.trainable`)."""
        if self.trainable_spec is not None:
            apply_trainable_spec(self.encoder, self.head_layers(), self.trainable_spec)

    @property
    def trainable_weights(self):
        """This model's stage weights (from its trainable spec, not the shared flags)."""
        if getattr(self, "trainable_spec", None) is None or not self.trainable:
            return super().trainable_weights
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

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras's build before `fit` under a `tf.distribute` strategy, with dict inputs under several workers.

        Keras (3.15, TensorFlow backend) averages the first distributed batch over
        the replicas only to learn its shapes, and `MultiWorkerMirroredStrategy`
        cannot average a dict of inputs (keras-team/keras#20329: "Attempt to
        convert a value ({'input_ids': PerReplica...}) with an unsupported type").
        One replica's part of the batch has the shapes the build needs; no
        collective is run for it.
        """
        strategy = getattr(self, "_distribute_strategy", None)
        if strategy is not None and iterator is not None and data_batch is None:
            import tensorflow as tf

            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, next(it))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _logs_for_workers(self, logs):
        """Scalar logs as `[1]` tensors under several workers (TensorFlow's `MultiWorkerMirroredStrategy`).

        Keras (3.15) averages each log over the workers with
        `strategy.reduce("MEAN", value, axis=0)`, which fails on a scalar
        ("Invalid reduction dimension 0 for input with 0 dimensions",
        tensorflow/tensorflow#72388); on a `[1]` tensor it gives the scalar mean.
        """
        strategy = getattr(self, "_distribute_strategy", None)
        extended = getattr(strategy, "extended", None)
        if extended is None or not getattr(extended, "_in_multi_worker_mode", lambda: False)():
            return logs
        return {k: ops.reshape(v, (1,)) if len(ops.shape(v)) == 0 else v for k, v in logs.items()}

    def train_step(self, *args, **kwargs):
        """Keras's training step (see `_logs_for_workers` for what changes under several workers)."""
        return self._logs_for_workers(super().train_step(*args, **kwargs))

    def test_step(self, *args, **kwargs):
        """Keras's evaluation step (see `_logs_for_workers`)."""
        return self._logs_for_workers(super().test_step(*args, **kwargs))

    def compile_from_config(self, config):
        """Compile from the state a `.keras` file saved (this class's `compile` only adds the early slots)."""
        self.compile(**keras.saving.deserialize_keras_object(config))

    # -------------------------------------------- inputs checked at the edge
    def __call__(self, inputs, *args, **kwargs):
        # Concrete inputs are checked here, before Keras wraps the call, so the error is the plain InputError.
        model_inputs.check_model_call(inputs, self)
        return super().__call__(inputs, *args, **kwargs)

    def input_limits(self):
        """What this model accepts (`keras_adapterfusion.inputs.InputLimits`)."""
        return model_inputs.limits_of(self)

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`, with this model's stage weights and every input batch checked.

        Another model on the same encoder may have changed the trainable flags
        since; they are set again. Invalid inputs raise `InputError` (see
        `keras_adapterfusion.inputs`) before a step runs on them.
        """
        self.apply_trainable_spec()
        limits = self.input_limits()
        if not isinstance(x, dict) and x is not None and "shuffle" not in kwargs:
            kwargs["shuffle"] = False  # datasets and generators shuffle themselves; Keras would only warn
        if kwargs.get("validation_data") is not None:
            kwargs["validation_data"] = model_inputs.checked_validation(kwargs["validation_data"], limits)
        return model_inputs.reraise_graph_errors(super().fit, model_inputs.checked_data(x, limits), y,
                                                 *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.evaluate`, with every input batch checked."""
        return model_inputs.reraise_graph_errors(super().evaluate, model_inputs.checked_data(x, self.input_limits()),
                                                 y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        """`keras.Model.predict`, with every input batch checked."""
        return model_inputs.reraise_graph_errors(super().predict, model_inputs.checked_data(x, self.input_limits()),
                                                 *args, **kwargs)

    def train_on_batch(self, x=None, y=None, *args, **kwargs):
        self.apply_trainable_spec()
        return super().train_on_batch(model_inputs.checked_data(x, self.input_limits()), y, *args, **kwargs)

    def test_on_batch(self, x=None, y=None, *args, **kwargs):
        return super().test_on_batch(model_inputs.checked_data(x, self.input_limits()), y, *args, **kwargs)

    def predict_on_batch(self, x):
        return super().predict_on_batch(model_inputs.checked_data(x, self.input_limits()))

    # ------------------------------------------------------- atomic saving
    def save(self, filepath, overwrite=True, **kwargs):
        """`keras.Model.save`, atomically: the file is written beside the target and moved over it.

        A crash (even kill -9) during the save leaves the earlier file intact.
        With `overwrite=False` an existing file raises `SaveError`.
        """
        if not overwrite and os.path.exists(os.fspath(filepath)):
            raise SaveError(f"{os.fspath(filepath)}: exists; pass overwrite=True to replace it.")
        with atomic_file(filepath) as tmp:
            super().save(tmp, overwrite=True, **kwargs)

    def save_weights(self, filepath, overwrite=True, **kwargs):
        """`keras.Model.save_weights`, atomically (see `save`)."""
        if not overwrite and os.path.exists(os.fspath(filepath)):
            raise SaveError(f"{os.fspath(filepath)}: exists; pass overwrite=True to replace it.")
        with atomic_file(filepath) as tmp:
            super().save_weights(tmp, overwrite=True, **kwargs)

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
    `keras_adapterfusion.training.builders` create these with the right trainable weights.

    Args:
        encoder: a `TransformerEncoder`.
        head: a head layer (`ClassificationHead`, `MultipleChoiceHead`,
            `TokenClassificationHead`) or `None`.
        adapter_setup: `None`, an adapter name, a list of names to fuse, or an
            `AdapterSetup` (e.g. a named fusion); kept as `model.adapter_setup`,
            an `AdapterSetup`.
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
        self.adapter_setup = encoder.check_setup(adapter_setup)
        if self.adapter_setup is not None and self.adapter_setup.kind in ("parallel", "per_row"):
            raise ValueError(f"AdapterModel.adapter_setup: got {self.adapter_setup}; expected a setup that gives one "
                             "output per example (use ParallelModel for a parallel setup, MultiTaskModel for MT-A).")
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
        """The model's head layers: `[head]`, or `[]` without a head."""
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
            adapter_setup=None if self.adapter_setup is None else self.adapter_setup.to_config(),
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

    Every example carries its task's index in `task_id`, and runs that task's
    adapter and head: a batch may mix tasks freely
    (`keras_adapterfusion.tasks.mix_task_datasets` makes batches of one task,
    which works the same way). The encoder's own layers run once for the whole
    batch; in every block each task's adapter runs on the batch and each example
    keeps its own task's output (adapters are small, so this costs little), and
    the same for the heads. Each example's logits therefore equal those of the
    ST-A model with its task's adapter and head. Logits are padded to the
    largest label count with -1e9, so one sparse cross-entropy loss serves every
    task. A `task_id` outside `[0, len(tasks))` raises `InputError`.

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
    model.tasks  # ['sentiment', 'topic']; task_id 1 routes an example to topic
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
        self.adapter_setup = AdapterSetup.per_row(self.tasks)
        self.trainable_spec = trainable_spec
        self.build()
        self.apply_trainable_spec()

    def head_layers(self):
        """The task heads, in the order of `heads`."""
        return list(self.heads.values())

    def call(self, inputs, training=None):
        if "task_id" not in inputs:
            raise ValueError(f"MultiTaskModel: inputs need a 'task_id' entry (index into {self.tasks}).")
        task_id = ops.reshape(ops.cast(inputs["task_id"], "int32"), (-1,))
        encoder_inputs = {k: inputs[k] for k in model_inputs.INPUT_NAMES if inputs.get(k) is not None}
        out = self.encoder(encoder_inputs, adapter_setup=self.adapter_setup, adapter_index=task_id,
                           training=training)
        logits = None
        for i, task in enumerate(self.tasks):
            head = self.heads[task]
            task_logits = ops.cast(head(out["last_hidden_state"], out.get("pooler_output"), training=training),
                                   "float32")
            pad = self.max_labels - head.num_labels
            if pad:
                filler = ops.full((ops.shape(task_logits)[0], pad), -1e9, dtype="float32")
                task_logits = ops.concatenate([task_logits, filler], axis=-1)
            if logits is None:
                logits = task_logits
            else:
                logits = ops.where(ops.reshape(ops.equal(task_id, i), (-1, 1)), task_logits, logits)
        return logits

    def get_config(self):
        config = super().get_config()
        config["heads"] = {t: keras.saving.serialize_keras_object(h) for t, h in self.heads.items()}
        return config

    @staticmethod
    def _deserialize_heads(config):
        config["heads"] = {t: keras.saving.deserialize_keras_object(h) for t, h in config["heads"].items()}
        return config


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class ParallelModel(_SharedEncoderModel):
    """Several adapter setups, each with its head, in one encoder pass (AdapterHub's `Parallel`, with fusions).

    The encoder runs `AdapterSetup.parallel` over the tasks' distinct setups: the batch is repeated once
    per setup, every block runs each setup on its own copy, and each task's head reads its setup's copy.
    One call thus gives, for example, a fusion's prediction and each fused adapter's own prediction
    (adapters issue #268: AdapterHub's `Parallel` cannot hold a `Fuse`). Each task's output equals that
    of the `AdapterModel` with its setup and head; tasks with the same setup share one copy.

    Args:
        encoder: a `TransformerEncoder` holding the adapters and fusions the setups run.
        heads: dict task name -> head layer.
        setups: dict task name -> adapter setup (any form `AdapterSetup.parse` reads; not `None`).
        trainable_spec: as for `AdapterModel`.
        **kwargs: standard `keras.Model` arguments.

    Call arguments:
        inputs: dict with `input_ids`, and optionally `attention_mask` and `token_type_ids`.
        training: Python bool.

    Returns:
        A dict task name -> logits.

    Example:

    ```python
    model = ParallelModel.from_models({"target": fusion_model, "sentiment": sentiment_model, "nli": nli_model})
    out = model(inputs)    # out["target"], out["sentiment"], out["nli"]: one encoder pass
    ```
    """

    def __init__(self, encoder, heads, setups, trainable_spec=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(heads, dict) or not heads or not isinstance(setups, dict) or set(heads) != set(setups):
            raise ValueError(f"ParallelModel: heads {sorted(heads) if isinstance(heads, dict) else heads!r} and "
                             f"setups {sorted(setups) if isinstance(setups, dict) else setups!r}; expected two dicts "
                             "with the same task names.")
        self.encoder = encoder
        self.tasks = list(heads)
        self.heads = dict(heads)
        self.setups = {}
        for task in self.tasks:
            setup = encoder.check_setup(setups[task])
            if setup is None or setup.kind in ("parallel", "per_row"):
                raise ValueError(f"ParallelModel: task {task!r} has setup {setup}; expected adapters to run (a name, "
                                 "stack, fusion or average).")
            self.setups[task] = setup
        channels = list(dict.fromkeys(self.setups.values()))  # distinct setups, in task order
        self.channel_of = {t: channels.index(s) for t, s in self.setups.items()}
        self.adapter_setup = AdapterSetup.parallel(channels) if len(channels) > 1 else channels[0]
        self.trainable_spec = trainable_spec
        self.build()
        self.apply_trainable_spec()

    @classmethod
    def from_models(cls, models, **kwargs):
        """A `ParallelModel` of `AdapterModel`s that share one encoder: dict task name -> model."""
        if not isinstance(models, dict) or not models:
            raise ValueError(f"ParallelModel.from_models: got {models!r}; expected a dict task name -> AdapterModel.")
        encoders = {id(m.encoder) for m in models.values() if isinstance(m, AdapterModel)}
        if len(encoders) != 1 or not all(isinstance(m, AdapterModel) and m.head is not None for m in models.values()):
            raise ValueError("ParallelModel.from_models: expected AdapterModels with heads that share one encoder; "
                             f"got {({t: type(m).__name__ for t, m in models.items()})} on {len(encoders)} encoder(s).")
        first = next(iter(models.values()))
        return cls(first.encoder, {t: m.head for t, m in models.items()},
                   {t: m.adapter_setup for t, m in models.items()}, **kwargs)

    def head_layers(self):
        """The task heads, in task order."""
        return list(self.heads.values())

    def call(self, inputs, training=None):
        out = self.encoder(inputs, adapter_setup=self.adapter_setup, training=training)
        channels = len(self.adapter_setup.adapters) if self.adapter_setup.kind == "parallel" else 1
        hidden = ops.split(out["last_hidden_state"], channels, axis=0)
        pooled = ops.split(out["pooler_output"], channels, axis=0) if "pooler_output" in out else [None] * channels
        results = {}
        for task in self.tasks:
            c = self.channel_of[task]
            results[task] = self.heads[task](hidden[c], pooled[c], training=training)
        return results

    def get_config(self):
        config = super().get_config()
        config["heads"] = {t: keras.saving.serialize_keras_object(h) for t, h in self.heads.items()}
        config["setups"] = {t: s.to_config() for t, s in self.setups.items()}
        return config

    @staticmethod
    def _deserialize_heads(config):
        config["heads"] = {t: keras.saving.deserialize_keras_object(h) for t, h in config["heads"].items()}
        return config
