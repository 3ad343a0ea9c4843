"""Public randomized truncated SVD and PCA: validation, backend choice and result types.

The numerical work happens in the compiled op (``torch.ops.svdlora.rsvd``, C++/ATen on CPU)
or, for sparse matrices, linear operators and numpy-only installs, in ``_numpy_backend``.
"""
from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np

from . import _numpy_backend
from ._extension import HAS_COMPILED, require_compiled, torch
from ._linear_maps import column_mean, compute_dtype, squared_frobenius, to_linear_map
from ._results import PCAResult, SVDResult
from ._sketch import DEFAULT_OVERSAMPLE, default_n_iter, gaussian_sketch, resolve_seed
from ._validation import (DENSE_NUMPY, DENSE_TORCH, SPARSE_TORCH, MatrixInput, check_choice,
                          check_int, check_matrix, check_optional_int, check_rank, check_seed,
                          check_tol)

__all__ = ["rsvd", "pca", "ToleranceWarning"]

BACKENDS = ("auto", "compiled", "numpy", "cusolver_gesvdr")


class ToleranceWarning(UserWarning):
    """``tol`` could not be reached within the maximum ``rank``."""


def rsvd(A: Any, rank: int, *, oversample: int = DEFAULT_OVERSAMPLE, n_iter: Optional[int] = None,
         tol: Optional[float] = None, seed: Optional[int] = None,
         block_size: Optional[int] = None, backend: str = "auto") -> SVDResult:
    """Randomized truncated SVD ``A ≈ U @ diag(S) @ Vh``.

    Parameters
    ----------
    A : array_like, shape (..., m, n)
        A dense numpy array or torch tensor (leading batch dimensions are factorised in one
        call), a 2-D ``scipy.sparse`` matrix, a 2-D torch sparse COO/CSR tensor, or any object
        with ``shape``, ``matmat`` and ``rmatmat`` (e.g. ``scipy.sparse.linalg.LinearOperator``).
        torch float16/bfloat16 inputs are read in their own dtype and computed in float32;
        no float32 copy of ``A`` is made.
    rank : int
        Target rank ``k``, ``1 <= k <= min(m, n)``.  With ``tol`` it is the maximum rank.
    oversample : int, default 10
        Extra sketch columns ``p``; the sketch has ``l = k + p`` columns.  When ``l`` would
        exceed half of ``min(m, n)`` the whole short side is sketched instead and the result
        is exact up to rounding.
    n_iter : int or None, default None
        Power (subspace) iterations ``q``.  None picks 2 for ``rank <= 16``, 3 up to 64 and
        one more per doubling of ``rank`` beyond (4 up to 128, 5 up to 256), or 0 when the
        whole short side is sketched (see Notes).  With ``tol`` the same rule is applied to
        the block width instead of ``rank``.
    tol : float in (0, 1) or None
        Adaptive rank (2-D input only): return the smallest rank ``<= rank`` whose relative
        Frobenius error ``||A - U S Vh||_F / ||A||_F`` is ``<= tol``.  A
        :class:`ToleranceWarning` is issued, and ``rank`` components returned, if it cannot
        be reached.  The achievable ``tol`` is limited to about ``sqrt(eps)`` of the dtype.
    seed : int or None
        Seed of the Gaussian test matrix.  The same seed, input and machine give identical
        results.  None draws fresh OS entropy.
    block_size : int or None
        Block width of the adaptive (``tol``) scheme; default ``min(64, max(16, ceil(l / 8)))``.
    backend : {"auto", "compiled", "numpy", "cusolver_gesvdr"}
        "auto" uses the compiled op for dense inputs when the compiled core is available and
        the numpy implementation otherwise.  "cusolver_gesvdr" runs cuSOLVER's own randomized
        SVD (``cusolverDnXgesvdr``, its own random sketch, no sign convention) on a 2-D
        float32/float64 CUDA tensor: a peer for benchmarks, not a recommendation.

    Returns
    -------
    SVDResult
        Named tuple ``(U, S, Vh)``: ``U`` (..., m, k) orthonormal columns, ``S`` (..., k)
        descending and non-negative, ``Vh`` (..., k, n) orthonormal rows.  numpy in gives
        numpy out (float64 stays float64, float32/float16 give float32); torch in gives torch
        out on the same device (float64 stays float64, otherwise float32).  Each column of
        ``U`` has its largest-magnitude entry positive, and ``Vh`` is flipped to match.

    Raises
    ------
    TypeError
        ``A`` of an unsupported type or dtype (integer, complex), non-integer ``rank`` etc.
    ValueError
        Wrong shape, empty ``A``, NaN/Inf in ``A``, ``rank`` outside ``[1, min(m, n)]``,
        ``tol`` outside (0, 1) or with batched ``A``, unknown ``backend``.
    svdlora.MissingExtensionError
        A torch tensor (or ``backend="compiled"``) in an install without the compiled core.

    Notes
    -----
    Halko, Martinsson & Tropp (2011), "Finding structure with randomness", Alg. 4.4 with
    orthonormalisation after every product (subspace iteration)::

        Q = orth(A Ω);  repeat q times: Q = orth(A orth(Aᵀ Q))
        B = Qᵀ A;  B = Ũ S Vh;  U = Q Ũ

    working on the transpose when ``m < n`` so the sketch is on the short side.  The compiled
    op orthonormalises with CholeskyQR2 (falling back to Householder QR for rank-deficient
    blocks) and computes the SVD of ``B`` through a QR of ``Bᵀ`` and an ``l x l`` SVD.  The
    adaptive mode is the blocked randQB_EI scheme of Yu, Gu & Li (2018), "Efficient
    randomized algorithms for the fixed-precision low-rank matrix approximation", whose error
    ``||A||_F² - ||B||_F²`` is tracked in float64.

    The default ``q`` keeps the error within 1% of the Eckart–Young optimum
    ``sqrt(sum_{i>k} σ_i²)`` on the spectra in the test-suite (``i^-0.5 … i^-2``, geometric,
    a noise bulk plus spikes) in float32 and float64 for ranks 1-256; a smaller ``n_iter``
    trades accuracy for speed.
    """
    info = check_matrix(A, "A")
    rank = check_rank(rank, info)
    oversample = check_int(oversample, "oversample", minimum=0)
    n_iter = check_optional_int(n_iter, "n_iter", minimum=0)
    tol = check_tol(tol)
    block_size = check_optional_int(block_size, "block_size", minimum=1)
    seed = resolve_seed(check_seed(seed))
    backend = check_choice(backend, "backend", BACKENDS)
    if tol is not None and info.batch_shape:
        raise ValueError(f"tol (adaptive rank) needs a 2-D A, got batched shape {info.shape}; "
                         "call rsvd per matrix or pass tol=None")
    if backend == "cusolver_gesvdr":
        return _factorize_gesvdr(info, rank, oversample, n_iter, tol)
    U, S, Vh = _factorize(info, rank, oversample, n_iter, tol, seed, block_size, backend,
                          center=False)[:3]
    return SVDResult(U, S, Vh)


