"""Argument types and checks of the command line: everything is checked before anything heavy runs.

The argument types (`integer`, `name_type`, `space_type`, ...) and the value
checks that the per-command checks (`cli.command_checks`) share; all run right
after argparse, before TensorFlow, Keras or `transformers` are imported and
before anything is loaded or trained.
A failure raises `CLIError`, which `cli.main` prints as one line,
`keras-adapterfusion: error: ...`, naming the flag, the value and what was
expected, with exit code 2. This module imports only the standard library and the
package's pure-Python helpers (numpy at most).
"""

import argparse
import math
import os

from keras_adapterfusion.backbones.checkpoint import (
    ROBERTA_TYPES,
    TOKENIZER_FILE_SETS,
    has_tokenizer,
    max_tokens,
    read_hf_config,
    resolve_checkpoint,
)
from keras_adapterfusion.configs import adapter_config, is_lora
from keras_adapterfusion.errors import (
    CheckpointError,
    ExportError,
    InputError,
    InvalidNameError,
    SaveError,
    ServingError,
)
from keras_adapterfusion.io.directories import check_destination, saved_directory
from keras_adapterfusion.io.files import read_json
from keras_adapterfusion.io.tensors import weight_files
from keras_adapterfusion.names import check_name

from keras_adapterfusion.errors import CLIError

PROG = "keras-adapterfusion"
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
SEED_MAX = 2**32 - 1  # NumPy's seeds are 32-bit
# The package's own errors: raised while loading, they end as one line too.
PACKAGE_ERRORS = (CheckpointError, ExportError, InputError, InvalidNameError, SaveError, ServingError)
#: Added to the "interrupted" line of a training command.
RESUME_NOTE = ("; rerun the same command with --resume to continue from the last finished epoch (a rerun "
               "without --resume discards that saved state and starts over)")

COMMANDS = ("train-adapter", "fuse", "tune", "finetune", "head-only", "evaluate", "demo", "export", "predict")
TRAINING_COMMANDS = ("train-adapter", "fuse", "finetune", "head-only")


def fail(message):
    raise CLIError(message)


def first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def about(value, error):
    """The first line of `error`'s message, without a leading `<value>: ` (the caller names the value)."""
    message = first_line(error)
    for prefix in {os.fspath(value), os.path.abspath(value)} if os.fspath(value) else ():
        if message.startswith(prefix + ": "):
            return message[len(prefix) + 2:]
    return message


# ------------------------------------------------------------------ parsing
class Parser(argparse.ArgumentParser):
    """argparse, with its errors as the one line every other error is."""

    def error(self, message):
        self.exit(2, f"{PROG}: error: {message}\n")


