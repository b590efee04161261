"""The `keras-adapterfusion` command line.

Every argument is checked right after parsing, before TensorFlow, Keras or
`transformers` are imported and before anything is loaded or trained. A bad
argument ends with one line on stderr, `keras-adapterfusion: error: ...`, that
names the flag, the value and what was expected, and exit code 2, never a
traceback. So that `--help` and those checks answer at once, this module imports
only the standard library and the package's pure-Python helpers; the commands
import the heavy libraries when they run.

TensorFlow's start-up log lines (`oneDNN custom operations are on`,
`cudart_stub`, `cpu_feature_guard`, `All log messages before
absl::InitializeLog()`) are kept off the terminal: `TF_CPP_MIN_LOG_LEVEL`
defaults to 2 (C++ errors only), and the lines TensorFlow writes while it loads,
before that setting takes effect, are filtered out (see `_quiet_startup`).
"""

import argparse
import contextlib
import importlib.abc
import json
import math
import os
import sys

from keras_adapterfusion.backbones.checkpoint import (
    DEFAULT_ENCODER,
    TOKENIZER_FILE_SETS,
    has_tokenizer,
    max_tokens,
    read_hf_config,
    resolve_checkpoint,
)
from keras_adapterfusion.configs import AdapterConfig, FusionConfig
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

PROG = "keras-adapterfusion"
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
SEED_MAX = 2**32 - 1  # NumPy's seeds are 32-bit
# The package's own errors: raised while loading, they end as one line too.
PACKAGE_ERRORS = (CheckpointError, ExportError, InputError, InvalidNameError, SaveError, ServingError)
COMMANDS = ("train-adapter", "fuse", "finetune", "head-only", "evaluate", "demo", "export", "predict")


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


def _fail(message):
    raise CLIError(message)


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _about(value, error):
    """The first line of `error`'s message, without a leading `<value>: ` (the caller names the value)."""
    message = _first_line(error)
    for prefix in {os.fspath(value), os.path.abspath(value)} if os.fspath(value) else ():
        if message.startswith(prefix + ": "):
            return message[len(prefix) + 2:]
    return message


# ------------------------------------------------------------------ parsing
class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as the one line every other error is."""

    def error(self, message):
        self.exit(2, f"{PROG}: error: {message}\n")


def _integer(minimum, maximum=INT32_MAX):
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


def _learning_rate(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a finite number > 0, e.g. 1e-4")
    return value


def _name(text):
    try:
        return check_name(text, "name")
    except InvalidNameError as e:
        raise argparse.ArgumentTypeError(str(e)[len("name: "):].rstrip(".")) from None


def _task(text):
    from keras_adapterfusion.tasks.registry import get_task  # numpy, no TensorFlow

    try:
        return get_task(text).name
    except ValueError as e:
        raise argparse.ArgumentTypeError(_first_line(e).rstrip(".")) from None


def _config(cls):
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
            raise argparse.ArgumentTypeError(_first_line(e).rstrip(".")) from None
        except (ValueError, TypeError) as e:
            raise argparse.ArgumentTypeError(f"{text}: {_first_line(e).rstrip('.')}") from None

    return parse


def _labels(text):
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


def _server_url(text):
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
def _check_encoder(value, where=None, tokenizer=True):
    """`(directory, config)` of an encoder checkpoint, checked without loading it.

    `where` starts the messages (default: `--encoder VALUE`); with `tokenizer`,
    the directory must hold a tokenizer's files too.
    """
    where = where or f"--encoder {value!r}"
    if not isinstance(value, str) or not value.strip():
        _fail(f"{where}: expected a checkpoint directory or a cached hub id")
    try:
        directory = resolve_checkpoint(value)
        config = read_hf_config(directory)
    except CheckpointError as e:
        _fail(f"{where}: {_about(value, e)}")
    files = weight_files(directory, "model")
    if not any(os.path.isfile(os.path.join(directory, f)) for f in files):
        _fail(f"{where}: {directory} holds no weights; expected one of {list(files)}")
    if tokenizer and not has_tokenizer(directory):
        expected = " or ".join(" + ".join(s) for s in TOKENIZER_FILE_SETS)
        _fail(f"{where}: {directory} holds no tokenizer files; expected {expected} beside config.json")
    return directory, config


def _special_tokens(config, layout):
    """How many special tokens the tokenizer adds to one sequence of a task of `layout`."""
    if layout == "single":
        return 2  # [CLS] x [SEP], <s> x </s>
    return 3 if config["model_type"] == "bert" else 4  # [CLS] a [SEP] b [SEP], <s> a </s></s> b </s>


LAYOUT_WORDS = {"single": "single-text", "pair": "text-pair", "multiple_choice": "multiple-choice"}


def _check_max_length(flag, value, config, layout, encoder):
    """A token limit that leaves room for text and fits the encoder's position table."""
    limit, least = max_tokens(config), _special_tokens(config, layout) + 1
    if value is None:
        return min(128, limit)
    if value < least or value > limit:
        _fail(f"{flag} {value}: expected an integer from {least} to {limit} (the encoder {encoder!r} holds "
              f"{limit} positions; {least - 1} go to the special tokens of a "
              f"{LAYOUT_WORDS.get(layout, layout)} task)")
    return value


