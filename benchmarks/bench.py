"""Time keras_adapterfusion on the workloads of the reference's benchmark (shared/bench/peer_bench.py).

Prints one JSON line per scenario with the reference's fields:
{"impl", "device", "bf16", "model", "scenario", "batch", "seq", "n_adapters", "ms_median", "ex_per_s",
 "trainable_params"}, so the two can be compared line by line. Run both in one session on one machine:

    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/bench.py --model minilm --batch 16 --seq 128 --steps 5
    /tmp/peer/bin/python ../shared/bench/peer_bench.py --model minilm --batch 16 --seq 128 --steps 5 --threads 2

Scenarios: train_full, train_adapter, train_fusion (N seq_bn adapters + dynamic fusion; fusion and head train),
infer_base, infer_adapter, infer_fusion; `--fusion-form reference` times AdapterHub's literal fusion form instead
of the fast exact one. Random weights, fixed random token ids, AdamW, cross-entropy on 2 labels, the median of the
timed steps after 2 warm-ups (as the reference).
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CONFIGS = {
    "bert-base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
    "minilm": dict(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536),
    "bert-tiny": dict(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512),
}
SCENARIOS = ("train_full", "train_adapter", "train_fusion", "infer_base", "infer_adapter", "infer_fusion")
# What a served request costs: `infer_*`'s model exported as a SavedModel (`serving.export`) and its
# `serving_default` called by plain TensorFlow (the process loading it imports neither Keras nor this package).
SERVED = ("serve_base", "serve_adapter", "serve_fusion")


def inference_scenario(scenario):
    """The `infer_*` scenario a `serve_*` one exports (what the reference runs for it); others as they are."""
    return "infer_" + scenario[len("serve_"):] if scenario in SERVED else scenario


def build(model_name, scenario, n_adapters, reference_form):
    # The top-level names (not `keras_adapterfusion.training.builders`), so that `compare.py --before` can time a
    # checkout from before the folders with this script.
    from keras_adapterfusion import TransformerEncoder, builders

    encoder = TransformerEncoder(vocab_size=30522, max_positions=512, fusion_reference_form=reference_form,
                                 **CONFIGS[model_name])
    encoder.build()
    if scenario.endswith("full") or scenario == "infer_base":
        return builders.build_full_finetune_model(encoder, num_labels=2) if scenario.startswith("train") \
            else builders.build_head_only_model(encoder, num_labels=2)
    if scenario.endswith("adapter"):
        return builders.build_adapter_model(encoder, "a0", num_labels=2)
    names = [f"a{i}" for i in range(n_adapters)]
    for n in names:
        encoder.add_adapter(n, "seq_bn")
    return builders.build_fusion_model(encoder, names, num_labels=2)


def prepare(model_name, scenario, batch, seq, n_adapters=8, reference_form=False, bf16=False, jit_compile=None):
    """Build a scenario's model and inputs; returns `(step, info)`, `step()` running one timed step."""
    if scenario in SERVED:
        return prepare_served(model_name, scenario, batch, seq, n_adapters, bf16)
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    if bf16:
        keras.config.set_dtype_policy("mixed_bfloat16")
    model = build(model_name, scenario, n_adapters, reference_form)
    rng = np.random.default_rng(0)
    x = {"input_ids": rng.integers(1000, 30000, (batch, seq)).astype("int32"),
         "attention_mask": np.ones((batch, seq), "int32")}
    y = rng.integers(0, 2, batch)
    train = scenario.startswith("train")
    if train:
        model.compile(optimizer=keras.optimizers.AdamW(1e-4),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile="auto" if jit_compile is None else jit_compile)
        step = lambda: model.train_on_batch(x, y)  # noqa: E731
    else:
        if jit_compile is not None:
            model.jit_compile = jit_compile
        step = lambda: keras.ops.convert_to_numpy(model.predict_on_batch(x))  # noqa: E731
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights) if train else None
    info = {"impl": f"keras_adapterfusion-{keras.backend.backend()}" + ("-reference-form" if reference_form else ""),
            "device": "gpu" if _has_gpu() else "cpu", "bf16": bf16, "model": model_name, "scenario": scenario,
            "batch": batch, "seq": seq, "n_adapters": n_adapters if scenario.endswith("fusion") else None,
            "trainable_params": trainable}
    return step, info


def export(directory, model_name, scenario, n_adapters, bf16=False):
    """Build `scenario`'s model (an `infer_*` one) and export it under `directory`; returns the version path."""
    import keras

    from keras_adapterfusion.serving.export import export_saved_model

    keras.utils.set_random_seed(0)
    if bf16:
        keras.config.set_dtype_policy("mixed_bfloat16")
    model = build(model_name, scenario, n_adapters, False)
    return export_saved_model(model, directory, model_name="bench", tokenizer=None, input_dtype="int32",
                              write_models_config=False)