def integer(minimum, maximum=INT32_MAX):
    """An argparse type: an integer in [minimum, maximum]."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"got {text!r}; expected an integer >= {minimum}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"got {text!r}; expected an integer from {minimum} to {maximum}")
        return value

    return parse


def learning_rate(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a finite number > 0, e.g. 1e-4")
    return value


def name_type(text):
    try:
        return check_name(text, "name")
    except InvalidNameError as e:
        raise argparse.ArgumentTypeError(str(e)[len("name: "):].rstrip(".")) from None


def task_type(text):
    from keras_adapterfusion.tasks.registry import get_task  # numpy, no TensorFlow

    try:
        return get_task(text).name
    except ValueError as e:
        raise argparse.ArgumentTypeError(first_line(e).rstrip(".")) from None


def config_type(cls):
    """An argparse type: a preset name of `cls`, or a JSON file of its fields (loaded and checked)."""

    def parse(text):
        if text in cls.PRESETS:
            return text
        if not os.path.isfile(text):
            raise argparse.ArgumentTypeError(
                f"got {text!r}; expected a preset ({', '.join(sorted(cls.PRESETS))}) or a JSON file of "
                f"{cls.__name__} fields" + (" (no such file)" if text.endswith(".json") else ""))
        try:
            return cls.from_dict(read_json(text, f"{cls.__name__} fields as a JSON object"))
        except CheckpointError as e:
            raise argparse.ArgumentTypeError(first_line(e).rstrip(".")) from None
        except (ValueError, TypeError) as e:
            raise argparse.ArgumentTypeError(f"{text}: {first_line(e).rstrip('.')}") from None

    return parse


def space_type(text):
    """An argparse type: a JSON file of `FusionSearchSpace` fields (read and checked now)."""
    from keras_adapterfusion.tuning import FusionSearchSpace  # pure Python at import

    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a JSON file of search-space fields"
                                         + (" (no such file)" if not os.path.exists(text) else ""))
    try:
        with open(text, encoding="utf-8") as f:
            return FusionSearchSpace.from_json(f.read())
    except (OSError, UnicodeDecodeError) as e:
        raise argparse.ArgumentTypeError(f"{text}: cannot be read ({type(e).__name__})") from None
    except (ValueError, TypeError) as e:
        raise argparse.ArgumentTypeError(f"{text}: {first_line(e).rstrip('.')}") from None


def labels_type(text):
    labels = text.split(",")
    for label in labels:
        if not label.strip():
            raise argparse.ArgumentTypeError(f"got {text!r}, which has an empty label; expected comma-separated "
                                             "label names, e.g. negative,positive")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise argparse.ArgumentTypeError(f"got {text!r}, which repeats {duplicates[0]!r}; expected distinct "
                                         "label names")
    return labels


def server_url(text):
    import urllib.parse

    expected = "expected http://host:port or https://host:port, e.g. http://localhost:8501"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise argparse.ArgumentTypeError(f"got {text!r}, which holds whitespace or control characters; {expected}")
    parts = urllib.parse.urlsplit(text)
    try:
        host, _ = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, or out of range
        raise argparse.ArgumentTypeError(f"got {text!r}, whose port is not a number from 0 to 65535; {expected}") \
            from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise argparse.ArgumentTypeError(f"got {text!r}; {expected}")
    if parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"got {text!r}, which has a query or fragment; {expected}")
    return text


# ----------------------------------------------------------- value checks
def check_encoder(value, where=None, tokenizer=True):
    """`(directory, config)` of an encoder checkpoint, checked without loading it.

    `where` starts the messages (default: `--encoder VALUE`); with `tokenizer`,
    the directory must hold a tokenizer's files too.
    """
    where = where or f"--encoder {value!r}"
    if not isinstance(value, str) or not value.strip():
        fail(f"{where}: expected a checkpoint directory or a cached hub id")
    try:
        directory = resolve_checkpoint(value)
        config = read_hf_config(directory)
    except CheckpointError as e:
        fail(f"{where}: {about(value, e)}")
    files = weight_files(directory, "model")
    if not any(os.path.isfile(os.path.join(directory, f)) for f in files):
        fail(f"{where}: {directory} holds no weights; expected one of {list(files)}")
    if tokenizer and not has_tokenizer(directory):
        expected = " or ".join(" + ".join(s) for s in TOKENIZER_FILE_SETS)
        fail(f"{where}: {directory} holds no tokenizer files; expected {expected} beside config.json")
    return directory, config


def special_tokens(config, layout):
    """How many special tokens the tokenizer adds to one sequence of a task of `layout`."""
    if layout == "single":
        return 2  # [CLS] x [SEP], <s> x </s>
    return 4 if config["model_type"] in ROBERTA_TYPES else 3  # <s> a </s></s> b </s>, [CLS] a [SEP] b [SEP]


LAYOUT_WORDS = {"single": "single-text", "pair": "text-pair", "multiple_choice": "multiple-choice"}


def check_max_length(flag, value, config, layout, encoder):
    """A token limit that leaves room for text and fits the encoder's position table."""
    limit, least = max_tokens(config), special_tokens(config, layout) + 1
    if value is None:
        return min(128, limit)
    if value < least or value > limit:
        fail(f"{flag} {value}: expected an integer from {least} to {limit} (the encoder {encoder!r} holds "
              f"{limit} positions; {least - 1} go to the special tokens of a "
              f"{LAYOUT_WORDS.get(layout, layout)} task)")
    return value


def check_new_directory(flag, value, kind=None):
    """A directory that exists or can be created (and, with `kind`, may receive a save of that kind)."""
    if kind is not None:
        try:
            return check_destination(value, kind)
        except SaveError as e:
            fail(f"{flag} {value!r}: {about(value, e)}")
    if not value or not value.strip():
        fail(f"{flag} {value!r}: expected a directory")
    path = os.path.abspath(value)
    if os.path.exists(path):
        if not os.path.isdir(path):
            fail(f"{flag} {value!r}: exists and is not a directory; expected a directory")
        return path
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        fail(f"{flag} {value!r}: cannot be created ({parent} is not a writable directory)")
    return path


def check_output_dir(args):
    """A training command's `--output-dir`: a run may go there, and replaces an earlier one only with --overwrite."""
    check_new_directory("--output-dir", args.output_dir, "run")
    existing = saved_directory(args.output_dir)  # a save killed halfway counts as there
    if not args.overwrite and os.path.isdir(existing) and os.listdir(existing):
        fail(f"--output-dir {args.output_dir!r}: is not empty; pass --overwrite to replace an earlier run there")


def check_file(flag, value, suffix=None):
    if not os.path.isfile(value):
        what = "a directory" if os.path.isdir(value) else "missing"
        fail(f"{flag} {value!r}: {what}; expected an existing {suffix + ' ' if suffix else ''}file")
    if suffix and not value.endswith(suffix):
        fail(f"{flag} {value!r}: expected a {suffix} file")
    if not os.access(value, os.R_OK):
        fail(f"{flag} {value!r}: cannot be read")


