"""What each command does, once its arguments passed `cli.checks`.

The heavy libraries (Keras, the backend, `transformers`) are imported here, inside
the commands, when they run.
"""

import json
import os
import shutil
import sys

from keras_adapterfusion.cli.checks import PACKAGE_ERRORS, fail, first_line
from keras_adapterfusion.errors import CheckpointError, ExportError, ServingError


# ----------------------------------------------------------------- training
def _data(args, task, tokenizer):
    """Tokenized training data, and the validation and evaluation splits (either may be None)."""
    from keras_adapterfusion.training.runs import prepare

    def split(name, **kwargs):
        if name is None:
            return None
        return prepare(task, tokenizer, name, args.max_length, data_dir=args.data_dir, **kwargs)

    try:
        train = split("train", sample=args.train_examples, seed=args.seed, balanced=args.balanced)
        validation = split("validation" if task.has_split("validation") else None, limit=args.eval_examples)
        evaluation = validation if args.eval_split_name == "validation" else split(args.eval_split_name,
                                                                                     limit=args.eval_examples)
    except PACKAGE_ERRORS:
        raise
    except Exception as e:  # no internet for a TFDS download, a broken cache, ...
        fail(f"task {task.name!r}: cannot load its data ({type(e).__name__}: {first_line(e)[:300]})")
    return train, validation, evaluation


def _label_counts(task, labels):
    """`{"train_label_counts": {name: count}}` for a single-label task (so an imbalance shows), else `{}`."""
    import numpy as np

    if task.kind != "single_label":
        return {}
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(task.label_names))
    return {"train_label_counts": {name: int(c) for name, c in zip(task.label_names, counts)}}


def _backup_dir(output_dir):
    """Where an interrupted run keeps its last epoch: a hidden sibling of the run directory."""
    parent, base = os.path.split(os.path.abspath(output_dir))
    return os.path.join(parent, f".{base}.kaf-backup")


def _callbacks(args, backup, settings):
    """Early stopping, logs, and the backup that `--resume` continues from."""
    import keras

    callbacks = []
    if args.early_stopping_patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=args.early_stopping_patience,
                                                       restore_best_weights=True, verbose=1))
    if args.log_dir is not None:
        os.makedirs(args.log_dir, exist_ok=True)
        callbacks.append(keras.callbacks.CSVLogger(os.path.join(args.log_dir, "training.csv"), append=args.resume))
        import importlib.util

        if all(importlib.util.find_spec(m) for m in ("tensorflow", "tensorboard")):
            callbacks.append(keras.callbacks.TensorBoard(args.log_dir))
        else:  # TensorBoard's event files are written with TensorFlow; the CSV log needs nothing
            print(f"--log-dir {args.log_dir}: TensorFlow or TensorBoard is not installed; writing training.csv only")
    if args.resume:
        settings_path = os.path.join(backup, "settings.json")
        if os.path.isfile(settings_path):
            with open(settings_path, encoding="utf-8") as f:
                before = json.load(f)
            changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
            if changed:
                fail(f"--resume: the interrupted run used other arguments ({', '.join(changed)}); run again "
                     "with the same ones, or without --resume to start over")
            print(f"resuming the interrupted run from {backup}")
    elif os.path.isdir(backup):
        shutil.rmtree(backup)  # an earlier interrupted run: starting over
    os.makedirs(backup, exist_ok=True)
    from keras_adapterfusion.io import write_json

    write_json(os.path.join(backup, "settings.json"), settings)
    callbacks.append(keras.callbacks.BackupAndRestore(os.path.join(backup, "state")))
    return callbacks


def _settings(args, task):
    """What must be the same to resume a run."""
    keys = ("command", "encoder", "seed", "epochs", "batch_size", "learning_rate", "max_length", "train_examples",
            "balanced", "eval_examples", "adapter_name", "fusion_config", "adapter_config")
    out = {k: getattr(args, k, None) for k in keys}
    out = {k: (v if isinstance(v, (str, int, float, type(None))) else str(v)) for k, v in out.items()}
    out["task"] = task.to_config()
    out["adapters"] = list(getattr(args, "adapters", []) or [])
    return out