def _check_new_directory(flag, value, kind=None):
    """A directory that exists or can be created (and, with `kind`, may receive a save of that kind)."""
    if kind is not None:
        try:
            return check_destination(value, kind)
        except SaveError as e:
            _fail(f"{flag} {value!r}: {_about(value, e)}")
    if not value or not value.strip():
        _fail(f"{flag} {value!r}: expected a directory")
    path = os.path.abspath(value)
    if os.path.exists(path):
        if not os.path.isdir(path):
            _fail(f"{flag} {value!r}: exists and is not a directory; expected a directory")
        return path
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        _fail(f"{flag} {value!r}: cannot be created ({parent} is not a writable directory)")
    return path


def _check_output_dir(args):
    """A training command's `--output-dir`: a run may go there, and replaces an earlier one only with --overwrite."""
    _check_new_directory("--output-dir", args.output_dir, "run")
    existing = saved_directory(args.output_dir)  # a save killed halfway counts as there
    if not args.overwrite and os.path.isdir(existing) and os.listdir(existing):
        _fail(f"--output-dir {args.output_dir!r}: is not empty; pass --overwrite to replace an earlier run there")


def _check_file(flag, value, suffix=None):
    if not os.path.isfile(value):
        what = "a directory" if os.path.isdir(value) else "missing"
        _fail(f"{flag} {value!r}: {what}; expected an existing {suffix + ' ' if suffix else ''}file")
    if suffix and not value.endswith(suffix):
        _fail(f"{flag} {value!r}: expected a {suffix} file")
    if not os.access(value, os.R_OK):
        _fail(f"{flag} {value!r}: cannot be read")


def _check_output_file(flag, value):
    path = os.path.abspath(value)
    if os.path.isdir(path):
        _fail(f"{flag} {value!r}: is a directory; expected a file name")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        _fail(f"{flag} {value!r}: cannot be written ({parent} is not a writable directory)")


def _check_run_dir(flag, value):
    """`run.json` of a run directory (its stage, encoder field and task checked)."""
    from keras_adapterfusion.experiments import read_run
    from keras_adapterfusion.tasks.registry import get_task

    if not os.path.isdir(saved_directory(value)):
        _fail(f"{flag} {value!r}: no such directory; expected a run directory (train-adapter, fuse, head-only "
              "or finetune wrote it)")
    try:
        run = read_run(value)
    except CheckpointError as e:
        _fail(f"{flag} {value!r}: {_about(value, e)}")
    try:
        get_task(run.get("task"))
    except (ValueError, TypeError) as e:
        _fail(f"{flag} {value!r}: run.json names task {run.get('task')!r}: {_first_line(e)}")
    return run


def _adapter_module(flag, value):
    """The saved adapter directory of `value` (a train-adapter run directory or an adapter), and its name."""
    if not os.path.isdir(saved_directory(value)):
        _fail(f"{flag}: {value!r} is not a directory; expected a train-adapter run directory or a saved adapter")
    directory = os.path.join(value, "adapter") if os.path.isdir(os.path.join(value, "adapter")) else value
    path = os.path.join(saved_directory(directory), "module.json")
    if not os.path.isfile(path):
        _fail(f"{flag}: {value!r} holds no saved adapter (neither adapter/ nor module.json); expected a "
              "train-adapter run directory or a saved adapter")
    try:
        meta = read_json(path, "saved adapter description")
    except CheckpointError as e:
        _fail(f"{flag}: {value!r}: {_first_line(e)}")
    if meta.get("kind") != "adapter":
        _fail(f"{flag}: {value!r} holds a saved {meta.get('kind')!r}; expected an adapter")
    try:
        return directory, check_name(meta.get("name"), "name")
    except InvalidNameError as e:
        _fail(f"{flag}: {value!r}: module.json: {_first_line(e)}")


