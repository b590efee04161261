"""SavedModel export for TF Serving.

`export_saved_model` writes one SavedModel under TF Serving's versioned layout,
`<export_dir>/<model_name>/<version>/`, with:

- a `serving_default` signature (the first task) and, for several tasks on one
  encoder, one signature per task plus `all_tasks`, which runs every task head
  over the shared encoder in one call;
- inputs `input_ids`, `attention_mask`, `token_type_ids` (int32 or int64,
  `[batch, tokens]` with both dimensions dynamic; `[batch, choices, tokens]` for
  multiple-choice heads);
- outputs `logits`, `probabilities` and `label_ids` (and `fusion_attentions` when
  asked, batch first: `[batch, blocks, tokens, adapters]`, since TF Serving's row
  format needs every output to start with the batch); in `all_tasks` they are
  prefixed with the task name (`sentiment_logits`);
- the tokenizer files and `label_map.json` in the SavedModel's `assets/`;
- a `models.config` for `tensorflow_model_server --model_config_file` next to the
  model directories.

The export needs the TensorFlow backend. It writes into a temporary directory
and moves it into place at the end, so a failed export leaves no half-written
version directory.

Example:

```python
from keras_adapterfusion.serving.export import export_saved_model

path = export_saved_model(fusion_model, "export", model_name="sentiment",
                          tokenizer="path/to/checkpoint", label_names=["negative", "positive"])
# several tasks, one encoder:
export_saved_model({"sentiment": m1, "topic": m2}, "export", model_name="tasks")
```
"""

import os
import re
import shutil
import tempfile

import keras

from keras_adapterfusion.errors import ExportError
from keras_adapterfusion.inputs import limits_of, tf_assertions
from keras_adapterfusion.io import atomic_file, write_directory, write_json
from keras_adapterfusion.names import check_name

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
INPUT_DTYPES = ("int32", "int64")
ALL_TASKS = "all_tasks"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "added_tokens.json",
    "config.json",
)


def _check_model(task, model):
    from keras_adapterfusion.models.adapter_model import AdapterModel

    if not getattr(model, "built", False):
        raise ExportError(f"export: model {getattr(model, 'name', model)!r} of task {task!r} is not built; "
                          "call it on a batch first.")
    if not isinstance(model, AdapterModel):
        raise ExportError(f"export: task {task!r} is a {type(model).__name__}; expected an AdapterModel "
                          "(e.g. from keras_adapterfusion.training.builders).")
    if not model.built or not model.encoder.built or (model.head is not None and not model.head.built):
        raise ExportError(f"export: model {model.name!r} of task {task!r} is not built; call it on a batch first.")
    if model.head is None:
        raise ExportError(f"export: model {model.name!r} of task {task!r} has no head; there are no logits to serve.")


def _problem(model):
    return getattr(model.head, "problem_type", "single_label")


def _next_version(model_dir):
    versions = [int(d) for d in os.listdir(model_dir) if d.isdigit()] if os.path.isdir(model_dir) else []
    return max(versions, default=0) + 1


def _label_map(tasks, label_names):
    out = {}
    for task, model in tasks.items():
        names = label_names.get(task) if isinstance(label_names, dict) else label_names
        n = getattr(model.head, "num_choices", None) or getattr(model.head, "num_labels", 1)
        if names is None:
            names = getattr(model.head, "label_names", None) or [str(i) for i in range(n)]
        names = list(names)
        if _problem(model) not in ("regression",) and len(names) != n:
            raise ExportError(f"export: task {task!r} has {n} outputs but {len(names)} label names: {names}.")
        out[task] = {"labels": names, "problem_type": _problem(model)}
    return out


def _tokenizer_files(tokenizer, encoder, scratch):
    """Paths of the tokenizer files to ship, from a checkpoint directory or a tokenizer object
    (saved into `scratch`), after checking that its vocabulary fits the encoder's."""
    if tokenizer is None:
        return {}
    if isinstance(tokenizer, (str, os.PathLike)):
        from keras_adapterfusion.backbones.huggingface import load_tokenizer, resolve_checkpoint

        directory = resolve_checkpoint(tokenizer)
        files = {f: os.path.join(directory, f) for f in TOKENIZER_FILES if os.path.isfile(os.path.join(directory, f))}
        tokenizer = load_tokenizer(directory)
    else:
        tokenizer.save_pretrained(scratch)
        files = {f: os.path.join(scratch, f) for f in os.listdir(scratch) if os.path.isfile(os.path.join(scratch, f))}
    _check_tokenizer(tokenizer, encoder)
    return files


