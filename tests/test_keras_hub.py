"""`from_keras_hub`: this package's encoder from keras-hub text backbones, outputs equal to keras-hub's.

Random-weight backbones built from small configs (no download), every weight moved by N(0, 0.2²), on
TensorFlow and JAX; a preset directory written by `save_to_preset` loads too. Bounds from the precision
(tests/parity.py): both libraries compute in float32.
"""

import os

import numpy as np
import pytest
from keras import ops

from conftest import BACKBONES as CHECKPOINTS, FIXTURES, max_abs
from parity import assert_parity, bounds_for

keras_hub = pytest.importorskip("keras_hub")

from keras_adapterfusion import CheckpointError, from_keras_hub  # noqa: E402

SIZE = dict(vocabulary_size=100, num_layers=2, num_heads=4, hidden_dim=64, intermediate_dim=128,
            max_sequence_length=16)
BACKBONES = {
    "BertBackbone": lambda: keras_hub.models.BertBackbone(**SIZE),
    "RobertaBackbone": lambda: keras_hub.models.RobertaBackbone(**SIZE),
    "XLMRobertaBackbone": lambda: keras_hub.models.XLMRobertaBackbone(**SIZE),
    "DistilBertBackbone": lambda: keras_hub.models.DistilBertBackbone(**SIZE),
    "ElectraBackbone": lambda: keras_hub.models.ElectraBackbone(
        vocab_size=100, num_layers=2, num_heads=4, hidden_dim=64, embedding_dim=32, intermediate_dim=128,
        max_sequence_length=16),
    # Two groups of one layer, each run twice (ALBERT's sharing), narrower embeddings.
    "AlbertBackbone": lambda: keras_hub.models.AlbertBackbone(
        vocabulary_size=100, num_layers=4, num_groups=2, num_heads=4, embedding_dim=32, hidden_dim=64,
        intermediate_dim=128, max_sequence_length=16),
    # 4 buckets, so that 9 tokens reach the logarithmic ones.
    "DebertaV3Backbone": lambda: keras_hub.models.DebertaV3Backbone(bucket_size=4, **SIZE),
}


def perturbed(make):
    backbone = make()
    rng = np.random.default_rng(0)
    for v in backbone.weights:  # init-sized kernels (std 0.02) would leave every activation near 0
        v.assign(ops.convert_to_numpy(v) + rng.normal(0, 0.2, tuple(v.shape)).astype("float32"))
    return backbone


def inputs():
    rng = np.random.default_rng(1)
    ids = rng.integers(3, 100, (3, 9)).astype("int32")
    mask = np.ones((3, 9), "int32")
    mask[1, 6:] = 0
    segments = np.zeros((3, 9), "int32")
    segments[0, 5:] = 1
    return ids, mask, segments


def check(name, backbone, encoder):
    ids, mask, segments = inputs()
    given = {"token_ids": ids, "padding_mask": mask}
    if "segment_ids" in backbone.input:
        given["segment_ids"] = segments
    theirs = backbone(given)
    if not isinstance(theirs, dict):  # RoBERTa, XLM-R, DistilBERT: the sequence output alone
        theirs = {"sequence_output": theirs}
    ours = encoder({"input_ids": ids, "attention_mask": mask,
                    **({"token_type_ids": segments} if "segment_ids" in given else {})})
    keep = mask.astype(bool)  # padded rows: both libraries mask them out as keys; their own values are unused
    reference = {"last_hidden_state": ops.convert_to_numpy(theirs["sequence_output"])[keep]}
    errors = {"last_hidden_state": max_abs(ops.convert_to_numpy(ours["last_hidden_state"])[keep],
                                           reference["last_hidden_state"])}
    if "pooled_output" in theirs:
        reference["pooler_output"] = ops.convert_to_numpy(theirs["pooled_output"])
        errors["pooler_output"] = max_abs(ours["pooler_output"], reference["pooler_output"])
    print(name, errors)
    assert_parity(f"from_keras_hub({name})", errors,
                  bounds_for(reference, list(errors), "float32", encoder.depth, encoder.hidden_size))
    return errors


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_outputs_equal_keras_hub(name):
    backbone = perturbed(BACKBONES[name])
    encoder = from_keras_hub(backbone)
    assert check(name, backbone, encoder)
    assert encoder.use_pooler == (name in ("BertBackbone", "ElectraBackbone", "AlbertBackbone"))
    assert (encoder.embedding_size is not None) == (name in ("ElectraBackbone", "AlbertBackbone"))
    assert encoder.block_order() == ([0, 0, 1, 1] if name == "AlbertBackbone" else [0, 1])
    # Adapters and fusion go on as on any encoder; near-identity adapters leave the outputs close.
    encoder.add_adapter("a", "seq_bn")
    encoder.add_adapter("b", "seq_bn")
    encoder.add_fusion(["a", "b"])
    ids, mask, _ = inputs()
    out = encoder({"input_ids": ids, "attention_mask": mask}, adapter_setup=["a", "b"])
    assert ops.convert_to_numpy(out["fusion_attentions"]).shape == (encoder.depth, 3, 9, 2)


