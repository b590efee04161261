"""Shared by the examples' `--smoke` mode only: a tiny encoder with a tiny tokenizer.

`--smoke` runs each example end to end in seconds, without the network and
without a large checkpoint, so that `tests/test_examples.py` keeps every example
working. The encoder is the repository's test fixture `tiny-bert` (random
weights: 2 blocks, hidden size 64, a vocabulary of 1000 ids); it ships no
tokenizer, so `tiny_checkpoint()` writes a WordPiece vocabulary of 1000 entries
(characters, word pieces and a few hundred common words) beside a copy of its
files. The numbers a tiny random encoder gives mean nothing; smoke mode checks
that the code runs and that its results have the right form.

Not part of the package's API: real runs never import this module.
"""

import atexit
import os
import shutil
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FIXTURES = os.path.join(REPO, "tests", "fixtures")
TINY_BERT = os.path.join(FIXTURES, "backbones", "tiny-bert")

_WORDS = """
the a an and or but not no yes is are was were be been it this that these those of to in on at for with by
from as i you he she we they my your his her our their me him them what which who how why when where there
here all any some very more most much many few good great fine nice best better bad awful poor worst worse
terrible movie film plot actor actress story music scene show book song game team match season player
love loved like liked hate hated enjoy enjoyed boring dull fun funny sad happy angry calm lovely beautiful
ugly wonderful amazing brilliant stupid smart clever slow fast long short big small new old young day night
week year time today tomorrow yesterday morning evening people man woman men women child children friend
family home house city country world news market stocks shares price prices bank rate rates economy company
profit loss sales business government minister election vote party law court police president war peace
health doctor school student teacher science tech phone computer software internet data review reviews
critic critics plot plots ending ending characters character acting director script writing sound picture
sport sports football goal win won lose lost play played playing first last next other same different
make made do did does have has had get got go went come came see saw say said think thought know knew
want wanted need give gave take took look looked feel felt seem seemed would could should will can may
might must up down out over under again still just only also even ever never always often sometimes
really quite too so then than because if while after before about against between into through during
""".split()


_SCRATCH = []


def scratch_dir(name=""):
    """A directory inside this process's temporary directory, which is removed when the process exits."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.mkdtemp(prefix="kaf-example-"))
        atexit.register(shutil.rmtree, _SCRATCH[0], ignore_errors=True)
    path = os.path.join(_SCRATCH[0], name)
    os.makedirs(path, exist_ok=True)
    return path


def tiny_vocabulary():
    """The 1000 WordPiece entries of the tiny tokenizer (special tokens first, then characters and words)."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789") + list(".,!?'\"-:;()&$%/#@*+=")
    vocab += chars + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    for word in _WORDS:
        if word not in vocab:
            vocab.append(word)
    vocab += [f"[unused{i}]" for i in range(1000 - len(vocab))]
    assert len(vocab) == 1000, len(vocab)
    return vocab


def tiny_checkpoint(directory=None):
    """A checkpoint directory with tiny-bert's config and weights and a matching tokenizer.

    Args:
        directory: where to write it; by default `scratch_dir("encoder")`.

    Returns:
        The directory, which `load_encoder`, `load_tokenizer` and `export_saved_model`
        (`tokenizer="auto"`) all accept.
    """
    from transformers import BertTokenizerFast

    if not os.path.isfile(os.path.join(TINY_BERT, "model.safetensors")):
        raise SystemExit(f"--smoke needs the test fixture {TINY_BERT} (run the example from a clone of the "
                         "repository).")
    directory = directory or scratch_dir("encoder")
    os.makedirs(directory, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(os.path.join(TINY_BERT, name), os.path.join(directory, name))
    vocab_file = os.path.join(directory, "vocab.txt")
    with open(vocab_file, "w", encoding="utf-8") as f:
        f.write("\n".join(tiny_vocabulary()) + "\n")
    BertTokenizerFast(vocab_file=vocab_file, do_lower_case=True).save_pretrained(directory)
    return directory


POSITIVE = ["what a lovely film", "great acting and a wonderful story", "i really enjoyed this movie",
            "brilliant music and a fun plot", "the best show this year", "a beautiful and funny story",
            "i loved the characters", "good script and great sound", "an amazing game by the team",
            "happy people and a nice ending"]
NEGATIVE = ["what an awful film", "bad acting and a boring story", "i really hated this movie",
            "terrible music and a dull plot", "the worst show this year", "an ugly and stupid story",
            "i hated the characters", "poor script and bad sound", "a terrible game by the team",
            "angry people and a sad ending"]


def sentiment_examples(count, seed=0):
    """`count` short texts with labels `"negative"` / `"positive"`, drawn with `seed` (a toy task)."""
    import random

    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(count):
        label = "positive" if i % 2 else "negative"
        pool = POSITIVE if i % 2 else NEGATIVE
        texts.append(rng.choice(pool) + rng.choice(["", " !", " .", " today", " again"]))
        labels.append(label)
    return texts, labels
