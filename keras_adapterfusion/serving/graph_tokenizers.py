"""Tokenizers inside the TensorFlow graph, for SavedModel signatures that take raw text.

With one of these in an exported model, a REST client sends
`{"instances": ["some text"]}` and the model server tokenizes. Two families are
supported, built from the Hugging Face tokenizer the model was trained with:

| tokenizer | vocabulary | graph ops |
|---|---|---|
| WordPiece (BERT, MiniLM: `tokenizer.json` with a `WordPiece` model, or `vocab.txt`) | the vocabulary's tokens | `tf.strings.lower`, `regex_replace` (TensorFlow); `normalize_utf8`, `regex_split_with_offsets`, `WordpieceTokenizer` (TensorFlow Text) |
| SentencePiece (XLM-R: `sentencepiece.bpe.model`) | the SentencePiece model, with fairseq's id offset | `SentencepieceTokenizer` (TensorFlow Text) |
| SentencePiece unigram (ALBERT: `spiece.model`; DeBERTa-v3: `spm.model`) | the SentencePiece model's own ids | `regex_replace`, `strings.lower` (TensorFlow); `normalize_utf8`, `SentencepieceTokenizer` (TensorFlow Text) |

Byte-level BPE (RoBERTa, GPT-2: `vocab.json` + `merges.txt`) has no reliable
in-graph tokenizer in TensorFlow Text; those exports keep the token-id
signatures only, and `graph_tokenizer` says so.

The WordPiece graph follows Hugging Face's `BertNormalizer` and
`BertPreTokenizer` step by step: control characters removed and other whitespace
made a space (clean_text); lower case, NFD and accents removed (when the
tokenizer lowercases); words split at Unicode whitespace, ASCII and Unicode
punctuation and CJK characters; WordPiece with `##` continuations and `[UNK]`
for words longer than 100 bytes (Hugging Face counts 100 characters: the same for
ASCII). The unigram graph follows Hugging Face's normalizer sequence for ALBERT
and DeBERTa-v3 (read from `tokenizer.json`, refused if it holds any other step):
outer whitespace stripped (DeBERTa; SentencePiece strips it too), ``` `` ``` and
`''` made `"`, NFKD and accents removed (unless `keep_accents`), lower case
(when `do_lower_case`) (ALBERT); SentencePiece then applies the model's own
normalization (the precompiled character map, whitespace collapsed). `tests/test_graph_tokenizers.py`
checks that the graph's ids equal the Python tokenizer's on every text of the
offline corpora.

TensorFlow Serving's standard model server links the TensorFlow Text ops used
here (its own regression model `tf_text_regression` exercises `normalize_utf8`,
`regex_split`, `WordpieceTokenizer` and `SentencepieceTokenizer`); the newer
"Fast" tokenizers of TensorFlow Text are not linked in, so they are not used.
Export needs `tensorflow-text` installed (`pip install keras-adapterfusion[serving]`).

Example:

```python
from keras_adapterfusion.serving.graph_tokenizers import graph_tokenizer

tok = graph_tokenizer("path/to/checkpoint", max_length=128)   # a tf.Module
ids = tok(tf.constant(["What a film!"]))                      # input_ids, attention_mask, token_type_ids
```
"""

import json
import os

import tensorflow as tf

from keras_adapterfusion.errors import ExportError

try:
    import tensorflow_text as text
except ImportError:  # the `serving` extra is not installed: `graph_tokenizer` says so
    text = None

_PUNCTUATION = r"[!-/]|[:-@]|[\[-`]|[{-~]|\p{P}"
_CJK = "|".join(r"[\x{%X}-\x{%X}]" % pair for pair in (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))
_SPLIT = r"[\s\p{Zs}]+|" + _PUNCTUATION + "|" + _CJK
_KEEP = _PUNCTUATION + "|" + _CJK


def _tokenizer_json(directory):
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def tokenizer_family(directory):
    """`"wordpiece"`, `"sentencepiece"` (XLM-R), `"unigram"` (ALBERT, DeBERTa-v3) or `"bpe"` for the tokenizer files in
    `directory` (None if unknown)."""
    spec = _tokenizer_json(directory)
    model = (spec or {}).get("model", {}).get("type")
    if os.path.isfile(os.path.join(directory, "sentencepiece.bpe.model")):
        return "sentencepiece"
    if model == "Unigram" and _unigram_model(directory):
        return "unigram"
    if model == "WordPiece" or (model is None and os.path.isfile(os.path.join(directory, "vocab.txt"))):
        return "wordpiece"
    if model == "BPE" or os.path.isfile(os.path.join(directory, "merges.txt")):
        return "bpe"
    return None


