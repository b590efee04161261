"""The same AdapterFusion model trained on several Keras backends: JAX, TensorFlow, and PyTorch if installed.

Keras picks its backend once per process (`KERAS_BACKEND`), so each backend runs
in its own subprocess of this script. Each one trains the two stages (an adapter
per source task, then a fusion and a head for the target) with `model.fit` on
NumPy arrays, saves the modules, and reports its losses and time. Then a process
on another backend loads the saved modules and must give the same logits: the
files, like the layers, are the same on every backend.

    python examples/multi_backend.py                         # every installed backend
    python examples/multi_backend.py --backends jax torch

The package itself needs no TensorFlow on JAX or PyTorch (`import tensorflow`
never happens there). `--smoke` trains only the fusion stage, for a few steps, on
the tiny test encoder with JAX (and PyTorch if installed), and checks the logits on
TensorFlow.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

BACKEND_MODULES = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}
MAX_LENGTH = 32


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow", "torch"],
                        choices=sorted(BACKEND_MODULES))
    parser.add_argument("--encoder", default=None, help="checkpoint directory or cached hub id "
                                                        "(default: the offline MiniLM)")
    parser.add_argument("--sources", nargs="+", default=["vader_movie", "subjectivity"],
                        help="offline source tasks, one adapter each")
    parser.add_argument("--target", default="vader_tweets")
    parser.add_argument("--examples", type=int, default=256, help="training examples per task")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--output-dir", default="multi_backend_output")
    parser.add_argument("--smoke", action="store_true", help="fusion stage only, tiny encoder, JAX (and PyTorch) then "
                                                               "TensorFlow")
    # Internal: what a child process does.
    parser.add_argument("--child", choices=sorted(BACKEND_MODULES), help=argparse.SUPPRESS)
    parser.add_argument("--check", metavar="DIR", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ----------------------------------------------------------------- a child process: one backend
def encode(tokenizer, texts):
    """Token ids padded to one fixed length, so compiled (XLA) training steps see a single shape."""
    batch = tokenizer(list(texts), padding="max_length", truncation=True, max_length=MAX_LENGTH,
                      return_tensors="np")
    return {k: batch[k].astype("int32") for k in ("input_ids", "attention_mask", "token_type_ids")}


def task_data(name, args):
    """(texts, integer labels, label names) of a task's training split."""
    import numpy as np

    if args.smoke:
        from _smoke import sentiment_examples

        texts, labels = sentiment_examples(args.examples, seed=len(name))
        return texts, np.asarray([int(y == "positive") for y in labels]), ["negative", "positive"]
    from keras_adapterfusion.tasks import get_task

    task = get_task(name)
    texts, labels = task.load("train", limit=args.examples)
    return texts, labels, list(task.label_names)


