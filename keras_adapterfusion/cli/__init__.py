"""The `keras-adapterfusion` command line.

| module | holds |
|---|---|
| `cli` (here) | the parser and `main` |
| `cli.checks` | argument types and the value checks they share, run before anything heavy |
| `cli.command_checks` | each command's checks (`check_training`, `check_export`, ...), run right after argparse |
| `cli.startup` | keeping TensorFlow's start-up lines off the terminal |
| `cli.commands` | what each command does |

Every argument is checked right after parsing, before TensorFlow, Keras or
`transformers` are imported and before anything is loaded or trained. A bad
argument ends with one line on stderr, `keras-adapterfusion: error: ...`, that
names the flag, the value and what was expected, and exit code 2, never a
traceback. So `--help` and those checks answer at once.

Training commands take a registry task (`--task`) or your own files
(`--train-file`, `--validation-file`, `--test-file`, with `--text-column`,
`--text-pair-column`, `--label-column`, `--task-kind`).
"""

import os
import sys

from keras_adapterfusion.backbones.checkpoint import DEFAULT_ENCODER
from keras_adapterfusion.cli import checks, command_checks, commands, startup
from keras_adapterfusion.cli.checks import COMMANDS, INT64_MAX, PACKAGE_ERRORS, PROG, SEED_MAX, CLIError
from keras_adapterfusion.configs import AdapterMethodConfig, FusionConfig

__all__ = ["COMMANDS", "build_parser", "main"]


def _data_options(p, required_task=True):
    """`--task`, or your own files and their columns."""
    source = p.add_argument_group("data: a registry task, or your own files (CSV, TSV, JSON Lines, Parquet)")
    source.add_argument("--task", type=checks.task_type, default=None,
                        help="a registry task (see docs/data.md), e.g. vader_tweets")
    source.add_argument("--train-file", default=None, help="your training examples, in place of --task")
    source.add_argument("--validation-file", default=None, help="your validation examples")
    source.add_argument("--test-file", default=None, help="your test examples")
    source.add_argument("--text-column", default="text", help="the column holding the text (default: text)")
    source.add_argument("--text-pair-column", default=None, help="a second text column, for sentence pairs")
    source.add_argument("--label-column", default="label", help="the column holding the label (default: label)")
    source.add_argument("--task-kind", choices=["single_label", "multi_label", "regression"], default=None,
                        help="default: inferred from the training labels (strings or integers: single_label; "
                             "lists, or 'a|b' with this flag: multi_label; fractional numbers: regression)")