def _wordpiece_settings(directory):
    spec = _tokenizer_json(directory)
    if spec is not None:
        vocab = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
        tokens = [t for t, _ in vocab]
        if [i for _, i in vocab] != list(range(len(tokens))):
            raise ExportError(f"{directory}/tokenizer.json: the WordPiece ids are not 0..n-1.")
        normalizer = spec.get("normalizer") or {}
        lowercase = bool(normalizer.get("lowercase", True))
        strip = normalizer.get("strip_accents")
        model = spec["model"]
        return dict(tokens=tokens, lowercase=lowercase, strip_accents=lowercase if strip is None else bool(strip),
                    unk=model.get("unk_token", "[UNK]"), prefix=model.get("continuing_subword_prefix", "##"),
                    max_word=int(model.get("max_input_chars_per_word", 100)))
    with open(os.path.join(directory, "vocab.txt"), encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f]
    config_path = os.path.join(directory, "tokenizer_config.json")
    lowercase = True
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as f:
            lowercase = bool(json.load(f).get("do_lower_case", True))
    return dict(tokens=tokens, lowercase=lowercase, strip_accents=lowercase, unk="[UNK]", prefix="##", max_word=100)


# Hugging Face's normalizer steps for the unigram tokenizers (ALBERT's, DeBERTa-v3's), in order; all but the
# precompiled map optional.
_UNIGRAM_STEPS = (("Strip", None), ("Replace", "``"), ("Replace", "''"), ("NFKD", None), ("StripAccents", None),
                  ("Lowercase", None), ("Precompiled", None), ("Replace", " {2,}"))
_UNIGRAM_FILES = ("spiece.model", "spm.model")


def _unigram_model(directory):
    return next((os.path.join(directory, f) for f in _UNIGRAM_FILES if os.path.isfile(os.path.join(directory, f))),
                None)


def _unigram_settings(directory):
    """The unigram normalizer's switches and special ids from `tokenizer.json`; any other step is refused."""
    spec = _tokenizer_json(directory)
    normalizer = spec.get("normalizer") or {}
    nodes = normalizer.get("normalizers", []) if normalizer.get("type") == "Sequence" else [normalizer]
    steps = [(n.get("type"), (n.get("pattern") or {}).get("String", (n.get("pattern") or {}).get("Regex")))
             for n in nodes]
    present = [step for step in _UNIGRAM_STEPS if step in steps]
    quotes = [step in steps for step in (("Replace", "``"), ("Replace", "''"))]
    if steps != present or ("Precompiled", None) not in steps or quotes[0] != quotes[1]:
        raise ExportError(f"export: {directory}/tokenizer.json: normalizer steps {steps}; expected those of ALBERT "
                          f"or DeBERTa-v3, in this order: {list(_UNIGRAM_STEPS)} (the in-graph unigram tokenizer "
                          "follows only those).")
    if ("NFKD", None) in steps and ("StripAccents", None) not in steps:
        raise ExportError(f"export: {directory}/tokenizer.json: NFKD without StripAccents; expected both or neither.")
    specials = (spec.get("post_processor") or {}).get("special_tokens", {})
    try:
        ids = {k: int(specials[t]["ids"][0]) for k, t in (("cls", "[CLS]"), ("sep", "[SEP]"))}
    except (KeyError, IndexError, TypeError) as e:
        raise ExportError(f"export: {directory}/tokenizer.json: no [CLS] / [SEP] in the post-processor.") from e
    pad = next((t["id"] for t in spec.get("added_tokens", []) if t.get("content") in ("<pad>", "[PAD]")), 0)
    return dict(quotes=quotes[0], strip_accents=("StripAccents", None) in steps,
                lowercase=("Lowercase", None) in steps, special={**ids, "pad": int(pad)})


