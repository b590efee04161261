"""Benchmark worker for the reference, AdapterHub `adapters` 1.3.0 on PyTorch (see worker.py for the protocol).

It builds the workloads with the reference's own benchmark (`shared/bench/peer_bench.py`: `build`, its sizes) and
runs exactly the step that benchmark times, so one process can be timed in turns with this package's worker.
Run with the reference's venv: `/tmp/peer/bin/python benchmarks/peer_worker.py --threads 2`.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from worker import serve  # noqa: E402


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-bench", default=os.path.join(here, "..", "..", "shared", "bench", "peer_bench.py"),
                        help="path of the reference's peer_bench.py")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(args.peer_bench)))
    import peer_bench
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    def setup(spec):
        device, bf16 = spec.get("device", "cpu"), bool(spec.get("bf16", False))
        scenario, batch, seq = spec["scenario"], int(spec["batch"]), int(spec["seq"])
        torch.manual_seed(0)
        m = peer_bench.build(spec["model"], scenario, int(spec.get("adapters", 8))).to(device)
        ids = torch.randint(1000, 30000, (batch, seq), device=device)
        mask = torch.ones_like(ids)
        labels = torch.randint(0, 2, (batch,), device=device)
        sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        amp = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16)
        train = scenario.startswith("train")
        if train:  # the step of peer_bench.run, unchanged
            m.train()
            opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)

            def step():
                with amp:
                    out = m(input_ids=ids, attention_mask=mask)
                    loss = torch.nn.functional.cross_entropy(out.logits.float(), labels)
                loss.backward()
                opt.step()
                opt.zero_grad()
                sync()
        else:
            m.eval()

            def step():
                with torch.inference_mode(), amp:
                    m(input_ids=ids, attention_mask=mask)
                sync()
        trainable = sum(p.numel() for p in m.parameters() if p.requires_grad) if train else None
        return step, {"impl": "adapters-torch", "trainable_params": trainable, "torch": torch.__version__,
                      "threads": torch.get_num_threads()}

    serve(setup)


if __name__ == "__main__":
    main()