def build_parser():
    parser = checks.Parser(
        prog=PROG,
        description="AdapterFusion for Keras 3: train adapters and fusion, export and serve them. Every argument "
                    "is checked before anything loads; a bad one ends with one line and exit code 2.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    positive = checks.integer(1)

    def common(p, epochs):
        _data_options(p)
        p.add_argument("--encoder", default=DEFAULT_ENCODER,
                       help=f"checkpoint directory (config.json, weights and tokenizer files) or cached hub id "
                            f"(default: {DEFAULT_ENCODER}, offline)")
        p.add_argument("--output-dir", required=True, help="where the artefacts and metrics.json go")
        p.add_argument("--overwrite", action="store_true",
                       help="replace an earlier run in a non-empty --output-dir (never files this package did "
                            "not write)")
        p.add_argument("--seed", type=checks.integer(0, SEED_MAX), default=0,
                       help="random seed, 0 to 2**32-1 (default: 0). The same seed gives the same losses and "
                            "metrics on every run on the same machine and versions; on TensorFlow it also turns "
                            "on op determinism (free on the CPU, slower kernels on a GPU)")
        p.add_argument("--epochs", type=positive, default=epochs, help=f"an integer >= 1 (default: {epochs})")
        p.add_argument("--batch-size", type=positive, default=32, help="an integer >= 1 (default: 32)")
        p.add_argument("--learning-rate", type=checks.learning_rate, default=None,
                       help="a finite number > 0 (default: the stage's, see docs/training.md; for a few hundred "
                            "examples or fewer, try 1e-3)")
        p.add_argument("--max-length", type=positive, default=None,
                       help="tokens per example, at most the encoder's position table (default: 128, or the "
                            "encoder's limit if lower)")
        p.add_argument("--train-examples", type=positive, default=None,
                       help="draw this many training examples at random (low-resource runs)")
        p.add_argument("--balanced", action="store_true",
                       help="with --train-examples: draw the same number of examples of every class "
                            "(single-label tasks; a class with fewer gives all it has)")
        p.add_argument("--eval-split", choices=["validation", "test"], default=None,
                       help="the split metrics.json reports (default: validation, else test)")
        p.add_argument("--eval-examples", type=positive, default=None,
                       help="validate and evaluate on the first N examples")
        p.add_argument("--early-stopping-patience", type=positive, default=None,
                       help="stop when the validation loss has not improved for N epochs, and keep the best epoch")
        p.add_argument("--log-dir", default=None,
                       help="write TensorBoard logs (with TensorFlow installed) and training.csv here")
        p.add_argument("--resume", action="store_true",
                       help="continue an interrupted run of the same command and arguments from its last epoch")
        p.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory")

    p = sub.add_parser("train-adapter", help="stage 1: train an adapter (ST-A) on a task")
    common(p, 3)
    p.add_argument("--adapter-name", type=checks.name_type, default=None,
                   help="default: the task name; no '/', '\\', ',' or control characters, not '.' or '..'")
    p.add_argument("--adapter-config", type=checks.config_type(AdapterMethodConfig), default="seq_bn",
                   help=f"a preset ({', '.join(sorted(AdapterMethodConfig.PRESETS))}; default: seq_bn, i.e. "
                        "pfeiffer) or the path of a JSON file holding an AdapterConfig or LoRAConfig dict, e.g. "
                        '{"reduction_factor": 8, "non_linearity": "swish"} or {"architecture": "lora", "r": 4} '
                        "(see docs/configs.md)")
    p.set_defaults(func="cmd_train_adapter", check=command_checks.check_training)

    p = sub.add_parser("fuse", help="stage 2: train AdapterFusion over trained adapters on a target task")
    common(p, 5)
    p.add_argument("--adapters", nargs="+", required=True,
                   help="two or more run directories of train-adapter (or saved adapter directories)")
    p.add_argument("--fusion-config", type=checks.config_type(FusionConfig), default="dynamic",
                   help=f"a preset ({', '.join(sorted(FusionConfig.PRESETS))}; default: dynamic) or the path of a "
                        'JSON file holding a FusionConfig dict, e.g. {"regularization_weight": 0.02} '
                        "(see docs/configs.md)")
    p.set_defaults(func="cmd_fuse", check=command_checks.check_training)

    p = sub.add_parser("tune", help="search fusion set-ups (keras-tuner) over trained adapters on a target task",
                       description="Search fusion set-ups over trained adapters with keras-tuner: learning rate, "
                                   "preset and switches, regularization, dropout, which adapters take part, batch "
                                   "size, epochs with early stopping (see docs/tuning.md). Writes "
                                   "best_fusion_config.json (for fuse --fusion-config), trials.csv, trials.md and "
                                   "trials.png to --output-dir. Run again on the same --output-dir to continue the "
                                   "search: no trial is lost or repeated, and with --max-trials reached none runs. "
                                   "With KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT set, "
                                   "runs as keras-tuner's chief or a worker of a distributed search.")
    _data_options(p)
    p.add_argument("--adapters", nargs="+", required=True,
                   help="run directories of train-adapter (or saved adapter directories): the adapters to fuse")
    p.add_argument("--encoder", default=DEFAULT_ENCODER,
                   help=f"checkpoint directory or cached hub id (default: {DEFAULT_ENCODER}, offline)")
    p.add_argument("--output-dir", required=True,
                   help="the search (search/) and its reports; new, empty, or an earlier tune's to continue it")
    p.add_argument("--tuner", choices=["bayesian", "hyperband", "random"], default="bayesian",
                   help="keras-tuner's BayesianOptimization (default), Hyperband or RandomSearch")
    p.add_argument("--max-trials", type=positive, default=10,
                   help="the most trials, counting those of earlier runs on --output-dir (default: 10)")
    p.add_argument("--epochs", type=positive, default=None,
                   help="the most epochs a trial trains; early stopping may end it sooner (default: the space's, "
                        "10; Hyperband: its largest trial)")
    p.add_argument("--space", type=checks.space_type, default=None,
                   help='a JSON file of search-space fields, e.g. {"learning_rate": [1e-4, 1e-3], "presets": '
                        '["dynamic"], "batch_size": [16]} (see docs/tuning.md for the fields and defaults)')
    p.add_argument("--seed", type=checks.integer(0, SEED_MAX), default=0,
                   help="random seed, 0 to 2**32-1 (default: 0): the trials' values, data order and "
                        "initializations")
    p.add_argument("--max-length", type=positive, default=None,
                   help="tokens per example (default: 128, or the encoder's limit if lower)")
    p.add_argument("--train-examples", type=positive, default=None,
                   help="draw this many training examples at random (low-resource searches)")
    p.add_argument("--balanced", action="store_true",
                   help="with --train-examples: draw the same number of examples of every class "
                        "(single-label tasks)")
    p.add_argument("--eval-examples", type=positive, default=None,
                   help="measure the objective on the first N validation examples")
    p.add_argument("--dtype-policy", choices=["float32", "mixed_bfloat16", "mixed_float16"], default=None,
                   help="Keras dtype policy of every trial, e.g. mixed_bfloat16 on a GPU (default: float32)")
    p.add_argument("--compilation-cache", default=None,
                   help="JAX's persistent compilation cache, shared by the trials (default: "
                        "<output-dir>/xla_cache; JAX backend only)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over: delete an earlier search in --output-dir (never files this package did not "
                        "write)")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory")
    p.set_defaults(func="cmd_tune", check=command_checks.check_tune)

    p = sub.add_parser("finetune", help="baseline: fine-tune the whole encoder and a head")
    common(p, 3)
    p.set_defaults(func="cmd_finetune", check=command_checks.check_training)

    p = sub.add_parser("head-only", help="baseline: train a head on the frozen encoder")
    common(p, 3)
    p.set_defaults(func="cmd_head_only", check=command_checks.check_training)

    p = sub.add_parser("evaluate", help="evaluate a run directory on a task split or on your own file")
    p.add_argument("--run-dir", required=True, help="a run directory (it holds run.json)")
    _data_options(p)
    p.add_argument("--split", choices=["validation", "test"], default="test",
                   help="default: test (with --test-file or --validation-file: that file)")
    p.add_argument("--eval-examples", type=positive, default=None, help="evaluate on the first N examples")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory")
    p.add_argument("--output", default=None, help="metrics file (default: in the run directory)")
    p.set_defaults(func="cmd_evaluate", check=command_checks.check_evaluate)

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
    p.set_defaults(func="cmd_demo", check=command_checks.check_demo)

    p = sub.add_parser("export", help="export a run or a .keras model as a TF Serving SavedModel")
    p.add_argument("--model", default=None, help="a .keras file saved from a builder's model")
    p.add_argument("--run-dir", default=None,
                   help="a run directory written by train-adapter, fuse, head-only or finetune")
    p.add_argument("--export-dir", required=True, help="TF Serving base directory")
    p.add_argument("--model-name", type=checks.name_type, default="model",
                   help="the model's name in TF Serving (default: model)")
    p.add_argument("--version", type=checks.integer(1, INT64_MAX), default=None,
                   help="version number >= 1 (default: next free)")
    p.add_argument("--tokenizer", default=None,
                   help="checkpoint directory or cached hub id of the tokenizer (default: the encoder's own)")
    p.add_argument("--labels", type=checks.labels_type, default=None,
                   help="comma-separated label names (default: the ones the model was trained with)")
    p.add_argument("--input-dtype", choices=["int32", "int64"], default="int64")
    p.add_argument("--fusion-attentions", action="store_true", help="also output fusion_attentions")
    p.add_argument("--text-signatures", action="store_true",
                   help="also add signatures that take raw text, tokenized in the graph (needs TensorFlow Text "
                        "ops wherever the model is loaded; see docs/serving.md)")
    p.add_argument("--max-length", type=checks.integer(4), default=None,
                   help="truncation length recorded for clients and used by the raw-text signatures "
                        "(default: the run's; 128 for --model)")
    p.add_argument("--text-pairs", action="store_true",
                   help="with --model: the model takes sentence pairs (a --run-dir records its own layout)")
    p.add_argument("--no-models-config", action="store_true",
                   help="do not write models.config / models.docker.config beside the model directories")
    p.set_defaults(func="cmd_export", check=command_checks.check_export)

    p = sub.add_parser("predict", help="label text with an exported model, in this process or on TF Serving")
    p.add_argument("--export", required=True, help="the exported version directory (model, tokenizer and labels)")
    p.add_argument("--server", default=None, type=checks.server_url,
                   help="ask TF Serving at this REST address (e.g. http://localhost:8501) instead of running the "
                        "SavedModel here")
    p.add_argument("--model-name", type=checks.name_type, default="model", help="the model's name on the server")
    p.add_argument("--signature", default="serving_default")
    p.add_argument("--version", type=checks.integer(1, INT64_MAX), default=None)
    p.add_argument("--text", action="append", default=[], help="a text to label (repeatable)")
    p.add_argument("--text-pair", action="append", default=[],
                   help="the second text of a pair, one per --text (repeatable), for a model trained on pairs")
    p.add_argument("--file", default=None,
                   help="texts to label: CSV (.csv), TSV (.tsv, .tab) or JSON Lines (.jsonl, .ndjson) with "
                        "--text-column (and --text-pair-column for pairs); any other file: one text per line")
    p.add_argument("--text-column", default="text", help="--file's text column (default: text)")
    p.add_argument("--text-pair-column", default=None, help="--file's second text column, for sentence pairs")
    p.add_argument("--format", choices=["text", "jsonl"], default="text",
                   help="text: 'label<TAB>probability<TAB>text' per line; jsonl: one JSON object per text with "
                        "every label's probability")
    p.set_defaults(func="cmd_predict", check=command_checks.check_predict)
    return parser


def main(argv=None):
    # Before anything imports TensorFlow: its C++ INFO and WARNING lines stay off the terminal.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # bad flags and values: one line and exit code 2 (`checks.Parser.error`)
    except SystemExit as e:  # --help (0) or a bad argument (2): returned, as every other outcome
        return e.code
    try:
        if not getattr(args, "command", None):
            checks.fail(f"expected a command, one of {', '.join(COMMANDS)}; see {PROG} --help")
        args.check(args)
        startup.quiet_startup()
        return getattr(commands, args.func)(args)
    except CLIError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except PACKAGE_ERRORS as e:
        print(f"{PROG}: error: {checks.first_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted" + (checks.RESUME_NOTE if getattr(args, "resume", None) is not None else ""),
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
