"""ServingClient against misbehaving servers: it never hangs and never returns nonsense.

Each test runs a small HTTP server in-process on 127.0.0.1 (a `ThreadingHTTPServer`
in a daemon thread, port 0) that answers one way, and checks the client ends with
`ServingError` (or `ValueError` for the caller's own mistakes) naming what was wrong.
No model is needed; the tokenizer is MiniLM's.
"""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from keras_adapterfusion.errors import ServingError
from keras_adapterfusion.serving import ServingClient

pytestmark = pytest.mark.backend_independent  # no backend changes what it tests: the TensorFlow pass runs it

LABEL_MAP = {
    "tasks": {
        "sent": {"labels": ["neg", "pos"], "problem_type": "single_label"},
        "tags": {"labels": ["a", "b", "c"], "problem_type": "multi_label"},
        "score": {"labels": ["score"], "problem_type": "regression"},
    },
    "signatures": {"serving_default": "sent", "sent": "sent", "tags": "tags", "score": "score",
                   "all_tasks": ["sent", "tags", "score"]},
    "input_dtype": "int64",
}
TEXTS = ["What a film!", "Dreadful."]
GOOD = {"predictions": [{"label_ids": 1, "probabilities": [0.2, 0.8], "logits": [-1.0, 1.0]},
                        {"label_ids": 0, "probabilities": [0.9, 0.1], "logits": [2.0, -1.0]}]}
HTML = "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center>" \
       "<hr><center>nginx/1.25.3</center></body></html>"
PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")


@pytest.fixture(scope="module")
def client(minilm_path):
    return ServingClient(tokenizer=minilm_path, label_map=LABEL_MAP)


@pytest.fixture(autouse=True)
def _no_env_proxies(monkeypatch):
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def start_server(respond, started):
    """Start a server whose POST handler calls `respond(handler, request, stop)`; returns `(url, server)`."""
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            try:
                respond(self, json.loads(body) if body else None, stop)
            except OSError:
                pass  # the client hung up

        do_CONNECT = do_POST

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.requests = []
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    started.append((server, stop))
    return f"http://127.0.0.1:{server.server_address[1]}", server


def stop_servers(started):
    for server, stop in started:
        stop.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def serve():
    """`serve(respond)` starts a server (see `start_server`), stopped after the test."""
    started = []
    yield lambda respond: start_server(respond, started)
    stop_servers(started)


def reply(handler, status=200, body=b"", content_type="application/json", headers=()):
    data = body if isinstance(body, bytes) else body.encode()
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    for k, v in headers:
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(data)


def json_reply(obj, status=200):
    return lambda handler, request, stop: reply(handler, status, json.dumps(obj))


def text_reply(text, status=200, content_type="application/json"):
    return lambda handler, request, stop: reply(handler, status, text, content_type)


def predictions(*rows):
    return json_reply({"predictions": list(rows)})


def expect(call, fragments, error=ServingError, within=None):
    """Run `call`; it must raise `error` with every fragment in its message (within `within` seconds)."""
    start = time.monotonic()
    with pytest.raises(error) as info:
        call()
    elapsed = time.monotonic() - start
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    if within is not None:
        assert elapsed < within, (elapsed, message)
    return message, elapsed


# ------------------------------------------------------------------ timing
def test_drip_server_is_cut_at_the_deadline(client, serve):
    answer = json.dumps(GOOD).encode()
    head = f"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(answer)}\r\n\r\n".encode()

    def drip(handler, request, stop):
        for byte in head + answer:  # a valid reply, one byte every 0.3 s: 30+ s in all
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            if stop.wait(0.3):
                return

    url, _ = serve(drip)
    message, elapsed = expect(lambda: client.predict_rest(url, "m", TEXTS, timeout=1.0),
                              [f"{url}/v1/models/m:predict", "timed out", "timeout=1.0 s", "reading the reply"],
                              within=1.5)
    assert elapsed >= 0.9, elapsed


def test_server_that_never_answers(client, serve):
    url, _ = serve(lambda handler, request, stop: stop.wait(20))
    expect(lambda: client.predict_rest(url, "m", TEXTS, timeout=0.5),
           [f"{url}/v1/models/m:predict", "timed out", "timeout=0.5 s"], within=1.0)


