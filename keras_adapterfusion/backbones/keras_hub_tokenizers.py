"""keras-hub tokenizers as Hugging Face tokenizer directories: `keras_hub_tokenizer(tokenizer_or_preset_dir, directory)`.

The package tokenizes with Hugging Face tokenizers (`load_tokenizer`, the command line, the raw-text export). A
keras-hub tokenizer's vocabulary and settings are written as the files a Hugging Face tokenizer of the same
family reads, so that an encoder built by `from_keras_hub` comes with its tokenizer:

| keras-hub tokenizer | files written | Hugging Face class, settings |
|---|---|---|
| `BertTokenizer`, `DistilBertTokenizer`, `ElectraTokenizer` (WordPiece) | `vocab.txt` | the model's tokenizer class; `do_lower_case`, `strip_accents`, `tokenize_chinese_chars` from the keras-hub tokenizer |
| `XLMRobertaTokenizer` (SentencePiece, fairseq ids) | `sentencepiece.bpe.model` | `XLMRobertaTokenizer` |
| `AlbertTokenizer` (SentencePiece) | `spiece.model`, `tokenizer.json` | ALBERT's, as `PreTrainedTokenizerFast` (transformers would rebuild `AlbertTokenizer`'s normalizer): no lower case, accents kept, quotes left as they are (keras-hub's tokenizer is the SentencePiece model alone) |
| `DebertaV3Tokenizer` (SentencePiece) | `spm.model` | `DebertaV2Tokenizer`, no lower case |

`tests/test_keras_hub.py` tokenizes the offline corpora with both and counts the texts that differ (see
docs/backbones.md for the figures). keras-hub's `RobertaTokenizer` is refused: written as Hugging Face's
RoBERTa tokenizer (`vocab.json`, `merges.txt`), its byte-level BPE split 334 of the 39,204 offline texts
otherwise (0.85%), more than a tokenizer may differ by. Nothing is written unless every file is: the files go to a temporary
directory that is renamed into place.

Example:

```python
from keras_adapterfusion.backbones.keras_hub_tokenizers import keras_hub_tokenizer

keras_hub_tokenizer("path/to/keras_hub_preset", "path/to/hf_tokenizer")   # or a keras-hub tokenizer object
```
"""

import os
import shutil
import tempfile

from keras_adapterfusion.errors import CheckpointError
from keras_adapterfusion.io.files import read_json, write_json

# keras-hub tokenizer class -> (family, the Hugging Face tokenizer class, the SentencePiece file name).
TOKENIZERS = {
    "BertTokenizer": ("wordpiece", "BertTokenizer", None),
    "DistilBertTokenizer": ("wordpiece", "DistilBertTokenizer", None),
    "ElectraTokenizer": ("wordpiece", "ElectraTokenizer", None),
    "XLMRobertaTokenizer": ("sentencepiece", "XLMRobertaTokenizer", "sentencepiece.bpe.model"),
    "AlbertTokenizer": ("sentencepiece", "AlbertTokenizer", "spiece.model"),
    "DebertaV3Tokenizer": ("sentencepiece", "DebertaV2Tokenizer", "spm.model"),
}


def load_preset(path, marker, load, writer):
    """`load(path)` for a keras-hub preset directory holding `marker`; `CheckpointError` naming the directory
    when it does not hold one, or when keras-hub cannot load it. `writer` says what writes such presets."""
    path = os.fspath(path)
    if not os.path.isfile(os.path.join(path, marker)):
        raise CheckpointError(f"{path}: no keras-hub preset ({marker}) here; expected a directory written by "
                              f"{writer}'s save_to_preset.")
    try:
        return load(path)
    except Exception as e:  # keras-hub raises many kinds for a bad preset
        raise CheckpointError(f"{path}: keras-hub could not load the preset ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''}).") from e