def _train_and_save(args, stage, build, save, extra_run=None):
    from keras_adapterfusion import load_encoder, load_tokenizer
    from keras_adapterfusion.training.runs import dataset, evaluate, fit, seed_everything
    from keras_adapterfusion.io import write_directory, write_json

    task = args.task_obj
    try:
        tokenizer = load_tokenizer(args.encoder_dir)
    except (CheckpointError, OSError, ValueError) as e:
        fail(f"--encoder {args.encoder!r}: {first_line(e)}")
    train, validation, evaluation = _data(args, task, tokenizer)
    # Seeded after the data (building a dataset the first time can draw from the global random
    # state) and before the encoder: its Dropout layers take their seeds when they are created.
    seed_everything(args.seed)
    try:
        encoder = load_encoder(args.encoder_dir)
    except (CheckpointError, OSError, ValueError) as e:
        fail(f"--encoder {args.encoder!r}: {first_line(e)}")
    model = build(task, encoder)
    batches = dataset(train[0], train[1], args.batch_size, shuffle=True, seed=args.seed)
    backup = _backup_dir(args.output_dir)
    history = fit(model, stage, batches, args.epochs, args.learning_rate,
                  validation=(task, *validation) if validation is not None else None,
                  callbacks=_callbacks(args, backup, _settings(args, task)))
    metrics = evaluate(model, task, *evaluation) if evaluation is not None else {}
    with write_directory(args.output_dir, "run") as tmp:
        save(model, encoder, tmp)
        if stage == "fusion" and evaluation is not None:
            _fusion_heatmap(model, evaluation, args.batch_size, tmp)
        run = {"stage": stage, "task": task.to_config() if task.data is not None else task.name,
               "label_names": list(task.label_names), "encoder": args.encoder, "seed": args.seed,
               "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
               "max_length": args.max_length, "train_examples": len(train[1]), "balanced": args.balanced,
               **_label_counts(task, train[1]), **(extra_run or {})}
        write_json(os.path.join(tmp, "run.json"), run)
        summary = {"task": task.name, "split": args.eval_split_name, "examples": len(evaluation[1]) if evaluation
                   else 0, **metrics, "losses": history.get("loss", []), "history": history}
        if "val_loss" in history:
            summary["best_epoch"] = int(min(range(len(history["val_loss"])), key=history["val_loss"].__getitem__)) + 1
        write_json(os.path.join(tmp, "metrics.json"), summary)
    shutil.rmtree(backup, ignore_errors=True)  # the run finished: nothing to resume
    where = f"{args.eval_split_name} " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()) if metrics else \
        "no validation or test split to evaluate"
    print(f"{stage} on {task.name}: {where}")
    print(f"wrote {args.output_dir}")
    note = stalled_metrics_note(history, args.learning_rate)
    if note:
        print(note)
    return 0


def stalled_metrics_note(history, learning_rate):
    """A note when a metric other than the loss has the same value in every epoch of two or more
    (the model learned nothing visible, usually a learning rate too low for the steps), else None."""
    stalled = [k for k, values in sorted(history.items())
               if not k.endswith("loss") and len(values) >= 2 and max(values) - min(values) <= 1e-12]
    if not stalled:
        return None
    epochs = len(history[stalled[0]])
    shown = ", ".join(f"{k} {history[k][0]:.4f}" for k in stalled)
    rate = "the stage's default learning rate" if learning_rate is None else f"learning rate {learning_rate:g}"
    return (f"note: {shown}: the same in all {epochs} epochs; the model learned nothing visible at {rate}. "
            "With few examples, try --learning-rate 1e-3 and more steps (more epochs or a smaller --batch-size): "
            "see 'Learning rates for small data' in docs/training.md.")


def _fusion_heatmap(model, evaluation, batch_size, directory):
    """The fusion's mean attention per block and adapter on the evaluation data, as PNG and JSON."""
    from keras_adapterfusion.analysis import attentions as analysis
    from keras_adapterfusion.training.runs import dataset
    from keras_adapterfusion.io import write_json

    mean = analysis.collect_fusion_attentions(model, dataset(*evaluation, max(batch_size, 32)), verbose=0)
    names = list(model.adapter_setup.adapters)
    analysis.plot_fusion_heatmap(mean, names, os.path.join(directory, "fusion_heatmap.png"))
    write_json(os.path.join(directory, "fusion_attention.json"), {"adapters": names, "mean_attention": mean.tolist()})