def test_listener_that_never_accepts(client):
    with socket.socket() as sock:  # the kernel completes the handshake; nobody reads the request
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        expect(lambda: client.predict_rest(url, "m", TEXTS, timeout=0.5), [url, "timed out"], within=1.0)


def test_connection_refused(client):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
    url = f"http://127.0.0.1:{port}"
    expect(lambda: client.predict_rest(url, "m", TEXTS, timeout=2.0),
           [f"cannot reach {url}/v1/models/m:predict", "refused"], within=1.0)


def test_unknown_host(client):
    url = "http://no-such-host.invalid:8501"
    message, _ = expect(lambda: client.predict_rest(url, "m", TEXTS, timeout=1.0), [url], within=2.0)
    assert "cannot reach" in message or "timed out" in message, message


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), float("inf"), None, True, "5"])
def test_timeout_is_checked(client, timeout):
    expect(lambda: client.predict_rest("http://127.0.0.1:9", "m", TEXTS, timeout=timeout),
           [f"timeout={timeout!r}", "finite number of seconds > 0"], error=ValueError)


def test_bad_server_url(client):
    expect(lambda: client.predict_rest("ftp://127.0.0.1:9", "m", TEXTS, timeout=1.0),
           ["'ftp://127.0.0.1:9/v1/models/m:predict'", "expected http://host:port"], error=ValueError)


# -------------------------------------------------------------- bad replies
def _send_head_only(handler, request, stop):
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    handler.wfile.write(b'{"predictions": [')  # then hangs up


BAD_REPLIES = {
    "html_502": (text_reply(HTML, 502, "text/html"), ["HTTP 502: <html><head><title>502 Bad Gateway"]),
    "http_400_error_json": (json_reply({"error": "Serving signature name: \"x\" not found"}, 400),
                            ["HTTP 400: {\"error\": \"Serving signature name"]),
    "redirect": (lambda h, r, s: reply(h, 302, "moved", "text/plain", [("Location", "/elsewhere")]),
                 ["HTTP 302: moved"]),
    "html_200": (text_reply(HTML, 200, "text/html; charset=utf-8"),
                 ["HTTP 200", "Content-Type 'text/html; charset=utf-8'", "not JSON",
                  repr(HTML[:100] + "...")]),
    "empty_body": (text_reply("", 200), ["not JSON", "the body is empty"]),
    "not_utf8": (text_reply(b"\xff\xfe{}", 200), ["not JSON", "utf-8"]),
    "json_list": (json_reply([]), ["the JSON is a list ([])", "expected an object with 'predictions'"]),
    "error_200": (json_reply({"error": "Servable not found for request: Latest(m)"}),
                  ["the server answered with an error: Servable not found for request: Latest(m)"]),
    "no_predictions": (json_reply({"outputs": {"label_ids": [1, 0]}}),
                       ["no 'predictions' (found ['outputs'])", "columnar 'outputs' format"]),
    "predictions_not_list": (json_reply({"predictions": {"label_ids": [1, 0]}}),
                             ["'predictions' is {'label_ids': [1, 0]}", "list of output dicts"]),
    "predictions_empty": (json_reply({"predictions": []}), ["'predictions' is []"]),
    "predictions_not_dicts": (json_reply({"predictions": [[0.2, 0.8], [0.9, 0.1]]}),
                              ["predictions[0] is [0.2, 0.8]", "expected a dict output name -> value"]),
    "wrong_count": (predictions(GOOD["predictions"][0]), ["1 predictions for 2 texts sent"]),
    "too_many": (predictions(*GOOD["predictions"], GOOD["predictions"][0]), ["3 predictions for 2 texts sent"]),
    "label_id_too_big": (predictions({"label_ids": 5, "probabilities": [0.2, 0.8]},
                                     {"label_ids": 0, "probabilities": [0.9, 0.1]}),
                         ["label_ids[0] is 5, out of range", "0..1 of task 'sent' ['neg', 'pos']"]),
    "label_id_negative": (predictions({"label_ids": 1, "probabilities": [0.2, 0.8]},
                                      {"label_ids": -1, "probabilities": [0.9, 0.1]}),
                          ["label_ids[1] is -1, out of range"]),
    "label_id_fraction": (predictions({"label_ids": 1.5, "probabilities": [0.2, 0.8]},
                                      {"label_ids": 0, "probabilities": [0.9, 0.1]}),
                          ["label_ids[0] is 1.5, not an integer"]),
    "label_id_string": (predictions({"label_ids": "pos", "probabilities": [0.2, 0.8]},
                                    {"label_ids": "neg", "probabilities": [0.9, 0.1]}),
                        ["'label_ids' holds ['pos', 'neg']", "expected numbers"]),
    "nan_probabilities": (text_reply('{"predictions": [{"label_ids": 1, "probabilities": [0.2, 0.8]}, '
                                     '{"label_ids": 0, "probabilities": [NaN, 0.1]}]}'),
                          ["probabilities[1, 0] is nan", "expected finite numbers"]),
    "infinite_probabilities": (text_reply('{"predictions": [{"label_ids": 1, "probabilities": [0.2, Infinity]}, '
                                          '{"label_ids": 0, "probabilities": [0.9, 0.1]}]}'),
                               ["probabilities[0, 1] is inf"]),
    "probabilities_wrong_length": (predictions({"label_ids": 1, "probabilities": [0.1, 0.2, 0.7]},
                                               {"label_ids": 0, "probabilities": [0.5, 0.3, 0.2]}),
                                   ["'probabilities' has shape [2, 3]; expected [2, 2]"]),
    "probabilities_ragged": (predictions({"label_ids": 1, "probabilities": [0.2, 0.8]},
                                         {"label_ids": 0, "probabilities": [0.9]}),
                             ["'probabilities' is not a rectangular array of numbers"]),
    "missing_label_ids": (predictions({"probabilities": [0.2, 0.8]}, {"probabilities": [0.9, 0.1]}),
                          ["predictions[0] has no 'label_ids' output (found ['probabilities'])"]),
    "missing_probabilities_in_one_row": (predictions(GOOD["predictions"][0], {"label_ids": 0}),
                                         ["predictions[1] has no 'probabilities' output"]),
    "truncated_body": (_send_head_only, ["sent no valid HTTP reply", "IncompleteRead"]),
    "hang_up_without_reply": (lambda h, r, s: None, ["sent no valid HTTP reply", "RemoteDisconnected"]),
}