def pca(X: Any, rank: int, *, center: bool = True, oversample: int = DEFAULT_OVERSAMPLE,
        n_iter: Optional[int] = None, seed: Optional[int] = None,
        backend: str = "auto") -> PCAResult:
    """Principal component analysis by randomized SVD of the column-centred data.

    Parameters
    ----------
    X : array_like, shape (..., m, n)
        Samples in rows, features in columns; the same input kinds as :func:`rsvd`.  Centring
        is implicit: a dense centred copy is never formed and sparse input stays sparse.
    rank : int
        Number of components, ``1 <= rank <= min(m, n)``.
    center : bool, default True
        Subtract the column means first.
    oversample, n_iter, seed, backend
        As in :func:`rsvd`.

    Returns
    -------
    PCAResult
        ``(U, S, Vh, mean)`` with ``X - mean ≈ U @ diag(S) @ Vh``; ``Vh`` rows are the
        principal axes, ``S**2 / (m - 1)`` the explained variances, ``mean`` the column means
        (zeros when ``center=False``).

    Raises
    ------
    TypeError, ValueError
        As in :func:`rsvd`, plus a non-bool ``center``.

    Notes
    -----
    The centred matrix ``X - 1 μᵀ`` is applied as ``X v - 1 (μᵀ v)`` and
    ``Xᵀ u - μ (1ᵀ u)``, so the cost equals that of :func:`rsvd` on ``X``.
    """
    info = check_matrix(X, "X")
    rank = check_rank(rank, info)
    if not isinstance(center, (bool, np.bool_)):
        raise TypeError(f"center must be a bool, got {type(center).__name__}")
    oversample = check_int(oversample, "oversample", minimum=0)
    n_iter = check_optional_int(n_iter, "n_iter", minimum=0)
    seed = resolve_seed(check_seed(seed))
    backend = check_choice(backend, "backend", BACKENDS)
    U, S, Vh, mean = _factorize(info, rank, oversample, n_iter, None, seed, None, backend,
                                center=bool(center))
    return PCAResult(U, S, Vh, mean)


