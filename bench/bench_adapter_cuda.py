"""GPU benchmark of the SVD-LoRA layer, bf16 fwd+bwd, against the same math as a plain torch
autograd chain, a dense nn.Linear (forward + dx) and a PEFT LoRA layer of equal rank.

    python bench/bench_adapter_cuda.py [--quick] [--out bench/results/<gpu>.json]

N = 8192 tokens, D = K = 4096: drop mode r = 256, r' = 16; keep mode r = 64 and 256.  Also the
latency per layer call at small batches (N = 1, 16, 128), fused against unfused, and the HBM
bound of drop mode (bytes of x, y, dy and dx once each) next to the achieved time.  Uses the
variants and measurements of bench_adapter.py (timed with a device synchronisation).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_adapter import run_config  # noqa: E402
from bench_rsvd_cuda import PEAKS  # noqa: E402
from common import gpu_results_path, machine, merge_section  # noqa: E402


def hbm_bound_seconds(N: int, D: int, K: int, element_size: int) -> float:
    name = torch.cuda.get_device_name()
    bandwidth = next((bw for key, (_, bw) in PEAKS.items() if key in name), float("nan"))
    return (2 * N * K + 2 * N * D) * element_size / bandwidth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = gpu_results_path(os.path.basename(__file__), args.out)
    N = 1024 if args.quick else 8192
    bf16 = torch.bfloat16
    results = {"dtype": "bfloat16", "configs": []}
    for r, rr in ((256, 16), (64, 8)):
        row = run_config(N, 4096, 4096, r, rr, args.repeats, device="cuda", dtype=bf16)
        bound = hbm_bound_seconds(N, 4096, 4096, 2)
        row["drop_hbm_bound_s"] = bound
        row["drop_fused_over_hbm_bound"] = row["variants"]["drop_fused"]["time_s"] / bound
        print(f"  drop fused / HBM bound = {row['drop_fused_over_hbm_bound']:.2f}", flush=True)
        results["configs"].append(row)
    latency = []
    for n in (1, 16, 128):
        row = run_config(n, 4096, 4096, 256, 16, args.repeats, device="cuda", dtype=bf16,
                         with_peft=False)
        latency.append({"N": n, **{k: v["time_s"] for k, v in row["variants"].items()}})
    results["small_batch_latency_s"] = latency
    meta = {**machine(), "gpu": torch.cuda.get_device_name()}
    merge_section(out, "adapter_cuda", results, meta)
    print("wrote", out)


if __name__ == "__main__":
    main()