def test_a_preset_directory_loads(tmp_path):
    backbone = perturbed(BACKBONES["BertBackbone"])
    backbone.save_to_preset(str(tmp_path / "preset"))
    check("BertBackbone preset", backbone, from_keras_hub(str(tmp_path / "preset")))


def test_unsupported_backbones_and_missing_presets_are_named(tmp_path):
    gemma = keras_hub.models.GemmaBackbone(vocabulary_size=50, num_layers=1, num_query_heads=2, num_key_value_heads=1,
                                           hidden_dim=16, intermediate_dim=32, head_dim=8)
    with pytest.raises(CheckpointError, match=r"got a GemmaBackbone; expected one of \['AlbertBackbone'"):
        from_keras_hub(gemma)
    albert = dict(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
                  max_sequence_length=8)
    with pytest.raises(CheckpointError, match=r"num_inner_repetitions 2; expected 1"):
        from_keras_hub(keras_hub.models.AlbertBackbone(embedding_dim=8, num_inner_repetitions=2, **albert))
    with pytest.raises(CheckpointError, match=r"embedding_dim equals its hidden_dim 16"):
        from_keras_hub(keras_hub.models.AlbertBackbone(embedding_dim=16, **albert))
    with pytest.raises(CheckpointError, match="no keras-hub preset"):
        from_keras_hub(str(tmp_path))


def test_the_check_sees_the_gelu_form():
    """keras-hub's BERT uses the tanh form of GELU; the exact form instead fails the same check (so an
    error of 0 on TensorFlow, where both libraries run the same kernels, is a match, not a blind test)."""
    backbone = perturbed(BACKBONES["BertBackbone"])
    with pytest.raises(AssertionError, match="from_keras_hub"):
        check("BertBackbone, exact gelu", backbone, from_keras_hub(backbone, hidden_act="gelu"))


# keras-hub tokenizers carried over as Hugging Face tokenizers (backbones.keras_hub_tokenizers), each built on
# this repository's tiny vocabularies; the RoBERTa BPE (refused) is trained here on the offline corpora.
def _roberta_tokenizer(tmp_path):
    from tokenizers import ByteLevelBPETokenizer

    from test_graph_tokenizers import corpora

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpora()[:5000], vocab_size=1000,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(tmp_path))
    return keras_hub.models.RobertaTokenizer(vocabulary=str(tmp_path / "vocab.json"),
                                             merges=str(tmp_path / "merges.txt"))


TOKENIZERS = {
    "BertTokenizer": lambda _: keras_hub.models.BertTokenizer(
        vocabulary=os.path.join(CHECKPOINTS, "tiny-distilbert", "vocab.txt"), lowercase=True),
    "DistilBertTokenizer": lambda _: keras_hub.models.DistilBertTokenizer(
        vocabulary=os.path.join(CHECKPOINTS, "tiny-distilbert", "vocab.txt"), lowercase=True),
    "ElectraTokenizer": lambda _: keras_hub.models.ElectraTokenizer(
        vocabulary=os.path.join(CHECKPOINTS, "tiny-electra", "vocab.txt"), lowercase=True),
    "XLMRobertaTokenizer": lambda _: keras_hub.models.XLMRobertaTokenizer(
        proto=os.path.join(FIXTURES, "xlmr_style_tokenizer", "sentencepiece.bpe.model")),
    "AlbertTokenizer": lambda _: keras_hub.models.AlbertTokenizer(
        proto=os.path.join(CHECKPOINTS, "tiny-albert", "spiece.model")),
    "DebertaV3Tokenizer": lambda _: keras_hub.models.DebertaV3Tokenizer(
        proto=os.path.join(CHECKPOINTS, "tiny-deberta-v2", "spm.model")),
}