# --------------------------------------------------------------------------- dispatch
def _use_compiled(info: MatrixInput, backend: str) -> bool:
    dense = info.kind in (DENSE_NUMPY, DENSE_TORCH)
    if backend == "numpy":
        if info.kind == DENSE_TORCH and (info.value.dtype not in (torch.float32, torch.float64)
                                         or info.value.device.type != "cpu"):
            raise ValueError("backend='numpy' needs a float32/float64 CPU tensor; "
                             f"got {info.value.dtype} on {info.value.device}")
        return False
    if backend == "compiled":
        if not dense:
            raise ValueError(f"backend='compiled' supports dense arrays/tensors only, got {info.kind}")
        require_compiled("svdlora.rsvd(backend='compiled')")
        return True
    if info.kind == DENSE_TORCH:
        require_compiled("svdlora.rsvd on torch tensors")
        return True
    return info.kind == DENSE_NUMPY and HAS_COMPILED


def _factorize(info: MatrixInput, rank: int, oversample: int, n_iter: Optional[int],
               tol: Optional[float], seed: int, block_size: Optional[int], backend: str,
               *, center: bool):
    short = min(info.m, info.n)
    sketch = min(rank + oversample, short)
    if tol is None and 2 * sketch > short:
        # The sketch would cover most of the short side: randomization saves nothing, so take
        # the whole side (the range is then captured exactly and q = 0 suffices).  Not in the
        # adaptive mode, whose blocks only reach the full width if tol demands it.
        sketch = short
    exact = tol is None and sketch == short
    block = block_size or min(sketch, 64, max(16, -(-sketch // 8)))
    if n_iter is not None:
        q = n_iter
    elif tol is None:
        q = default_n_iter(rank, exact_range=exact)
    else:
        # Adaptive mode: each block is a small sketch of what is left of A, so iterate as for
        # a fixed rank equal to the block width (rank only caps the total).
        q = default_n_iter(block, exact_range=False)
    if _use_compiled(info, backend):
        U, S, Vh, mean, err = _factorize_compiled(info, rank, sketch, q, tol, seed, block, center,
                                                  exact)
    else:
        U, S, Vh, mean, err = _factorize_numpy(info, rank, sketch, q, tol, seed, block, center,
                                               exact)
    _check_finite_result(S, info)
    if tol is not None and err > tol:
        warnings.warn(f"tol={tol:g} was not reached within rank={rank} (relative error "
                      f"estimate {err:.3g}); returning {rank} components", ToleranceWarning,
                      stacklevel=3)
    return U, S, Vh, mean


def _factorize_gesvdr(info: MatrixInput, rank: int, oversample: int, n_iter: Optional[int],
                      tol: Optional[float]) -> SVDResult:
    """cuSOLVER's randomized SVD, for side-by-side benchmarks."""
    A = info.value
    if (info.kind != DENSE_TORCH or A.device.type != "cuda" or info.batch_shape
            or A.dtype not in (torch.float32, torch.float64)):
        raise ValueError("backend='cusolver_gesvdr' needs a 2-D float32/float64 CUDA tensor, got "
                         f"{info.kind} of shape {info.shape}"
                         + (f", {A.dtype} on {A.device}" if info.kind == DENSE_TORCH else ""))
    if tol is not None:
        raise ValueError("backend='cusolver_gesvdr' has no adaptive rank; pass tol=None")
    require_compiled("svdlora.rsvd(backend='cusolver_gesvdr')")
    p = min(oversample, min(info.m, info.n) - rank)
    q = default_n_iter(rank, exact_range=False) if n_iter is None else n_iter
    U, S, Vh = torch.ops.svdlora.cusolver_gesvdr(A.detach(), rank, p, q)
    return SVDResult(U, S, Vh)


def _check_finite_result(S: Any, info: MatrixInput) -> None:
    finite = bool(torch.isfinite(S).all()) if not isinstance(S, np.ndarray) else bool(np.isfinite(S).all())
    if not finite:
        raise ValueError(f"A (shape {info.shape}) has entries so large that the factorisation "
                         "overflowed its dtype; rescale A (e.g. divide by its largest |entry|)")


def _factorize_compiled(info, rank, sketch, q, tol, seed, block, center, exact):
    if info.kind == DENSE_NUMPY:
        arr = info.value
        if any(s < 0 for s in arr.strides):
            arr = np.ascontiguousarray(arr)  # torch cannot view negative strides
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only arrays: we never write A
            T = torch.from_numpy(arr)
    else:
        T = info.value.detach()
    ctype = torch.float64 if T.dtype == torch.float64 else torch.float32
    omega = gaussian_sketch(min(info.m, info.n), sketch, seed, ctype, as_torch=True,
                            device=T.device, exact_range=exact)
    mean = T.mean(dim=-2, dtype=ctype) if center else None
    err = 0.0
    try:
        if tol is None:
            U, S, Vh = torch.ops.svdlora.rsvd(T, omega, mean, rank, q)
        else:
            U, S, Vh, err_t = torch.ops.svdlora.rsvd_adaptive(T, omega, mean, tol, block, rank, q)
            err = float(err_t)
    except torch.linalg.LinAlgError as exc:  # only reachable through overflow of finite input
        raise ValueError(f"A (shape {info.shape}) has entries so large that the factorisation "
                         f"overflowed its dtype; rescale A ({exc})") from None
    if mean is None:
        mean = torch.zeros(T.shape[:-2] + T.shape[-1:], dtype=ctype, device=T.device)
    if info.kind == DENSE_NUMPY:
        U, S, Vh, mean = (t.numpy() for t in (U, S, Vh, mean))
    return U, S, Vh, mean, err


def _factorize_numpy(info, rank, sketch, q, tol, seed, block, center, exact):
    if info.kind == DENSE_TORCH:
        info = MatrixInput(DENSE_NUMPY, info.value.detach().numpy(), info.shape)
        as_torch = True
    else:
        as_torch = info.kind == SPARSE_TORCH
    op = to_linear_map(info)
    mean = column_mean(info, op) if center else None
    target = op.centered(mean) if mean is not None else op
    omega = gaussian_sketch(min(info.m, info.n), sketch, seed, op.dtype, as_torch=False,
                            exact_range=exact)
    err = 0.0
    if tol is None:
        U, S, Vh = _numpy_backend.rsvd_fixed(target, rank, omega, q)
    else:
        frob = squared_frobenius(info, op, mean)
        U, S, Vh, err = _numpy_backend.rsvd_adaptive(target, rank, omega, q, tol, block, frob)
    if mean is None:
        mean = np.zeros(info.shape[:-2] + info.shape[-1:], dtype=compute_dtype(op.dtype))
    if as_torch:
        device = info.value.device if info.kind != DENSE_NUMPY else "cpu"
        U, S, Vh, mean = (torch.from_numpy(np.ascontiguousarray(x)).to(device)
                          for x in (U, S, Vh, mean))
    return U, S, Vh, mean, err