@pytest.mark.parametrize("case", sorted(BAD_REPLIES))
def test_bad_reply(client, serve, case):
    respond, fragments = BAD_REPLIES[case]
    url, server = serve(respond)
    message, _ = expect(lambda: client.predict_rest(url, "m", TEXTS, timeout=5.0), fragments, within=3.0)
    assert f"{url}/v1/models/m:predict" in message, message
    assert len(server.requests) == 1


def test_multi_label_rows_are_checked(client, serve):
    url, _ = serve(predictions({"label_ids": [1, 0], "probabilities": [0.9, 0.1]},
                               {"label_ids": [0, 1], "probabilities": [0.2, 0.7]}))
    expect(lambda: client.predict_rest(url, "m", TEXTS, "tags", timeout=5.0),
           ["'probabilities' has shape [2, 2]; expected [2, 3]", "task 'tags'"])
    url, _ = serve(predictions({"label_ids": [1, 0], "probabilities": [0.9, 0.1, 0.3]},
                               {"label_ids": [0, 1], "probabilities": [0.2, 0.7, 0.6]}))
    expect(lambda: client.predict_rest(url, "m", TEXTS, "tags", timeout=5.0),
           ["'label_ids' has shape [2, 2]; expected [2, 3], one 0/1 flag per label"])
    url, _ = serve(predictions({"label_ids": [1, 0, 2], "probabilities": [0.9, 0.1, 0.3]},
                               {"label_ids": [0, 1, 0], "probabilities": [0.2, 0.7, 0.6]}))
    expect(lambda: client.predict_rest(url, "m", TEXTS, "tags", timeout=5.0),
           ["label_ids[0, 2] is 2; expected 0 or 1"])


# ------------------------------------------------------------- good replies
def test_good_reply_gives_labels(client, serve):
    url, server = serve(predictions(*GOOD["predictions"]))
    assert client.predict_rest(url + "/", "m", TEXTS, version=3, timeout=5.0) == ["pos", "neg"]
    request = server.requests[0]
    assert request["path"] == "/v1/models/m/versions/3:predict"
    assert request["headers"]["Content-Type"] == "application/json"
    sent = json.loads(request["body"])
    assert sent["signature_name"] == "serving_default" and len(sent["instances"]) == 2


