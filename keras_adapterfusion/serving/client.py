"""A client for models exported with `keras_adapterfusion.serving.export` and served by TF Serving.

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

Every failure of the server, or of the way to it, ends in `ServingError`
(`keras_adapterfusion.errors.ServingError`, importable from here too) with a message
that names the URL (or the response) and what was wrong: unreachable, timed out
(`predict_rest`'s `timeout` bounds the whole request: connecting, sending and
reading the full reply), an HTTP error, a body that is not JSON, or JSON that is
not what an export of this package answers (missing outputs, the wrong number
of rows, label ids outside the label map, probabilities that are not finite or
have the wrong width).
"""

import json
import os
import urllib.parse
import urllib.request
from collections.abc import Mapping

import numpy as np

from keras_adapterfusion.errors import ServingError
from keras_adapterfusion.serving.http import check_timeout, json_reply, post

__all__ = ["INPUT_NAMES", "PROBLEM_TYPES", "ServingClient", "ServingError", "expects_pairs"]

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
PROBLEM_TYPES = ("single_label", "multi_label", "regression", "multiple_choice")

_HTTP_DETAIL = 500  # characters of an HTTP error body quoted in the message


# ------------------------------------------------------------------ label map
def _check_label_map(label_map, source, error):
    """Raise `error` naming `source` unless `label_map` has the shape `export` writes."""

    def fail(what):
        raise error(f"serving: {source}: {what}")

    expected = ("expected {\"tasks\": {task: {\"labels\": [...], \"problem_type\": ...}}, "
                "as keras_adapterfusion.serving.export writes it")
    if not isinstance(label_map, Mapping):
        fail(f"the label map is a {type(label_map).__name__}; {expected}.")
    if "tasks" not in label_map:
        fail(f"no 'tasks' field (found {sorted(label_map)}); {expected}.")
    tasks = label_map["tasks"]
    if not isinstance(tasks, Mapping) or not tasks:
        fail(f"'tasks' is {tasks!r}; {expected}.")
    for task, info in tasks.items():
        if not isinstance(info, Mapping):
            fail(f"task {task!r} is {info!r}; {expected}.")
        labels, problem = info.get("labels"), info.get("problem_type")
        if not isinstance(labels, list):
            fail(f"task {task!r}: 'labels' is {labels!r}; expected a list of label names.")
        if problem not in PROBLEM_TYPES:
            fail(f"task {task!r}: 'problem_type' is {problem!r}; expected one of {list(PROBLEM_TYPES)}.")
        if problem != "regression" and not labels:
            fail(f"task {task!r} ({problem}) has no labels.")
    signatures = label_map.get("signatures", {})
    if not isinstance(signatures, Mapping):
        fail(f"'signatures' is {signatures!r}; expected an object signature name -> task(s).")


def expects_pairs(label_map, signature_name):
    """Whether the task(s) a signature serves take sentence pairs, as the export recorded it
    (`"text_pair"` per task); `None` when it did not record it, or the tasks of `all_tasks` disagree."""
    target = label_map.get("signatures", {}).get(signature_name, signature_name)
    tasks = target if isinstance(target, list) else [target]
    layouts = {label_map["tasks"].get(t, {}).get("text_pair") for t in tasks}
    return layouts.pop() if len(layouts) == 1 else None


def _read_label_map(path):
    """The checked content of `label_map.json` at `path`; `ServingError` naming the file if unusable."""
    try:
        with open(path, encoding="utf-8") as f:
            label_map = json.load(f)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ServingError(f"serving: {path}: not valid JSON ({e}); expected the label map an export wrote.") from e
    except OSError as e:
        raise ServingError(f"serving: {path}: cannot be read ({e}).") from e
    _check_label_map(label_map, path, ServingError)
    return label_map


# ------------------------------------------------------------- output checks
def _quote(value, limit=_HTTP_DETAIL, text=False):
    """`repr(value)` (`str(value)` with `text=True`), cut to `limit` characters."""
    text = str(value) if text else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _numbers(value, name, source):
    """`value` as a numeric numpy array; `ServingError` if it is ragged or holds anything but numbers."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as e:  # ragged rows
        raise ServingError(f"serving: {source}: {name!r} is not a rectangular array of numbers ({e}).") from e
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ServingError(f"serving: {source}: {name!r} holds {_quote(array.tolist(), 100)} ({array.dtype}); "
                           "expected numbers.")
    return array


def _first_bad(array, mask):
    """`("i, j", value)`: where the first True of `mask` is, and `array`'s value there."""
    index = tuple(int(i) for i in np.argwhere(mask)[0])
    return ", ".join(map(str, index)), array[index]