def _check_tokenizer(tokenizer, encoder):
    """Refuse a tokenizer that would produce ids outside the encoder's tables."""
    size = len(tokenizer)
    if size > encoder.vocab_size:
        raise ExportError(f"export: the tokenizer has {size} tokens but the encoder vocabulary holds "
                          f"{encoder.vocab_size}; expected the encoder's own tokenizer.")
    source = getattr(tokenizer, "name_or_path", "") or ""
    config = os.path.join(source, "config.json") if os.path.isdir(source) else None
    if config and os.path.isfile(config):
        from keras_adapterfusion.io import read_json

        found = read_json(config, "tokenizer's model config").get("vocab_size")
        if isinstance(found, int) and found != encoder.vocab_size:
            raise ExportError(f"export: the tokenizer comes from a model with vocab_size {found} ({config}); the "
                              f"encoder's is {encoder.vocab_size}. Expected the encoder's own tokenizer.")


def _outputs(tf, model, logits, prefix=""):
    problem = _problem(model)
    logits = tf.cast(logits, tf.float32)
    if problem == "multi_label":
        probs = tf.sigmoid(logits)
        ids = tf.cast(logits > 0, tf.int64)
    elif problem == "regression":
        probs = logits
        ids = tf.zeros(tf.shape(logits)[:1], tf.int64)
    else:
        probs = tf.nn.softmax(logits, axis=-1)
        ids = tf.argmax(logits, axis=-1, output_type=tf.int64)
    return {prefix + "logits": logits, prefix + "probabilities": probs, prefix + "label_ids": ids}


def _encode(tf, model, inputs, setup):
    """The encoder's outputs for `inputs` under `setup`, after the checks of `model`'s inputs."""
    from keras_adapterfusion.models.adapter_model import _flatten_choices

    # Invalid ids fail the request (TF Serving: INVALID_ARGUMENT) with a message naming the input.
    with tf.control_dependencies(tf_assertions(tf, inputs, limits_of(model))):
        x = {k: tf.cast(v, tf.int32) for k, v in inputs.items()}
    if getattr(model.head, "flattens_choices", False):
        x = _flatten_choices(x)
    return model.encoder(x, adapter_setup=setup, training=False)


def _parallel_pass(tf, models, inputs):
    """One encoder pass for the tasks' distinct adapter setups (`AdapterSetup.parallel`): task -> outputs.

    Tasks without adapters, and multiple-choice heads (whose inputs are reshaped), are left to a pass of
    their own; so is everything when fewer than two setups remain.
    """
    from keras_adapterfusion.layers.adapter_setup import AdapterSetup

    grouped = {t: m for t, m in models.items()
               if m.adapter_setup is not None and not getattr(m.head, "flattens_choices", False)}
    channels = list(dict.fromkeys(m.adapter_setup for m in grouped.values()))
    if len(channels) < 2:
        return {}
    out = _encode(tf, next(iter(grouped.values())), inputs, AdapterSetup.parallel(channels))
    hidden = tf.split(out["last_hidden_state"], len(channels), axis=0)
    pooled = tf.split(out["pooler_output"], len(channels), axis=0) if "pooler_output" in out else None
    return {t: {"last_hidden_state": hidden[channels.index(m.adapter_setup)],
                "pooler_output": None if pooled is None else pooled[channels.index(m.adapter_setup)]}
            for t, m in grouped.items()}


def _run(tf, model, inputs, attentions):
    out = _encode(tf, model, inputs, model.adapter_setup)
    logits = model.head(out["last_hidden_state"], out.get("pooler_output"), training=False)
    extra = {}
    if attentions and "fusion_attentions" in out:
        # Batch first: TF Serving's row format needs every output to start with the batch.
        extra["fusion_attentions"] = tf.transpose(tf.cast(out["fusion_attentions"], tf.float32), [1, 0, 2, 3])
    return out, logits, extra


