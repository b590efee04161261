"""Export a trained model as a TF Serving SavedModel, then query the server over REST and gRPC.

    # 1. export a saved model (e.g. the .keras file offline_fusion.py writes)
    python examples/serve.py --model offline_fusion_output/stage2/fusion_model.keras \
        --tokenizer sentence-transformers/all-MiniLM-L6-v2 --export-dir export --model-name tweets

    # 2. start TF Serving on the export (the script prints these commands too)
    docker run -p 8501:8501 -p 8500:8500 -v "$PWD/export:/models" tensorflow/serving \
        --model_config_file=/models/models.docker.config

    # 3. query it: REST and gRPC, with token ids and (where the export has a raw-text signature) with raw text
    python examples/serve.py --query-only --export-dir export --model-name tweets \
        --rest http://localhost:8501 --grpc localhost:8500 --text "what a lovely day" --text "this is awful"

The export ships the encoder's own tokenizer (or `--tokenizer`) and the label
names. With a WordPiece or SentencePiece tokenizer and `tensorflow-text`
installed it also has `serving_text`, which tokenizes inside the graph, so a
client sends `{"signature_name": "serving_text", "instances": ["some text"]}`.
gRPC needs `tensorflow-serving-api` (`pip install keras-adapterfusion[serving]`).
`--smoke` exports a tiny untrained fusion model, runs it in this process with
`ServingClient.predict_local` and checks every request it would send; it starts
no server.
"""

import argparse
import json
import os
import urllib.request


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model", help="a saved .keras model (an AdapterModel with a head) to export")
    parser.add_argument("--tokenizer", default="auto",
                        help="checkpoint directory or cached hub id whose tokenizer to ship: the one the model "
                             "was trained with (default: the encoder's own, when the model knows it)")
    parser.add_argument("--export-dir", default="export", help="TF Serving's model base directory")
    parser.add_argument("--model-name", default="model", help="the name TF Serving serves the model under")
    parser.add_argument("--query-only", action="store_true", help="skip the export; query the latest version")
    parser.add_argument("--rest", metavar="URL", help="TF Serving's REST address, e.g. http://localhost:8501")
    parser.add_argument("--grpc", metavar="HOST:PORT", help="TF Serving's gRPC address, e.g. localhost:8500")
    parser.add_argument("--text", action="append", default=[], help="a text to classify (repeatable)")
    parser.add_argument("--smoke", action="store_true", help="export a tiny model and check the requests, "
                                                             "without a server")
    args = parser.parse_args(argv)
    if not args.smoke and not args.query_only and not args.model:
        parser.error("pass --model (a .keras file to export), or --query-only")
    if args.query_only and not (args.rest or args.grpc):
        parser.error("--query-only needs --rest or --grpc")
    return args


def latest_version(export_dir, model_name):
    model_dir = os.path.join(export_dir, model_name)
    versions = sorted(int(v) for v in os.listdir(model_dir) if v.isdigit()) if os.path.isdir(model_dir) else []
    if not versions:
        raise SystemExit(f"{model_dir}: holds no exported version; export first (--model).")
    return os.path.join(model_dir, str(versions[-1]))


def rest_text_body(texts):
    """REST body for the raw-text signature: the server tokenizes."""
    return {"signature_name": "serving_text", "instances": list(texts)}