def _keras_backend():
    """The Keras backend that importing Keras would pick (without importing it)."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def _check_adapter_config(spec, num_layers):
    """What `TransformerEncoder.add_adapter` checks against the encoder: `leave_out` and per-block factors."""
    config = AdapterConfig.get(spec)
    where = f"--adapter-config {spec!r}" if isinstance(spec, str) else "--adapter-config"
    beyond = [i for i in config.leave_out if i >= num_layers]
    if beyond:
        _fail(f"{where}: leave_out has block {beyond[0]}; expected block indices below {num_layers} (the encoder's "
              "num_hidden_layers)")
    if len(config.leave_out) == num_layers:
        _fail(f"{where}: leave_out lists all {num_layers} blocks; expected at least one block with the adapter")
    try:
        for i in range(num_layers):
            config.reduction_for_block(i)
    except ValueError as e:
        _fail(f"{where}: {_first_line(e)}")


# --------------------------------------------------- checks per command
def check_training(args):
    from keras_adapterfusion.tasks.registry import get_task

    task = get_task(args.task)
    args.encoder_dir, config = _check_encoder(args.encoder)
    args.max_length = _check_max_length("--max-length", args.max_length, config, task.layout, args.encoder)
    _check_output_dir(args)
    if args.data_dir is not None:
        _check_new_directory("--data-dir", args.data_dir)
    if args.command == "train-adapter":
        _check_adapter_config(args.adapter_config, config["num_hidden_layers"])
    if args.command == "fuse":
        modules = [_adapter_module("--adapters", d) for d in args.adapters]
        if len(modules) < 2:
            _fail(f"--adapters {' '.join(args.adapters)}: fusion needs at least two adapters; got {len(modules)}")
        names = [name for _, name in modules]
        for i, name in enumerate(names):
            if name in names[:i]:
                _fail(f"--adapters: {args.adapters[names.index(name)]!r} and {args.adapters[i]!r} both hold an "
                      f"adapter named {name!r}; expected distinct adapters")
        args.adapter_dirs = [d for d, _ in modules]


def check_evaluate(args):
    from keras_adapterfusion.io.files import json_field
    from keras_adapterfusion.tasks.registry import get_task

    run = _check_run_dir("--run-dir", args.run_dir)
    _check_encoder(run["encoder"], f"--run-dir {args.run_dir!r}: run.json's encoder {run['encoder']!r}")
    trained = get_task(run["task"])
    task = get_task(args.task or trained.name)
    if (task.head_kind, task.num_labels) != (trained.head_kind, trained.num_labels):
        _fail(f"--task {task.name!r}: has {task.num_labels} labels ({task.head_kind}); expected a task like "
              f"{trained.name!r}, which the run's model was trained on ({trained.num_labels} labels, "
              f"{trained.head_kind})")
    try:
        json_field(run, "max_length", os.path.join(args.run_dir, "run.json"), int, default=128,
                   check=lambda v: v >= 1, expected="an integer >= 1")
    except CheckpointError as e:
        _fail(f"--run-dir {args.run_dir!r}: {_first_line(e)}")
    if args.data_dir is not None:
        _check_new_directory("--data-dir", args.data_dir)
    _check_output_file("--output", args.output or os.path.join(args.run_dir, f"metrics_{task.name}_{args.split}.json"))


def check_demo(args):
    from keras_adapterfusion.demo import SIZES

    _, config = _check_encoder(args.encoder)
    name = "quick" if args.quick else "full" if args.full else "default"
    if SIZES[name].max_length > max_tokens(config):
        _fail(f"--encoder {args.encoder!r}: holds {max_tokens(config)} positions; the demo's {name} size "
              f"tokenizes to {SIZES[name].max_length}; expected an encoder with at least that many")
    _check_new_directory("--output-dir", args.output_dir, "demo")
    if args.data_dir is not None:
        _check_new_directory("--data-dir", args.data_dir)


def check_export(args):
    from keras_adapterfusion.tasks.registry import get_task

    backend = _keras_backend()
    if backend != "tensorflow":
        _fail(f"export needs KERAS_BACKEND=tensorflow (it is {backend!r}); TF Serving runs TensorFlow SavedModels")
    if (args.model is None) == (args.run_dir is None):
        _fail("pass exactly one of --model (a .keras file) or --run-dir (a run directory)")
    if args.model is not None:
        import zipfile

        _check_file("--model", args.model, ".keras")
        if not zipfile.is_zipfile(args.model):
            _fail(f"--model {args.model!r}: is not a .keras archive (not a zip file)")
    else:
        run = _check_run_dir("--run-dir", args.run_dir)
        _check_encoder(run["encoder"], f"--run-dir {args.run_dir!r}: run.json's encoder {run['encoder']!r}",
                       tokenizer=args.tokenizer is None)
        task = get_task(run["task"])
        if args.labels is not None and len(args.labels) != task.num_labels:
            _fail(f"--labels {','.join(args.labels)!r}: {len(args.labels)} names; expected {task.num_labels}, "
                  f"one per label of {task.name!r} ({','.join(task.label_names)})")
    if args.tokenizer is not None:
        try:
            directory = resolve_checkpoint(args.tokenizer)
        except CheckpointError as e:
            _fail(f"--tokenizer {args.tokenizer!r}: {_about(args.tokenizer, e)}")
        if not has_tokenizer(directory):
            _fail(f"--tokenizer {args.tokenizer!r}: {directory} holds no tokenizer files; expected "
                  + " or ".join(" + ".join(s) for s in TOKENIZER_FILE_SETS))
    _check_new_directory("--export-dir", args.export_dir)
    model_dir = os.path.join(args.export_dir, args.model_name)
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        _fail(f"--model-name {args.model_name!r}: {model_dir} exists and is not a directory")
    if args.version is not None:
        version_dir = os.path.join(model_dir, str(args.version))
        if os.path.exists(version_dir) and (not os.path.isdir(version_dir) or os.listdir(version_dir)):
            _fail(f"--version {args.version}: {version_dir} exists and is not empty; pick another version "
                  "(or leave --version out for the next free one)")


def check_predict(args):
    from keras_adapterfusion.serving import _read_label_map

    if not os.path.isdir(args.export):
        _fail(f"--export {args.export!r}: not a directory; expected an exported version directory "
              "(<export-dir>/<model>/<version>, holding assets/)")
    path = os.path.join(args.export, "assets", "label_map.json")
    if not os.path.isfile(path):
        _fail(f"--export {args.export!r}: no assets/label_map.json; expected an exported version directory "
              "(<export-dir>/<model>/<version>)")
    try:
        label_map = _read_label_map(path)
    except ServingError as e:
        _fail(f"--export {args.export!r}: {_first_line(e)}")
    signatures = label_map.get("signatures", {})
    target = signatures.get(args.signature, args.signature)
    if isinstance(target, list) or target not in label_map["tasks"]:
        known = sorted(s for s in set(signatures) | set(label_map["tasks"])
                       if not isinstance(signatures.get(s, s), list))
        _fail(f"--signature {args.signature!r}: expected one of {known} (from {path})")
    texts = list(args.text)
    if args.file is not None:
        _check_file("--file", args.file)
        try:
            with open(args.file, encoding="utf-8") as f:
                texts += [line.rstrip("\n") for line in f if line.strip()]
        except UnicodeDecodeError as e:
            _fail(f"--file {args.file!r}: is not UTF-8 text (byte {e.start}); expected one text per line")
        except OSError as e:
            _fail(f"--file {args.file!r}: cannot be read ({e.strerror or e})")
    if not texts:
        _fail("no text given; pass --text TEXT or --file FILE (one text per line)"
              + (f"; --file {args.file!r} holds no non-blank line" if args.file is not None else ""))
    args.texts = texts


# ---------------------------------------------------------- start-up
# What TensorFlow (and transformers) write to stderr while they load, before
# TF_CPP_MIN_LOG_LEVEL applies: absl's pre-initialization notice and INFO lines.
STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "cudart_stub.cc",
    "cpu_feature_guard.cc",
    "To enable the following instructions:",  # cpu_feature_guard's second line
    "[transformers] PyTorch was not found",
)
NO_CUDA_DRIVER = "Could not find cuda drivers on your machine"


def _startup_lines_to_keep(text):
    """The lines of `text` that are not start-up noise (cuInit's failure counts as noise only without a driver)."""
    no_driver = NO_CUDA_DRIVER in text
    kept = []
    for line in text.splitlines(keepends=True):
        if any(marker in line for marker in STARTUP_NOISE):
            continue
        if no_driver and "failed call to cuInit" in line:
            continue
        kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def _startup_lines_filtered():
    """Send file descriptor 2 to a temporary file, then write back all but the start-up lines.

    At the file-descriptor level, because the lines come from C++ (absl) while
    the libraries load, before TensorFlow reads TF_CPP_MIN_LOG_LEVEL.
    """
    import tempfile

    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 to redirect
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = _startup_lines_to_keep(capture.read().decode("utf-8", "replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


QUIET_IMPORTS = ("tensorflow", "transformers")


class _QuietLoader(importlib.abc.Loader):
    """A module's own loader, run with its start-up lines filtered (and TensorFlow's devices found)."""

    def __init__(self, loader, finder):
        self._loader, self._finder = loader, finder

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._finder.pending.discard(module.__name__)
        if not self._finder.pending and self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        with _startup_lines_filtered():
            self._loader.exec_module(module)
            if module.__name__ == "tensorflow":
                module.config.list_physical_devices()  # device discovery logs too (cuInit without a driver)

    def __getattr__(self, name):  # resource readers and the like: the module's loader answers
        return getattr(self._loader, name)


class _QuietImports(importlib.abc.MetaPathFinder):
    """Wraps the loaders of `QUIET_IMPORTS` in `_QuietLoader`, whenever and by whomever they are imported."""

    def __init__(self, names):
        self.pending = set(names)

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.pending:
            return None
        for finder in sys.meta_path:  # the finder that would load it without us
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _QuietLoader(spec.loader, self)
        return spec


def _quiet_startup():
    """Keep TensorFlow's (and transformers') start-up lines off the terminal, whoever imports them later.

    `TF_CPP_MIN_LOG_LEVEL` (set in `main`) hides TensorFlow's later INFO and
    WARNING lines, but not those it writes while it loads: `All log messages
    before absl::InitializeLog()`, `oneDNN custom operations are on`,
    `cudart_stub`, `cpu_feature_guard` (and transformers' `PyTorch was not
    found`). An import hook runs those imports with `_startup_lines_filtered`;
    any other line written meanwhile still reaches stderr, after the import.
    """
    names = [n for n in QUIET_IMPORTS if n not in sys.modules]
    if names and not any(isinstance(f, _QuietImports) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImports(names))


# ------------------------------------------------------------------ export
def cmd_export(args):
    import keras

    from keras_adapterfusion.export import export_saved_model

    if args.run_dir is not None:
        model, run = _rebuild(args.run_dir)
        tokenizer = args.tokenizer or run["encoder"]
        from keras_adapterfusion.tasks import get_task

        labels_default = list(get_task(run["task"]).label_names)
    else:
        try:
            model = keras.saving.load_model(args.model)
        except Exception as e:  # a corrupt or foreign file
            _fail(f"--model {args.model!r}: cannot be loaded ({type(e).__name__}: {_first_line(e)})")
        tokenizer, labels_default = args.tokenizer, None
    labels = args.labels or labels_default
    try:
        path = export_saved_model(model, args.export_dir, model_name=args.model_name, version=args.version,
                                  tokenizer=tokenizer, label_names=labels, input_dtype=args.input_dtype,
                                  include_fusion_attentions=args.fusion_attentions)
    except (ExportError, ValueError) as e:
        _fail(_first_line(e))
    print(f"exported {args.model or args.run_dir} to {path}")
    print(f"TF Serving config: {os.path.join(args.export_dir, 'models.config')}")
    return 0


# ---------------------------------------------------------------- training
def _data(args, task, tokenizer):
    from keras_adapterfusion.experiments import prepare

    try:
        train_enc, train_y = prepare(task, tokenizer, "train", args.max_length, sample=args.train_examples,
                                     seed=args.seed, data_dir=args.data_dir)
        eval_enc, eval_y = prepare(task, tokenizer, args.eval_split, args.max_length, limit=args.eval_examples,
                                   data_dir=args.data_dir)
    except Exception as e:  # no internet for a TFDS download, a broken cache, ...
        _fail(f"--task {task.name!r}: cannot load its data ({type(e).__name__}: {_first_line(e)[:300]})")
    return (train_enc, train_y), (eval_enc, eval_y)


def _train_and_save(args, stage, build, save, extra_run=None):
    from keras_adapterfusion import load_encoder, load_tokenizer
    from keras_adapterfusion.experiments import dataset, evaluate, fit, seed_everything
    from keras_adapterfusion.io import write_directory, write_json
    from keras_adapterfusion.tasks import get_task

    task = get_task(args.task)
    try:
        tokenizer = load_tokenizer(args.encoder_dir)
    except (CheckpointError, OSError, ValueError) as e:
        _fail(f"--encoder {args.encoder!r}: {_first_line(e)}")
    (train_enc, train_y), (eval_enc, eval_y) = _data(args, task, tokenizer)
    # Seeded after the data (building a dataset the first time can draw from the global random
    # state) and before the encoder: its Dropout layers take their seeds when they are created.
    seed_everything(args.seed)
    try:
        encoder = load_encoder(args.encoder_dir)
    except (CheckpointError, OSError, ValueError) as e:
        _fail(f"--encoder {args.encoder!r}: {_first_line(e)}")
    model = build(task, encoder)
    train = dataset(train_enc, train_y, args.batch_size, shuffle=True, seed=args.seed)
    losses = fit(model, stage, train, args.epochs, args.learning_rate)
    metrics = evaluate(model, task, eval_enc, eval_y)
    with write_directory(args.output_dir, "run") as tmp:
        save(model, encoder, tmp)
        run = {"stage": stage, "task": task.name, "encoder": args.encoder, "seed": args.seed,
               "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
               "max_length": args.max_length, "train_examples": len(train_y), **(extra_run or {})}
        write_json(os.path.join(tmp, "run.json"), run)
        write_json(os.path.join(tmp, "metrics.json"), {"task": task.name, "split": args.eval_split,
                                                       "examples": int(len(eval_y)), **metrics, "losses": losses})
    print(f"{stage} on {task.name}: {args.eval_split} " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    print(f"wrote {args.output_dir}")
    return 0


def cmd_train_adapter(args):
    from keras_adapterfusion import builders, saving

    name = args.adapter_name or args.task

    def build(task, encoder):
        return builders.build_adapter_model(encoder, name, num_labels=task.num_labels,
                                            adapter_config=args.adapter_config)

    def save(model, encoder, out):
        saving.save_adapter(encoder, name, os.path.join(out, "adapter"))
        saving.save_head(model.head, os.path.join(out, "head"), encoder)

    return _train_and_save(args, "adapter", build, save, {"adapter": name})


def cmd_fuse(args):
    from keras_adapterfusion import builders, saving

    names = []

    def build(task, encoder):
        try:
            for given, directory in zip(args.adapters, args.adapter_dirs):
                names.append(saving.load_adapter(encoder, directory))
        except CheckpointError as e:
            _fail(f"--adapters: {given!r}: {_first_line(e)}")
        return builders.build_fusion_model(encoder, names, num_labels=task.num_labels,
                                           fusion_config=args.fusion_config)

    def save(model, encoder, out):
        for n in names:
            saving.save_adapter(encoder, n, os.path.join(out, "adapters", n))
        saving.save_fusion(encoder, names, os.path.join(out, "fusion"))
        saving.save_head(model.head, os.path.join(out, "head"), encoder)

    return _train_and_save(args, "fusion", build, save, {"adapters": names})


def cmd_finetune(args):
    from keras_adapterfusion import builders

    def build(task, encoder):
        return builders.build_full_finetune_model(encoder, num_labels=task.num_labels)

    def save(model, encoder, out):
        model.save(os.path.join(out, "model.keras"))

    return _train_and_save(args, "finetune", build, save)


def cmd_head_only(args):
    from keras_adapterfusion import builders, saving

    def build(task, encoder):
        return builders.build_head_only_model(encoder, num_labels=task.num_labels)

    def save(model, encoder, out):
        saving.save_head(model.head, os.path.join(out, "head"), encoder)

    return _train_and_save(args, "head_only", build, save)


def _rebuild(run_dir):
    from keras_adapterfusion.experiments import rebuild_model

    try:
        return rebuild_model(run_dir)
    except (CheckpointError, OSError, ValueError) as e:
        _fail(f"--run-dir {run_dir!r}: {_first_line(e)}")


def cmd_evaluate(args):
    from keras_adapterfusion import load_tokenizer
    from keras_adapterfusion.experiments import evaluate, prepare
    from keras_adapterfusion.io import write_json
    from keras_adapterfusion.tasks import get_task

    model, run = _rebuild(args.run_dir)
    task = get_task(args.task or run["task"])
    try:
        tokenizer = load_tokenizer(run["encoder"])
    except (CheckpointError, OSError, ValueError) as e:
        _fail(f"--run-dir {args.run_dir!r}: run.json's encoder {run['encoder']!r}: {_first_line(e)}")
    try:
        enc, y = prepare(task, tokenizer, args.split, run.get("max_length", 128), limit=args.eval_examples,
                         data_dir=args.data_dir)
    except Exception as e:
        _fail(f"--task {task.name!r}: cannot load its data ({type(e).__name__}: {_first_line(e)[:300]})")
    metrics = evaluate(model, task, enc, y)
    out = {"task": task.name, "split": args.split, "examples": int(len(y)), **metrics}
    if args.output:
        write_json(args.output, out)
    else:  # into the run directory, listed in its manifest so that the run can still be replaced
        from keras_adapterfusion.io.directories import add_to_save

        add_to_save(args.run_dir, f"metrics_{task.name}_{args.split}.json", lambda tmp: write_json(tmp, out))
    print(json.dumps(out))
    return 0


def cmd_demo(args):
    from keras_adapterfusion.demo import run_demo

    size = "quick" if args.quick else "full" if args.full else "default"
    run_demo(args.output_dir, size=size, encoder_path=args.encoder, data_dir=args.data_dir, seeds=args.seeds,
             target_train=args.target_examples)
    print(f"wrote {args.output_dir}/results.json, report.md and fusion_heatmap.png")
    return 0


# ----------------------------------------------------------------- predict
def cmd_predict(args):
    from keras_adapterfusion.serving import ServingClient

    try:
        client = ServingClient.from_export(args.export)
        labels = client.predict_rest(args.server, args.model_name, args.texts, args.signature, args.version)
    except (ServingError, FileNotFoundError, ValueError) as e:
        _fail(_first_line(e))
    for text, label in zip(args.texts, labels):
        print(f"{label}\t{text}")
    return 0


def build_parser():
    parser = _Parser(
        prog=PROG,
        description="AdapterFusion for Keras 3: train adapters and fusion, export and serve them. Every argument "
                    "is checked before anything loads; a bad one ends with one line and exit code 2.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    positive = _integer(1)

    def common(p, epochs):
        p.add_argument("--task", required=True, type=_task,
                       help="a registry task (see docs/data.md), e.g. vader_tweets")
        p.add_argument("--encoder", default=DEFAULT_ENCODER,
                       help=f"checkpoint directory (config.json, weights and tokenizer files) or cached hub id "
                            f"(default: {DEFAULT_ENCODER}, offline)")
        p.add_argument("--output-dir", required=True, help="where the artefacts and metrics.json go")
        p.add_argument("--overwrite", action="store_true",
                       help="replace an earlier run in a non-empty --output-dir (never files this package did "
                            "not write)")
        p.add_argument("--seed", type=_integer(0, SEED_MAX), default=0,
                       help="random seed, 0 to 2**32-1 (default: 0). The same seed gives the same losses and "
                            "metrics on every run on the same machine and versions; on TensorFlow it also turns "
                            "on op determinism (free on the CPU, slower kernels on a GPU)")
        p.add_argument("--epochs", type=positive, default=epochs, help=f"an integer >= 1 (default: {epochs})")
        p.add_argument("--batch-size", type=positive, default=32, help="an integer >= 1 (default: 32)")
        p.add_argument("--learning-rate", type=_learning_rate, default=None,
                       help="a finite number > 0 (default: the stage's, see docs/training.md)")
        p.add_argument("--max-length", type=positive, default=None,
                       help="tokens per example, at most the encoder's position table (default: 128, or the "
                            "encoder's limit if lower)")
        p.add_argument("--train-examples", type=positive, default=None,
                       help="draw this many training examples at random (low-resource runs)")
        p.add_argument("--eval-split", choices=["validation", "test"], default="validation")
        p.add_argument("--eval-examples", type=positive, default=None, help="evaluate on the first N examples")
        p.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory")

    p = sub.add_parser("train-adapter", help="stage 1: train an adapter (ST-A) on a task")
    common(p, 3)
    p.add_argument("--adapter-name", type=_name, default=None,
                   help="default: the task name; no '/', '\\', ',' or control characters, not '.' or '..'")
    p.add_argument("--adapter-config", type=_config(AdapterConfig), default="seq_bn",
                   help=f"a preset ({', '.join(sorted(AdapterConfig.PRESETS))}; default: seq_bn, i.e. pfeiffer) "
                        "or the path of a JSON file holding an AdapterConfig dict, e.g. "
                        '{"reduction_factor": 8, "non_linearity": "swish"} (see docs/configs.md)')
    p.set_defaults(func=cmd_train_adapter, check=check_training)

    p = sub.add_parser("fuse", help="stage 2: train AdapterFusion over trained adapters on a target task")
    common(p, 5)
    p.add_argument("--adapters", nargs="+", required=True,
                   help="two or more run directories of train-adapter (or saved adapter directories)")
    p.add_argument("--fusion-config", type=_config(FusionConfig), default="dynamic",
                   help=f"a preset ({', '.join(sorted(FusionConfig.PRESETS))}; default: dynamic) or the path of a "
                        'JSON file holding a FusionConfig dict, e.g. {"regularization_weight": 0.02} '
                        "(see docs/configs.md)")
    p.set_defaults(func=cmd_fuse, check=check_training)

    p = sub.add_parser("finetune", help="baseline: fine-tune the whole encoder and a head")
    common(p, 3)
    p.set_defaults(func=cmd_finetune, check=check_training)

    p = sub.add_parser("head-only", help="baseline: train a head on the frozen encoder")
    common(p, 3)
    p.set_defaults(func=cmd_head_only, check=check_training)

    p = sub.add_parser("evaluate", help="evaluate a run directory on a task split")
    p.add_argument("--run-dir", required=True, help="a run directory (it holds run.json)")
    p.add_argument("--task", type=_task, default=None,
                   help="default: the run's task; another task must have the same labels count")
    p.add_argument("--split", choices=["validation", "test"], default="test")
    p.add_argument("--eval-examples", type=positive, default=None, help="evaluate on the first N examples")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory")
    p.add_argument("--output", default=None, help="metrics file (default: in the run directory)")
    p.set_defaults(func=cmd_evaluate, check=check_evaluate)

    p = sub.add_parser("demo", help="the end-to-end demo on the offline encoder and tasks")
    p.add_argument("--output-dir", default="demo_output",
                   help="new, empty or an earlier demo's output (default: demo_output)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a first look (about 4 minutes on 2 CPU cores)")
    size.add_argument("--full", action="store_true", help="the large size, for a GPU")
    p.add_argument("--encoder", default=DEFAULT_ENCODER, help="checkpoint directory or cached hub id")
    p.add_argument("--seeds", type=positive, default=None, help="how many seeds (default: the size's)")
    p.add_argument("--target-examples", type=positive, default=None,
                   help="target training examples per seed (default: the size's)")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory")
    p.set_defaults(func=cmd_demo, check=check_demo)

    p = sub.add_parser("export", help="export a .keras model as a TF Serving SavedModel")
    p.add_argument("--model", default=None, help="a .keras file saved from a builder's model")
    p.add_argument("--run-dir", default=None,
                   help="a run directory written by train-adapter, fuse, head-only or finetune")
    p.add_argument("--export-dir", required=True, help="TF Serving base directory")
    p.add_argument("--model-name", type=_name, default="model",
                   help="the model's name in TF Serving (default: model)")
    p.add_argument("--version", type=_integer(1, INT64_MAX), default=None,
                   help="version number >= 1 (default: next free)")
    p.add_argument("--tokenizer", default=None, help="checkpoint directory or cached hub id of the tokenizer")
    p.add_argument("--labels", type=_labels, default=None, help="comma-separated label names")
    p.add_argument("--input-dtype", choices=["int32", "int64"], default="int64")
    p.add_argument("--fusion-attentions", action="store_true", help="also output fusion_attentions")
    p.set_defaults(func=cmd_export, check=check_export)

    p = sub.add_parser("predict", help="label text with a model served by TF Serving (REST)")
    p.add_argument("--server", required=True, type=_server_url,
                   help="TF Serving REST address, e.g. http://localhost:8501")
    p.add_argument("--export", required=True, help="the exported version directory (tokenizer and labels)")
    p.add_argument("--model-name", type=_name, default="model")
    p.add_argument("--signature", default="serving_default")
    p.add_argument("--version", type=_integer(1, INT64_MAX), default=None)
    p.add_argument("--text", action="append", default=[], help="a text to label (repeatable)")
    p.add_argument("--file", default=None, help="a UTF-8 file with one text per line")
    p.set_defaults(func=cmd_predict, check=check_predict)
    return parser


def main(argv=None):
    # Before anything imports TensorFlow: its C++ INFO and WARNING lines stay off the terminal.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # bad flags and values: one line and exit code 2 (`_Parser.error`)
    except SystemExit as e:  # --help (0) or a bad argument (2): returned, as every other outcome
        return e.code
    try:
        if not getattr(args, "command", None):
            _fail(f"expected a command, one of {', '.join(COMMANDS)}; see {PROG} --help")
        args.check(args)
        _quiet_startup()
        return args.func(args)
    except CLIError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except PACKAGE_ERRORS as e:
        print(f"{PROG}: error: {_first_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