def _signature(tf, tasks, input_dtype, choices):
    rank = 3 if choices else 2
    return [tf.TensorSpec([None] * rank, input_dtype, name=n) for n in INPUT_NAMES]


def _default_tokenizer(encoder):
    """The encoder's own checkpoint directory, when it holds tokenizer files."""
    from keras_adapterfusion.backbones.checkpoint import has_tokenizer

    directory = getattr(encoder, "checkpoint", None)
    return directory if directory and has_tokenizer(directory) else None


def export_saved_model(model, export_dir, model_name="model", version=None, tokenizer="auto", label_names=None,
                       input_dtype="int64", include_fusion_attentions=False, write_models_config=True,
                       text_signatures=False, max_length=128, text_pairs=False, verbose=False):
    """Export one model, or several task models on one encoder, as a TF Serving SavedModel.

    Args:
        model: an `AdapterModel` with a head, or a dict task name -> `AdapterModel`
            (all on the same encoder).
        export_dir: the TF Serving model base directory.
        model_name: the model's name for TF Serving (`<export_dir>/<model_name>/`).
        version: integer version; by default one more than the highest present.
        tokenizer: a checkpoint directory / cached hub id, or a `transformers`
            tokenizer, whose files go into `assets/`; `"auto"` (the default) takes
            the encoder's own checkpoint when it holds a tokenizer; `None` ships none.
            The one used is recorded in `label_map.json` (`"tokenizer"`).
        label_names: label names (a list, or a dict task -> list) for `label_map.json`;
            by default the heads' own `label_names`.
        input_dtype: `"int64"` or `"int32"`, the dtype of the three inputs.
        include_fusion_attentions: also output `fusion_attentions` for fusion models.
        write_models_config: write `<export_dir>/models.config` and `models.docker.config`
            listing every model directory in `export_dir`. A file of that name the package
            did not write (your own TF Serving config) is not replaced: the new model is
            merged into it, your entries kept as written; one it cannot read as a TF Serving
            model config is refused (`ExportError`) before anything is written.
        text_signatures: add signatures that take raw text (`serving_text`, and
            `<task>_text` / `all_tasks_text` for several tasks), tokenizing in the graph
            (`keras_adapterfusion.serving.graph_tokenizers`): `False` (the default: the export loads
            wherever TensorFlow loads), `True` (needs `tensorflow-text` to export, and its ops
            wherever the SavedModel is loaded; see docs/serving.md), or `"auto"` (when the
            tokenizer is WordPiece, SentencePiece or ALBERT's unigram and `tensorflow-text` is installed).
        max_length: truncation length (special tokens included) of the raw-text signatures,
            recorded in `label_map.json` for clients that tokenize in Python; pass the length
            the model was trained with.
        text_pairs: whether the model takes sentence pairs (a bool, or a dict task -> bool);
            recorded per task in `label_map.json` (`"text_pair"`) so that clients refuse the
            wrong layout; a pair task's raw-text signature takes two inputs, `text` and
            `text_pair`.
        verbose: print the variables Keras tracks.

    Returns:
        The path of the version directory.
    """
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise ExportError(f"export: needs the TensorFlow backend; KERAS_BACKEND is {keras.backend.backend()!r}.")
    tasks = dict(model) if isinstance(model, dict) else {"default": model}
    if not tasks:
        raise ExportError("export: no models given.")
    for task, m in tasks.items():
        if not isinstance(task, str) or not task.replace("_", "").isalnum():
            raise ExportError(f"export: task name {task!r} must be letters, digits and underscores.")
        _check_model(task, m)
    encoders = {id(m.encoder) for m in tasks.values()}
    if len(encoders) > 1:
        raise ExportError("export: the task models use different encoders; expected one shared encoder.")
    encoder = next(iter(tasks.values())).encoder
    if input_dtype not in INPUT_DTYPES:
        raise ExportError(f"export: input_dtype {input_dtype!r}; expected one of {list(INPUT_DTYPES)}.")
    if not any(text_signatures is v for v in (True, False)) and text_signatures != "auto":
        raise ExportError(f"export: text_signatures {text_signatures!r}; expected True, False or 'auto'.")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 4:
        raise ExportError(f"export: max_length {max_length!r}; expected an int >= 4.")
    pairs = _text_pairs(tasks, text_pairs)
    try:
        check_name(model_name, "export: model_name")
    except ValueError as e:
        raise ExportError(str(e)) from None
    model_dir = os.path.join(os.fspath(export_dir), model_name)
    version = _next_version(model_dir) if version is None else version
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ExportError(f"export: version {version!r}; expected an int >= 1.")
    version_dir = os.path.join(model_dir, str(version))
    if os.path.exists(version_dir) and (not os.path.isdir(version_dir) or os.listdir(version_dir)):
        raise ExportError(f"export: {version_dir} exists and is not empty; pick another version.")
    label_map = _label_map(tasks, label_names)
    for task, pair in pairs.items():
        label_map[task]["text_pair"] = pair
    if write_models_config:  # a user's config that cannot be merged is refused before anything is written
        _models_config_plan(export_dir, model_name)
    if tokenizer == "auto":
        tokenizer = _default_tokenizer(encoder)
    scratch = tempfile.TemporaryDirectory(prefix="kaf-tokenizer-")
    asset_files = _tokenizer_files(tokenizer, encoder, scratch.name)
    text_tokenizer = _text_tokenizer(asset_files, text_signatures, max_length)

    # Only the endpoints' own variables are saved (once). Tracking the models as
    # well would save every weight a second time, under its Keras object path.
    archive = keras.export.ExportArchive()
    dtype = getattr(tf, input_dtype)
    if text_tokenizer is not None:
        archive.track(text_tokenizer)  # its vocabulary table

    def task_fn(m):
        def serve(input_ids, attention_mask, token_type_ids):
            inputs = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            _, logits, extra = _run(tf, m, inputs, include_fusion_attentions)
            return {**_outputs(tf, m, logits), **extra}

        return serve

    def serve_all(input_ids, attention_mask, token_type_ids):
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        # The tasks' distinct adapter setups in one encoder pass (a fusion and its adapters' own included).
        parallel = _parallel_pass(tf, {t: tasks[t] for t in names}, inputs)
        results, shared = {}, {}
        for t in names:
            m = tasks[t]
            if t in parallel:
                out = parallel[t]
            else:
                if m.adapter_setup not in shared:  # one encoder pass per other distinct adapter setup
                    shared[m.adapter_setup] = _run(tf, m, inputs, include_fusion_attentions)[0]
                out = shared[m.adapter_setup]
            logits = m.head(out["last_hidden_state"], out.get("pooler_output"), training=False)
            results.update(_outputs(tf, m, logits, prefix=f"{t}_"))
        return results

    def from_text(serve, pair):
        def serve_text(text):
            ids = text_tokenizer(text)
            return serve(**{k: tf.cast(v, dtype) for k, v in ids.items()})

        def serve_text_pair(text, text_pair):
            ids = text_tokenizer.pair(text, text_pair)
            return serve(**{k: tf.cast(v, dtype) for k, v in ids.items()})

        return serve_text_pair if pair else serve_text

    names = list(tasks)
    choices = {t: bool(getattr(m.head, "flattens_choices", False)) for t, m in tasks.items()}
    endpoints = [("serving_default", task_fn(tasks[names[0]]), choices[names[0]])]
    if len(tasks) > 1:
        endpoints += [(t, task_fn(tasks[t]), choices[t]) for t in names]
        if len(set(choices.values())) == 1:
            endpoints.append((ALL_TASKS, serve_all, choices[names[0]]))
    # serving_default first, as TF Serving needs it.
    for name, fn, multiple_choice in endpoints:
        archive.add_endpoint(name, fn, _signature(tf, tasks, dtype, multiple_choice))
    text_names = []
    if text_tokenizer is not None:
        for name, fn, multiple_choice in endpoints:
            served = names if name == ALL_TASKS else [names[0] if name == "serving_default" else name]
            if multiple_choice or len({pairs[t] for t in served}) > 1:
                continue  # no raw-text layout for choices, nor for tasks that disagree on pairs
            pair = pairs[served[0]]
            text_name = "serving_text" if name == "serving_default" else f"{name}_text"
            specs = [tf.TensorSpec([None], tf.string, name="text")]
            if pair:
                specs.append(tf.TensorSpec([None], tf.string, name="text_pair"))
            archive.add_endpoint(text_name, from_text(fn, pair), specs)
            text_names.append(text_name)

    os.makedirs(model_dir, exist_ok=True)
    with scratch, write_directory(version_dir, "saved-model", replace=False) as tmp:
        archive.write_out(tmp, verbose=verbose)
        assets = os.path.join(tmp, "assets")
        os.makedirs(assets, exist_ok=True)
        for name, path in asset_files.items():
            shutil.copyfile(path, os.path.join(assets, name))
        write_json(os.path.join(assets, "label_map.json"), {
            "tasks": label_map,
            "signatures": _signature_map(names, text_names),
            "input_dtype": input_dtype,
            "tokenizer": None if tokenizer is None else (os.fspath(tokenizer) if isinstance(tokenizer, (str, os.PathLike))
                                                         else getattr(tokenizer, "name_or_path", "a tokenizer object")),
            "max_length": max_length,
        })
    if write_models_config:
        write_models_config_file(export_dir, model_name)
    return version_dir