def graph_tokenizer(tokenizer_dir, max_length=128, special_ids=None):
    """A `tf.Module` that tokenizes a `tf.string` batch like the Hugging Face tokenizer in `tokenizer_dir`.

    Args:
        tokenizer_dir: a directory with the tokenizer's files (what `save_pretrained` writes).
        max_length: truncation length, special tokens included.
        special_ids: `{"cls", "sep", "pad"}` ids; read from the tokenizer when `None`.

    Returns:
        A module whose call maps texts `[batch]` to a dict of int64 `[batch, tokens]`
        `input_ids`, `attention_mask`, `token_type_ids` (padded to the longest), and whose
        `pair(texts, text_pairs)` does the same for sentence pairs (truncated `longest_first`,
        as the Python tokenizer truncates a pair).

    Raises:
        ExportError: the tokenizer is byte-level BPE or unknown, or `tensorflow-text`
            is not installed.
    """
    if text is None:
        raise ExportError("export: a raw-text signature needs tensorflow-text (pip install "
                          "keras-adapterfusion[serving]).")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 4:
        raise ExportError(f"export: max_length {max_length!r}; expected an int >= 4 (room for a pair's special "
                          "tokens and one token of text).")
    family = tokenizer_family(tokenizer_dir)
    if family == "wordpiece":
        return WordPieceModule(_wordpiece_settings(tokenizer_dir), max_length, special_ids)
    if family == "sentencepiece":
        return SentencePieceModule(os.path.join(tokenizer_dir, "sentencepiece.bpe.model"), max_length)
    if family == "unigram":
        return UnigramModule(_unigram_model(tokenizer_dir), _unigram_settings(tokenizer_dir), max_length)
    raise ExportError(f"export: {tokenizer_dir}: a {family or 'unknown'} tokenizer has no reliable in-graph "
                      "counterpart; export without the raw-text signature (token ids only).")


def pair_lengths(first, second, budget):
    """How many tokens of each text a pair keeps: Hugging Face's `longest_first` truncation.

    `first` and `second` are the untruncated lengths, `budget` the tokens left after the special
    tokens. Both fit: both kept. Otherwise the shorter text is kept whole when it takes at most half
    the budget and the longer gets the rest; else the shorter gets `budget // 2` and the longer the
    rest (on a tie the first counts as the shorter). Works on Python ints and on integer tensors
    alike (element-wise)."""
    half = budget // 2
    if isinstance(first, int) and isinstance(second, int):
        if first + second <= budget:
            return first, second
        short = min(first, second, half)
        return (short, budget - short) if first <= second else (budget - short, short)
    short = tf.minimum(tf.minimum(first, second), half)
    first_short = first <= second
    keep_first = tf.where(first_short, short, budget - short)
    keep_second = tf.where(first_short, budget - short, short)
    fits = first + second <= budget
    return tf.where(fits, first, keep_first), tf.where(fits, second, keep_second)


def _keep_first(tf, ragged, counts):
    """The first `counts[i]` values of each row of a 2-D ragged tensor."""
    positions = tf.ragged.range(ragged.row_lengths())
    return tf.ragged.boolean_mask(ragged, positions < tf.expand_dims(counts, 1))


def _pad(tf, ids, types, pad):
    input_ids = ids.to_tensor(default_value=pad)
    return {"input_ids": input_ids, "attention_mask": tf.ones_like(ids).to_tensor(default_value=0),
            "token_type_ids": types.to_tensor(default_value=0)}


def _column(tf, rows, value):
    return tf.RaggedTensor.from_tensor(tf.fill([rows, 1], tf.constant(value, tf.int64)))


def _finish(tf, pieces, first, last, pad, max_length):
    """Truncate the ragged ids, add the special tokens, pad: the three model inputs."""
    pieces = pieces[:, : max_length - 2]
    rows = tf.shape(pieces.row_lengths())[0]
    ids = tf.concat([_column(tf, rows, first), pieces, _column(tf, rows, last)], axis=1)
    return _pad(tf, ids, tf.zeros_like(ids), pad)


def _finish_pair(tf, a, b, specials, pad, max_length, second_type):
    """Pair layout `specials[0] a specials[1] b specials[2]` (each a tuple of ids), truncated
    `longest_first` to `max_length`; token types 0 up to the first separator's end, then `second_type`."""
    opening, middle, closing = specials
    budget = max_length - len(opening) - len(middle) - len(closing)
    keep_a, keep_b = pair_lengths(a.row_lengths(), b.row_lengths(), budget)
    a, b = _keep_first(tf, a, keep_a), _keep_first(tf, b, keep_b)
    rows = tf.shape(a.row_lengths())[0]

    def run(ids):
        return [_column(tf, rows, i) for i in ids]

    head = tf.concat(run(opening) + [a] + run(middle), axis=1)
    tail = tf.concat([b] + run(closing), axis=1)
    ids = tf.concat([head, tail], axis=1)
    types = tf.concat([tf.zeros_like(head), tf.ones_like(tail) * second_type], axis=1)
    return _pad(tf, ids, types, pad)


