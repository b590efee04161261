"""In-graph tokenizers (for raw-text serving signatures) against the Python tokenizers, on the offline corpora."""

import os

import numpy as np
import pytest

from conftest import BACKBONES, FIXTURES, minilm_dir

pytestmark = pytest.mark.tensorflow_only
XLMR_STYLE = os.path.join(FIXTURES, "xlmr_style_tokenizer")
ALBERT = os.path.join(BACKBONES, "tiny-albert")
DEBERTA = os.path.join(BACKBONES, "tiny-deberta-v2")


def corpora():
    from keras_adapterfusion.tasks.offline_data import BUILDER_NAMES, prepared_split

    texts = []
    for name in BUILDER_NAMES:
        for split in ("train", "validation", "test"):
            texts += prepared_split(name, split)[0]
    return texts


def graph_ids(module, texts, chunk=1024):
    import tensorflow as tf

    out = []
    for i in range(0, len(texts), chunk):
        result = module(tf.constant(texts[i:i + chunk]))
        ids, mask = result["input_ids"].numpy(), result["attention_mask"].numpy()
        assert (result["token_type_ids"].numpy() == 0).all()
        out += [row[m == 1].tolist() for row, m in zip(ids, mask)]
    return out


@pytest.mark.parametrize("checkpoint", ["minilm", "tiny-distilbert", "tiny-electra"])
def test_wordpiece_graph_equals_the_python_tokenizer_on_every_offline_text(checkpoint):
    """MiniLM's (BERT) tokenizer, and the DistilBERT and ELECTRA tokenizers that the tiny checkpoints carry
    (`load_tokenizer` gives the model type's own class)."""
    from keras_adapterfusion.backbones import load_tokenizer
    from keras_adapterfusion.serving.graph_tokenizers import graph_tokenizer, tokenizer_family

    directory = minilm_dir() if checkpoint == "minilm" else os.path.join(BACKBONES, checkpoint)
    assert tokenizer_family(directory) == "wordpiece"
    tokenizer = load_tokenizer(directory)
    # The model type's class ("...Fast" before transformers 5; v5's ElectraTokenizer is BERT's class).
    expected = {"minilm": ("Bert",), "tiny-distilbert": ("DistilBert",), "tiny-electra": ("Electra", "Bert")}
    assert type(tokenizer).__name__.startswith(tuple(e + "Tokenizer" for e in expected[checkpoint])), type(tokenizer)
    texts = corpora()
    assert len(texts) > 39000
    python = tokenizer(texts, truncation=True, max_length=64)["input_ids"]
    graph = graph_ids(graph_tokenizer(directory, max_length=64), texts)
    different = [i for i, (a, b) in enumerate(zip(graph, python)) if a != b]
    assert not different, [(texts[i][:80], graph[i][:12], python[i][:12]) for i in different[:3]]
    assert max(len(ids) for ids in graph) == 64  # truncation, special tokens included


EDGE_CASES = ["Ça va? Déjà vu — naïve café!", "tabs\tand\nnewlines\r\n", "non\u00a0breaking space", "zero\u200bwidth",
              "中文字符 mixed with English", "URL http://x.y/z?a=1&b=2", "emoji 😀 and ‘quotes’", "", "   ",
              "a" * 150 + " word", "ÀÉÎÕÜ UPPER", "don't can't won't", "[CLS] literal [SEP]"]


def test_wordpiece_graph_edge_cases():
    from transformers import AutoTokenizer

    from keras_adapterfusion.serving.graph_tokenizers import graph_tokenizer

    python = AutoTokenizer.from_pretrained(minilm_dir())(EDGE_CASES, truncation=True, max_length=32)["input_ids"]
    graph = graph_ids(graph_tokenizer(minilm_dir(), max_length=32), EDGE_CASES)
    for text, a, b in zip(EDGE_CASES, graph, python):
        if text.startswith("[CLS]"):
            continue  # Hugging Face keeps special tokens written in the text whole; the graph splits them
        assert a == b, (text, a, b)