def child(args):
    """Train (or, with `--check`, load and evaluate) on the backend this process runs."""
    import keras
    import numpy as np

    import keras_adapterfusion as kaf
    from keras_adapterfusion import training
    from keras_adapterfusion.training import builders
    from keras_adapterfusion.formats import native as saving

    assert keras.backend.backend() == args.child, (keras.backend.backend(), args.child)
    keras.utils.set_random_seed(0)
    encoder = kaf.load_encoder(args.encoder)
    tokenizer = kaf.load_tokenizer(args.encoder)
    probe = encode(tokenizer, ["what a lovely day", "this is awful", "stocks fell again"])

    if args.check:  # load the modules another backend trained, and compute the same logits
        for name in args.sources:
            saving.load_adapter(encoder, os.path.join(args.check, "adapters", name))
        setup = saving.load_fusion(encoder, os.path.join(args.check, "fusion"))
        head = saving.load_head(os.path.join(args.check, "head"), encoder)
        model = builders.build_fusion_model(encoder, setup.adapters, head=head)
        return {"backend": args.child, "logits": np.asarray(model(probe), dtype=np.float64).tolist()}

    started, losses = time.perf_counter(), {}
    for name in args.sources:  # stage 1: one adapter per source task
        if args.smoke:  # smoke: adapters added, not trained; only the fusion stage trains
            encoder.add_adapter(name, "seq_bn")
            continue
        texts, labels, names = task_data(name, args)
        model = builders.build_adapter_model(encoder, name, num_labels=len(names))
        training.compile_for_stage(model, total_steps=args.epochs * len(texts) // 16, learning_rate=1e-3)
        history = model.fit(encode(tokenizer, texts), labels, batch_size=16, epochs=args.epochs, verbose=0)
        losses[name] = history.history["loss"]
    # stage 2: the fusion and a new head for the target
    texts, labels, names = task_data(args.target, args)
    fusion = builders.build_fusion_model(encoder, args.sources, head=kaf.ClassificationHead(
        len(names), label_names=names))
    training.compile_for_stage(fusion, total_steps=max(1, args.epochs * len(texts) // 16), learning_rate=1e-3)
    history = fusion.fit(encode(tokenizer, texts), labels, batch_size=16, epochs=args.epochs, verbose=0)
    losses["fusion"] = history.history["loss"]
    seconds = time.perf_counter() - started

    out = os.path.join(args.output_dir, args.child)
    for name in args.sources:
        saving.save_adapter(encoder, name, os.path.join(out, "adapters", name))
    saving.save_fusion(encoder, args.sources, os.path.join(out, "fusion"))
    saving.save_head(fusion.head, os.path.join(out, "head"), encoder)
    return {"backend": args.child, "seconds": round(seconds, 1), "losses": losses, "directory": out,
            "logits": np.asarray(fusion(probe), dtype=np.float64).tolist()}


# ----------------------------------------------------------------- the parent: one process per backend
def run_child(backend, args, check=None):
    """Run this script on `backend` in a new process; return the JSON it printed last."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    if args.smoke and backend == "jax":  # XLA's quickest compilation: the smoke model is tiny
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
    command = [sys.executable, os.path.abspath(__file__), "--child", backend, "--encoder", args.encoder,
               "--sources", *args.sources, "--target", args.target, "--examples", str(args.examples),
               "--epochs", str(args.epochs), "--output-dir", args.output_dir]
    command += ["--smoke"] if args.smoke else []
    command += ["--check", check] if check else []
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {backend} process failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    if args.child:  # a child process: do the work, print one JSON line
        print(json.dumps(child(args)))
        return
    if args.smoke:
        from _smoke import scratch_dir, tiny_checkpoint

        vars(args).update(encoder=tiny_checkpoint(), backends=["jax", "torch"], examples=32, epochs=1,
                          output_dir=scratch_dir("output"))
    if args.encoder is None:
        from keras_adapterfusion.backbones.huggingface import DEFAULT_ENCODER

        args.encoder = DEFAULT_ENCODER

    trained = {}
    for backend in args.backends:
        if importlib.util.find_spec(BACKEND_MODULES[backend]) is None:
            print(f"{backend}: {BACKEND_MODULES[backend]} is not installed, so this backend is skipped "
              f"(pip install {BACKEND_MODULES[backend]} to include it)")
            continue
        result = run_child(backend, args)
        trained[backend] = result
        print(f"{backend}: trained in {result['seconds']} s; losses per epoch "
              + ", ".join(f"{k} {[round(v, 4) for v in vs]}" for k, vs in result["losses"].items()))
    if not trained:
        raise SystemExit("no backend ran: install jax, tensorflow or torch")

    # Cross-check: another backend loads each backend's saved modules and must give the same logits.
    import numpy as np

    installed = [b for b in BACKEND_MODULES if importlib.util.find_spec(BACKEND_MODULES[b]) is not None]
    worst = 0.0
    for backend, result in trained.items():
        other = next((b for b in installed if b != backend), None)
        if other is None:
            continue
        checked = run_child(other, args, check=result["directory"])
        diff = float(np.abs(np.asarray(checked["logits"]) - np.asarray(result["logits"])).max())
        worst = max(worst, diff)
        print(f"modules trained on {backend}, run on {other}: max |logit difference| {diff:.1e}")
        if diff > 1e-4:
            raise SystemExit(f"the {backend} modules give other logits on {other} ({diff:.2e})")

    if args.smoke:
        assert "jax" in trained, trained
        assert all(np.isfinite(v).all() for r in trained.values() for v in r["losses"].values())
        assert worst <= 1e-5, worst
        print("smoke OK")


if __name__ == "__main__":
    main()
