"""Invalid model inputs end in one clear `InputError`, wherever they are handed in; never in a number."""

import keras
import numpy as np
import pytest
from keras import ops

from conftest import BACKEND
from keras_adapterfusion import AdapterModel, ClassificationHead, InputError, TransformerEncoder
from keras_adapterfusion.training import builders

VOCAB, TYPES, POSITIONS = 50, 2, 12


def encoder(position_style="absolute", pad_token_id=0):
    enc = TransformerEncoder(vocab_size=VOCAB, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                             max_positions=POSITIONS, type_vocab_size=TYPES, hidden_dropout=0.0,
                             attention_dropout=0.0, position_style=position_style, pad_token_id=pad_token_id)
    enc.build()
    return enc


def good(b=2, t=6):
    ids = np.arange(1, b * t + 1, dtype="int32").reshape(b, t) % (VOCAB - 1) + 1
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def with_(**changes):
    x = good()
    x.update(changes)
    return x


BAD = [
    ("negative id", with_(input_ids=good()["input_ids"] * 0 - 1), r"input_ids: got -1 at \[0, 0\]; expected "
                                                                  r"integers in \[0, 50\)"),
    ("id = vocab", with_(input_ids=np.full((2, 6), VOCAB, "int32")), r"input_ids: got 50 at \[0, 0\]"),
    ("id >= 2**31", with_(input_ids=np.full((2, 6), 2**31 + 3, "int64")), r"input_ids: got 2147483651"),
    ("float ids", with_(input_ids=good()["input_ids"].astype("float32") + 0.5), r"input_ids: got float32 values; "
                                                                              r"expected integers"),
    ("token type 2", with_(token_type_ids=np.full((2, 6), 2, "int32")), r"token_type_ids: got 2 at \[0, 0\]; "
                                                                        r"expected integers in \[0, 2\)"),
    ("negative token type", with_(token_type_ids=np.full((2, 6), -1, "int32")), r"token_type_ids: got -1"),
    ("mask of another shape", with_(attention_mask=np.ones((2, 5), "int32")), r"attention_mask: got shape \[2, 5\]; "
                                                                              r"expected the shape of input_ids"),
    ("mask broadcastable", with_(attention_mask=np.ones((1, 6), "int32")), r"attention_mask: got shape \[1, 6\]"),
    ("mask value 2", with_(attention_mask=np.full((2, 6), 2, "int32")), r"attention_mask: got 2 at \[0, 0\]; "
                                                                        r"expected 0 \(padding\) or 1"),
    ("types of another shape", with_(token_type_ids=np.zeros((2, 7), "int32")), r"token_type_ids: got shape"),
    ("longer than the position table", {"input_ids": np.ones((1, POSITIONS + 1), "int32")},
     r"input_ids: got sequences of 13 tokens; the encoder position table holds 12"),
    ("rank 1", {"input_ids": np.ones(6, "int32")}, r"input_ids: got shape \[6\]; expected rank 2"),
    ("rank 3", {"input_ids": np.ones((2, 2, 6), "int32")}, r"input_ids: got shape \[2, 2, 6\]; expected rank 2"),
]
IDS = [case[0] for case in BAD]


@pytest.fixture
def model():
    enc = encoder()
    enc.add_adapter("a", "seq_bn")
    return builders.build_adapter_model(enc, "a", head=ClassificationHead(2, dropout=0.0))


@pytest.mark.parametrize("name, x, message", BAD, ids=IDS)
def test_eager_call_of_the_model_and_the_encoder(model, name, x, message):
    with pytest.raises(InputError, match=message):
        model(x)
    with pytest.raises(InputError, match=message):
        model.encoder(x, adapter_setup="a")


def _weights(model):
    return [ops.convert_to_numpy(v).copy() for v in model.trainable_weights]


def _unchanged(model, before):
    return all(np.array_equal(a, ops.convert_to_numpy(b)) for a, b in zip(before, model.trainable_weights))


@pytest.mark.parametrize("name, x, message", BAD, ids=IDS)
def test_fit_evaluate_predict_on_arrays(model, name, x, message):
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    y = np.zeros(len(x["input_ids"]), "int32")
    before = _weights(model)
    with pytest.raises(InputError, match=message):
        model.fit(x, y, epochs=1, verbose=0)
    assert _unchanged(model, before)  # no step ran on the bad batch
    with pytest.raises(InputError, match=message):
        model.evaluate(x, y, verbose=0)
    with pytest.raises(InputError, match=message):
        model.predict(x, verbose=0)
    with pytest.raises(InputError, match=message):
        model.train_on_batch(x, y)
    with pytest.raises(InputError, match=message):
        model.predict_on_batch(x)


@pytest.mark.parametrize("name, x, message", BAD[:2], ids=IDS[:2])
def test_validation_data_is_checked(model, name, x, message):
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(InputError, match=message):
        model.fit(good(), np.zeros(2, "int32"), validation_data=(x, np.zeros(len(x["input_ids"]), "int32")),
                  epochs=1, verbose=0)


DATASET_CASES = [case for case in BAD if case[0] in ("negative id", "id >= 2**31", "token type 2", "mask value 2",
                                                     "longer than the position table")]