def test_good_chunked_reply_and_other_problem_types(client, serve):
    def chunked(handler, request, stop):
        data = json.dumps({"predictions": [{"label_ids": [1, 0, 1], "probabilities": [0.9, 0.1, 0.8]},
                                           {"label_ids": [0, 0, 0], "probabilities": [0.1, 0.2, 0.3]}]}).encode()
        handler.protocol_version = "HTTP/1.1"
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        for i in range(0, len(data), 7):
            piece = data[i:i + 7]
            handler.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        handler.wfile.write(b"0\r\n\r\n")

    url, _ = serve(chunked)
    assert client.predict_rest(url, "m", TEXTS, "tags", timeout=5.0) == [["a", "c"], []]
    url, _ = serve(predictions({"label_ids": 0, "probabilities": [0.25]}, {"label_ids": 0, "probabilities": [-3.5]}))
    assert client.predict_rest(url, "m", TEXTS, "score", timeout=5.0) == [0.25, -3.5]


# -------------------------------------------------------------------- proxies
def test_http_proxy_from_the_environment(client, serve, monkeypatch):
    url, server = serve(predictions(*GOOD["predictions"]))
    monkeypatch.setenv("http_proxy", url.replace("http://", "http://user:p%40ss@"))
    assert client.predict_rest("http://model-server.invalid:8501", "m", TEXTS, timeout=5.0) == ["pos", "neg"]
    request = server.requests[0]
    assert request["path"] == "http://model-server.invalid:8501/v1/models/m:predict"
    assert request["headers"]["Host"] == "model-server.invalid:8501"
    assert request["headers"]["Proxy-Authorization"] == "Basic dXNlcjpwQHNz"  # user:p@ss

    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing there, but bypassed:
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert client.predict_rest(url, "m", TEXTS, timeout=5.0) == ["pos", "neg"]


def test_https_proxy_that_refuses_the_tunnel(client, serve, monkeypatch):
    url, server = serve(lambda h, r, s: reply(h, 407, "", "text/plain"))
    monkeypatch.setenv("https_proxy", url)
    expect(lambda: client.predict_rest("https://model-server.invalid:8501", "m", TEXTS, timeout=5.0),
           ["cannot reach https://model-server.invalid:8501/v1/models/m:predict",
            "refused to tunnel to model-server.invalid:8501", "407"])
    assert server.requests[0]["path"] == "model-server.invalid:8501"


# ----------------------------------------------------- responses in Python
def test_labels_from_outputs_checks_arrays(client):
    good = {"label_ids": np.array([1, 0]), "probabilities": np.array([[0.2, 0.8], [0.9, 0.1]], np.float32)}
    assert client.labels_from_outputs(good) == ["pos", "neg"]
    assert client.labels_from_outputs(good, num_texts=2) == ["pos", "neg"]
    expect(lambda: client.labels_from_outputs(good, num_texts=3), ["'probabilities' has 2 rows for 3 texts sent"])
    expect(lambda: client.labels_from_outputs({**good, "label_ids": np.array([1, 2])}),
           ["the outputs: label_ids[1] is 2, out of range"])
    expect(lambda: client.labels_from_outputs({**good, "label_ids": np.array([1])}),
           ["'label_ids' has 1 rows but 'probabilities' has 2"])
    expect(lambda: client.labels_from_outputs({"label_ids": good["label_ids"]}),
           ["no 'probabilities' output for task 'sent' (found ['label_ids'])"])
    expect(lambda: client.labels_from_outputs(good, "nope"), ["unknown signature 'nope'"], error=ValueError)
    expect(lambda: client.labels_from_outputs(good, "all_tasks"), ["use labels_by_task"], error=ValueError)