def grpc_text_request(texts, model_name):
    """gRPC request for the raw-text signature."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = "serving_text"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(list(texts), dtype=tf.string))
    return request


def post_json(url, body, timeout=30.0):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())


def query(client, args, texts, has_text_signature):
    """Ask a running TF Serving over REST and gRPC; return {how: labels}."""
    answers = {}
    if args.rest:
        # Token ids: the client tokenizes with the exported tokenizer and maps label ids back to names.
        answers["REST, token ids"] = client.predict_rest(args.rest, args.model_name, texts)
        if has_text_signature:
            url = f"{args.rest.rstrip('/')}/v1/models/{args.model_name}:predict"
            reply = post_json(url, rest_text_body(texts))
            answers["REST, raw text"] = client.labels_from_rest(reply, "serving_text", len(texts))
    if args.grpc:
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(args.grpc))
        reply = stub.Predict(client.grpc_request(texts, model_name=args.model_name), 30.0)
        answers["gRPC, token ids"] = client.labels_from_grpc(reply, num_texts=len(texts))
        if has_text_signature:
            reply = stub.Predict(grpc_text_request(texts, args.model_name), 30.0)
            answers["gRPC, raw text"] = client.labels_from_grpc(reply, "serving_text", len(texts))
    return answers


def smoke_model(directory):
    """A tiny fusion model with a 2-label head, saved as .keras; returns the file, the model and its checkpoint."""
    import keras
    import numpy as np

    import keras_adapterfusion as kaf
    from _smoke import tiny_checkpoint
    from keras_adapterfusion.training import builders

    keras.utils.set_random_seed(0)
    checkpoint = tiny_checkpoint()
    encoder = kaf.load_encoder(checkpoint)
    for name in ("a", "b"):
        encoder.add_adapter(name, "seq_bn")
    model = builders.build_fusion_model(encoder, ["a", "b"], head=kaf.ClassificationHead(
        2, label_names=["negative", "positive"]))
    ids = np.array([[2, 50, 3]], "int32")
    model({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})  # build
    path = os.path.join(directory, "fusion_model.keras")
    model.save(path)
    return path, model, checkpoint


def main(argv=None):
    args = parse_args(argv)
    texts = args.text or ["what a lovely day", "this is awful"]
    keras_model = None
    if args.smoke:
        from _smoke import scratch_dir

        args.model, keras_model, args.tokenizer = smoke_model(scratch_dir())
        args.export_dir, args.model_name, args.rest, args.grpc = scratch_dir("export"), "tiny", None, None

    from keras_adapterfusion.serving import ServingClient

    if not args.query_only:
        import keras

        from keras_adapterfusion.serving.export import export_saved_model

        model = keras.saving.load_model(args.model)
        if args.tokenizer == "auto" and not getattr(model.encoder, "checkpoint", None):
            raise SystemExit("--tokenizer: a .keras file does not record the checkpoint its encoder came from; pass "
                             "--tokenizer with the checkpoint directory (or cached hub id) it was trained on.")
        version_dir = export_saved_model(model, args.export_dir, model_name=args.model_name, tokenizer=args.tokenizer)
        print(f"exported {args.model} to {version_dir}")
        print("serve it with one of:\n"
              f"  tensorflow_model_server --rest_api_port=8501 --port=8500 "
              f"--model_config_file={os.path.abspath(os.path.join(args.export_dir, 'models.config'))}\n"
              f"  docker run -p 8501:8501 -p 8500:8500 -v \"{os.path.abspath(args.export_dir)}:/models\" "
              "tensorflow/serving --model_config_file=/models/models.docker.config")
    version_dir = latest_version(args.export_dir, args.model_name)
    client = ServingClient.from_export(version_dir)  # the exported tokenizer and label names
    has_text_signature = "serving_text" in client.label_map.get("signatures", {})
    print("raw-text signature:", "serving_text" if has_text_signature else
          "none (a byte-level BPE tokenizer, or tensorflow-text not installed): token ids only")

    for how, labels in query(client, args, texts, has_text_signature).items():
        print(f"{how}: {labels}")

    if args.smoke:
        check_smoke(client, keras_model, texts, has_text_signature, version_dir)


def check_smoke(client, keras_model, texts, has_text_signature, version_dir):
    """Without a server: the SavedModel in this process, and the requests a client would send."""
    import numpy as np

    # The exported model agrees with the Keras model it came from.
    local = client.predict_local(texts)
    print("predict_local:", [(p["label"], round(p["probability"], 4)) for p in local])
    inputs = client.encode(texts)
    logits = np.asarray(keras_model(inputs), dtype=np.float64)
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    got = np.asarray([[p["probabilities"][n] for n in ("negative", "positive")] for p in local])
    assert np.allclose(got, expected, atol=1e-5), (got, expected)

    # REST, token ids: one instance per text, every input of the signature, the rows padded alike.
    body = client.rest_request(texts)
    assert body["signature_name"] == "serving_default" and len(body["instances"]) == len(texts)
    assert {len(i["input_ids"]) for i in body["instances"]} == {inputs["input_ids"].shape[1]}
    # gRPC, token ids: int64 tensors [texts, tokens].
    request = client.grpc_request(texts, model_name="tiny")
    assert request.model_spec.name == "tiny" and list(request.inputs["input_ids"].tensor_shape.dim)[0].size == 2
    # A server's REST reply is read back into the same labels (here built from the local outputs).
    reply = {"predictions": [{"label_ids": int(np.argmax(row)), "probabilities": row.tolist()} for row in got]}
    assert client.labels_from_rest(reply, num_texts=len(texts)) == [p["label"] for p in local]

    if has_text_signature:
        import tensorflow as tf

        assert rest_text_body(texts) == {"signature_name": "serving_text", "instances": texts}
        request = grpc_text_request(texts, "tiny")
        text_input = tf.make_ndarray(request.inputs["text"])
        # What the server would run on that request: the raw-text signature, tokenizing in the graph.
        loaded = tf.saved_model.load(version_dir)
        outputs = {k: v.numpy() for k, v in loaded.signatures["serving_text"](text=tf.constant(text_input)).items()}
        assert np.allclose(outputs["probabilities"], expected, atol=1e-5)
        assert client.labels_from_outputs(outputs, "serving_text") == [p["label"] for p in local]
    print("smoke OK")


if __name__ == "__main__":
    main()
