"""Every supported model type through the stage builders and a `.keras` round trip (TensorFlow and JAX).

Numbers against the references live beside the other parity tests: hidden states in tests/test_backbones.py,
adapters and fusion in tests/test_adapterhub.py (reference variants written by `adapters` on each tiny model),
one training step in tests/test_training_parity.py, the tokenizers in tests/test_graph_tokenizers.py and the
command line in tests/test_cli.py. This file checks what each model type must also do: each stage trains
exactly its own weights, and a model saved and loaded gives the same outputs.
"""

import os

import keras
import numpy as np
import pytest
from keras import ops

from conftest import BACKBONES, max_abs
from keras_adapterfusion import builders, load_encoder

TYPES = ["tiny-bert", "tiny-roberta", "tiny-distilbert", "tiny-electra", "tiny-albert", "tiny-deberta-v2"]


def batch(encoder, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, encoder.vocab_size, (3, 7)).astype("int32")
    mask = np.ones((3, 7), "int32")
    mask[1, 5:] = 0
    ids[mask == 0] = encoder.pad_token_id
    x = {"input_ids": ids, "attention_mask": mask}
    if encoder.type_vocab_size:
        x["token_type_ids"] = np.zeros_like(ids)
    return x


def pretrained_count(encoder):
    return sum(int(np.prod(v.shape)) for layer in encoder.input_layers() for v in layer.weights) + sum(
        int(np.prod(v.shape)) for b in encoder.blocks for layer in b.base_layers() for v in layer.weights)


@pytest.mark.parametrize("name", TYPES)
def test_each_stage_trains_its_own_weights_and_round_trips(name, tmp_path):
    encoder = load_encoder(os.path.join(BACKBONES, name), hidden_dropout=0.0, attention_dropout=0.0)
    x = batch(encoder)
    plain = ops.convert_to_numpy(encoder(x)["last_hidden_state"])
    first = builders.build_adapter_model(encoder, "a", num_labels=2)
    builders.build_adapter_model(encoder, "b", num_labels=2)
    fusion = builders.build_fusion_model(encoder, ["a", "b"], num_labels=3)
    full = builders.build_full_finetune_model(load_encoder(os.path.join(BACKBONES, name)), num_labels=2)
    # Stage 1 trains one adapter and its head; stage 2 the fusion and its head; full fine-tuning all of the
    # encoder (ELECTRA's embedding projection included).
    for model, owned in ((first, encoder.adapter_weights("a")), (fusion, encoder.fusion_weights(["a", "b"]))):
        head = [v for layer in model.head_layers() for v in layer.weights]
        assert {id(v) for v in model.trainable_weights} == {id(v) for v in owned + head}, model.name
    full_encoder = full.encoder
    assert sum(int(np.prod(v.shape)) for v in full.trainable_weights) >= pretrained_count(full_encoder)
    if full_encoder.embedding_projection is not None:
        assert {id(v) for v in full_encoder.embedding_projection.weights} <= {id(v) for v in full.trainable_weights}
    # Adapters start near identity: the fused encoder is not far from the plain one, and not equal to it
    # once the adapters have moved.
    for v in encoder.adapter_weights("a") + encoder.adapter_weights("b"):
        v.assign(v + np.random.default_rng(1).normal(0, 0.2, tuple(v.shape)).astype("float32"))
    fused = ops.convert_to_numpy(encoder(x, adapter_setup=["a", "b"])["last_hidden_state"])
    assert fused.shape == plain.shape and max_abs(fused, plain) > 1e-3
    expected = ops.convert_to_numpy(fusion(x))
    path = str(tmp_path / "fusion.keras")
    fusion.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.encoder.model_type == encoder.model_type
    assert (loaded.encoder.type_vocab_size, loaded.encoder.embedding_size) == (
        encoder.type_vocab_size, encoder.embedding_size)
    assert max_abs(loaded(x), expected) == 0.0
    assert len(loaded.trainable_weights) == len(fusion.trainable_weights)


@pytest.mark.parametrize("name", ["tiny-distilbert", "tiny-deberta-v2"])
def test_pair_segment_ids_are_ignored_without_a_token_type_table(name):
    """A tokenizer gives a pair's second text token type 1 (DeBERTa's does); an encoder without a token-type
    table accepts it and ignores it, as `transformers` does, and still refuses other values."""
    from keras_adapterfusion import InputError

    encoder = load_encoder(os.path.join(BACKBONES, name))
    assert encoder.type_vocab_size == 0
    x = batch(encoder)
    types = np.zeros_like(x["input_ids"])
    types[:, 4:] = 1
    plain = ops.convert_to_numpy(encoder(x)["last_hidden_state"])
    paired = ops.convert_to_numpy(encoder({**x, "token_type_ids": types})["last_hidden_state"])
    assert max_abs(plain, paired) == 0.0
    with pytest.raises(InputError, match="token_type_ids"):
        encoder({**x, "token_type_ids": types * 2})