def _text_pairs(tasks, text_pairs):
    """Task -> whether it takes sentence pairs, from a bool or a dict task -> bool."""
    if isinstance(text_pairs, dict):
        unknown = sorted(set(text_pairs) - set(tasks))
        if unknown:
            raise ExportError(f"export: text_pairs names tasks {unknown}; the tasks are {sorted(tasks)}.")
        out = {t: text_pairs.get(t, False) for t in tasks}
    else:
        out = {t: text_pairs for t in tasks}
    for task, pair in out.items():
        if not isinstance(pair, bool):
            raise ExportError(f"export: text_pairs for task {task!r} is {pair!r}; expected True or False.")
    return out


def _text_tokenizer(asset_files, text_signatures, max_length):
    """The in-graph tokenizer for the raw-text signatures, or None."""
    if text_signatures is False or not asset_files:
        if text_signatures is True:
            raise ExportError("export: text_signatures=True needs a tokenizer.")
        return None
    from keras_adapterfusion.serving.graph_tokenizers import graph_tokenizer, tokenizer_family

    directory = os.path.dirname(next(iter(asset_files.values())))
    if text_signatures == "auto":
        try:
            import tensorflow_text  # noqa: F401
        except ImportError:
            return None
        if tokenizer_family(directory) not in ("wordpiece", "sentencepiece", "unigram"):
            return None
    return graph_tokenizer(directory, max_length=max_length)