def check_output_file(flag, value):
    path = os.path.abspath(value)
    if os.path.isdir(path):
        fail(f"{flag} {value!r}: is a directory; expected a file name")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        fail(f"{flag} {value!r}: cannot be written ({parent} is not a writable directory)")


def check_run_dir(flag, value):
    """`(run.json, its Task)` of a run directory (its stage, encoder field and task checked)."""
    from keras_adapterfusion.training.run_files import read_run, run_task

    if not os.path.isdir(saved_directory(value)):
        fail(f"{flag} {value!r}: no such directory; expected a run directory (train-adapter, fuse, head-only "
              "or finetune wrote it)")
    try:
        run = read_run(value)
    except CheckpointError as e:
        fail(f"{flag} {value!r}: {about(value, e)}")
    try:
        task = run_task(run)
    except (ValueError, TypeError, KeyError) as e:
        fail(f"{flag} {value!r}: run.json names task {run.get('task')!r}: {first_line(e)}")
    return run, task


def adapter_module(flag, value):
    """The saved adapter directory of `value` (a train-adapter run directory or an adapter), and its name."""
    if not os.path.isdir(saved_directory(value)):
        fail(f"{flag}: {value!r} is not a directory; expected a train-adapter run directory or a saved adapter")
    directory = os.path.join(value, "adapter") if os.path.isdir(os.path.join(value, "adapter")) else value
    path = os.path.join(saved_directory(directory), "module.json")
    if not os.path.isfile(path):
        fail(f"{flag}: {value!r} holds no saved adapter (neither adapter/ nor module.json); expected a "
              "train-adapter run directory or a saved adapter")
    try:
        meta = read_json(path, "saved adapter description")
    except CheckpointError as e:
        fail(f"{flag}: {value!r}: {first_line(e)}")
    if meta.get("kind") != "adapter":
        fail(f"{flag}: {value!r} holds a saved {meta.get('kind')!r}; expected an adapter")
    try:
        return directory, check_name(meta.get("name"), "name")
    except InvalidNameError as e:
        fail(f"{flag}: {value!r}: module.json: {first_line(e)}")


def check_adapter_config(spec, num_layers):
    """What `TransformerEncoder.add_adapter` checks against the encoder: `leave_out` and per-block factors."""
    config = adapter_config(spec)
    where = f"--adapter-config {spec!r}" if isinstance(spec, str) else "--adapter-config"
    beyond = [i for i in config.leave_out if i >= num_layers]
    if beyond:
        fail(f"{where}: leave_out has block {beyond[0]}; expected block indices below {num_layers} (the encoder's "
              "blocks: num_hidden_layers, or ALBERT's num_hidden_groups)")
    if len(config.leave_out) == num_layers:
        fail(f"{where}: leave_out lists all {num_layers} blocks; expected at least one block with the adapter")
    try:
        for i in range(num_layers):
            if not is_lora(config):
                config.reduction_for_block(i)
    except ValueError as e:
        fail(f"{where}: {first_line(e)}")


def user_task(args, label_names=None, name=None):
    """The task of `--train-file` and friends (read now: pure Python), or None when they are not given."""
    from keras_adapterfusion.tasks.user_data import DataError, from_files

    if getattr(args, "train_file", None) is None:
        for flag in ("validation_file", "test_file", "text_pair_column", "task_kind"):
            if getattr(args, flag, None) is not None:
                fail(f"--{flag.replace('_', '-')} needs --train-file (your own data); with --task the registry "
                     "task's data is used")
        return None
    for flag in ("train_file", "validation_file", "test_file"):
        value = getattr(args, flag, None)
        if value is not None:
            check_file(f"--{flag.replace('_', '-')}", value)
    try:
        return from_files(args.train_file, args.validation_file, args.test_file, text_column=args.text_column,
                          text_pair_column=args.text_pair_column, label_column=args.label_column,
                          task_kind=args.task_kind, label_names=label_names, name=name)
    except (DataError, InvalidNameError) as e:
        fail(first_line(e))


def eval_split(args, task):
    """`--eval-split`, or by default the validation split, else the test split, else none."""
    if args.eval_split is not None:
        if not task.has_split(args.eval_split):
            fail(f"--eval-split {args.eval_split}: task {task.name!r} has no {args.eval_split} split"
                 + (f" (pass --{args.eval_split}-file)" if task.data is not None else ""))
        return args.eval_split
    return next((s for s in ("validation", "test") if task.has_split(s)), None)


def check_balanced(args, task):
    """`--balanced` shapes the sample that `--train-examples` draws, by class: only then, and only for classes."""
    if not args.balanced:
        return
    if args.train_examples is None:
        fail("--balanced: needs --train-examples (it decides how that sample is drawn)")
    if task.kind != "single_label":
        fail(f"--balanced: task {task.name!r} is {task.kind}; expected a single-label task (one class per example)")