def _tokenizer(tokenizer_or_preset_dir):
    if not isinstance(tokenizer_or_preset_dir, (str, os.PathLike)):
        return tokenizer_or_preset_dir
    import keras_hub

    return load_preset(tokenizer_or_preset_dir, "tokenizer.json", keras_hub.tokenizers.Tokenizer.from_preset,
                       "a tokenizer (or task)")


def _proto_bytes(proto):
    if isinstance(proto, bytes):
        return proto
    with open(proto, "rb") as f:
        return f.read()


def _write_files(tokenizer, kind, directory):
    family, hf_class, spm_file = TOKENIZERS[kind]
    config = {"tokenizer_class": hf_class, "model_max_length": 512}
    if family == "wordpiece":
        with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
            f.write("".join(token + "\n" for token in tokenizer.get_vocabulary()))
        config.update(do_lower_case=bool(tokenizer.lowercase), strip_accents=bool(tokenizer.strip_accents),
                      tokenize_chinese_chars=bool(tokenizer.split_on_cjk))
    else:
        with open(os.path.join(directory, spm_file), "wb") as f:
            f.write(_proto_bytes(tokenizer.proto))
        if kind == "AlbertTokenizer":
            config.update(do_lower_case=False, keep_accents=True)
        elif kind == "DebertaV3Tokenizer":
            config.update(do_lower_case=False)
    write_json(os.path.join(directory, "tokenizer_config.json"), config)
    if kind == "AlbertTokenizer":
        _drop_quote_replacements(directory)


def _drop_quote_replacements(directory):
    """keras-hub's ALBERT tokenizer is the SentencePiece model alone; Hugging Face's turns ``` `` ``` and `''`
    into `"` first. Write the Hugging Face tokenizer's `tokenizer.json` without those two steps."""
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(directory).save_pretrained(directory)
    path = os.path.join(directory, "tokenizer.json")
    spec = read_json(path, "Hugging Face tokenizer.json")
    normalizer = spec.get("normalizer") or {}
    quotes = [{"String": "``"}, {"String": "''"}]
    if normalizer.get("type") == "Sequence":
        normalizer["normalizers"] = [n for n in normalizer["normalizers"]
                                     if not (n.get("type") == "Replace" and n.get("pattern") in quotes)]
    write_json(path, spec)
    # transformers rebuilds ALBERT's normalizer from its class's settings; the generic fast tokenizer reads
    # tokenizer.json as it is.
    config_path = os.path.join(directory, "tokenizer_config.json")
    config = read_json(config_path, "Hugging Face tokenizer_config.json")
    write_json(config_path, {**config, "tokenizer_class": "PreTrainedTokenizerFast"})


def keras_hub_tokenizer(tokenizer_or_preset_dir, directory):
    """Write a keras-hub tokenizer as a Hugging Face tokenizer directory; returns the directory.

    Args:
        tokenizer_or_preset_dir: a keras-hub tokenizer (see the module's table), or a preset directory
            holding one (`save_to_preset` of the tokenizer or of a task).
        directory: where to write; must not exist yet, or be empty.

    Returns:
        `directory`, which `load_tokenizer` (and `transformers.AutoTokenizer`) then read.

    Raises:
        CheckpointError: a tokenizer of another kind, a preset without a tokenizer, or a `directory`
            that holds files already (nothing is written then).
    """
    tokenizer = _tokenizer(tokenizer_or_preset_dir)
    kind = type(tokenizer).__name__
    if kind not in TOKENIZERS:
        why = (" (its byte-level BPE has no Hugging Face twin that tokenizes the same texts alike)"
               if kind == "RobertaTokenizer" else "")
        raise CheckpointError(f"keras_hub_tokenizer: got a {kind}{why}; expected one of {sorted(TOKENIZERS)}.")
    directory = os.fspath(directory)
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise CheckpointError(f"keras_hub_tokenizer: {directory} exists and is not an empty directory; expected a "
                              "new directory.")
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tokenizer-", dir=parent)
    try:
        _write_files(tokenizer, kind, staging)
        if os.path.isdir(directory):
            os.rmdir(directory)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory
