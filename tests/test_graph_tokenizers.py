"""In-graph tokenizers (for raw-text serving signatures) against the Python tokenizers, on the offline corpora."""

import os

import numpy as np
import pytest

from conftest import FIXTURES, minilm_dir

pytestmark = pytest.mark.tensorflow_only
XLMR_STYLE = os.path.join(FIXTURES, "xlmr_style_tokenizer")


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


def test_wordpiece_graph_equals_the_python_tokenizer_on_every_offline_text():
    from transformers import AutoTokenizer

    from keras_adapterfusion.graph_tokenizers import graph_tokenizer, tokenizer_family

    assert tokenizer_family(minilm_dir()) == "wordpiece"
    texts = corpora()
    assert len(texts) > 39000
    python = AutoTokenizer.from_pretrained(minilm_dir())(texts, truncation=True, max_length=64)["input_ids"]
    graph = graph_ids(graph_tokenizer(minilm_dir(), max_length=64), texts)
    different = [i for i, (a, b) in enumerate(zip(graph, python)) if a != b]
    assert not different, [(texts[i][:80], graph[i][:12], python[i][:12]) for i in different[:3]]
    assert max(len(ids) for ids in graph) == 64  # truncation, special tokens included


EDGE_CASES = ["Ça va? Déjà vu — naïve café!", "tabs\tand\nnewlines\r\n", "non\u00a0breaking space", "zero\u200bwidth",
              "中文字符 mixed with English", "URL http://x.y/z?a=1&b=2", "emoji 😀 and ‘quotes’", "", "   ",
              "a" * 150 + " word", "ÀÉÎÕÜ UPPER", "don't can't won't", "[CLS] literal [SEP]"]


def test_wordpiece_graph_edge_cases():
    from transformers import AutoTokenizer

    from keras_adapterfusion.graph_tokenizers import graph_tokenizer

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

    from keras_adapterfusion.graph_tokenizers import graph_tokenizer, tokenizer_family

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


def test_byte_level_bpe_is_refused_with_a_reason(tmp_path):
    from keras_adapterfusion.errors import ExportError
    from keras_adapterfusion.graph_tokenizers import graph_tokenizer

    (tmp_path / "vocab.json").write_text('{"a": 0}')
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ExportError, match="bpe tokenizer has no reliable in-graph counterpart"):
        graph_tokenizer(str(tmp_path))
