"""The task registry, tokenization into tf.data, caching, metrics."""

import os

import numpy as np
import pytest

from keras_adapterfusion.tasks import (
    MISSING_FROM_TFDS,
    TASKS,
    Task,
    compute_metrics,
    get_task,
    list_tasks,
    register_task,
    tokenize,
)

pytestmark = pytest.mark.tensorflow_only


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    from keras_adapterfusion import load_tokenizer

    return load_tokenizer(minilm_path)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def test_registry_covers_paper_and_offline_tasks():
    paper = {"mnli", "qqp", "sst2", "mrpc", "rte", "boolq", "cb", "imdb", "scitail", "hellaswag", "cosmosqa",
             "winogrande"}
    assert paper <= set(TASKS)
    assert len(paper) + len(MISSING_FROM_TFDS) == 16
    assert set(list_tasks(offline_only=True)) == {"vader_tweets", "vader_movie", "vader_amazon", "vader_nyt",
                                                  "subjectivity", "bbc_topic"}
    assert get_task("mrpc").metrics[0] == "f1" and get_task("hellaswag").head_kind == "multiple_choice"
    with pytest.raises(ValueError) as e:
        get_task("csqa")
    assert "no TFDS builder" in str(e.value) and "vader_tweets" in str(e.value)
    with pytest.raises(ValueError, match="layout"):
        Task("x", "x", "triple", ("a",), ("0", "1"))
    with pytest.raises(ValueError, match="already registered"):
        register_task(get_task("sst2"))


def test_registry_fields_match_tfds_builders():
    """Every online task's text, choice and label fields exist in its TFDS builder's features."""
    import tensorflow_datasets as tfds

    for task in TASKS.values():
        if task.offline:
            continue
        builder = tfds.builder(task.builder)
        features = builder.info.features
        for field in (*task.text_fields, *task.choice_fields, "label"):
            assert field in features, (task.name, field, list(features))
        if task.layout != "multiple_choice":
            assert tuple(features["label"].names) == task.label_names, task.name
        splits = {s.split("[")[0] for _, s in task.splits}
        assert splits, task.name


def test_offline_task_labels_match_builders(data_dir):
    import keras_adapterfusion.tasks.offline as offline

    for name in list_tasks(offline_only=True):
        task = get_task(name)
        texts, labels, names = offline.load_split(task.builder, "train", data_dir=data_dir, limit=5)
        assert tuple(names) == task.label_names, name
        inputs, y = task.load("train", data_dir=data_dir, limit=5)
        assert inputs == texts and np.array_equal(y, labels)


def test_tokenize_pad_buckets_and_cache(tokenizer, data_dir, tmp_path):
    from keras_adapterfusion.tasks import make_dataset

    task = get_task("vader_tweets")
    inputs, labels = task.load("train", data_dir=data_dir, limit=64)
    encoded = tokenize(tokenizer, task, inputs, max_length=24, cache_dir=str(tmp_path))
    assert len(encoded["input_ids"]) == 64
    assert max(len(v) for v in encoded["input_ids"]) <= 24  # truncation
    expected = tokenizer(inputs[0], truncation=True, max_length=24)["input_ids"]
    assert encoded["input_ids"][0].tolist() == expected
    cached = os.listdir(tmp_path)
    assert len(cached) == 1 and cached[0].startswith("vader_tweets-")
    again = tokenize(tokenizer, task, inputs, max_length=24, cache_dir=str(tmp_path))
    assert all(np.array_equal(a, b) for a, b in zip(again["input_ids"], encoded["input_ids"]))
    other = tokenize(tokenizer, task, inputs, max_length=16, cache_dir=str(tmp_path))
    assert len(os.listdir(tmp_path)) == 2 and max(len(v) for v in other["input_ids"]) <= 16

    longest = list(make_dataset(encoded, labels, batch_size=16))
    assert len(longest) == 4
    for x, y in longest:
        assert x["input_ids"].shape[1] == int(np.max(np.sum(x["attention_mask"].numpy(), 1)))  # no excess padding
    buckets = list(make_dataset(encoded, labels, batch_size=8, padding="buckets", bucket_boundaries=[12, 18]))
    assert sum(int(y.shape[0]) for _, y in buckets) == 64
    padded_tokens = sum(int(np.prod(x["input_ids"].shape)) for x, _ in buckets)
    assert padded_tokens <= sum(int(np.prod(x["input_ids"].shape)) for x, _ in longest)
    shuffled = [y.numpy().tolist() for _, y in make_dataset(encoded, labels, batch_size=64, shuffle=True, seed=1)]
    assert sorted(shuffled[0]) == sorted(labels.tolist()) and shuffled[0] != labels.tolist()


def test_pair_and_multiple_choice_tokenization(tokenizer):
    from keras_adapterfusion.tasks import make_dataset

    pair = get_task("rte")
    enc = tokenize(tokenizer, pair, [("A man plays.", "Someone plays."), ("Sky.", "Sea is wide.")], max_length=32)
    assert enc["token_type_ids"][0].max() == 1  # the second segment
    mc = get_task("cosmosqa")
    example = {"context": b"It rained.", "question": b"What got wet?", "answer0": b"the street",
               "answer1": b"nothing", "answer2": b"the moon", "answer3": b"a fish", "label": 0}
    inputs = [mc.examples_to_texts(example)] * 3
    assert inputs[0] == ("It rained. What got wet?", ["the street", "nothing", "the moon", "a fish"])
    enc = tokenize(tokenizer, mc, inputs, max_length=32)
    assert enc["input_ids"][0].shape[0] == 4
    x, y = next(iter(make_dataset(enc, np.array([0, 1, 2]), batch_size=3)))
    assert x["input_ids"].shape[:2] == (3, 4)


def test_metrics_against_hand_computed_values():
    y = np.array([1, 0, 1, 1, 0, 0])
    logits = np.array([[0, 1], [1, 0], [1, 0], [0, 1], [0, 1], [1, 0]], float)  # preds 1 0 0 1 1 0
    m = compute_metrics(("accuracy", "f1", "macro_f1", "matthews"), y, logits)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(2 / 3)          # tp 2, fp 1, fn 1
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["matthews"] == pytest.approx(1 / 3)    # (tp·tn − fp·fn) / sqrt(3·3·3·3) = (4 − 1)/9
    scores = compute_metrics(("pearson", "spearman"), np.array([1.0, 2.0, 3.0, 4.0]),
                             np.array([[1.0], [3.0], [2.0], [4.0]]))
    assert scores["pearson"] == pytest.approx(0.8)
    assert scores["spearman"] == pytest.approx(0.8)


def test_sample_indices_balanced_and_seeded():
    from keras_adapterfusion.training.runs import sample_indices

    labels = np.array([0] * 90 + [1] * 10)
    plain = sample_indices(labels, 20, seed=3)
    assert len(set(plain)) == 20 and np.array_equal(plain, sample_indices(labels, 20, seed=3))
    balanced = sample_indices(labels, 20, seed=3, balanced=True)
    assert np.bincount(labels[balanced]).tolist() == [10, 10]
    skewed = sample_indices(labels, 40, seed=1, balanced=True)  # class 1 has only 10: all of them, 30 of class 0
    assert np.bincount(labels[skewed]).tolist() == [30, 10] and len(set(skewed)) == 40
    assert np.array_equal(sample_indices(labels, 500), np.arange(100))