def _check_rows(name, array, num_rows, source):
    if num_rows is not None and array.shape[0] != num_rows:
        raise ServingError(f"serving: {source}: {name!r} has {array.shape[0]} rows for {num_rows} texts sent.")


# ------------------------------------------------------------------ client
class ServingClient:
    """Turns text into TF Serving requests and responses into labels.

    Args:
        tokenizer: a `transformers` tokenizer, or a directory (e.g. an export's `assets/`) to load one from.
        label_map: the `label_map.json` content the export wrote:
            `{"tasks": {task: {"labels": [...], "problem_type": ...}}, "signatures": {...}}`.
        max_length: truncation length (special tokens included); by default the label map's
            `max_length` (the length the export recorded), else 128.

    Texts are checked against the layout the export recorded for the signature's task(s)
    (`"text_pair"` in the label map): a pair model refuses single texts and a single-text
    model refuses `(text, pair)` tuples, with a `ValueError` in one line.

    Raises:
        ValueError: `label_map` does not have that shape.
    """

    def __init__(self, tokenizer, label_map, max_length=None):
        _check_label_map(label_map, "label_map", ValueError)
        if max_length is None:
            max_length = label_map.get("max_length") or 128
        if isinstance(tokenizer, (str, os.PathLike)):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer))
        self.tokenizer = tokenizer
        self.label_map = label_map
        self.max_length = max_length

    @classmethod
    def from_export(cls, version_dir, max_length=None):
        """A client for the SavedModel in `version_dir`, using its `assets/` (tokenizer and `label_map.json`).

        Args:
            version_dir: an exported version directory (`<export_dir>/<model>/<version>`).
            max_length: truncation length; by default the one `label_map.json` records.

        Returns:
            A `ServingClient`.

        Raises:
            FileNotFoundError: `version_dir/assets/label_map.json` is missing.
            ServingError: `label_map.json` is not valid JSON or not a label map (the message names the file).
        """
        assets = os.path.join(os.fspath(version_dir), "assets")
        label_map_path = os.path.join(assets, "label_map.json")
        if not os.path.isfile(label_map_path):
            raise FileNotFoundError(f"{label_map_path}: missing; expected an export of keras_adapterfusion.")
        client = cls(assets, _read_label_map(label_map_path), max_length)
        client.version_dir = os.fspath(version_dir)
        return client

    # ------------------------------------------------------------ predictions
    def predictions_from_outputs(self, outputs, signature_name="serving_default", num_texts=None):
        """One dict per row: `label`, `probability` and `probabilities`, checked as `labels_from_outputs` checks.

        `label` is a name (a list of names for multi-label, a float for regression);
        `probability` that label's probability (one per name for multi-label; `None`
        for regression); `probabilities` maps every label name to its probability.
        """
        task = self._task(signature_name)
        labels = self._labels(task, outputs, "", "the outputs", num_texts)
        names = self.label_map["tasks"][task]["labels"]
        problem = self.label_map["tasks"][task]["problem_type"]
        probs = np.asarray(outputs["probabilities"], dtype=np.float64)
        out = []
        for label, row in zip(labels, probs.reshape(len(labels), -1)):
            if problem == "regression":
                out.append({"label": label, "probability": None, "probabilities": {}})
                continue
            table = {name: float(p) for name, p in zip(names, row)}
            probability = [table[n] for n in label] if problem == "multi_label" else table[label]
            out.append({"label": label, "probability": probability, "probabilities": table})
        return out

    def predict_local(self, texts, signature_name="serving_default"):
        """Run the exported SavedModel in this process (no server): one prediction dict per text.

        Needs TensorFlow (and TensorFlow Text for an export with raw-text signatures);
        the client must come from `from_export`. Each dict is as `predictions_from_outputs`
        gives it, plus `truncated`: whether the text (or pair) was cut to `max_length`.
        """
        if not getattr(self, "version_dir", None):
            raise ValueError("serving: predict_local needs a client made with ServingClient.from_export(dir).")
        import tensorflow as tf

        try:
            import tensorflow_text  # noqa: F401  (the ops of raw-text signatures)
        except ImportError:
            pass
        self._task(signature_name)
        if getattr(self, "_loaded", None) is None:
            self._loaded = tf.saved_model.load(self.version_dir)
        if signature_name not in self._loaded.signatures:
            raise ValueError(f"serving: {self.version_dir} has no signature {signature_name!r}; it has "
                             f"{sorted(self._loaded.signatures)}.")
        texts = self.check_texts(texts, signature_name)
        dtype = tf.as_dtype(self.label_map.get("input_dtype", "int64"))
        inputs = {k: tf.constant(v, dtype) for k, v in self.encode(texts).items()}
        outputs = {k: v.numpy() for k, v in self._loaded.signatures[signature_name](**inputs).items()}
        predictions = self.predictions_from_outputs(outputs, signature_name, len(inputs["input_ids"]))
        return self._with_truncation(predictions, texts)

    # ------------------------------------------------------------- requests
    def expects_pairs(self, signature_name="serving_default"):
        """Whether the signature's task takes sentence pairs; see the module's `expects_pairs`."""
        return expects_pairs(self.label_map, signature_name)

    def check_texts(self, texts, signature_name="serving_default"):
        """`texts` as a list, checked against the layout the export recorded for the signature.

        Raises:
            ValueError: no texts; a mix of single texts and pairs; single texts for a pair model, or
                pairs for a single-text model (one line, saying what the model expects).
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("serving: got no texts; expected at least one.")
        is_pair = [isinstance(t, (tuple, list)) and len(t) == 2 and all(isinstance(p, str) for p in t) for t in texts]
        bad = next((t for t, p in zip(texts, is_pair) if not p and not isinstance(t, str)), None)
        if bad is not None:
            raise ValueError(f"serving: got {_quote(bad, 80, text=True)}; expected a string or a (text, pair) "
                             "tuple of strings.")
        if any(is_pair) and not all(is_pair):
            raise ValueError("serving: got single texts and (text, pair) tuples mixed; expected one kind.")
        expects = self.expects_pairs(signature_name)
        if expects is True and not is_pair[0]:
            raise ValueError(f"serving: signature {signature_name!r} serves a model trained on sentence pairs; "
                             "got single texts. Pass (text, pair) tuples (the CLI: --text A --text-pair B).")
        if expects is False and is_pair[0]:
            raise ValueError(f"serving: signature {signature_name!r} serves a model trained on single texts; got "
                             "(text, pair) tuples. Pass one string per example.")
        return texts

    def truncated(self, texts):
        """One bool per text (or `(text, pair)` tuple): whether it takes more than `max_length` tokens."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if texts and isinstance(texts[0], (tuple, list)):
            ids = self.tokenizer([t[0] for t in texts], [t[1] for t in texts], truncation=False)["input_ids"]
        else:
            ids = self.tokenizer(texts, truncation=False)["input_ids"]
        return [len(row) > self.max_length for row in ids]

    def _with_truncation(self, predictions, texts):
        for prediction, cut in zip(predictions, self.truncated(texts)):
            prediction["truncated"] = cut
        return predictions

    def encode(self, texts):
        """Tokenize `texts` into int64 arrays padded to the longest.

        Args:
            texts: a string, or a list of strings or of `(text, pair)` tuples (not checked against
                the model's layout here: the request methods do that, knowing the signature).

        Returns:
            A dict `input_ids`, `attention_mask`, `token_type_ids` -> int64 array `[len(texts), tokens]`.

        Raises:
            ValueError: `texts` is empty, or mixes single texts and pairs.
        """
        texts = self.check_texts(texts, signature_name=None)
        if isinstance(texts[0], (tuple, list)):
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
        """The JSON body of TF Serving's REST predict API, in the row (`instances`) format.

        Args:
            texts: as for `encode`.
            signature_name: the SavedModel signature to call.

        Returns:
            `{"signature_name": ..., "instances": [{input name: token list}, ...]}`, one instance per text.

        Raises:
            ValueError: as `check_texts` (the wrong layout for the signature's model).
        """
        arrays = self.encode(self.check_texts(texts, signature_name))
        n = arrays["input_ids"].shape[0]
        instances = [{k: arrays[k][i].tolist() for k in INPUT_NAMES} for i in range(n)]
        return {"signature_name": signature_name, "instances": instances}

    def grpc_request(self, texts, model_name, signature_name="serving_default", version=None):
        """A `tensorflow_serving.apis.predict_pb2.PredictRequest` for `texts`.

        Args:
            texts: as for `encode`.
            model_name: the model name TF Serving serves the export under.
            signature_name: the SavedModel signature to call.
            version: a model version, or None for the latest.

        Returns:
            The `PredictRequest`.

        Raises:
            ImportError: tensorflow-serving-api (or TensorFlow) is not installed.
            ValueError: as `check_texts` (the wrong layout for the signature's model).
        """
        texts = self.check_texts(texts, signature_name)
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
            raise ValueError(f"serving: unknown signature {signature_name!r}; expected one of "
                             f"{sorted(set(signatures) | set(self.label_map['tasks']))}.")
        return task

    def _needed(self, task, prefix):
        """The output names the labels of `task` are read from."""
        if self.label_map["tasks"][task]["problem_type"] == "regression":
            return [prefix + "probabilities"]
        return [prefix + "label_ids", prefix + "probabilities"]

    def _labels(self, task, outputs, prefix, source, num_texts):
        """Labels of `task` from `outputs`, after checking them against the label map."""
        info = self.label_map["tasks"][task]
        names, problem = info["labels"], info["problem_type"]
        if not isinstance(outputs, Mapping):
            raise ServingError(f"serving: {source}: the outputs are a {type(outputs).__name__}; "
                               "expected a dict output name -> array.")
        missing = [k for k in self._needed(task, prefix) if k not in outputs]
        if missing:
            raise ServingError(f"serving: {source}: no {', '.join(map(repr, missing))} output for task {task!r} "
                               f"(found {sorted(outputs)}); expected the outputs of a keras_adapterfusion export.")
        ids_key, probs_key = prefix + "label_ids", prefix + "probabilities"

        probs = _numbers(outputs[probs_key], probs_key, source)
        if probs.ndim == 0 or probs.shape[0] == 0:
            raise ServingError(f"serving: {source}: {probs_key!r} is {_quote(probs.tolist(), 100)}; "
                               "expected one row per text.")
        _check_rows(probs_key, probs, num_texts, source)
        bad = ~np.isfinite(probs.astype(np.float64))
        if bad.any():
            where, value = _first_bad(probs, bad)
            raise ServingError(f"serving: {source}: {probs_key}[{where}] is {value}; "
                               "expected finite numbers.")
        if problem == "regression":
            if probs.ndim > 2 or (probs.ndim == 2 and probs.shape[1] < 1):
                raise ServingError(f"serving: {source}: {probs_key!r} has shape {probs.shape}; expected "
                                   f"[{probs.shape[0]}] or [{probs.shape[0]}, outputs] for regression task {task!r}.")
            return [float(row) for row in probs.reshape(probs.shape[0], -1)[:, 0]]

        n, width = probs.shape[0], len(names)
        if probs.shape != (n, width):
            raise ServingError(f"serving: {source}: {probs_key!r} has shape {list(probs.shape)}; expected "
                               f"[{n}, {width}], one value per label of task {task!r} {names}.")
        ids = _numbers(outputs[ids_key], ids_key, source)
        if ids.ndim == 0:
            raise ServingError(f"serving: {source}: {ids_key!r} is {ids.tolist()!r}; expected one row per text.")
        if ids.shape[0] != n:
            raise ServingError(f"serving: {source}: {ids_key!r} has {ids.shape[0]} rows but {probs_key!r} has {n}.")

        if problem == "multi_label":
            if ids.shape != (n, width):
                raise ServingError(f"serving: {source}: {ids_key!r} has shape {list(ids.shape)}; expected "
                                   f"[{n}, {width}], one 0/1 flag per label of multi-label task {task!r} {names}.")
            bad = ~np.isin(ids, (0, 1))
            if bad.any():
                where, value = _first_bad(ids, bad)
                raise ServingError(f"serving: {source}: {ids_key}[{where}] is {value}; expected 0 or 1 "
                                   f"(multi-label task {task!r}).")
            return [[names[j] for j, on in enumerate(row) if on] for row in ids.astype(np.int64)]

        if ids.ndim == 2 and ids.shape[1] == 1:
            ids = ids[:, 0]
        if ids.ndim != 1:
            raise ServingError(f"serving: {source}: {ids_key!r} has shape {list(ids.shape)}; expected [{n}], "
                               f"one label id per text.")
        if ids.dtype == np.bool_:
            raise ServingError(f"serving: {source}: {ids_key!r} holds booleans; expected integer label ids.")
        if not np.issubdtype(ids.dtype, np.integer):
            bad = ~np.isfinite(ids) | (ids != np.floor(ids))
            if bad.any():
                where, value = _first_bad(ids, bad)
                raise ServingError(f"serving: {source}: {ids_key}[{where}] is {value}, not an integer; "
                                   f"expected a label id 0..{width - 1} of task {task!r} {names}.")
        bad = (ids < 0) | (ids >= width)
        if bad.any():
            where, value = _first_bad(ids, bad)
            raise ServingError(f"serving: {source}: {ids_key}[{where}] is {value}, out of range; expected "
                               f"a label id 0..{width - 1} of task {task!r} {names}.")
        return [names[int(i)] for i in ids]

    def labels_from_outputs(self, outputs, signature_name="serving_default", prefix="", num_texts=None):
        """Labels from a dict of output arrays (`label_ids`, `probabilities`).

        Args:
            outputs: dict output name -> array with one row per text (e.g. a SavedModel signature's result).
            signature_name: the signature that produced `outputs`; picks the task in the label map.
            prefix: `"<task>_"` to read that task's outputs of the `all_tasks` signature instead.
            num_texts: if given, the number of rows the outputs must have.

        Returns:
            One label per row: a label name (single-label, multiple choice), a list of names (multi-label)
            or a float (regression).

        Raises:
            ValueError: `signature_name` (or `prefix`) names no task of the label map.
            ServingError: an output is missing, has the wrong shape or row count, a label id is not an integer
                in range, or a probability is not a finite number.
        """
        if prefix:
            task = prefix[:-1]
            if task not in self.label_map["tasks"]:
                raise ValueError(f"serving: prefix {prefix!r} names no task; expected one of "
                                 f"{sorted(self.label_map['tasks'])}.")
        else:
            task = self._task(signature_name)
        return self._labels(task, outputs, prefix, "the outputs", num_texts)

    def labels_from_rest(self, response, signature_name="serving_default", num_texts=None):
        """Labels from TF Serving's REST response (`{"predictions": [...]}`, the row format).

        Args:
            response: the decoded JSON of the reply.
            signature_name: the signature that was called.
            num_texts: if given, the number of predictions the response must hold (the texts sent).

        Returns:
            One label per prediction, as `labels_from_outputs` gives them.

        Raises:
            ValueError: `signature_name` names no task of the label map.
            ServingError: the response is an error (`{"error": ...}`, quoted) or malformed: not an object,
                no `predictions` list of output dicts, the wrong number of predictions, or outputs that
                fail the checks of `labels_from_outputs`.
        """
        return self._labels_from_rest(response, signature_name, num_texts, "the REST response")

    def _labels_from_rest(self, response, signature_name, num_texts, source):
        if not isinstance(response, Mapping):
            raise ServingError(f"serving: {source}: the JSON is a {type(response).__name__} "
                               f"({_quote(response, 100)}); expected an object with 'predictions'.")
        if "error" in response:
            raise ServingError(f"serving: {source}: the server answered with an error: "
                               f"{_quote(response['error'], text=True)}")
        if "predictions" not in response:
            hint = " (the columnar 'outputs' format; this client sends 'instances' and reads rows)" \
                if "outputs" in response else ""
            raise ServingError(f"serving: {source}: no 'predictions' (found {sorted(response)}){hint}; "
                               "expected {\"predictions\": [{output: value}, ...]}.")
        predictions = response["predictions"]
        if not isinstance(predictions, list) or not predictions:
            raise ServingError(f"serving: {source}: 'predictions' is {_quote(predictions, 100)}; expected a "
                               "non-empty list of output dicts (row format).")
        for i, p in enumerate(predictions):
            if not isinstance(p, Mapping):
                raise ServingError(f"serving: {source}: predictions[{i}] is {_quote(p, 100)}; expected a dict "
                                   "output name -> value (row format).")
        if num_texts is not None and len(predictions) != num_texts:
            raise ServingError(f"serving: {source}: {len(predictions)} predictions for {num_texts} texts sent.")
        task = self._task(signature_name)
        outputs = {}
        for key in self._needed(task, ""):
            for i, p in enumerate(predictions):
                if key not in p:
                    raise ServingError(f"serving: {source}: predictions[{i}] has no {key!r} output (found "
                                       f"{sorted(p)}); expected the outputs of a keras_adapterfusion export.")
            outputs[key] = [p[key] for p in predictions]
        return self._labels(task, outputs, "", source, len(predictions))

    def labels_from_grpc(self, response, signature_name="serving_default", num_texts=None):
        """Labels from a `PredictResponse`.

        Args:
            response: a `tensorflow_serving.apis.predict_pb2.PredictResponse`.
            signature_name: the signature that was called.
            num_texts: if given, the number of rows the outputs must have (the texts sent).

        Returns:
            One label per row, as `labels_from_outputs` gives them.

        Raises:
            ValueError: `signature_name` names no task of the label map.
            ServingError: `response` is not a `PredictResponse`, lacks an output, holds a tensor that cannot
                be decoded, or fails the checks of `labels_from_outputs`.
        """
        import tensorflow as tf

        source = "the gRPC response"
        protos = getattr(response, "outputs", None)
        if protos is None or not hasattr(protos, "keys"):
            raise ServingError(f"serving: {source} is a {type(response).__name__}; expected a PredictResponse.")
        task = self._task(signature_name)
        outputs = {}
        for key in self._needed(task, ""):
            if key not in protos:
                raise ServingError(f"serving: {source}: no {key!r} output for task {task!r} (found "
                                   f"{sorted(protos.keys())}); expected the outputs of a keras_adapterfusion export.")
            try:
                outputs[key] = tf.make_ndarray(protos[key])
            except (ValueError, TypeError) as e:
                raise ServingError(f"serving: {source}: output {key!r} is not a valid tensor ({e}).") from e
        return self._labels(task, outputs, "", source, num_texts)

    def labels_by_task(self, outputs, num_texts=None):
        """For the `all_tasks` signature: dict task -> labels.

        Args:
            outputs: dict output name -> array, with outputs `<task>_label_ids`, `<task>_probabilities`.
            num_texts: if given, the number of rows every task's outputs must have.

        Returns:
            dict task -> labels, as `labels_from_outputs` gives them.

        Raises:
            ServingError: as for `labels_from_outputs`, naming the output at fault.
        """
        return {t: self.labels_from_outputs(outputs, prefix=f"{t}_", num_texts=num_texts)
                for t in self.label_map["tasks"]}

    # ----------------------------------------------------------------- REST
    def predict_rest(self, server_url, model_name, texts, signature_name="serving_default", version=None,
                     timeout=30.0, details=False):
        """POST `texts` to `{server_url}/v1/models/{model_name}[/versions/{v}]:predict`; return labels.

        Proxies from the environment (`http_proxy`, `https_proxy`, `no_proxy`) are used as `urllib` does.

        Args:
            server_url: TF Serving's REST address, e.g. `http://localhost:8501`.
            model_name: the model name TF Serving serves the export under.
            texts: as for `encode`.
            signature_name: the signature to call.
            version: a model version, or None for the latest.
            timeout: seconds for the whole request: connecting (name lookup included), sending, and
                reading the full reply. A finite number > 0.
            details: return one dict per text (`label`, `probability`, `probabilities`; see
                `predictions_from_outputs`; and `truncated`) instead of the labels.

        Returns:
            One label per text, as `labels_from_outputs` gives them (or dicts, with `details`).

        Raises:
            ValueError: `timeout` is not a finite number > 0, `server_url` is not an http(s) URL,
                `texts` is empty, or `signature_name` names no task of the label map.
            ServingError: the server cannot be reached (connection refused, unknown host), did not send the
                whole reply within `timeout`, answered an HTTP error (status and the first 500 characters
                of the body), a body that is not JSON (status, Content-Type and its first 100 characters),
                or a response that fails the checks of `labels_from_rest`. The message names the URL.
        """
        timeout = check_timeout(timeout)
        url = f"{server_url.rstrip('/')}/v1/models/{urllib.parse.quote(str(model_name), safe='')}"
        if version is not None:
            url += f"/versions/{int(version)}"
        url += ":predict"
        request = self.rest_request(texts, signature_name)
        self._task(signature_name)  # an unknown signature is the caller's error: say so before sending
        body = json.dumps(request).encode()
        status, content_type, data = post(url, body, timeout)
        response = json_reply(url, status, content_type, data)
        labels = self._labels_from_rest(response, signature_name, len(request["instances"]),
                                        f"the reply from {url}")
        if not details:
            return labels
        outputs = {k: [p[k] for p in response["predictions"]] for k in response["predictions"][0]}
        return self._with_truncation(self.predictions_from_outputs(outputs, signature_name, len(labels)), texts)
