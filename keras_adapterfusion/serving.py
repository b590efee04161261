"""A client for models exported with `keras_adapterfusion.export` and served by TF Serving.

From raw text it builds TF Serving's REST request (`{"signature_name", "instances"}`)
and gRPC `PredictRequest` (needs `tensorflow-serving-api`: `pip install
keras-adapterfusion[serving]`), and turns responses back into labels.

Example:

```python
from keras_adapterfusion import serving

client = serving.ServingClient.from_export("export/sentiment/1")   # tokenizer + label_map from assets/
labels = client.predict_rest("http://localhost:8501", "sentiment", ["What a film!"])
body = client.rest_request(["What a film!"])                       # the JSON body, to send yourself
request = client.grpc_request(["What a film!"], model_name="sentiment")
labels = client.labels_from_grpc(stub.Predict(request, 10.0))
```
"""

import json
import os
import urllib.error
import urllib.request

import numpy as np

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class ServingError(RuntimeError):
    """The server answered with an error, or could not be reached."""


def _read_label_map(path):
    with open(path) as f:
        return json.load(f)


class ServingClient:
    """Turns text into TF Serving requests and responses into labels.

    Args:
        tokenizer: a `transformers` tokenizer (or a checkpoint directory for one).
        label_map: the `label_map.json` content the export wrote.
        max_length: truncation length.
    """

    def __init__(self, tokenizer, label_map, max_length=128):
        if isinstance(tokenizer, (str, os.PathLike)):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer))
        self.tokenizer = tokenizer
        self.label_map = label_map
        self.max_length = max_length

    @classmethod
    def from_export(cls, version_dir, max_length=128):
        """A client for the SavedModel in `version_dir`, using its `assets/`."""
        assets = os.path.join(os.fspath(version_dir), "assets")
        label_map_path = os.path.join(assets, "label_map.json")
        if not os.path.isfile(label_map_path):
            raise FileNotFoundError(f"{label_map_path}: missing; expected an export of keras_adapterfusion.")
        return cls(assets, _read_label_map(label_map_path), max_length)

    # ------------------------------------------------------------- requests
    def encode(self, texts):
        """Tokenize `texts` (strings or (text, pair) tuples) into int64 arrays padded to the longest."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError("serving: got no texts; expected at least one.")
        if all(isinstance(t, (tuple, list)) and len(t) == 2 for t in texts):
            first, second = [t[0] for t in texts], [t[1] for t in texts]
            batch = self.tokenizer(first, second, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="np")
        else:
            batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="np")
        out = {}
        for name in INPUT_NAMES:
            value = batch.get(name)
            out[name] = np.zeros_like(batch["input_ids"]) if value is None else value
        return {k: v.astype(np.int64) for k, v in out.items()}

    def rest_request(self, texts, signature_name="serving_default"):
        """The JSON body of TF Serving's REST predict API, in the row (`instances`) format."""
        arrays = self.encode(texts)
        n = arrays["input_ids"].shape[0]
        instances = [{k: arrays[k][i].tolist() for k in INPUT_NAMES} for i in range(n)]
        return {"signature_name": signature_name, "instances": instances}

    def grpc_request(self, texts, model_name, signature_name="serving_default", version=None):
        """A `tensorflow_serving.apis.predict_pb2.PredictRequest` for `texts`."""
        try:
            import tensorflow as tf
            from tensorflow_serving.apis import predict_pb2
        except ImportError as e:
            raise ImportError(
                "serving: the gRPC request needs tensorflow-serving-api; install keras-adapterfusion[serving]."
            ) from e
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature_name
        if version is not None:
            request.model_spec.version.value = int(version)
        for name, value in self.encode(texts).items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        return request

    # ------------------------------------------------------------ responses
    def _task(self, signature_name):
        signatures = self.label_map.get("signatures", {})
        task = signatures.get(signature_name, signature_name)
        if isinstance(task, list):
            raise ValueError(f"serving: signature {signature_name!r} serves several tasks; use labels_by_task.")
        if task not in self.label_map["tasks"]:
            raise ValueError(f"serving: unknown signature {signature_name!r}; expected one of {sorted(signatures)}.")
        return task

    def _labels(self, task, label_ids, probabilities):
        info = self.label_map["tasks"][task]
        names = info["labels"]
        if info["problem_type"] == "multi_label":
            return [[names[j] for j, on in enumerate(row) if on] for row in np.asarray(label_ids)]
        if info["problem_type"] == "regression":
            return [float(np.asarray(p).reshape(-1)[0]) for p in probabilities]
        return [names[int(i)] for i in np.asarray(label_ids).reshape(-1)]

    def labels_from_outputs(self, outputs, signature_name="serving_default", prefix=""):
        """Labels from a dict of output arrays (`label_ids`, `probabilities`)."""
        task = self._task(signature_name) if not prefix else prefix[:-1]
        return self._labels(task, outputs[prefix + "label_ids"], outputs[prefix + "probabilities"])

    def labels_from_rest(self, response, signature_name="serving_default"):
        """Labels from TF Serving's REST response (`{"predictions": [...]}`)."""
        if "error" in response:
            raise ServingError(f"serving: the server answered: {response['error']}")
        predictions = response["predictions"]
        if predictions and isinstance(predictions[0], dict):
            outputs = {k: [p[k] for p in predictions] for k in predictions[0]}
        else:
            raise ServingError("serving: expected 'predictions' as a list of output dicts (row format).")
        return self.labels_from_outputs(outputs, signature_name)

    def labels_from_grpc(self, response, signature_name="serving_default"):
        """Labels from a `PredictResponse`."""
        import tensorflow as tf

        outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
        return self.labels_from_outputs(outputs, signature_name)

    def labels_by_task(self, outputs):
        """For the `all_tasks` signature: dict task -> labels."""
        return {t: self.labels_from_outputs(outputs, prefix=f"{t}_") for t in self.label_map["tasks"]}

    # ----------------------------------------------------------------- REST
    def predict_rest(self, server_url, model_name, texts, signature_name="serving_default", version=None,
                     timeout=30.0):
        """POST `texts` to `{server_url}/v1/models/{model_name}[/versions/{v}]:predict`; return labels."""
        url = f"{server_url.rstrip('/')}/v1/models/{model_name}"
        if version is not None:
            url += f"/versions/{int(version)}"
        url += ":predict"
        body = json.dumps(self.rest_request(texts, signature_name)).encode()
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                response = json.loads(reply.read().decode())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            raise ServingError(f"serving: {url} answered HTTP {e.code}: {detail}") from e
        except (urllib.error.URLError, OSError) as e:
            raise ServingError(f"serving: cannot reach {url} ({e}).") from e
        return self.labels_from_rest(response, signature_name)