def test_labels_by_task_checks_every_task(client):
    outputs = {"sent_label_ids": np.array([1]), "sent_probabilities": np.array([[0.1, 0.9]]),
               "tags_label_ids": np.array([[1, 1, 0]]), "tags_probabilities": np.array([[0.7, 0.6, 0.1]]),
               "score_label_ids": np.array([0]), "score_probabilities": np.array([[1.5]])}
    assert client.labels_by_task(outputs) == {"sent": ["pos"], "tags": [["a", "b"]], "score": [1.5]}
    outputs["score_probabilities"] = np.array([[np.nan]])
    expect(lambda: client.labels_by_task(outputs), ["score_probabilities[0, 0] is nan"])


def test_labels_from_rest_without_the_server(client):
    assert client.labels_from_rest(GOOD, num_texts=2) == ["pos", "neg"]
    expect(lambda: client.labels_from_rest(GOOD, num_texts=1), ["the REST response: 2 predictions for 1 texts sent"])
    expect(lambda: client.labels_from_rest("oops"), ["the REST response: the JSON is a str ('oops')"])


# --------------------------------------------------------------- label maps
def test_from_export_label_map_errors(tmp_path):
    version = tmp_path / "1"
    (version / "assets").mkdir(parents=True)
    path = version / "assets" / "label_map.json"
    expect(lambda: ServingClient.from_export(version), [str(path), "missing"], error=FileNotFoundError)
    path.write_text("{not json")
    expect(lambda: ServingClient.from_export(version), [str(path), "not valid JSON"])
    path.write_text(json.dumps({"signatures": {"serving_default": "sent"}}))
    expect(lambda: ServingClient.from_export(version), [str(path), "no 'tasks' field (found ['signatures'])"])
    path.write_text(json.dumps({"tasks": {"sent": {"labels": ["a"], "problem_type": "ranking"}}}))
    expect(lambda: ServingClient.from_export(version), [str(path), "'problem_type' is 'ranking'"])


def test_constructor_checks_the_label_map(minilm_path):
    expect(lambda: ServingClient(minilm_path, {"tasks": {"sent": {"problem_type": "single_label"}}}),
           ["label_map: task 'sent': 'labels' is None"], error=ValueError)


def test_serving_error_is_the_shared_class():
    from keras_adapterfusion import errors, serving

    assert serving.ServingError is errors.ServingError and issubclass(ServingError, RuntimeError)


# -------------------------------------------------------------------- gRPC
def _grpc_response(**outputs):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    for name, value in outputs.items():
        response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
    return response


@pytest.mark.tensorflow_only
def test_grpc_good_response(client):
    response = _grpc_response(label_ids=np.array([1, 0], np.int64),
                              probabilities=np.array([[0.2, 0.8], [0.9, 0.1]], np.float32),
                              logits=np.array([[-1, 1], [2, -1]], np.float32))
    assert client.labels_from_grpc(response) == ["pos", "neg"]
    assert client.labels_from_grpc(response, "sent", num_texts=2) == ["pos", "neg"]
    tags = _grpc_response(label_ids=np.array([[0, 1, 1]], np.int64), probabilities=np.array([[0.1, 0.6, 0.7]]))
    assert client.labels_from_grpc(tags, "tags") == [["b", "c"]]


@pytest.mark.tensorflow_only
def test_grpc_bad_responses(client):
    probs = np.array([[0.2, 0.8], [0.9, 0.1]], np.float32)
    expect(lambda: client.labels_from_grpc(_grpc_response(label_ids=np.array([1, 7], np.int64),
                                                          probabilities=probs)),
           ["the gRPC response: label_ids[1] is 7, out of range", "0..1 of task 'sent'"])
    expect(lambda: client.labels_from_grpc(_grpc_response(probabilities=probs)),
           ["the gRPC response: no 'label_ids' output for task 'sent' (found ['probabilities'])"])
    expect(lambda: client.labels_from_grpc(_grpc_response(label_ids=np.array([1, 0], np.int64),
                                                          probabilities=np.array([[np.nan, 1], [0, 1]]))),
           ["the gRPC response: probabilities[0, 0] is nan"])
    expect(lambda: client.labels_from_grpc(_grpc_response(label_ids=np.array([1, 0], np.int64),
                                                          probabilities=probs), num_texts=3),
           ["'probabilities' has 2 rows for 3 texts sent"])
    expect(lambda: client.labels_from_grpc({"label_ids": [1]}),
           ["the gRPC response is a dict; expected a PredictResponse"])
