"""Many adapters on one encoder: the time to add 1,000 of them, memory, and fusing over 32 or 64.

AdapterHub's issue #546 reports that `add_adapter` slows down as adapters accumulate. This script adds
`--adapters` seq_bn adapters to MiniLM (the offline default encoder) one by one, recording the time of each
add (the first and last 100 are compared) and the process's resident memory; then adds fusions over the
first 32 and 64 and times a forward pass of each (batch `--batch`, `--seq` tokens, eval mode; ours a compiled
`predict_on_batch`, the reference's an eager `torch.no_grad()` call) after one warm-up call. `--reference` runs the same on AdapterHub `adapters` (PyTorch) in the reference environment.
Each side prints one JSON line.

Usage (from the repository root):

    python3 benchmarks/many_adapters.py --out benchmarks/results/many_adapters.jsonl
    /tmp/peer/bin/python benchmarks/many_adapters.py --reference --encoder "$(python3 -c 'import
        keras_adapterfusion.backbones.checkpoint as c; print(c.resolve_checkpoint(c.DEFAULT_ENCODER))')" \
        --out benchmarks/results/many_adapters.jsonl
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def rss_mib():
    """The process's resident memory now, MiB (Linux's VmRSS)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def minilm_dir(args):
    """`--encoder`, or the packaged MiniLM (found in this package's environment)."""
    if args.encoder:
        return args.encoder
    sys.path.insert(0, ROOT)
    from keras_adapterfusion.backbones.checkpoint import DEFAULT_ENCODER, resolve_checkpoint

    return resolve_checkpoint(DEFAULT_ENCODER)


def summary(add_times, n):
    first, last = add_times[:100], add_times[-100:]
    return {"adapters": n, "add_total_s": sum(add_times), "add_first100_median_ms": 1e3 * statistics.median(first),
            "add_last100_median_ms": 1e3 * statistics.median(last)}


def ours(args):
    sys.path.insert(0, ROOT)
    import numpy as np

    from keras_adapterfusion import AdapterModel, load_encoder

    encoder = load_encoder(minilm_dir(args), hidden_dropout=0.0, attention_dropout=0.0)
    before = rss_mib()
    times = []
    for i in range(args.adapters):
        start = time.perf_counter()
        encoder.add_adapter(f"a{i}", "seq_bn")
        times.append(time.perf_counter() - start)
    out = summary(times, args.adapters) | {"side": "ours", "rss_before_mib": before, "rss_after_mib": rss_mib()}
    rng = np.random.default_rng(0)
    x = {"input_ids": rng.integers(1000, 20000, (args.batch, args.seq)).astype("int32"),
         "attention_mask": np.ones((args.batch, args.seq), "int32")}
    def forward_ms(setup):
        # A compiled predict step (tf.function / jax.jit), as a served model runs; one warm-up call traces it.
        model = AdapterModel(encoder, None, adapter_setup=setup, output_key="last_hidden_state")
        model.predict_on_batch(x)
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            np.asarray(model.predict_on_batch(x))
            runs.append(time.perf_counter() - start)
        return 1e3 * statistics.median(runs)

    for n in args.fuse:
        names = [f"a{i}" for i in range(n)]
        start = time.perf_counter()
        encoder.add_fusion(names)
        out[f"add_fusion_{n}_s"] = time.perf_counter() - start
        out[f"forward_fusion_{n}_ms"] = forward_ms(names)
    out["forward_base_ms"] = forward_ms(None)
    out["rss_end_mib"] = rss_mib()
    return out


def reference(args):
    import torch
    from adapters import AutoAdapterModel
    from adapters.composition import Fuse

    torch.set_num_threads(args.threads)
    model = AutoAdapterModel.from_pretrained(minilm_dir(args))
    model.eval()
    before = rss_mib()
    times = []
    for i in range(args.adapters):
        start = time.perf_counter()
        model.add_adapter(f"a{i}", config="seq_bn")
        times.append(time.perf_counter() - start)
    out = summary(times, args.adapters) | {"side": "reference", "rss_before_mib": before, "rss_after_mib": rss_mib()}
    gen = torch.Generator().manual_seed(0)
    x = {"input_ids": torch.randint(1000, 20000, (args.batch, args.seq), generator=gen),
         "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long)}
    for n in args.fuse:
        names = [f"a{i}" for i in range(n)]
        start = time.perf_counter()
        model.add_adapter_fusion(Fuse(*names))
        out[f"add_fusion_{n}_s"] = time.perf_counter() - start
        model.set_active_adapters(Fuse(*names))
        with torch.no_grad():
            model(**x)
            runs = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                model(**x)
                runs.append(time.perf_counter() - start)
        out[f"forward_fusion_{n}_ms"] = 1e3 * statistics.median(runs)
    model.set_active_adapters(None)
    with torch.no_grad():
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            model(**x)
            runs.append(time.perf_counter() - start)
    out["forward_base_ms"] = 1e3 * statistics.median(runs)
    out["rss_end_mib"] = rss_mib()
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=1000)
    parser.add_argument("--fuse", type=lambda s: [int(v) for v in s.split(",")], default=[32, 64])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference", action="store_true", help="run AdapterHub adapters (PyTorch) instead")
    parser.add_argument("--encoder", help="the checkpoint directory (default: the packaged MiniLM; the reference's "
                                          "environment needs it given: `make bench-many` passes it)")
    parser.add_argument("--out", help="append the JSON line to this file")
    args = parser.parse_args(argv)
    if args.adapters < max(args.fuse + [100]):
        parser.error(f"--adapters {args.adapters}: expected at least {max(args.fuse + [100])} (the largest fusion "
                     "and the 100 adds compared)")
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(args.threads))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    result = reference(args) if args.reference else ours(args)
    result |= {"threads": args.threads, "batch": args.batch, "seq": args.seq}
    line = json.dumps(result)
    print(line)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