def _head(task):
    from keras_adapterfusion.training.losses import make_head

    labels = None if task.kind == "regression" else list(task.label_names)
    return make_head(task.head_kind, task.num_labels if task.kind != "regression" else None, label_names=labels,
                     name="head")


def cmd_train_adapter(args):
    from keras_adapterfusion.training import builders
    from keras_adapterfusion.formats import native as saving

    name = args.adapter_name

    def build(task, encoder):
        return builders.build_adapter_model(encoder, name, head=_head(task), adapter_config=args.adapter_config)

    def save(model, encoder, out):
        saving.save_adapter(encoder, name, os.path.join(out, "adapter"))
        saving.save_head(model.head, os.path.join(out, "head"), encoder)

    return _train_and_save(args, "adapter", build, save, {"adapter": name})


def cmd_fuse(args):
    from keras_adapterfusion.training import builders
    from keras_adapterfusion.formats import native as saving

    names = []

    def build(task, encoder):
        try:
            for given, directory in zip(args.adapters, args.adapter_dirs):
                names.append(saving.load_adapter(encoder, directory))
        except CheckpointError as e:
            fail(f"--adapters: {given!r}: {first_line(e)}")
        return builders.build_fusion_model(encoder, names, head=_head(task), fusion_config=args.fusion_config)

    def save(model, encoder, out):
        for n in names:
            saving.save_adapter(encoder, n, os.path.join(out, "adapters", n))
        saving.save_fusion(encoder, names, os.path.join(out, "fusion"))
        saving.save_head(model.head, os.path.join(out, "head"), encoder)

    return _train_and_save(args, "fusion", build, save, {"adapters": names})


def cmd_tune(args):
    from keras_adapterfusion import load_encoder, load_tokenizer, tuning
    from keras_adapterfusion.formats import native as saving
    from keras_adapterfusion.training.runs import prepare, seed_everything
    from keras_adapterfusion.io import write_json

    task, out = args.task_obj, os.path.abspath(args.output_dir)
    try:
        tokenizer = load_tokenizer(args.encoder_dir)
    except (CheckpointError, OSError, ValueError) as e:
        fail(f"--encoder {args.encoder!r}: {first_line(e)}")
    try:
        train = prepare(task, tokenizer, "train", args.max_length, sample=args.train_examples, seed=args.seed,
                        data_dir=args.data_dir, balanced=args.balanced)
        validation = prepare(task, tokenizer, "validation", args.max_length, limit=args.eval_examples,
                             data_dir=args.data_dir)
    except PACKAGE_ERRORS:
        raise
    except Exception as e:  # no internet for a TFDS download, a broken cache, ...
        fail(f"task {task.name!r}: cannot load its data ({type(e).__name__}: {first_line(e)[:300]})")
    seed_everything(args.seed)
    try:
        encoder = load_encoder(args.encoder_dir)
    except (CheckpointError, OSError, ValueError) as e:
        fail(f"--encoder {args.encoder!r}: {first_line(e)}")
    names = []
    try:
        for given, directory in zip(args.adapters, args.adapter_dirs):
            names.append(saving.load_adapter(encoder, directory))
    except CheckpointError as e:
        fail(f"--adapters: {given!r}: {first_line(e)}")
    try:
        hypermodel = tuning.FusionHyperModel(encoder, names, space=args.space, task=task, seed=args.seed,
                                             dtype_policy=args.dtype_policy)
    except ValueError as e:
        fail(f"--adapters: {first_line(e)}")
    if args.overwrite:  # only what an earlier tune wrote here
        for name in (tuning.SETTINGS_FILE, *tuning.REPORT_FILES):
            if os.path.isfile(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
        for name in (tuning.SEARCH_DIR, tuning.CACHE_DIR):
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)
    write_json(os.path.join(out, tuning.SETTINGS_FILE), args.tune_settings)
    before = _trials_in(os.path.join(out, tuning.SEARCH_DIR))
    where = {"chief": " as the chief of a distributed search", "worker": " as a worker of a distributed search"}
    print(f"tune on {task.name}{where.get(args.role, '')}: {args.tuner} search over {', '.join(names)}, "
          f"up to {args.max_trials} trials ({before} in {out} already); objective {hypermodel.objective.name}")
    tuner = tuning.search(hypermodel, train, validation, tuner=args.tuner, max_trials=args.max_trials,
                          directory=out, project_name=tuning.SEARCH_DIR,
                          compilation_cache_dir=args.compilation_cache or "auto", verbose=1)
    if args.role == "worker":
        print("worker done; the chief records the trials and writes the reports")
        return 0
    rows = tuning.trial_rows(tuner)
    tuning.write_reports(tuner, out, adapter_dirs=dict(zip(names, args.adapters)),
                         title=f"Fusion search on {task.name}")
    ran = len(tuner.trials_run) if args.role is None else len(rows) - before
    best = tuning.best_trial(tuner)
    print(f"ran {ran} new trial{'s' if ran != 1 else ''} ({len(rows)} in all"
          + ("; --max-trials reached" if len(rows) >= args.max_trials else "") + ")")
    if best is not None:
        values = best.hyperparameters.values
        print(f"best: trial {best.trial_id}, {hypermodel.objective.name} {best.score:.4f}: adapters "
              f"{values['adapters']}, preset {values['preset']}, learning rate {values['learning_rate']:.3g}, "
              f"batch size {values['batch_size']}")
    print(f"wrote {', '.join(n for n in tuning.REPORT_FILES if os.path.isfile(os.path.join(out, n)))} to "
          f"{args.output_dir}")
    return 0