def test_sentencepiece_graph_equals_the_python_tokenizers_up_to_ties():
    """XLM-R layout (fairseq ids: pieces + 1, unk 3). TensorFlow Text bundles an older SentencePiece, which
    breaks some ties between equal-score segmentations ("ooo" as "oo"+"o" or "o"+"oo") otherwise than the
    SentencePiece library of today, which again breaks some otherwise than Hugging Face's fast tokenizer.
    Every other text is identical."""
    sentencepiece = pytest.importorskip("sentencepiece")
    from transformers import AutoTokenizer

    from keras_adapterfusion.serving.graph_tokenizers import graph_tokenizer, tokenizer_family

    assert tokenizer_family(XLMR_STYLE) == "sentencepiece"
    texts = corpora()
    graph = graph_ids(graph_tokenizer(XLMR_STYLE, max_length=64), texts)
    processor = sentencepiece.SentencePieceProcessor(model_file=os.path.join(XLMR_STYLE, "sentencepiece.bpe.model"))
    library = [[0] + [i + 1 if i else 3 for i in ids][:62] + [2] for ids in processor.encode(texts)]
    hf = AutoTokenizer.from_pretrained(XLMR_STYLE)
    python = hf(texts, truncation=True, max_length=64)["input_ids"]
    for other, label in ((python, "Hugging Face fast"), (library, "sentencepiece library")):
        different = [i for i, (a, b) in enumerate(zip(graph, other)) if a != b]
        print(f"graph vs {label}: {len(different)} of {len(texts)} texts segmented differently (ties)")
        assert len(different) < 0.001 * len(texts), (label, len(different))
        for i in different:  # the same text, cut into the same pieces in another order
            a, b = hf.convert_ids_to_tokens(graph[i]), hf.convert_ids_to_tokens(other[i])
            assert "".join(a) == "".join(b) and sorted(a) == sorted(b), (label, texts[i], a, b)


@pytest.mark.parametrize("directory", [ALBERT, DEBERTA], ids=["albert", "deberta-v2"])
def test_unigram_graph_equals_the_python_tokenizer_up_to_ties(directory):
    """ALBERT's and DeBERTa-v3's tokenizers (the tiny checkpoints' `spiece.model` / `spm.model`, Hugging Face's
    normalizer steps before them): the same ids on every offline text except ties between equal-score
    segmentations, as above."""
    from keras_adapterfusion.backbones import load_tokenizer
    from keras_adapterfusion.serving.graph_tokenizers import graph_tokenizer, tokenizer_family

    assert tokenizer_family(directory) == "unigram"
    tokenizer = load_tokenizer(directory)
    expected = "AlbertTokenizer" if directory == ALBERT else "DebertaV2Tokenizer"
    assert type(tokenizer).__name__.startswith(expected), type(tokenizer)
    # Hugging Face keeps special tokens written in the text whole; the graph splits them (as for WordPiece).
    texts = corpora() + [t for t in EDGE_CASES if not t.startswith("[CLS]")]
    python = tokenizer(texts, truncation=True, max_length=64)["input_ids"]
    graph = graph_ids(graph_tokenizer(directory, max_length=64), texts)
    different = [i for i, (a, b) in enumerate(zip(graph, python)) if a != b]
    print(f"graph vs Hugging Face: {len(different)} of {len(texts)} texts segmented differently (ties)")
    assert len(different) < 0.001 * len(texts), len(different)
    for i in different:  # the same text, cut into the same pieces in another order
        a, b = tokenizer.convert_ids_to_tokens(graph[i]), tokenizer.convert_ids_to_tokens(python[i])
        assert "".join(a) == "".join(b) and sorted(a) == sorted(b), (texts[i], a, b)


def test_albert_normalizers_other_than_its_own_are_refused(tmp_path):
    import json
    import shutil

    from keras_adapterfusion.errors import ExportError
    from keras_adapterfusion.serving.graph_tokenizers import graph_tokenizer

    shutil.copytree(ALBERT, tmp_path / "a")
    path = tmp_path / "a" / "tokenizer.json"
    spec = json.loads(path.read_text())
    spec["normalizer"]["normalizers"].insert(0, {"type": "NFC"})
    path.write_text(json.dumps(spec))
    with pytest.raises(ExportError, match=r"normalizer steps \[\('NFC', None\).*expected those of ALBERT"):
        graph_tokenizer(str(tmp_path / "a"))


def test_byte_level_bpe_is_refused_with_a_reason(tmp_path):
    from keras_adapterfusion.errors import ExportError
    from keras_adapterfusion.serving.graph_tokenizers import graph_tokenizer

    (tmp_path / "vocab.json").write_text('{"a": 0}')
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ExportError, match="bpe tokenizer has no reliable in-graph counterpart"):
        graph_tokenizer(str(tmp_path))


