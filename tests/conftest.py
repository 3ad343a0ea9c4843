"""Shared fixtures and reference helpers: test matrices with known spectra and exact errors."""
from __future__ import annotations

import numpy as np
import pytest

import svdlora

try:
    import torch
except ImportError:  # numpy-only lane
    torch = None

HAS_COMPILED = svdlora.build_info()["compiled"]
HAS_CUDA = bool(torch is not None and torch.cuda.is_available() and svdlora.build_info()["cuda"])

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")
needs_compiled = pytest.mark.skipif(not HAS_COMPILED, reason="svdlora built without its compiled core")

SPECTRA = {
    "i^-0.5": lambda i: i ** -0.5,
    "i^-1": lambda i: 1.0 / i,
    "i^-2": lambda i: i ** -2.0,
    "exp(-i/20)": lambda i: np.exp(-i / 20.0),
}


def spectrum(name: str, count: int, rng: np.random.Generator | None = None) -> np.ndarray:
    i = np.arange(1, count + 1, dtype=np.float64)
    if name == "noise+spikes":
        # Singular values of a Gaussian noise matrix (a Marchenko–Pastur bulk, aspect 1/2)
        # plus 5 spikes well above its upper edge.
        rng = rng or np.random.default_rng(0)
        bulk = np.linalg.svd(rng.standard_normal((2 * count, count)), compute_uv=False)
        bulk /= bulk[0]
        bulk[:5] = [8.0, 6.0, 5.0, 4.0, 3.0]
        return bulk
    return SPECTRA[name](i)


def matrix_with_spectrum(m: int, n: int, s: np.ndarray, seed: int = 0) -> np.ndarray:
    """float64 m x n matrix U diag(s) V^T with Haar-random orthonormal U, V."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((m, len(s))))
    V, _ = np.linalg.qr(rng.standard_normal((n, len(s))))
    return (U * s) @ V.T


def to_numpy64(x) -> np.ndarray:
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def reconstruction_error(A, U, S, Vh) -> float:
    """||A - U diag(S) Vh||_F with the product formed in float64 (fp32 rounding of the
    product itself would otherwise dominate small optimal errors)."""
    A64, U64, S64, V64 = (to_numpy64(x) for x in (A, U, S, Vh))
    return float(np.linalg.norm(A64 - (U64 * S64[..., None, :]) @ V64))


def optimal_error(A, k: int) -> float:
    """Eckart–Young: sqrt(sum_{i>k} sigma_i^2) of A itself (after any dtype rounding)."""
    s = np.linalg.svd(to_numpy64(A), compute_uv=False)
    return float(np.sqrt(np.sum(s[..., k:] ** 2)))


def orthonormality_defect(Q) -> float:
    """max |Q^T Q - I| over columns of Q (..., m, k)."""
    Q = to_numpy64(Q)
    k = Q.shape[-1]
    return float(np.abs(np.swapaxes(Q, -1, -2) @ Q - np.eye(k)).max())


def assert_sign_convention(U) -> None:
    U = to_numpy64(U)
    flat = U.reshape(-1, *U.shape[-2:])
    for mat in flat:
        pivots = mat[np.abs(mat).argmax(axis=0), np.arange(mat.shape[1])]
        assert (pivots > 0).all(), "largest-|.| entry of every U column must be positive"