def _trials_in(project):
    """How many trials a keras-tuner project directory holds."""
    if not os.path.isdir(project):
        return 0
    return sum(os.path.isfile(os.path.join(project, d, "trial.json")) for d in os.listdir(project)
               if d.startswith("trial_"))


def cmd_finetune(args):
    from keras_adapterfusion.training import builders

    def build(task, encoder):
        return builders.build_full_finetune_model(encoder, head=_head(task))

    def save(model, encoder, out):
        model.save(os.path.join(out, "model.keras"))

    return _train_and_save(args, "finetune", build, save)


def cmd_head_only(args):
    from keras_adapterfusion.training import builders
    from keras_adapterfusion.formats import native as saving

    def build(task, encoder):
        return builders.build_head_only_model(encoder, head=_head(task))

    def save(model, encoder, out):
        saving.save_head(model.head, os.path.join(out, "head"), encoder)

    return _train_and_save(args, "head_only", build, save)


# --------------------------------------------------------------- evaluation
def rebuild(run_dir):
    from keras_adapterfusion.training.runs import rebuild_model

    try:
        return rebuild_model(run_dir)
    except (CheckpointError, OSError, ValueError) as e:
        fail(f"--run-dir {run_dir!r}: {first_line(e)}")


def cmd_evaluate(args):
    from keras_adapterfusion import load_tokenizer
    from keras_adapterfusion.training.runs import evaluate, prepare
    from keras_adapterfusion.io import write_json

    model, run = rebuild(args.run_dir)
    task = args.task_obj
    try:
        tokenizer = load_tokenizer(run["encoder"])
    except (CheckpointError, OSError, ValueError) as e:
        fail(f"--run-dir {args.run_dir!r}: run.json's encoder {run['encoder']!r}: {first_line(e)}")
    try:
        enc, y = prepare(task, tokenizer, args.split, run.get("max_length", 128), limit=args.eval_examples,
                         data_dir=args.data_dir)
    except PACKAGE_ERRORS:
        raise
    except Exception as e:
        fail(f"task {task.name!r}: cannot load its data ({type(e).__name__}: {first_line(e)[:300]})")
    metrics = evaluate(model, task, enc, y)
    source = args.test_file or args.validation_file
    out = {"task": task.name, "split": source or args.split, "examples": int(len(y)), **metrics}
    if args.output:
        write_json(args.output, out)
    else:  # into the run directory, listed in its manifest so that the run can still be replaced
        from keras_adapterfusion.io.directories import add_to_save

        add_to_save(args.run_dir, args.metrics_name, lambda tmp: write_json(tmp, out))
    print(json.dumps(out))
    return 0


