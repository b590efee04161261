"""Training on JAX in a process where `import tensorflow` fails: the offline tasks, your own files, the batches."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import TINY_BERT

pytestmark = pytest.mark.backend_independent

SCRIPT = r"""
import importlib.abc, json, sys

class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets", "tensorflow_text"):
            raise ImportError(f"{name} is blocked in this test")

sys.meta_path.insert(0, NoTensorFlow())
from keras_adapterfusion import cli

runs = json.loads(sys.argv[1])
codes = [cli.main(argv) for argv in runs]
import keras
print(json.dumps({"codes": codes, "backend": keras.backend.backend(),
                  "tensorflow": sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")}))
"""


def tiny_encoder_with_tokenizer(directory):
    """tiny-bert (vocabulary 1000) with a WordPiece tokenizer whose ids fit it."""
    shutil.copytree(TINY_BERT, directory)
    words = "good great bad awful the a movie film it was is not very and but i love hate day".split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    vocab += [f"w{i}" for i in range(1000 - len(vocab))]
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    return str(directory)


def test_train_adapter_and_fuse_on_jax_without_tensorflow(tmp_path):
    encoder = tiny_encoder_with_tokenizer(tmp_path / "encoder")
    rows = [("i love this film", "pos"), ("awful movie", "neg"), ("a great day", "pos"), ("i hate it", "neg")] * 8
    for split, part in (("train", rows), ("dev", rows[:8])):
        with open(tmp_path / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps({"review": t, "label": y}) + "\n" for t, y in part)
    small = ["--encoder", encoder, "--max-length", "16", "--epochs", "1", "--batch-size", "8", "--learning-rate", "1e-3"]
    own = ["--train-file", str(tmp_path / "train.jsonl"), "--validation-file", str(tmp_path / "dev.jsonl"),
           "--text-column", "review"]
    runs = [
        ["train-adapter", "--task", "vader_tweets", "--adapter-name", "tweets", "--train-examples", "32",
         "--eval-examples", "16", "--output-dir", str(tmp_path / "tweets")] + small,
        ["train-adapter", "--adapter-name", "mine", "--output-dir", str(tmp_path / "mine")] + own + small,
        ["fuse", "--adapters", str(tmp_path / "tweets"), str(tmp_path / "mine"), "--output-dir",
         str(tmp_path / "fuse")] + own + small,
    ]
    env = dict(os.environ, KERAS_BACKEND="jax")
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(runs)], capture_output=True, text=True,
                          timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"codes": [0, 0, 0], "backend": "jax", "tensorflow": []}, done.stderr[-2000:]
    metrics = json.load(open(tmp_path / "fuse" / "metrics.json"))
    assert metrics["split"] == "validation" and 0 <= metrics["accuracy"] <= 1
    assert sorted(os.listdir(tmp_path / "fuse" / "adapters")) == ["mine", "tweets"]
    assert os.path.isfile(tmp_path / "fuse" / "fusion_heatmap.png")