class _ClsSepSignatures:
    """The signatures of a tokenizer with `[CLS] text [SEP]` (WordPiece, ALBERT, DeBERTa-v3): a subclass gives
    `_pieces(texts)` (ragged ids without specials), `special` (`cls`, `sep`, `pad` ids) and `max_length`."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, texts):
        return _finish(tf, self._pieces(texts), self.special["cls"], self.special["sep"], self.special["pad"],
                       self.max_length)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.string)])
    def pair(self, texts, text_pairs):
        """`[CLS] text [SEP] pair [SEP]`, token types 0 then 1, as the Python tokenizer gives a pair."""
        cls, sep = self.special["cls"], self.special["sep"]
        return _finish_pair(tf, self._pieces(texts), self._pieces(text_pairs), ((cls,), (sep,), (sep,)),
                            self.special["pad"], self.max_length, 1)


class WordPieceModule(_ClsSepSignatures, tf.Module):
    """BERT-style WordPiece in the graph (`graph_tokenizer` makes it; see the module docstring)."""

    def __init__(self, settings, max_length, special_ids):
        super().__init__(name="wordpiece_tokenizer")
        tokens = settings["tokens"]
        index = {t: i for i, t in enumerate(tokens)}
        special = special_ids or {"cls": index["[CLS]"], "sep": index["[SEP]"], "pad": index.get("[PAD]", 0)}
        self.settings = {k: v for k, v in settings.items() if k != "tokens"}
        self.special = special
        self.max_length = int(max_length)
        init = tf.lookup.KeyValueTensorInitializer(tf.constant(tokens), tf.range(len(tokens), dtype=tf.int64))
        self.table = tf.lookup.StaticHashTable(init, default_value=-1)
        self.wordpiece = text.WordpieceTokenizer(self.table, suffix_indicator=settings["prefix"],
                                                 max_bytes_per_word=settings["max_word"],
                                                 unknown_token=settings["unk"], token_out_type=tf.int64)

    def _pieces(self, texts):
        x = tf.strings.regex_replace(texts, r"[\t\n\r]", " ")
        x = tf.strings.regex_replace(x, r"[\x{0}\x{FFFD}\p{Cc}\p{Cf}\p{Co}\p{Cs}]", "")
        if self.settings["lowercase"]:
            x = tf.strings.lower(x, encoding="utf-8")
        if self.settings["strip_accents"]:
            x = text.normalize_utf8(x, "NFD")
            x = tf.strings.regex_replace(x, r"\p{Mn}", "")
        words = text.regex_split(x, _SPLIT, _KEEP)
        return self.wordpiece.tokenize(words).merge_dims(-2, -1)


class SentencePieceModule(tf.Module):
    """XLM-R: SentencePiece ids shifted by fairseq's offset (`<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3)."""

    def __init__(self, model_path, max_length):
        super().__init__(name="sentencepiece_tokenizer")
        with open(model_path, "rb") as f:
            self.sentencepiece = text.SentencepieceTokenizer(model=f.read(), out_type=tf.int32)
        self.max_length = int(max_length)

    def _pieces(self, texts):
        ids = tf.cast(self.sentencepiece.tokenize(texts), tf.int64)
        return tf.ragged.map_flat_values(lambda v: tf.where(tf.equal(v, 0), tf.constant(3, tf.int64), v + 1),
                                         ids)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, texts):
        return _finish(tf, self._pieces(texts), 0, 2, 1, self.max_length)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.string)])
    def pair(self, texts, text_pairs):
        """`<s> text </s></s> pair </s>`, token types all 0, as XLM-R's Python tokenizer gives a pair."""
        return _finish_pair(tf, self._pieces(texts), self._pieces(text_pairs), ((0,), (2, 2), (2,)), 1,
                            self.max_length, 0)


class UnigramModule(_ClsSepSignatures, tf.Module):
    """ALBERT, DeBERTa-v3: Hugging Face's normalizer steps, then SentencePiece, whose ids are the tokenizer's."""

    def __init__(self, model_path, settings, max_length):
        super().__init__(name="unigram_tokenizer")
        with open(model_path, "rb") as f:
            self.sentencepiece = text.SentencepieceTokenizer(model=f.read(), out_type=tf.int32)
        self.settings = {k: v for k, v in settings.items() if k != "special"}
        self.special = settings["special"]
        self.max_length = int(max_length)

    def _pieces(self, texts):
        x = texts  # outer whitespace: SentencePiece strips it (remove_extra_whitespaces), as Strip does
        if self.settings["quotes"]:
            x = tf.strings.regex_replace(x, "``", '"')
            x = tf.strings.regex_replace(x, "''", '"')
        if self.settings["strip_accents"]:
            x = text.normalize_utf8(x, "NFKD")
            x = tf.strings.regex_replace(x, r"\p{Mn}", "")
        if self.settings["lowercase"]:
            x = tf.strings.lower(x, encoding="utf-8")
        return tf.cast(self.sentencepiece.tokenize(x), tf.int64)