def _signature_map(names, text_names=()):
    """Signature name -> the task(s) it serves."""
    out = {"serving_default": names[0]}
    if len(names) > 1:
        out.update({t: t for t in names})
        out[ALL_TASKS] = list(names)
    for text_name in text_names:
        base = "serving_default" if text_name == "serving_text" else text_name[: -len("_text")]
        out[text_name] = out[base]
    return out


def model_directories(export_dir):
    """Model directories under `export_dir`: those holding a numbered version with a SavedModel."""
    out = []
    for name in sorted(os.listdir(export_dir)):
        path = os.path.join(export_dir, name)
        if os.path.isdir(path) and any(
            d.isdigit() and os.path.isfile(os.path.join(path, d, "saved_model.pb")) for d in os.listdir(path)
        ):
            out.append(name)
    return out


def _config_entry(name, root):
    return (f'  config {{\n    name: "{name}"\n    base_path: "{root.rstrip("/")}/{name}"\n'
            f'    model_platform: "tensorflow"\n  }}\n')


def models_config_text(export_dir, base_path=None, names=None):
    """TF Serving `--model_config_file` text for the models in `export_dir`.

    `base_path` replaces the absolute `export_dir` in the paths (for example
    `"/models"` inside the TF Serving docker image); `names` lists the models
    (by default every model directory in `export_dir`).
    """
    root = base_path or os.path.abspath(os.fspath(export_dir))
    names = model_directories(export_dir) if names is None else names
    return "model_config_list {\n" + "".join(_config_entry(n, root) for n in names) + "}\n"


