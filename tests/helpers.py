"""Test helpers shared by every test module: build flags, test matrices with known spectra,
exact errors and the accuracy bar, and factories of adapter factors.  Fixtures live in
conftest.py."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

import svdlora

try:
    import torch
except ImportError:  # numpy-only lane
    torch = None

HAS_COMPILED = svdlora.build_info()["compiled"]
#: A GPU that torch sees (the adapter op's reference runs there even without CUDA kernels).
HAS_GPU = bool(torch is not None and torch.cuda.is_available())
#: A GPU and svdlora's CUDA kernels.
HAS_CUDA = HAS_GPU and bool(svdlora.build_info()["cuda"])

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")
needs_compiled = pytest.mark.skipif(not HAS_COMPILED, reason="svdlora built without its compiled core")
#: Marks of a test (or parameter) that needs the GPU machine.
CUDA_MARKS = (pytest.mark.cuda,
              pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU and a CUDA build of svdlora"))


def cuda_only(test):
    """Decorator: the test needs the GPU machine (marked `cuda`, skipped elsewhere)."""
    for mark in CUDA_MARKS:
        test = mark(test)
    return test


#: Devices a test runs on: the CPU, and CUDA (marked `cuda`, skipped without a GPU).
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA_MARKS)]

SPECTRA = {
    "i^-0.5": lambda i: i ** -0.5,
    "i^-1": lambda i: 1.0 / i,
    "i^-2": lambda i: i ** -2.0,
    "exp(-i/20)": lambda i: np.exp(-i / 20.0),
}


def case_seed(*parameters) -> int:
    """A seed derived from a test case's own parameters (stable across runs, processes and
    test order, unlike a counter or Python's salted ``hash``)."""
    return zlib.crc32("/".join(map(str, parameters)).encode())


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


def rounding_floor(A) -> float:
    """``u * sqrt(max(m, n)) * ||A||_F`` with ``u`` the unit roundoff of A's dtype.

    The size of the rounding error that any algorithm working in A's precision commits when
    it forms a product with A, such as ``B = Q^T A``: each entry is an inner product of
    length ``max(m, n)`` (rsvd works on the tall orientation), whose rounding error grows like
    ``sqrt(length) * u`` times the magnitude of its terms (the probabilistic model of Higham &
    Mary 2019).  It depends only on the precision and the matrix, not on which BLAS kernels a
    CPU selects.  In float64 it is ~1e-14 ||A||_F; in float32 ~1e-6 ||A||_F.
    """
    wide = (torch is not None and isinstance(A, torch.Tensor) and A.dtype == torch.float64) or \
        (isinstance(A, np.ndarray) and A.dtype == np.float64)
    u = np.finfo(np.float64 if wide else np.float32).eps / 2  # low precision computes in fp32
    return float(u * np.sqrt(max(A.shape[-2:])) * np.linalg.norm(to_numpy64(A)))


#: Multiple of the rounding floor allowed on top of the optimum (in quadrature).  Measured
#: worst case over tests/test_rsvd_accuracy.py: 1.6 floors (float32, exp(-i/20), rank 256,
#: where MKL's own float32 Householder QR and gesdd land at 1.2-1.6 floors); 4 leaves room
#: for other CPUs' kernels (one machine measured 27% above this one on the same case).
ROUNDING_FLOORS = 4.0


def allowed_error(A, k: int, optimum: float | None = None, bar: float = 1.01) -> float:
    """The accuracy bar: ``bar`` x the Eckart–Young optimum, or, where rounding in A's own
    precision dominates the optimum, ``hypot(optimum, ROUNDING_FLOORS * rounding_floor(A))``.

    The error of a computed rank-k approximation is the optimum plus a rounding component
    roughly orthogonal to it, hence the quadrature sum.  The 1.01 bar is unchanged wherever
    ``4 * floor <= 0.14 * optimum`` (hypot(1, 0.1425) = 1.01), i.e. everywhere in the test
    suite except float32 spectra whose optimum is a few ulps of ||A||_F (exp(-i/20) at
    rank 256: optimum 2.8e-6 ||A||_F, floor 1.6e-6 ||A||_F).
    """
    if optimum is None:
        optimum = optimal_error(A, k)
    return max(bar * optimum, float(np.hypot(optimum, ROUNDING_FLOORS * rounding_floor(A))))


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


# --------------------------------------------------------------------------- adapters


def adapter_factors(D=12, K=10, r=6, rr=3, *, dtype=None, device="cpu", seed=0,
                    requires_grad=True):
    """``(U, S, Vh, X, Y)`` of an adapter: orthonormal U, Vh, S in [0.5, 1.5], X and Y of
    unit-scale products, drawn in float64 from ``seed`` and cast to ``dtype`` on ``device``;
    S, X and Y require grad."""
    dtype = dtype or torch.float64
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(D, r, generator=g, dtype=torch.float64))[0]
    Vh = torch.linalg.qr(torch.randn(K, r, generator=g, dtype=torch.float64))[0].T
    S = torch.rand(r, generator=g, dtype=torch.float64) + 0.5
    X = torch.randn(r, rr, generator=g, dtype=torch.float64) / rr ** 0.5
    Y = torch.randn(rr, r, generator=g, dtype=torch.float64)
    out = [t.to(device=device, dtype=dtype).contiguous() for t in (U, S, Vh, X, Y)]
    for t in out[1], out[3], out[4]:
        t.requires_grad_(requires_grad)
    return out


def reference_output(x, U, S, Vh, X, Y, scale, **extra):
    """The adapter map by the library's pure-torch reference (differentiable by autograd):
    the oracle every compiled-op and module test compares against."""
    from svdlora.adapters import reference
    return reference.forward(x, U, S, Vh, X, Y, scale, **extra)[0]


def mlp(seed=0, dtype=None):
    """A small float64 MLP (20 -> 32 -> 24 -> 6) with linears at indices 0, 2 and 4."""
    from torch import nn
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 32), nn.GELU(), nn.Linear(32, 24), nn.GELU(),
                         nn.Linear(24, 6)).to(dtype or torch.float64)


def move_off_init(model, s_factor=1.0):
    """Give every adapter a non-trivial core (Y != 0, optionally S scaled) as after training."""
    import svdlora
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, svdlora.SVDLoRALinear):
                m.Y.normal_(generator=torch.Generator(m.Y.device).manual_seed(m.rank))
                m.S.mul_(s_factor)