def cmd_demo(args):
    from keras_adapterfusion.applications.demo import run_demo

    size = "quick" if args.quick else "full" if args.full else "default"
    run_demo(args.output_dir, size=size, encoder_path=args.encoder, data_dir=args.data_dir, seeds=args.seeds,
             target_train=args.target_examples)
    print(f"wrote {args.output_dir}/results.json, report.md and fusion_heatmap.png")
    return 0


# ------------------------------------------------------ export and predict
def cmd_export(args):
    import keras

    from keras_adapterfusion.serving.export import export_saved_model

    if args.run_dir is not None:
        model, _ = rebuild(args.run_dir)
    else:
        try:
            model = keras.saving.load_model(args.model)
        except Exception as e:  # a corrupt or foreign file
            fail(f"--model {args.model!r}: cannot be loaded ({type(e).__name__}: {first_line(e)})")
    from keras_adapterfusion.io import own_file

    configs = [os.path.join(args.export_dir, f) for f in ("models.config", "models.docker.config")]
    users = [p for p in configs if not args.no_models_config and os.path.isfile(p) and not own_file(p)]
    try:
        path = export_saved_model(model, args.export_dir, model_name=args.model_name, version=args.version,
                                  tokenizer=args.tokenizer or "auto", label_names=args.labels,
                                  input_dtype=args.input_dtype, include_fusion_attentions=args.fusion_attentions,
                                  text_signatures=args.text_signatures, max_length=args.max_length,
                                  text_pairs=args.text_pairs, write_models_config=not args.no_models_config)
    except (ExportError, ValueError) as e:
        fail(first_line(e))
    with open(os.path.join(path, "assets", "label_map.json"), encoding="utf-8") as f:
        label_map = json.load(f)
    print(f"exported {args.model or args.run_dir} to {path}")
    print(f"tokenizer: {label_map.get('tokenizer') or 'none'}"
          + (" (the encoder's own)" if not args.tokenizer and label_map.get("tokenizer") else ""))
    text = sorted(s for s in label_map["signatures"] if s.endswith("_text"))
    print(f"signatures: {', '.join(sorted(label_map['signatures']))}"
          + (f" ({', '.join(text)} take{'s' if len(text) == 1 else ''} raw text"
             + (", two inputs: text and text_pair" if args.text_pairs else "") + ")" if text else ""))
    print(f"inputs: {'sentence pairs' if args.text_pairs else 'single texts'}, max_length {args.max_length}")
    if not args.no_models_config:
        for config in configs:
            note = " (yours: the model merged in, your entries kept as written)" if config in users else ""
            print(f"TF Serving config: {config}{note}")
    return 0


def _format(prediction, text, form):
    label, probability = prediction["label"], prediction["probability"]
    if form == "jsonl":
        given = {"text": text[0], "text_pair": text[1]} if isinstance(text, tuple) else {"text": text}
        return json.dumps({**given, **prediction}, ensure_ascii=False)
    if isinstance(text, tuple):
        text = "\t".join(text)
    if isinstance(label, list):  # multi-label
        return "\t".join(["|".join(label) or "-", "|".join(f"{p:.3f}" for p in probability) or "-", text])
    if probability is None:  # regression
        return f"{label:.4f}\t-\t{text}"
    return f"{label}\t{probability:.3f}\t{text}"


def cmd_predict(args):
    from keras_adapterfusion.serving import ServingClient

    try:
        client = ServingClient.from_export(args.export)
        if args.server is None:
            predictions = client.predict_local(args.texts, args.signature)
        else:
            predictions = client.predict_rest(args.server, args.model_name, args.texts, args.signature,
                                              args.version, details=True)
    except (ServingError, FileNotFoundError, ValueError) as e:
        fail(first_line(e))
    for text, prediction in zip(args.texts, predictions):
        print(_format(prediction, text, args.format))
    cut = sum(bool(p.get("truncated")) for p in predictions)
    if cut:
        print(f"note: {cut} of {len(predictions)} {'pairs' if isinstance(args.texts[0], tuple) else 'texts'} "
              f"were longer than max_length {client.max_length} tokens and were truncated"
              + (" (the jsonl field 'truncated' marks them)" if args.format == "jsonl" else ""), file=sys.stderr)
    return 0