_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|[{}:;,<>\[\]]|[^\s{}:;,<>\[\]"\'#]+')


def parse_models_config(text, source):
    """Read a TF Serving model config (text protobuf): `(names, end)`.

    `names` are the `name` fields of the `config` entries of `model_config_list`; `end` is
    the offset of that list's closing brace (None when the file holds no list, only comments
    and blanks). Raises `ExportError` naming `source` for text this does not understand."""
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ExportError(f"export: {source}: cannot read character {pos} as a TF Serving config.")
        if not (m.group().isspace() or m.group().startswith("#")):
            tokens.append((m.group(), m.start()))
        pos = m.end()

    def fail(what):
        raise ExportError(f"export: {source}: {what}; expected a TF Serving config "
                          "(model_config_list { config { name: ... base_path: ... } ... }).")

    if not tokens:
        return [], None
    if tokens[0][0] != "model_config_list" or len(tokens) < 3 or tokens[1][0] not in ("{", ":"):
        fail(f"starts with {tokens[0][0]!r}")
    i = 2 if tokens[1][0] == "{" else 3
    if tokens[1][0] == ":" and tokens[2][0] != "{":
        fail("model_config_list is not a block")
    names, depth, end, field = [], 1, None, None
    while i < len(tokens):
        value, offset = tokens[i]
        if value == "{":
            depth += 1
        elif value == "}":
            depth -= 1
            if depth == 0:
                end = offset
                break
        elif depth == 2 and field == "name" and value[0] in "\"'":
            names.append(value[1:-1])
        if value not in (":",):
            field = value if depth == 2 else None
        i += 1
    if end is None:
        fail("model_config_list is not closed")
    if tokens[i + 1:]:
        fail(f"holds {tokens[i + 1][0]!r} after model_config_list")
    return names, end


def _models_config_plan(export_dir, new_name=None):
    """`[(path, text, own)]` for `models.config` and `models.docker.config`: the package's own
    file (rewritten whole) or the user's (the missing models merged in before the list's closing
    brace, the user's text kept as written). Raises `ExportError` for a user's file it cannot read."""
    from keras_adapterfusion.io import own_file

    export_dir = os.fspath(export_dir)
    names = model_directories(export_dir) if os.path.isdir(export_dir) else []
    if new_name is not None and new_name not in names:
        names = sorted(names + [new_name])
    plan = []
    for filename, base in (("models.config", None), ("models.docker.config", "/models")):
        path = os.path.join(export_dir, filename)
        ours = models_config_text(export_dir, base, names)
        if not os.path.lexists(path) or own_file(path):
            plan.append((path, ours, True))
            continue
        if not os.path.isfile(path):
            raise ExportError(f"export: {path} is not a file; move it away or pass write_models_config=False "
                              "(--no-models-config).")
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ExportError(f"export: {path}: your file cannot be read ({e}); move it away or pass "
                              "write_models_config=False (--no-models-config).") from e
        if text == ours:  # what the package writes (e.g. an export made before files were recorded)
            plan.append((path, ours, True))
            continue
        try:
            present, end = parse_models_config(text, path)
        except ExportError as e:
            raise ExportError(f"{e} It is not this package's; not replacing it. Move it away or pass "
                              "write_models_config=False (--no-models-config).") from None
        root = base or os.path.abspath(export_dir)
        missing = "".join(_config_entry(n, root) for n in names if n not in present)
        if end is None:
            merged = text + ("" if not text or text.endswith("\n") else "\n") + "model_config_list {\n" + missing + "}\n"
        else:
            head = text[:end]
            merged = head + ("" if not missing or head.endswith("\n") else "\n") + missing + text[end:]
        plan.append((path, merged, False))
    return plan


def write_models_config_file(export_dir, new_name=None):
    """Write `models.config` (local paths) and `models.docker.config` (paths under /models).

    A file of either name that the package did not write is the user's: the models it lacks
    are merged in and everything else is kept as written. Returns `[(path, merged)]`.

    Raises:
        ExportError: a user's file is not a TF Serving model config this can read (nothing is written).
    """
    from keras_adapterfusion.io import write_own_file

    plan = _models_config_plan(export_dir, new_name)
    for path, text, own in plan:
        write_own_file(path, text, own=own)
    return [(path, not own) for path, _, own in plan]