def prepare_served(model_name, scenario, batch, seq, n_adapters=8, bf16=False):
    """`serve_*`: export `infer_*`'s model in a child process, load it here with `tf.saved_model.load` and time
    one call of its `serving_default` signature (the logits fetched, as `infer_*` fetches them)."""
    import subprocess
    import tempfile

    import numpy as np
    import tensorflow as tf

    infer = inference_scenario(scenario)
    directory = tempfile.mkdtemp(prefix="kaf_bench_export_")
    command = [sys.executable, os.path.abspath(__file__), "--export", directory, "--model", model_name,
               "--scenarios", infer, "--adapters", str(n_adapters)] + (["--bf16"] if bf16 else [])
    subprocess.run(command, check=True, stdout=sys.stderr, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    path = os.path.join(directory, "bench", "1")
    serve = tf.saved_model.load(path).signatures["serving_default"]
    rng = np.random.default_rng(0)
    inputs = {"input_ids": tf.constant(rng.integers(1000, 30000, (batch, seq)).astype("int32")),
              "attention_mask": tf.ones((batch, seq), tf.int32),
              "token_type_ids": tf.zeros((batch, seq), tf.int32)}
    step = lambda: serve(**inputs)["logits"].numpy()  # noqa: E731
    info = {"impl": "keras_adapterfusion-savedmodel", "device": "gpu" if tf.config.list_physical_devices("GPU")
            else "cpu", "bf16": bf16, "model": model_name, "scenario": scenario, "batch": batch, "seq": seq,
            "n_adapters": n_adapters if scenario.endswith("fusion") else None, "trainable_params": None,
            "export": path}
    return step, info


def run(model_name, scenario, batch, seq, steps, n_adapters, reference_form, bf16, jit_compile=None):
    step, info = prepare(model_name, scenario, batch, seq, n_adapters, reference_form, bf16, jit_compile)
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        step()
        if i >= 2:
            times.append((time.perf_counter() - t) * 1000)
    ms = statistics.median(times)
    out = dict(info)
    trainable = out.pop("trainable_params")
    out.update(ms_median=round(ms, 2), ex_per_s=round(batch / ms * 1000, 2), trainable_params=trainable)
    return out


def _has_gpu():
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(CONFIGS), default="minilm")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--fusion-form", choices=["fast", "reference"], default="fast")
    parser.add_argument("--bf16", action="store_true", help="mixed_bfloat16 policy")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (TensorFlow)")
    parser.add_argument("--inter-op", type=int, default=None,
                        help="inter-op threads (TensorFlow; default: the same as --threads)")
    parser.add_argument("--jit", choices=["auto", "on", "off"], default="auto",
                        help="XLA compilation of the step (Keras's jit_compile); auto: Keras's own choice")
    parser.add_argument("--backend", choices=["tensorflow", "jax"], default=None,
                        help="KERAS_BACKEND for this run (default: the environment's, else tensorflow)")
    parser.add_argument("--export", default=None, metavar="DIR",
                        help="export the (one, infer_*) scenario's model as a SavedModel under DIR and exit")
    parser.add_argument("--serve", action="store_true",
                        help="act as a worker for compare.py (JSON requests on stdin, see worker.py)")
    args = parser.parse_args()
    if args.backend:  # before anything imports Keras
        os.environ["KERAS_BACKEND"] = args.backend
    set_threads(args.threads, args.inter_op)
    jit = {"auto": None, "on": True, "off": False}[args.jit]
    if args.export:
        if args.scenarios not in ("infer_base", "infer_adapter", "infer_fusion"):
            parser.error(f"--export: --scenarios is {args.scenarios!r}; expected one of infer_base, infer_adapter, "
                         "infer_fusion (the model a serve_* scenario exports)")
        print(export(args.export, args.model, args.scenarios, args.adapters, args.bf16))
        return
    if args.serve:
        from worker import serve

        serve(lambda spec: prepare(spec["model"], spec["scenario"], int(spec["batch"]), int(spec["seq"]),
                                   int(spec.get("adapters", 8)), spec.get("fusion_form") == "reference",
                                   bool(spec.get("bf16", False)), jit))
        return
    for scenario in args.scenarios.split(","):
        if scenario not in SCENARIOS + SERVED:
            parser.error(f"unknown scenario {scenario!r}; expected from {list(SCENARIOS + SERVED)}")
        print(json.dumps(run(args.model, scenario, args.batch, args.seq, args.steps, args.adapters,
                             args.fusion_form == "reference", args.bf16, jit)), flush=True)


def set_threads(intra, inter=None):
    """Pin the backend's thread pools (TensorFlow: intra- and inter-op; JAX/XLA: nothing to set here)."""
    if intra and os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter or intra)
    elif intra and os.environ.get("KERAS_BACKEND") == "torch":
        import torch

        torch.set_num_threads(intra)


if __name__ == "__main__":
    main()
