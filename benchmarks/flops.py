"""Matrix-product FLOPs of the benchmark's workloads, and model FLOP utilisation (MFU).

Counts the multiply-adds of the matrix products only (2 FLOPs each); element-wise work (softmax, LayerNorm,
GELU, dropout) is left out, as MFU figures usually do. A training step is counted as 3 forward passes
(the backward pass computes two products per forward product) even where frozen weights get no weight
gradient, so `train_*` figures other than `train_full` overstate the work; MFU is reported for
`train_full` only.

    python3 benchmarks/flops.py --model minilm --batch 16 --seq 128 --ms 1005 --peak-gflops 237

Peak of the 2-core development machine (AMD EPYC, Zen 4; /proc/cpuinfo reports 2.6 GHz): each core issues two
256-bit FMAs a cycle (AVX-512 runs as two halves), 16 float32 FMAs = 32 FLOPs a cycle. At 2.6 GHz that is
166 GFLOP/s for 2 cores, but one 2048x2048x2048 float32 product runs at 200-210 GFLOP/s there (TensorFlow,
oneDNN, 2 threads; PyTorch: 166-185), so the cores boost above it; at Zen 4's 3.7 GHz maximum boost the peak
is 2 x 32 x 3.7e9 = 237 GFLOP/s, the figure docs/performance.md divides by.
"""

import argparse

from bench import CONFIGS


def forward_flops(model="minilm", batch=16, seq=128, adapters=0, fusion=False, reduction=16, labels=2):
    """FLOPs of one forward pass (matrix products only).

    Args:
        model: a key of `bench.CONFIGS`.
        batch: examples.
        seq: tokens per example.
        adapters: `seq_bn` adapters run in every block (1 for an adapter, N for a fusion).
        fusion: the adapters are fused (the fast form: Q, K^T and V once per token, plus 2NH).
        reduction: the adapters' reduction factor.
        labels: the head's outputs.

    Returns:
        FLOPs as an int.
    """
    c = CONFIGS[model]
    h, layers, inter = c["hidden_size"], c["num_layers"], c["intermediate_size"]
    tokens = batch * seq
    per_token = 4 * h * h + 2 * h * inter + 2 * seq * h  # Q, K, V, output; FFN; scores and context
    per_token += adapters * 2 * h * (h // reduction)  # down and up projections
    if fusion:
        per_token += 3 * h * h + 2 * adapters * h
    macs = layers * tokens * per_token + batch * (2 * h * h + h * labels)  # + pooler-sized head on 1 token
    return 2 * macs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", choices=sorted(CONFIGS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--ms", type=float, required=True, help="measured time of one train_full step")
    parser.add_argument("--peak-gflops", type=float, required=True, help="the machine's peak (see above)")
    args = parser.parse_args()
    flops = 3 * forward_flops(args.model, args.batch, args.seq)
    achieved = flops / (args.ms / 1000) / 1e9
    print(f"train_full: {flops / 1e9:.1f} GFLOP per step, {args.ms:.0f} ms: {achieved:.1f} GFLOP/s, "
          f"MFU {100 * achieved / args.peak_gflops:.1f}% of {args.peak_gflops:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
