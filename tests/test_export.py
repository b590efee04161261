"""SavedModel export for TF Serving: signatures, parity in a TensorFlow-only process, client, CLI, errors."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

from keras_adapterfusion.io.directories import MANIFEST
from conftest import TINY_BERT, base_shape, max_abs
from parity import float32_bound

# The exported graph runs the same float32 computation as the Keras model, but TensorFlow may fuse and
# order its ops otherwise (grappler), so outputs agree within float32 rounding: parity.float32_bound at
# the output's magnitude (1 for probabilities and attentions) for the tiny encoder's L blocks of width H.
LAYERS, HIDDEN = base_shape(TINY_BERT)


def rounding_bound(reference):
    """The float32 bound for an exported output against the Keras model's `reference` (see above)."""
    return float32_bound(float(np.max(np.abs(reference))), LAYERS, HIDDEN)


PROBABILITY_BOUND = float32_bound(1.0, LAYERS, HIDDEN)

pytestmark = pytest.mark.tensorflow_only

SCRIPTS = os.path.join(os.path.dirname(__file__), "scripts")
sys.path.insert(0, SCRIPTS)
WORDS = ("good great fine bad awful poor movie film plot actor story music very not the a an was is it "
         "and but this that with of to in").split()
TEXTS = ["the movie was very good", "an awful plot", "great music but a poor story", "it is fine"]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A WordPiece tokenizer whose ids fit tiny-bert's 1000-row vocabulary."""
    from transformers import BertTokenizerFast

    directory = tmp_path_factory.mktemp("tokenizer")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    vocab += [f"w{i}" for i in range(1000 - len(vocab))]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(str(directory))
    return str(directory)


@pytest.fixture(scope="module")
def models():
    from keras_adapterfusion import load_encoder
    from keras_adapterfusion.training import builders

    keras.utils.set_random_seed(3)
    encoder = load_encoder(TINY_BERT)
    builders.build_adapter_model(encoder, "a", num_labels=2)
    builders.build_adapter_model(encoder, "b", num_labels=2)
    fusion = builders.build_fusion_model(encoder, ["a", "b"], num_labels=3)
    single = builders.build_adapter_model(encoder, "a", num_labels=2)
    multi = builders.build_adapter_model(encoder, "b", head=__import__("keras_adapterfusion").heads.make_head(
        "multilabel", 4), name="tags")
    rng = np.random.default_rng(0)
    for v in encoder.adapter_weights("a") + encoder.adapter_weights("b") + encoder.fusion_weights(["a", "b"]):
        v.assign(ops.convert_to_numpy(v) + rng.normal(0, 0.3, v.shape).astype("float32"))
    for m in (fusion, single, multi):
        for v in m.head.weights:
            v.assign(rng.normal(0, 1.0, v.shape).astype("float32"))
    return {"fuse": fusion, "single": single, "tags": multi}


@pytest.fixture(scope="module")
def exported(models, tokenizer_dir, tmp_path_factory):
    from keras_adapterfusion.serving.export import export_saved_model

    export_dir = tmp_path_factory.mktemp("export")
    labels = {"fuse": ["neg", "neu", "pos"], "single": ["no", "yes"], "tags": ["w", "x", "y", "z"]}
    path = export_saved_model(models, str(export_dir), model_name="tasks", tokenizer=tokenizer_dir,
                              label_names=labels, include_fusion_attentions=True, text_signatures=True)
    return str(export_dir), path


def keras_inputs(tokenizer_dir, texts=TEXTS, pairs=None, max_length=None):
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(tokenizer_dir)(texts, pairs, padding=True, return_tensors="np",
                                                     truncation=max_length is not None, max_length=max_length)
    return {k: t[k].astype("int64") for k in ("input_ids", "attention_mask", "token_type_ids")}


def test_layout_assets_and_models_config(exported):
    export_dir, path = exported
    assert path == os.path.join(export_dir, "tasks", "1")
    assert sorted(os.listdir(path)) == [MANIFEST, "assets", "fingerprint.pb", "saved_model.pb", "variables"]
    assets = sorted(os.listdir(os.path.join(path, "assets")))
    assert "label_map.json" in assets and "vocab.txt" in assets and "tokenizer.json" in assets
    label_map = json.load(open(os.path.join(path, "assets", "label_map.json")))
    assert label_map["tasks"]["fuse"] == {"labels": ["neg", "neu", "pos"], "problem_type": "single_label",
                                          "text_pair": False}
    assert label_map["max_length"] == 128
    assert label_map["signatures"]["serving_default"] == "fuse"
    assert label_map["signatures"]["all_tasks"] == ["fuse", "single", "tags"]
    config = open(os.path.join(export_dir, "models.config")).read()
    assert f'base_path: "{os.path.abspath(export_dir)}/tasks"' in config and 'name: "tasks"' in config
    assert 'base_path: "/models/tasks"' in open(os.path.join(export_dir, "models.docker.config")).read()