def graph_pair_ids(module, firsts, seconds, chunk=1024):
    import tensorflow as tf

    out = []
    for i in range(0, len(firsts), chunk):
        result = module.pair(tf.constant(firsts[i:i + chunk]), tf.constant(seconds[i:i + chunk]))
        ids, mask, types = (result[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids"))
        out += [(row[m == 1].tolist(), t[m == 1].tolist()) for row, m, t in zip(ids, mask, types)]
    return out


def python_pair_ids(tokenizer, firsts, seconds, max_length):
    batch = tokenizer(firsts, seconds, truncation=True, max_length=max_length, return_token_type_ids=True)
    return list(zip(batch["input_ids"], batch["token_type_ids"]))


def test_pair_lengths_follow_longest_first_for_every_length():
    """Every pair of lengths up to 20 and every budget up to 12: the rule equals Hugging Face's truncation of
    token lists (`longest_first`), on ints and on tensors."""
    import tensorflow as tf
    from transformers import AutoTokenizer

    from keras_adapterfusion.serving.graph_tokenizers import pair_lengths

    hf = AutoTokenizer.from_pretrained(minilm_dir())
    the, of = hf.convert_tokens_to_ids(["the", "of"])
    # From 1 token of the second text: Hugging Face takes an empty second text for no pair at all.
    cases = [(a, b, m) for m in range(1, 13) for a in range(21) for b in range(1, 21)]
    for a, b, m in cases:  # "the" and "of" are one token each
        ids = hf(" ".join(["the"] * a), " ".join(["of"] * b), truncation="longest_first",
                 max_length=m + 3)["input_ids"]
        want = (ids.count(the), ids.count(of))
        assert pair_lengths(a, b, m) == want, (a, b, m, want)
    first, second, budget = (tf.constant([c[i] for c in cases], tf.int64) for i in range(3))
    got = tf.stack(pair_lengths(first, second, budget), axis=1).numpy().tolist()
    assert got == [list(pair_lengths(a, b, m)) for a, b, m in cases]


@pytest.mark.parametrize("max_length", [4, 5, 12, 64])
def test_wordpiece_pair_graph_equals_the_python_tokenizer(max_length):
    """Sentence pairs (consecutive offline texts), at lengths that truncate most pairs and at one that
    truncates few: the same ids and token types as the Python tokenizer."""
    from transformers import AutoTokenizer

    from keras_adapterfusion.serving.graph_tokenizers import graph_tokenizer

    texts = corpora()[:4001]
    firsts, seconds = texts[:-1], texts[1:]
    python = python_pair_ids(AutoTokenizer.from_pretrained(minilm_dir()), firsts, seconds, max_length)
    graph = graph_pair_ids(graph_tokenizer(minilm_dir(), max_length=max_length), firsts, seconds)
    different = [i for i, (a, b) in enumerate(zip(graph, python)) if a != b]
    assert not different, [(firsts[i][:40], seconds[i][:40], graph[i], python[i]) for i in different[:2]]
    assert {len(ids) for ids, _ in graph} >= {max_length}


@pytest.mark.parametrize("directory", [XLMR_STYLE, ALBERT, DEBERTA], ids=["xlmr", "albert", "deberta-v2"])
@pytest.mark.parametrize("max_length", [5, 12, 64])
def test_sentencepiece_pair_graph_equals_the_python_tokenizer(max_length, directory):
    """XLM-R's pair layout `<s> a </s></s> b </s>`, token types 0, and ALBERT's `[CLS] a [SEP] b [SEP]`, token
    types 0 then 1; pairs whose single texts segment alike (the ties of the tests above aside) get the same ids."""
    from transformers import AutoTokenizer

    from keras_adapterfusion.serving.graph_tokenizers import graph_tokenizer

    hf = AutoTokenizer.from_pretrained(directory)
    module = graph_tokenizer(directory, max_length=512)
    texts = corpora()[:3001]
    singles = graph_ids(module, texts)
    python_singles = hf(texts, truncation=True, max_length=512)["input_ids"]
    same = [i for i in range(len(texts) - 1) if singles[i] == python_singles[i] and singles[i + 1] == python_singles[i + 1]]
    assert len(same) > 0.99 * (len(texts) - 1)
    # The fast tokenizers (tokenizers 0.23) take ~5 MB and ~10 ms per pair truncated to 5 tokens (15 GB for
    # 3,000 SentencePiece pairs): the shortest length runs on the first 300 pairs.
    same = same[:300] if max_length < 12 else same
    firsts, seconds = [texts[i] for i in same], [texts[i + 1] for i in same]
    python = python_pair_ids(hf, firsts, seconds, max_length)
    graph = graph_pair_ids(graph_tokenizer(directory, max_length=max_length), firsts, seconds)
    different = [i for i, (a, b) in enumerate(zip(graph, python)) if a != b]
    assert not different, [(firsts[i][:40], seconds[i][:40], graph[i], python[i]) for i in different[:2]]


def test_graph_tokenizer_refuses_a_max_length_without_room_for_a_pair():
    from keras_adapterfusion.errors import ExportError
    from keras_adapterfusion.serving.graph_tokenizers import graph_tokenizer

    with pytest.raises(ExportError, match=r"max_length 3; expected an int >= 4"):
        graph_tokenizer(minilm_dir(), max_length=3)