@pytest.mark.tensorflow_only  # keras-hub's tokenizers run on TensorFlow Text
@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_carried_over_tokenizers_tokenize_as_keras_hub_does(name, tmp_path):
    """On every offline text, the Hugging Face tokenizer written from a keras-hub tokenizer gives keras-hub's
    ids, except (WordPiece) texts with '…', which keras-hub's case folding (NFKC) makes one word '...', and
    (SentencePiece) texts segmented otherwise (ties between equal-score segmentations; one XLM-R text cut as
    '▁Be st' by one and '▁B est' by the other): the same characters in other pieces."""
    from keras_adapterfusion.backbones import keras_hub_tokenizer, load_tokenizer
    from test_graph_tokenizers import corpora

    ours_tokenizer = TOKENIZERS[name](tmp_path)
    directory = keras_hub_tokenizer(ours_tokenizer, tmp_path / "hf")
    hf = load_tokenizer(directory)
    texts = corpora()
    python = hf(texts, add_special_tokens=False)["input_ids"]
    theirs = [[int(i) for i in row] for row in ours_tokenizer(texts)]
    different = [i for i, (a, b) in enumerate(zip(python, theirs)) if a != b]
    print(name, f"{len(different)} of {len(texts)} texts differ")
    assert len(different) < 0.001 * len(texts), len(different)
    for i in different:
        if name in ("BertTokenizer", "DistilBertTokenizer", "ElectraTokenizer"):
            assert "\u2026" in texts[i], texts[i]
        else:  # the same characters, segmented otherwise
            a, b = hf.convert_ids_to_tokens(python[i]), hf.convert_ids_to_tokens(theirs[i])
            assert "".join(a) == "".join(b), (texts[i], a, b)
    # With the special tokens, as the encoder's inputs: [CLS] ... [SEP] (or <s> ... </s>) around the same ids.
    ids = hf("a short text")["input_ids"]
    assert ids[1:-1] == hf("a short text", add_special_tokens=False)["input_ids"] and ids[0] != ids[1]


@pytest.mark.tensorflow_only
def test_roberta_tokenizer_is_refused_with_the_reason(tmp_path):
    from keras_adapterfusion.backbones import keras_hub_tokenizer

    with pytest.raises(CheckpointError, match=r"got a RobertaTokenizer \(its byte-level BPE"):
        keras_hub_tokenizer(_roberta_tokenizer(tmp_path), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


@pytest.mark.tensorflow_only
def test_a_preset_with_a_tokenizer_gives_the_encoder_its_tokenizer(tmp_path):
    from keras_adapterfusion.backbones import load_tokenizer

    backbone = perturbed(BACKBONES["BertBackbone"])
    tokenizer = TOKENIZERS["BertTokenizer"](tmp_path)
    backbone.save_to_preset(str(tmp_path / "preset"))
    tokenizer.save_to_preset(str(tmp_path / "preset"))
    encoder = from_keras_hub(str(tmp_path / "preset"), tokenizer_dir=tmp_path / "tok")
    assert encoder.checkpoint == str(tmp_path / "tok")
    hf = load_tokenizer(encoder.checkpoint)
    assert hf("what a film", add_special_tokens=False)["input_ids"] == [int(i) for i in tokenizer("what a film")]
    with pytest.raises(CheckpointError, match="exists and is not an empty directory"):
        from_keras_hub(str(tmp_path / "preset"), tokenizer_dir=tmp_path / "tok")
    with pytest.raises(CheckpointError, match="tokenizer_dir needs a tokenizer"):
        from_keras_hub(backbone, tokenizer_dir=tmp_path / "other")
    with pytest.raises(CheckpointError, match="got a tokenizer but no tokenizer_dir"):
        from_keras_hub(backbone, tokenizer=tokenizer)
