"""Quick start: svdlora's randomized truncated SVD on a few typical inputs.

Run with `make demo` (or `python examples/quickstart.py` inside the venv).  Prints, for each
case, the time and the error relative to the Eckart–Young optimum.
"""
from __future__ import annotations

import os
import time

import numpy as np

import svdlora


def decaying_matrix(m: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = min(m, n)
    U, _ = np.linalg.qr(rng.standard_normal((m, r)))
    V, _ = np.linalg.qr(rng.standard_normal((n, r)))
    return ((U / np.arange(1, r + 1)) @ V.T).astype(np.float32)


def report(name: str, A, k: int, fn) -> None:
    fn()  # warm-up (first BLAS/LAPACK calls pay one-off initialisation)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        U, S, Vh = fn()
        times.append(time.perf_counter() - t0)
    dt = min(times)
    A64 = np.asarray(A, dtype=np.float64)
    s = np.linalg.svd(A64, compute_uv=False)
    U, S, Vh = (np.asarray(x, dtype=np.float64) for x in (U, S, Vh))
    err = np.linalg.norm(A64 - (U[:, :k] * S[:k]) @ Vh[:k])
    opt = np.sqrt(np.sum(s[k:] ** 2))
    print(f"  {name:<34s} {dt * 1e3:8.1f} ms   error / optimum = {err / opt:.4f}")


def main() -> None:
    print("svdlora", svdlora.__version__, svdlora.build_info())
    A = decaying_matrix(2000, 1500)
    k = 32
    print(f"\nrank-{k} SVD of a 2000 x 1500 float32 matrix with sigma_i = 1/i")
    report("svdlora.rsvd (numpy in)", A, k, lambda: svdlora.rsvd(A, k, seed=0))
    report("svdlora.rsvd backend='numpy'", A, k, lambda: svdlora.rsvd(A, k, seed=0, backend="numpy"))
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        T = torch.from_numpy(A)
        q = svdlora.linalg.default_n_iter(k, exact_range=False)
        report(f"torch.svd_lowrank (q={k + 10}, niter={q})", A, k,
               lambda: tuple(x.numpy() for x in _lowrank(torch, T, k, q)))
        Tb = T.to(torch.bfloat16)
        report("svdlora.rsvd on bfloat16 (no fp32 copy)", Tb.float().numpy(), k,
               lambda: tuple(x.numpy() for x in svdlora.rsvd(Tb, k, seed=0)))
    t0 = time.perf_counter()
    U, S, Vh = svdlora.rsvd(A, 400, tol=0.2, seed=0)
    rel = np.linalg.norm(A - (U * S) @ Vh) / np.linalg.norm(A)
    print(f"\nadaptive rank, tol=0.2: rank {S.shape[0]}, relative error {rel:.4f} "
          f"({(time.perf_counter() - t0) * 1e3:.0f} ms)")
    X = A[:, :200] + 3.0
    U, S, Vh, mean = svdlora.pca(X, 5, seed=0)
    print(f"pca: top-5 explained variance {np.round(S**2 / (X.shape[0] - 1), 5)}, "
          f"|mean - X.mean(0)| = {np.abs(mean - X.mean(0)).max():.1e}")


def adapters_demo() -> None:
    """Fine-tune a small MLP through SVD-LoRA adapters, save, reload and export to PEFT."""
    try:
        import torch
        from torch import nn
    except ImportError:
        print("\n(adapters need torch: skipped)")
        return
    import tempfile

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 10))
    student = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 10))
    x = torch.randn(2048, 64)
    with torch.no_grad():
        target = teacher(x)
    print("\nSVD-LoRA: adapt a 64-128-10 MLP towards a teacher (keep mode, r=8, r'=4)")
    base_state = {k: v.clone() for k, v in student.state_dict().items()}
    svdlora.convert(student, rank=8, inner_rank=4, residual=True, progress=True)
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=3e-2)
    for step in range(201):
        opt.zero_grad()
        loss = nn.functional.mse_loss(student(x), target)
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"  step {step:3d}  loss {loss.item():.4f}")
    with tempfile.TemporaryDirectory() as tmp:
        svdlora.save_adapter(student, f"{tmp}/adapter")
        fresh = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 10))
        fresh.load_state_dict(base_state)
        svdlora.load_adapter(fresh, f"{tmp}/adapter")
        same = torch.equal(fresh(x), student(x))
        svdlora.export_peft(student, f"{tmp}/peft")
        print(f"  saved + reloaded onto a fresh base model: identical outputs = {same}; "
              f"PEFT export written ({', '.join(sorted(os.listdir(f'{tmp}/peft')))})")


def _lowrank(torch, T, k, q):
    U, S, V = torch.svd_lowrank(T, q=k + 10, niter=q)
    return U[:, :k], S[:k], V[:, :k].T


if __name__ == "__main__":
    main()
    if svdlora.build_info()["compiled"]:
        adapters_demo()