def test_saved_model_cli_lists_signatures(exported):
    _, path = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    out = subprocess.run([cli, "show", "--all", "--dir", path], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    for sig in ("serving_default", "fuse", "single", "tags", "all_tasks"):
        assert f"signature_def['{sig}']" in text
    block = text.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert f"inputs['{name}'] tensor_info:\n        dtype: DT_INT64\n        shape: (-1, -1)" in block
    assert "outputs['logits'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 3)" in block
    assert "outputs['label_ids'] tensor_info:\n        dtype: DT_INT64\n        shape: (-1)" in block
    assert "outputs['fusion_attentions'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 2, -1, 2)" in block
    assert "Method name is: tensorflow/serving/predict" in block


def test_tensorflow_only_process_matches_keras(exported, models, tokenizer_dir, tmp_path):
    _, path = exported
    x = keras_inputs(tokenizer_dir)
    np.savez(tmp_path / "in.npz", **x)
    (tmp_path / "texts.json").write_text(json.dumps(TEXTS))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, os.path.join(SCRIPTS, "serve_saved_model.py"), path,
                           str(tmp_path / "in.npz"), str(tmp_path / "out.npz"), str(tmp_path / "texts.json")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["keras_adapterfusion_imported"] is False
    assert info["signatures"] == ["all_tasks", "all_tasks_text", "fuse", "fuse_text", "serving_default",
                                  "serving_text", "single", "single_text", "tags", "tags_text"]
    served = np.load(tmp_path / "out.npz")
    worst = 0.0
    for task, model in models.items():
        logits = ops.convert_to_numpy(model({k: v.astype("int32") for k, v in x.items()}))
        for sig, prefix in ((task, ""), ("all_tasks", f"{task}_")):
            worst = max(worst, max_abs(served[f"{sig}/{prefix}logits"], logits) / rounding_bound(logits))
        if model.head.problem_type == "single_label":
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            assert max_abs(served[f"{task}/probabilities"], probs) < PROBABILITY_BOUND
            np.testing.assert_array_equal(served[f"{task}/label_ids"], logits.argmax(-1))
        else:
            np.testing.assert_array_equal(served[f"{task}/label_ids"], (logits > 0).astype(int))
    assert worst < 1.0, f"largest error / bound {worst}"
    np.testing.assert_allclose(served["serving_default/logits"], served["fuse/logits"], atol=0)
    np.testing.assert_allclose(served["serving_text/logits"], served["serving_default/logits"],
                               atol=rounding_bound(served["serving_default/logits"]), rtol=0)
    attn = models["fuse"].encoder({k: v.astype("int32") for k, v in x.items()}, adapter_setup=["a", "b"])
    batch_first = np.transpose(ops.convert_to_numpy(attn["fusion_attentions"]), (1, 0, 2, 3))
    assert max_abs(served["fuse/fusion_attentions"], batch_first) < PROBABILITY_BOUND


def test_rest_and_grpc_requests_give_keras_labels(exported, models, tokenizer_dir):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from keras_adapterfusion.serving import ServingClient

    _, path = exported
    client = ServingClient.from_export(path)
    loaded = tf.saved_model.load(path)
    x = keras_inputs(tokenizer_dir)
    expected = {
        "fuse": [["neg", "neu", "pos"][i] for i in ops.convert_to_numpy(models["fuse"](x)).argmax(-1)],
        "single": [["no", "yes"][i] for i in ops.convert_to_numpy(models["single"](x)).argmax(-1)],
    }
    for signature, task in (("serving_default", "fuse"), ("single", "single")):
        body = client.rest_request(TEXTS, signature)
        assert body["signature_name"] == signature and len(body["instances"]) == len(TEXTS)
        assert set(body["instances"][0]) == {"input_ids", "attention_mask", "token_type_ids"}
        inputs = {k: tf.constant([inst[k] for inst in body["instances"]], tf.int64) for k in body["instances"][0]}
        outputs = {k: v.numpy() for k, v in loaded.signatures[signature](**inputs).items()}
        rest_response = {"predictions": [{k: v[i].tolist() for k, v in outputs.items()} for i in range(len(TEXTS))]}
        assert client.labels_from_rest(rest_response, signature) == expected[task]

        request = client.grpc_request(TEXTS, model_name="tasks", signature_name=signature, version=1)
        assert isinstance(request, predict_pb2.PredictRequest) and request.model_spec.version.value == 1
        grpc_inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        response = predict_pb2.PredictResponse()
        for k, v in loaded.signatures[signature](**grpc_inputs).items():
            response.outputs[k].CopyFrom(tf.make_tensor_proto(v.numpy()))
        assert client.labels_from_grpc(response, signature) == expected[task]

    outputs = {k: v.numpy() for k, v in loaded.signatures["all_tasks"](**x).items()}
    by_task = client.labels_by_task(outputs)
    assert by_task["fuse"] == expected["fuse"] and by_task["single"] == expected["single"]
    assert all(isinstance(row, list) for row in by_task["tags"])


def test_predict_cli_against_rest_server(exported, models, tokenizer_dir, capsys):
    from fake_tf_serving import serve

    from keras_adapterfusion.cli import main

    _, path = exported
    server, url = serve(path, "tasks")
    try:
        code = main(["predict", "--server", url, "--export", path, "--model-name", "tasks",
                     "--text", TEXTS[0], "--text", TEXTS[1]])
        out = capsys.readouterr().out.strip().splitlines()
        assert code == 0
        x = keras_inputs(tokenizer_dir, TEXTS[:2])
        logits = ops.convert_to_numpy(models["fuse"](x))
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        labels = [["neg", "neu", "pos"][i] for i in logits.argmax(-1)]
        assert out == [f"{labels[i]}\t{probs[i].max():.3f}\t{TEXTS[i]}" for i in range(2)]
        # The same without a server: the SavedModel runs in this process.
        assert main(["predict", "--export", path, "--text", TEXTS[0], "--text", TEXTS[1]]) == 0
        assert capsys.readouterr().out.strip().splitlines() == out

        code = main(["predict", "--server", url, "--export", path, "--model-name", "nope", "--text", "x"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "HTTP 404" in err[0]
    finally:
        server.shutdown()
    code = main(["predict", "--server", "http://127.0.0.1:9", "--export", path, "--text", "x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot reach" in err[0]


def test_export_cli_from_keras_file(models, tokenizer_dir, tmp_path, capsys):
    from keras_adapterfusion.cli import main

    models["fuse"].save(str(tmp_path / "fuse.keras"))
    code = main(["export", "--model", str(tmp_path / "fuse.keras"), "--export-dir", str(tmp_path / "serve"),
                 "--model-name", "fuse", "--tokenizer", tokenizer_dir, "--labels", "neg,neu,pos"])
    assert code == 0, capsys.readouterr().err
    assert os.path.isfile(tmp_path / "serve" / "fuse" / "1" / "saved_model.pb")
    code = main(["export", "--model", str(tmp_path / "fuse.keras"), "--export-dir", str(tmp_path / "serve"),
                 "--model-name", "fuse", "--version", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not empty" in err[0]
    code = main(["export", "--model", str(tmp_path / "missing.keras"), "--export-dir", str(tmp_path / "serve")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "missing.keras" in err[0]


def test_export_errors_and_atomicity(models, tmp_path, monkeypatch):
    from keras_adapterfusion import AdapterModel
    from keras_adapterfusion.serving.export import ExportError, export_saved_model

    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ExportError, match="not built"):
        export_saved_model(unbuilt, str(tmp_path))
    headless = AdapterModel(models["fuse"].encoder, None, adapter_setup=["a", "b"])
    with pytest.raises(ExportError, match="has no head"):
        export_saved_model(headless, str(tmp_path))
    (tmp_path / "m" / "3").mkdir(parents=True)
    (tmp_path / "m" / "3" / "keep.txt").write_text("x")
    with pytest.raises(ExportError, match="not empty"):
        export_saved_model(models["fuse"], str(tmp_path), model_name="m", version=3)
    with pytest.raises(ExportError, match="label names"):
        export_saved_model(models["fuse"], str(tmp_path), model_name="m", label_names=["a", "b"])
    for bad in ("..", ".", "", "a/b", "../escape"):
        with pytest.raises(ExportError, match="model_name"):
            export_saved_model(models["fuse"], str(tmp_path), model_name=bad)
    from conftest import minilm_dir

    with pytest.raises(ExportError, match="the tokenizer has 30522 tokens but the encoder vocabulary holds 1000"):
        export_saved_model(models["fuse"], str(tmp_path), model_name="m", tokenizer=minilm_dir())

    import shutil

    def broken_copy(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfile", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        export_saved_model(models["fuse"], str(tmp_path), model_name="m", version=4, tokenizer=TINY_BERT)
    assert sorted(os.listdir(tmp_path / "m")) == ["3"]
    assert (tmp_path / "m" / "3" / "keep.txt").read_text() == "x"


@pytest.mark.parametrize("change, message", [
    (lambda x: x.update(input_ids=x["input_ids"] * 0 + 1000), "input_ids: got 1000; expected integers in [0, 1000)"),
    (lambda x: x.update(input_ids=x["input_ids"] * 0 - 1), "input_ids: got -1"),
    (lambda x: x.update(token_type_ids=x["token_type_ids"] + 2), "token_type_ids: got 2; expected integers in [0, 2)"),
    (lambda x: x.update(attention_mask=x["attention_mask"][:, :-1]), "attention_mask: got shape"),
    (lambda x: x.update(attention_mask=x["attention_mask"] * 3), "attention_mask: got 3"),
    (lambda x: x.update(**{k: np.ones((1, 600), "int64") for k in ("input_ids", "attention_mask",
                                                                     "token_type_ids")}),
     "input_ids: got sequences of 600 tokens; the encoder position table holds 130"),
])
def test_every_signature_refuses_invalid_inputs(exported, tokenizer_dir, change, message):
    """In the SavedModel itself, so TF Serving answers INVALID_ARGUMENT with the same message."""
    import tensorflow as tf

    from keras_adapterfusion.inputs import input_error_from

    _, path = exported
    loaded = tf.saved_model.load(path)
    x = keras_inputs(tokenizer_dir)
    change(x)
    for signature in ("serving_default", "single", "tags", "all_tasks"):
        with pytest.raises(tf.errors.InvalidArgumentError) as e:
            loaded.signatures[signature](**{k: tf.constant(v) for k, v in x.items()})
        assert message in str(input_error_from(e.value)), (signature, e.value.message[:300])


def test_rest_server_answers_invalid_argument(exported, tokenizer_dir):
    from fake_tf_serving import serve

    from keras_adapterfusion.errors import ServingError
    from keras_adapterfusion.serving import ServingClient

    _, path = exported
    server, url = serve(path, "tasks")
    try:
        client = ServingClient.from_export(path)
        body = client.rest_request(TEXTS)
        body["instances"][0]["input_ids"][1] = 5000
        import urllib.request

        request = urllib.request.Request(f"{url}/v1/models/tasks:predict", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(request, timeout=30)
        assert e.value.code == 400 and "input_ids: got 5000" in e.value.read().decode()
    finally:
        server.shutdown()


def test_raw_text_signatures_equal_the_token_id_signatures(exported, tokenizer_dir):
    """`{"instances": ["some text"]}`: tokenized inside the SavedModel like the Python tokenizer."""
    import tensorflow as tf

    _, path = exported
    loaded = tf.saved_model.load(path)
    assert {"serving_text", "fuse_text", "single_text", "tags_text", "all_tasks_text"} <= set(loaded.signatures)
    x = keras_inputs(tokenizer_dir)
    for ids_signature, text_signature in (("serving_default", "serving_text"), ("single", "single_text"),
                                          ("all_tasks", "all_tasks_text")):
        by_ids = loaded.signatures[ids_signature](**{k: tf.constant(v) for k, v in x.items()})
        by_text = loaded.signatures[text_signature](text=tf.constant(TEXTS))
        assert set(by_ids) == set(by_text)
        for key in by_ids:
            np.testing.assert_allclose(by_text[key].numpy(), by_ids[key].numpy(), rtol=0,
                                       atol=rounding_bound(by_ids[key].numpy()))
    label_map = json.load(open(os.path.join(path, "assets", "label_map.json")))
    assert label_map["signatures"]["serving_text"] == "fuse" and label_map["tokenizer"] == tokenizer_dir


def test_each_weight_is_written_once(exported, models):
    """The variables file holds the parameters once (it held them twice: Keras's tracked copy and the
    endpoints' own)."""
    _, path = exported
    encoder = models["fuse"].encoder
    weights = {id(v): v for m in models.values() for v in m.weights}
    parameter_bytes = sum(int(np.prod(v.shape)) * 4 for v in weights.values())
    variables = os.path.join(path, "variables")
    written = sum(os.path.getsize(os.path.join(variables, f)) for f in os.listdir(variables) if "data" in f)
    assert abs(written - parameter_bytes) / parameter_bytes < 0.03, (written, parameter_bytes)
    assert encoder.weights  # the shared encoder is in the count once


def test_export_takes_the_encoders_own_tokenizer(models, tmp_path):
    """With no tokenizer given, the encoder's checkpoint tokenizer goes into assets/ (and is recorded)."""
    from conftest import minilm_dir

    from keras_adapterfusion import load_encoder
    from keras_adapterfusion.training import builders
    from keras_adapterfusion.serving.export import export_saved_model

    encoder = load_encoder(minilm_dir())
    model = builders.build_head_only_model(encoder, num_labels=2)
    path = export_saved_model(model, str(tmp_path), model_name="m", text_signatures=False)
    label_map = json.load(open(os.path.join(path, "assets", "label_map.json")))
    assert label_map["tokenizer"] == minilm_dir()
    assert {"vocab.txt", "tokenizer.json"} <= set(os.listdir(os.path.join(path, "assets")))
    # a model saved as .keras and loaded again still knows its checkpoint, so its export ships the tokenizer too
    import keras

    model.save(str(tmp_path / "m.keras"))
    loaded = keras.models.load_model(str(tmp_path / "m.keras"))
    assert loaded.encoder.checkpoint == minilm_dir()
    path = export_saved_model(loaded, str(tmp_path), model_name="loaded", text_signatures=False)
    assert json.load(open(os.path.join(path, "assets", "label_map.json")))["tokenizer"] == minilm_dir()
    assert {"vocab.txt", "tokenizer.json"} <= set(os.listdir(os.path.join(path, "assets")))


PAIRS = [("the movie was very good", "it is fine"), ("an awful plot", "a great story with music and a very good "
                                                                      "actor in it"), ("it", "")]


def test_default_export_loads_in_a_process_that_imports_only_tensorflow(models, tokenizer_dir, tmp_path):
    """No raw-text signatures by default, so no TensorFlow Text ops: `tf.saved_model.load` alone runs it
    (Triton's TensorFlow backend, TF Serving builds without TF Text, a plain Python service)."""
    from keras_adapterfusion.serving.export import export_saved_model

    path = export_saved_model(models["single"], str(tmp_path / "export"), model_name="plain",
                              tokenizer=tokenizer_dir)
    label_map = json.load(open(os.path.join(path, "assets", "label_map.json")))
    assert sorted(label_map["signatures"]) == ["serving_default"]
    x = keras_inputs(tokenizer_dir)
    np.savez(tmp_path / "in.npz", **x)
    done = subprocess.run([sys.executable, os.path.join(SCRIPTS, "serve_saved_model.py"), path,
                           str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["signatures"] == ["serving_default"]
    assert not info["tensorflow_text_imported"] and not info["keras_adapterfusion_imported"]
    logits = ops.convert_to_numpy(models["single"]({k: v.astype("int32") for k, v in x.items()}))
    assert max_abs(np.load(tmp_path / "out.npz")["serving_default/logits"], logits) < rounding_bound(logits)


def test_pair_export_records_the_layout_and_its_raw_text_signature_takes_two_texts(models, tokenizer_dir, tmp_path):
    """A pair model's raw-text signature takes `text` and `text_pair`, tokenized as the Python tokenizer
    tokenizes a pair (truncated longest-first to the recorded max_length), and refuses a single text."""
    import tensorflow as tf

    from keras_adapterfusion.serving.export import export_saved_model

    path = export_saved_model(models["single"], str(tmp_path), model_name="nli", tokenizer=tokenizer_dir,
                              text_signatures=True, text_pairs=True, max_length=12)
    label_map = json.load(open(os.path.join(path, "assets", "label_map.json")))
    assert label_map["tasks"]["default"]["text_pair"] is True and label_map["max_length"] == 12
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_text"]
    assert sorted(signature.structured_input_signature[1]) == ["text", "text_pair"]
    by_text = signature(text=tf.constant([a for a, _ in PAIRS]), text_pair=tf.constant([b for _, b in PAIRS]))
    x = keras_inputs(tokenizer_dir, [a for a, _ in PAIRS], [b for _, b in PAIRS], max_length=12)
    assert x["input_ids"].shape[1] == 12 and x["token_type_ids"].max() == 1
    by_ids = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in x.items()})
    np.testing.assert_array_equal(by_text["label_ids"].numpy(), by_ids["label_ids"].numpy())
    np.testing.assert_allclose(by_text["logits"].numpy(), by_ids["logits"].numpy(), rtol=0,
                               atol=rounding_bound(by_ids["logits"].numpy()))
    with pytest.raises(TypeError):
        signature(text=tf.constant(["only one text"]))


def test_text_pairs_per_task_and_all_tasks_text_only_when_they_agree(models, tokenizer_dir, tmp_path):
    from keras_adapterfusion.serving.export import ExportError, export_saved_model

    pair = {"fuse": models["fuse"], "single": models["single"]}
    path = export_saved_model(pair, str(tmp_path), model_name="mixed", tokenizer=tokenizer_dir,
                              text_signatures=True, text_pairs={"single": True})
    label_map = json.load(open(os.path.join(path, "assets", "label_map.json")))
    assert {t: v["text_pair"] for t, v in label_map["tasks"].items()} == {"fuse": False, "single": True}
    assert {"serving_text", "fuse_text", "single_text"} <= set(label_map["signatures"])
    assert "all_tasks_text" not in label_map["signatures"] and "all_tasks" in label_map["signatures"]
    with pytest.raises(ExportError, match=r"text_pairs names tasks \['nope'\]"):
        export_saved_model(pair, str(tmp_path), model_name="x", text_pairs={"nope": True})
    with pytest.raises(ExportError, match="text_pairs for task 'default' is 'yes'; expected True or False"):
        export_saved_model(models["single"], str(tmp_path), model_name="x", text_pairs="yes")
    with pytest.raises(ExportError, match="max_length 2; expected an int >= 4"):
        export_saved_model(models["single"], str(tmp_path), model_name="x", max_length=2)


USER_CONFIG = """# my own TF Serving config
model_config_list {
  config {
    name: "elsewhere"  # served from another disk
    base_path: "/srv/models/elsewhere"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 3 } }
  }
}
"""


def test_a_users_models_config_is_merged_never_overwritten(models, tokenizer_dir, tmp_path):
    from keras_adapterfusion.serving.export import export_saved_model, parse_models_config

    export_dir = tmp_path / "serve"
    export_dir.mkdir()
    (export_dir / "models.config").write_text(USER_CONFIG)
    export_saved_model(models["single"], str(export_dir), model_name="one", tokenizer=tokenizer_dir)
    merged = (export_dir / "models.config").read_text()
    assert merged.startswith(USER_CONFIG[:USER_CONFIG.rindex("}")])  # the user's text, byte for byte
    assert parse_models_config(merged, "merged")[0] == ["elsewhere", "one"]
    assert f'base_path: "{os.path.abspath(export_dir)}/one"' in merged
    # a second model is merged in as well; the user's entries still as written; no duplicate
    export_saved_model(models["single"], str(export_dir), model_name="two", tokenizer=tokenizer_dir)
    export_saved_model(models["single"], str(export_dir), model_name="one", tokenizer=tokenizer_dir)
    again = (export_dir / "models.config").read_text()
    assert parse_models_config(again, "again")[0] == ["elsewhere", "one", "two"]
    assert "served from another disk" in again and "versions: 3" in again
    # the docker config is the package's own: rewritten whole, every model under /models
    docker = (export_dir / "models.docker.config").read_text()
    assert parse_models_config(docker, "docker")[0] == ["one", "two"] and "/srv" not in docker


def test_a_models_config_it_cannot_read_is_refused_before_anything_is_written(models, tokenizer_dir, tmp_path):
    from keras_adapterfusion.serving.export import ExportError, export_saved_model

    export_dir = tmp_path / "serve"
    export_dir.mkdir()
    (export_dir / "models.docker.config").write_text("not a config at all\n")
    with pytest.raises(ExportError, match=r"models.docker.config: starts with 'not'.*not this package's; not "
                                          r"replacing it.*--no-models-config"):
        export_saved_model(models["single"], str(export_dir), model_name="one", tokenizer=tokenizer_dir)
    assert sorted(os.listdir(export_dir)) == ["models.docker.config"]  # no SavedModel, no other file
    assert (export_dir / "models.docker.config").read_text() == "not a config at all\n"
    path = export_saved_model(models["single"], str(export_dir), model_name="one", tokenizer=tokenizer_dir,
                              write_models_config=False)
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    assert sorted(os.listdir(export_dir)) == ["models.docker.config", "one"]


def test_the_packages_own_models_config_is_rewritten_and_an_edited_one_is_the_users(models, tokenizer_dir,
                                                                                   tmp_path):
    from keras_adapterfusion.serving.export import export_saved_model, parse_models_config
    from keras_adapterfusion.io import own_file

    export_dir = tmp_path / "serve"
    export_saved_model(models["single"], str(export_dir), model_name="one", tokenizer=tokenizer_dir)
    config = export_dir / "models.config"
    assert own_file(config)
    config.write_text(config.read_text().replace('model_platform: "tensorflow"',
                                                 'model_platform: "tensorflow"\n    # edited by hand'))
    assert not own_file(config)
    export_saved_model(models["single"], str(export_dir), model_name="two", tokenizer=tokenizer_dir)
    text = config.read_text()
    assert "# edited by hand" in text and parse_models_config(text, "c")[0] == ["one", "two"]
    assert not own_file(config)  # merged: still the user's
    assert own_file(export_dir / "models.docker.config")


def test_all_tasks_runs_a_fusion_and_its_adapters_in_one_encoder_pass(models, tmp_path, monkeypatch):
    """adapters issue #268 in the export: `all_tasks` runs the tasks' setups as one parallel pass."""
    from keras_adapterfusion import AdapterSetup, TransformerEncoder
    from keras_adapterfusion.serving.export import export_saved_model

    calls = []
    original = TransformerEncoder.__call__

    def record(self, inputs, adapter_setup=None, **kwargs):
        calls.append(AdapterSetup.parse(adapter_setup))
        return original(self, inputs, adapter_setup=adapter_setup, **kwargs)

    monkeypatch.setattr(TransformerEncoder, "__call__", record)
    export_saved_model(models, str(tmp_path), model_name="tasks", tokenizer=None)
    parallel = AdapterSetup.parallel([AdapterSetup.fuse(["a", "b"]), "a", "b"])
    # Each trace of the signatures: serving_default and fuse run the fusion, single and tags their adapters,
    # and all_tasks one encoder call, the three setups in parallel (Keras traces each signature twice).
    fuse, a, b = AdapterSetup.fuse(["a", "b"]), AdapterSetup.single("a"), AdapterSetup.single("b")
    assert calls and calls == [fuse, fuse, a, b, parallel] * (len(calls) // 5), [str(c) for c in calls]


@pytest.mark.parametrize("config", ["lora", "par_bn", "lora_merged"])
def test_lora_and_parallel_adapter_models_export(config, tmp_path):
    """A LoRA (unmerged and merged) and a parallel adapter export and serve what Keras computes."""
    import tensorflow as tf

    from keras_adapterfusion import load_encoder
    from keras_adapterfusion.serving.export import export_saved_model
    from keras_adapterfusion.training import builders

    encoder = load_encoder(TINY_BERT)
    model = builders.build_adapter_model(encoder, "task", num_labels=3, adapter_config="lora" if config.startswith("lora") else config)
    rng = np.random.default_rng(5)
    for v in encoder.adapter_weights("task") + model.head.weights:
        v.assign(rng.normal(0, 0.3, v.shape).astype("float32"))
    if config == "lora_merged":
        encoder.merge_lora("task")
    path = export_saved_model(model, str(tmp_path), model_name="m", tokenizer=None)
    x = {"input_ids": rng.integers(5, 1000, (2, 7)).astype("int64"), "attention_mask": np.ones((2, 7), "int64"),
         "token_type_ids": np.zeros((2, 7), "int64")}
    served = tf.saved_model.load(path).signatures["serving_default"](**{k: tf.constant(v) for k, v in x.items()})
    logits = ops.convert_to_numpy(model({k: v.astype("int32") for k, v in x.items()}))
    assert max_abs(served["logits"].numpy(), logits) < rounding_bound(logits)