def _batches(x, bad_at=1):
    """Two or three batches, the bad one at `bad_at` (second by default, after a step on the first)."""
    x = dict(x)
    x.setdefault("attention_mask", np.ones(x["input_ids"].shape, "int32"))
    x.setdefault("token_type_ids", np.zeros(x["input_ids"].shape, "int32"))
    batches = [(good(), np.zeros(2, "int32")), (good(), np.zeros(2, "int32"))]
    batches.insert(bad_at, (x, np.zeros(len(x["input_ids"]), "int32")))
    return batches


@pytest.mark.parametrize("name, x, message", DATASET_CASES, ids=[c[0] for c in DATASET_CASES])
def test_fit_and_predict_on_a_tf_data_dataset(model, name, x, message):
    tf = pytest.importorskip("tensorflow")
    batches = _batches(x)
    x = batches[1][0]

    def gen():
        yield from batches

    spec = ({k: tf.TensorSpec([None, None], tf.as_dtype(v.dtype)) for k, v in good().items()},
            tf.TensorSpec([None], tf.int32))
    spec[0]["input_ids"] = tf.TensorSpec([None, None], tf.as_dtype(x["input_ids"].dtype))
    ds = tf.data.Dataset.from_generator(gen, output_signature=spec)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(InputError, match=message.split(" at ")[0].split("; expected")[0]):
        model.fit(ds, epochs=1, verbose=0)
    with pytest.raises(InputError):
        model.predict(ds.map(lambda x, y: x), verbose=0)


@pytest.mark.parametrize("name, x, message", BAD[:4], ids=IDS[:4])
def test_fit_on_a_generator_and_a_pydataset(model, name, x, message):
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batches = _batches(x)

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return len(batches)

        def __getitem__(self, i):
            return batches[i]

    with pytest.raises(InputError, match=r"batch 1, " if "at \\[" in message else message):
        model.fit(Batches(), epochs=1, verbose=0)
    with pytest.raises(InputError, match=message.split(" at ")[0]):
        model.fit(iter(batches), epochs=1, steps_per_epoch=3, verbose=0)


def test_float_ids_in_a_tf_data_dataset_are_refused_before_any_step(model):
    tf = pytest.importorskip("tensorflow")
    x = dict(good(), input_ids=good()["input_ids"].astype("float32"))
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(2, "int32"))).batch(2)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(InputError, match="input_ids: got float32 values"):
        model.fit(ds, verbose=0)


def test_valid_inputs_still_work_everywhere(model):
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = good(), np.zeros(2, "int32")
    before = _weights(model)
    model.fit(x, y, epochs=1, verbose=0)
    assert not _unchanged(model, before)
    assert np.asarray(model.predict(x, verbose=0)).shape == (2, 2)
    bool_mask = dict(x, attention_mask=x["attention_mask"].astype(bool))
    np.testing.assert_allclose(ops.convert_to_numpy(model(bool_mask)), ops.convert_to_numpy(model(x)), atol=1e-6)
    assert np.asarray(model.predict({"input_ids": x["input_ids"]}, verbose=0)).shape == (2, 2)


def test_roberta_positions_count_non_padding_tokens():
    enc = encoder("roberta", pad_token_id=1)  # holds 12 - 1 - 1 = 10 non-padding tokens
    model = AdapterModel(enc, ClassificationHead(2), output_key="logits")
    ids = np.full((1, 15), 1, "int32")
    ids[0, :10] = 5
    model({"input_ids": ids})  # 10 tokens and 5 pads: fine
    ids[0, 10] = 5
    with pytest.raises(InputError, match=r"example \[0\] has 11 non-padding tokens; the encoder position table "
                                         r"holds 10"):
        model({"input_ids": ids})


def test_multitask_task_ids_are_checked():
    enc = encoder()
    model = builders.build_multitask_model(enc, {"a": 2, "b": 3})
    x = dict(good(), task_id=np.array([0, 2]))
    with pytest.raises(InputError, match=r"task_id: got 2 at \[1\]; expected integers in \[0, 2\)"):
        model(x)
    with pytest.raises(InputError, match=r"task_id: got 2"):
        model.predict(x, verbose=0)
    with pytest.raises(InputError, match=r"task_id: missing"):
        model.predict(good(), verbose=0)
    with pytest.raises(InputError, match=r"task_id: got 3 values for a batch of 2"):
        model(dict(good(), task_id=np.array([0, 1, 1])))


def test_symbolic_calls_are_not_checked():
    enc = encoder()
    sym = {"input_ids": keras.Input((None,), dtype="int32")}
    out = enc(sym)
    assert out["last_hidden_state"].shape == (None, None, 16)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.data inside fit on the TensorFlow backend")
def test_too_long_sequences_from_the_tokenization_pipeline(model):
    """A pipeline tokenized longer than the position table: one clear error, not a trace."""
    from keras_adapterfusion.tasks.pipeline import make_dataset

    encoded = {"input_ids": [np.arange(1, POSITIONS + 4, dtype="int32") % VOCAB] * 4}
    encoded["attention_mask"] = [np.ones_like(v) for v in encoded["input_ids"]]
    encoded["token_type_ids"] = [np.zeros_like(v) for v in encoded["input_ids"]]
    ds = make_dataset(encoded, np.zeros(4, "int64"), batch_size=2)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(InputError, match="got sequences of 15 tokens; the encoder position table holds 12 "
                                         r"\(tokenize with max_length <= 12\)"):
        model.fit(ds, verbose=0)
