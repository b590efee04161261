"""`AdapterModel`: an encoder, an adapter setup and an optional head as one `keras.Model`."""

import keras

from keras_adapterfusion.layers.transformer_block import normalize_setup


def _setup_to_json(setup):
    setup = normalize_setup(setup)
    if setup is None:
        return None
    kind, names = setup
    return names if kind == "single" else list(names)


@keras.saving.register_keras_serializable(package="keras_adapterfusion")
class AdapterModel(keras.Model):
    """A `TransformerEncoder` run with one adapter setup, plus an optional head.

    Several `AdapterModel`s can share one encoder (and so its weights): for
    example a stage-1 model with `adapter_setup="sentiment"` and a stage-2 model
    with `adapter_setup=["sentiment", "nli", "topic"]`.

    Args:
        encoder: a `TransformerEncoder`.
        head: a head layer (e.g. `ClassificationHead`) or `None`.
        adapter_setup: `None`, an adapter name, or a list of names to fuse.
        output_hidden_states: also return `hidden_states`.
        output_key: return only this entry of the output dict (e.g. `"logits"`
            for `model.fit` with one loss); `None` returns the whole dict.
        **kwargs: standard `keras.Model` arguments.

    Call arguments:
        inputs: dict with `input_ids`, and optionally `attention_mask` and
            `token_type_ids`, int `[batch, tokens]`.
        training: Python bool.

    Returns:
        A dict with `last_hidden_state`, `logits` (with a head), `pooler_output`
        (when the encoder has a pooler), `fusion_attentions` (when fusing) and
        `hidden_states` (when asked).

    Example:

    ```python
    model = AdapterModel(encoder, ClassificationHead(3), adapter_setup=["a", "b"])
    out = model({"input_ids": ids, "attention_mask": mask})
    out["logits"], out["fusion_attentions"]
    ```
    """

    def __init__(
        self, encoder, head=None, adapter_setup=None, output_hidden_states=False, output_key=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.head = head
        self.adapter_setup = _setup_to_json(adapter_setup)
        encoder.check_setup(self.adapter_setup)
        self.output_hidden_states = output_hidden_states
        allowed = ["last_hidden_state", "pooler_output", "hidden_states", "fusion_attentions", "logits"]
        if output_key is not None and output_key not in allowed:
            raise ValueError(f"AdapterModel.output_key: got {output_key!r}; expected None or one of {allowed}.")
        if output_key == "logits" and head is None:
            raise ValueError("AdapterModel.output_key: got 'logits' but the model has no head.")
        self.output_key = output_key

    def build(self, input_shape=None):
        if not self.encoder.built:
            self.encoder.build()
        if self.head is not None and not self.head.built:
            h = self.encoder.hidden_size
            self.head.build((None, None, h), (None, h))
        self.built = True

    def call(self, inputs, training=None):
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
            encoder=keras.saving.serialize_keras_object(self.encoder),
            head=None if self.head is None else keras.saving.serialize_keras_object(self.head),
            adapter_setup=self.adapter_setup,
            output_hidden_states=self.output_hidden_states,
            output_key=self.output_key,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        if config.get("head") is not None:
            config["head"] = keras.saving.deserialize_keras_object(config["head"])
        return cls(**config)
