"""GPU benchmark of svdlora.rsvd against torch.svd_lowrank, cuSOLVER's gesvdr and
torch.linalg.svd, plus the whole-model case (rsvd_many over a Llama-2-7B-shaped model).

    python bench/bench_rsvd_cuda.py [--quick] [--out bench/results/<gpu>.json]

Single matrix: 4096 x 11008, float32 and bfloat16, k in {64, 256}, q = 2 power iterations for
everyone, sketch size k + 10.  svd_lowrank and gesvdr get a float32 copy of a bf16 input (they
need one; the cast is timed with them).  Times are CUDA-event medians of >= 10 runs after
warm-up; every time is reported with its error relative to the Eckart–Young optimum (computed
from the exact singular values of the matrix as stored).

Whole model: the 224 weights of a Llama-2-7B-shaped model (32 layers x q, k, v, o 4096x4096,
gate/up 11008x4096, down 4096x11008), random bf16 with a decaying spectrum, rank 64, with
rsvd_many against a loop of svd_lowrank calls: total seconds and peak extra GPU memory.

Also: the achieved bandwidth and FLOP/s of one pass (bf16 A times a 74-column panel, the GEMM
our op issues) against the device's peak.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from typing import Any, Callable, Dict, List

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import gpu_results_path, machine, merge_section  # noqa: E402

import svdlora  # noqa: E402

OVERSAMPLE = 10
N_ITER = 2
# Dense peaks (bf16 tensor-core FLOP/s without sparsity, HBM bytes/s) by device name.
PEAKS = {"H100": (989e12, 3.35e12), "H200": (989e12, 4.8e12), "A100": (312e12, 2.0e12)}


def cuda_time(fn: Callable[[], Any], repeats: int = 10, warmup: int = 2) -> float:
    """Median seconds of ``fn`` measured with CUDA events (device time, queue included)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times: List[float] = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def decaying_matrix(m: int, n: int, dtype: torch.dtype, seed: int, rank: int = 512) -> torch.Tensor:
    """Gaussian factors with singular-value-like weights 1/i, plus a small dense floor."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    left = torch.randn(m, rank, device="cuda", generator=g) / (m ** 0.5)
    right = torch.randn(rank, n, device="cuda", generator=g) / (n ** 0.5)
    weights = 1.0 / torch.arange(1, rank + 1, device="cuda", dtype=torch.float32)
    A = (left * weights) @ right + 1e-3 / (n ** 0.5) * torch.randn(m, n, device="cuda", generator=g)
    return A.to(dtype)


def relative_error(A: torch.Tensor, U, S, Vh, optimum: float) -> float:
    total = 0.0
    for i in range(0, A.shape[0], 2048):
        E = A[i:i + 2048].double() - (U[i:i + 2048].double() * S.double()) @ Vh.double()
        total += float(E.square().sum())
    return total ** 0.5 / optimum if optimum > 0 else float("nan")


def single_matrix(dtype: torch.dtype, k: int, repeats: int) -> Dict[str, Any]:
    A = decaying_matrix(4096, 11008, dtype, seed=k)
    singular = torch.linalg.svdvals(A.double())
    optimum = float(singular[k:].square().sum().sqrt())
    l = k + OVERSAMPLE
    runs: Dict[str, Callable[[], Any]] = {
        "svdlora": lambda: svdlora.rsvd(A, k, oversample=OVERSAMPLE, n_iter=N_ITER, seed=0),
        "svd_lowrank": lambda: torch.svd_lowrank(A.float(), q=l, niter=N_ITER),
        "cusolver_gesvdr": lambda: torch.ops.svdlora.cusolver_gesvdr(A.float(), k, OVERSAMPLE,
                                                                     N_ITER),
        "linalg_svd": lambda: torch.linalg.svd(A.float(), full_matrices=False),
    }
    row: Dict[str, Any] = {"shape": [4096, 11008], "dtype": str(dtype).split(".")[-1], "k": k,
                           "q": N_ITER, "sketch": l}
    for name, fn in runs.items():
        seconds = cuda_time(fn, repeats=3 if name == "linalg_svd" else repeats)
        out = fn()
        if name == "svd_lowrank":
            U, S, V = out
            U, S, Vh = U[:, :k], S[:k], V[:, :k].mT
        elif name == "linalg_svd":
            U, S, Vh = out[0][:, :k], out[1][:k], out[2][:k]
        else:
            U, S, Vh = out
        row[name] = {"ms": seconds * 1e3, "error_over_optimum": relative_error(A, U, S, Vh, optimum)}
    base = row["svdlora"]["ms"]
    row["speedup_vs_svd_lowrank"] = row["svd_lowrank"]["ms"] / base
    row["speedup_vs_gesvdr"] = row["cusolver_gesvdr"]["ms"] / base
    row["speedup_vs_linalg_svd"] = row["linalg_svd"]["ms"] / base
    print(f"{row['dtype']:>8} k={k:<3}  svdlora {base:8.2f} ms ({row['svdlora']['error_over_optimum']:.4f})"
          f"  svd_lowrank x{row['speedup_vs_svd_lowrank']:.2f}  gesvdr x{row['speedup_vs_gesvdr']:.2f}"
          f"  linalg.svd x{row['speedup_vs_linalg_svd']:.1f}", flush=True)
    return row


def llama_shapes(layers: int) -> List[tuple]:
    per_layer = [(4096, 4096)] * 4 + [(11008, 4096)] * 2 + [(4096, 11008)]
    return per_layer * layers


def whole_model(layers: int) -> Dict[str, Any]:
    shapes = llama_shapes(layers)
    mats = [decaying_matrix(m, n, torch.bfloat16, seed=i, rank=256) for i, (m, n) in enumerate(shapes)]
    torch.cuda.synchronize()
    base_memory = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    svdlora.rsvd_many(mats[:7], 64, n_iter=N_ITER)  # warm-up (cuBLAS/cuSOLVER init)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    seconds = cuda_time(lambda: svdlora.rsvd_many(mats, 64, n_iter=N_ITER), repeats=3, warmup=0)
    peak_extra = torch.cuda.max_memory_allocated() - base_memory
    lowrank = cuda_time(lambda: [torch.svd_lowrank(A.float(), q=64 + OVERSAMPLE, niter=N_ITER)
                                 for A in mats], repeats=1, warmup=0)
    # accuracy on a sample of the matrices
    out = svdlora.rsvd_many(mats[:7], 64, n_iter=N_ITER)
    errors = []
    for A, (U, S, Vh) in zip(mats[:7], out):
        s = torch.linalg.svdvals(A.double())
        errors.append(relative_error(A, U, S, Vh, float(s[64:].square().sum().sqrt())))
    largest_fp32 = max(m * n for m, n in shapes) * 4
    result = {"matrices": len(mats), "rank": 64, "q": N_ITER, "svdlora_seconds": seconds,
              "svd_lowrank_loop_seconds": lowrank, "speedup": lowrank / seconds,
              "peak_extra_bytes": peak_extra, "largest_fp32_copy_bytes": largest_fp32,
              "max_error_over_optimum_first_layer": max(errors)}
    print(f"whole model ({len(mats)} matrices): rsvd_many {seconds:.3f} s, svd_lowrank loop "
          f"{lowrank:.2f} s (x{lowrank / seconds:.1f}); peak extra {peak_extra / 2**20:.0f} MiB "
          f"(largest fp32 copy {largest_fp32 / 2**20:.0f} MiB); max err/opt {max(errors):.4f}",
          flush=True)
    return result


def pass_roofline() -> Dict[str, Any]:
    A = decaying_matrix(4096, 11008, torch.bfloat16, seed=1)
    X = torch.randn(11008, 64 + OVERSAMPLE, device="cuda", dtype=torch.bfloat16)
    seconds = cuda_time(lambda: torch.mm(A, X), repeats=50)
    bytes_moved = A.numel() * 2 + X.numel() * 2 + 4096 * X.shape[1] * 2
    flops = 2 * A.shape[0] * A.shape[1] * X.shape[1]
    name = torch.cuda.get_device_name()
    peak_flops, peak_bw = next((v for key, v in PEAKS.items() if key in name), (float("nan"),) * 2)
    result = {"device": name, "us": seconds * 1e6, "bandwidth_TBps": bytes_moved / seconds / 1e12,
              "tflops": flops / seconds / 1e12, "peak_bandwidth_TBps": peak_bw / 1e12,
              "peak_tflops": peak_flops / 1e12}
    print(f"one pass (bf16 4096x11008 @ 74 cols): {seconds * 1e6:.1f} us, "
          f"{result['bandwidth_TBps']:.2f} TB/s of {peak_bw / 1e12:.2f}, "
          f"{result['tflops']:.1f} TFLOP/s of {peak_flops / 1e12:.0f}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, 2 model layers")
    parser.add_argument("--out", default=None, help="results JSON (default bench/results/<gpu>.json)")
    args = parser.parse_args()
    out = gpu_results_path(os.path.basename(__file__), args.out)
    repeats = 3 if args.quick else 10
    rows = [single_matrix(dtype, k, repeats)
            for dtype in (torch.float32, torch.bfloat16) for k in (64, 256)]
    meta = {**machine(), "gpu": torch.cuda.get_device_name(),
            "svdlora_build": svdlora.build_info()}
    merge_section(out, "rsvd_single", rows, meta)
    merge_section(out, "rsvd_pass_roofline", pass_roofline(), meta)
    merge_section(out, "rsvd_whole_model", whole_model(2 if args.quick else 32), meta)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
