"""The numpy backend: the same algorithm as the compiled op, on any :class:`LinearMap`.

Used when the compiled core is absent, for sparse matrices and linear operators, and on
request (``backend="numpy"``).  Orthonormalisation here is Householder QR (LAPACK via
numpy); the compiled op uses CholeskyQR2.  Both span the same subspaces, so given the same
test matrix the two produce the same factors to rounding.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np

from ..._checks import DASK, DENSE_NUMPY, DENSE_TORCH, SPARSE_TORCH, MatrixInput
from ..._extension import torch
from ..plan import RSVDPlan, subspace_passes
from .numpy_krylov import rsvd_krylov
from .linear_maps import LinearMap, column_mean, compute_dtype, squared_frobenius, to_linear_map

Factors = Tuple[np.ndarray, np.ndarray, np.ndarray]


def factorize(info: MatrixInput, plan: RSVDPlan, omega: np.ndarray,
              compiled_chunks: bool = False) -> Tuple[Any, Any, Any, Any, float, Optional[int]]:
    """Run ``plan`` on ``info`` with test matrix ``omega``: ``(U, S, Vh, mean, rel_err, passes)``.

    Results are numpy arrays, or torch tensors for torch input (dense float32/float64 CPU
    tensors are viewed as numpy without a copy; sparse tensors are read on the host and the
    results returned on their device).  ``rel_err`` is the adaptive mode's
    error estimate (0 otherwise); ``passes`` over A is None in that mode (not counted).
    ``compiled_chunks``: a dask array's chunk products run on the compiled core's GEMM
    (:func:`.dask_map.lazy_products`).
    """
    as_torch = info.kind in (DENSE_TORCH, SPARSE_TORCH)
    device = info.value.device if info.kind == SPARSE_TORCH else "cpu"
    if info.kind == DENSE_TORCH:
        info = MatrixInput(DENSE_NUMPY, info.value.detach().numpy(), info.shape)
    op = to_linear_map(info, compiled_chunks)
    mean = column_mean(info, op) if plan.center else None
    target = op.centered(mean) if mean is not None else op
    err = 0.0
    passes: Optional[int] = None
    if plan.adaptive:
        frob = squared_frobenius(info, op, mean)
        U, S, Vh, err = rsvd_adaptive(target, plan.rank, omega, plan.n_iter, plan.tol,
                                      plan.block, frob)
    elif plan.krylov:
        frob2 = _squared_frobenius_per_matrix(info, op, mean) if plan.stop_tol or plan.gain_tol else None
        U, S, Vh, passes = rsvd_krylov_factors(target, plan, omega, frob2)
    elif info.kind == DASK:  # long-side panels stay on the workers
        from .dask_map import lazy_dask_linear_map
        from .dask_subspace import rsvd_fixed_dask
        lazy = lazy_dask_linear_map(info.value, op.dtype, compiled_chunks)
        lazy = lazy.centered(mean) if mean is not None else lazy
        U, S, Vh = rsvd_fixed_dask(lazy, plan.rank, omega, plan.n_iter)
        passes = subspace_passes(plan.n_iter)
    else:
        U, S, Vh = rsvd_fixed(target, plan.rank, omega, plan.n_iter)
        passes = subspace_passes(plan.n_iter)
    if mean is None:
        mean = np.zeros(info.shape[:-2] + info.shape[-1:], dtype=compute_dtype(op.dtype))
    if as_torch:
        U, S, Vh, mean = (torch.from_numpy(np.ascontiguousarray(x)).to(device)
                          for x in (U, S, Vh, mean))
    return U, S, Vh, mean, err, passes


def _orth(Y: np.ndarray) -> np.ndarray:
    return np.linalg.qr(Y, mode="reduced")[0]


def _small_svd(Q: np.ndarray, Bt: np.ndarray, k: int) -> Factors:
    # B = Q^T A is l x n; factor B^T = Qb R, then R = Ur S Vrh gives B = Vrh^T S (Qb Ur)^T.
    Qb, R = np.linalg.qr(Bt, mode="reduced")
    Ur, S, Vrh = np.linalg.svd(R)
    U = Q @ np.swapaxes(Vrh, -1, -2)[..., :k]
    Vh = np.swapaxes(Qb @ Ur[..., :k], -1, -2)
    return U, S[..., :k], Vh


def _finalize(U: np.ndarray, S: np.ndarray, Vh: np.ndarray, transposed: bool) -> Factors:
    if transposed:
        U, Vh = np.swapaxes(Vh, -1, -2), np.swapaxes(U, -1, -2)
    pivot = np.take_along_axis(U, np.abs(U).argmax(axis=-2)[..., None, :], axis=-2)
    sign = np.where(pivot < 0, -1, 1).astype(U.dtype)
    return (np.ascontiguousarray(U * sign), np.ascontiguousarray(S),
            np.ascontiguousarray(Vh * np.swapaxes(sign, -1, -2)))


def _squared_frobenius_per_matrix(info: MatrixInput, op: LinearMap,
                                  mean: Optional[np.ndarray]) -> np.ndarray:
    """``||A - 1 meanᵀ||_F²`` of each matrix of a (possibly batched) input, float64."""
    if not info.batch_shape:
        return np.asarray(squared_frobenius(info, op, mean))
    A = info.value  # batched input is always dense numpy here
    flat = A.reshape((-1,) + A.shape[-2:])
    flat_mean = None if mean is None else mean.reshape((-1, A.shape[-1]))
    out = np.empty(flat.shape[0])
    for i, Ai in enumerate(flat):
        Ai64 = Ai.astype(np.float64)
        if flat_mean is not None:
            Ai64 -= flat_mean[i].astype(np.float64)
        out[i] = float(np.sum(np.square(Ai64)))
    return out.reshape(info.batch_shape)


def rsvd_krylov_factors(op: LinearMap, plan: RSVDPlan, omega: np.ndarray,
                        frob2: Optional[np.ndarray]) -> Tuple[Any, Any, Any, int]:
    """Block Krylov factors of ``op`` (any orientation) and the passes made."""
    transposed = op.shape[-2] < op.shape[-1]
    U, S, Vh, passes = rsvd_krylov(op.T if transposed else op, omega, plan, frob2)
    return (*_finalize(U, S, Vh, transposed), passes)


def rsvd_fixed(op: LinearMap, rank: int, omega: np.ndarray, n_iter: int) -> Factors:
    """Rank-``rank`` randomized SVD; ``omega`` is (min(m, n), l)."""
    transposed = op.shape[-2] < op.shape[-1]
    if transposed:
        op = op.T
    omega = omega.astype(op.dtype, copy=False)
    Q = _orth(op.matmat(omega))
    for _ in range(n_iter):
        Q = _orth(op.matmat(_orth(op.rmatmat(Q))))
    return _finalize(*_small_svd(Q, op.rmatmat(Q), rank), transposed)


def rsvd_adaptive(op: LinearMap, max_rank: int, omega: np.ndarray, n_iter: int, tol: float,
                  block_size: int, frob_sq: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Blocked randQB_EI (Yu, Gu & Li 2018) on a 2-D map; see ``svdlora::rsvd_adaptive``."""
    transposed = op.shape[-2] < op.shape[-1]
    if transposed:
        op = op.T
    m, n = op.shape
    omega = omega.astype(op.dtype, copy=False)
    threshold = tol * tol * frob_sq
    remaining = frob_sq
    Q = np.zeros((m, 0), op.dtype)
    Bt = np.zeros((n, 0), op.dtype)

    def resid(X: np.ndarray) -> np.ndarray:
        return op.matmat(X) - Q @ (Bt.T @ X)

    def resid_t(Y: np.ndarray) -> np.ndarray:
        return op.rmatmat(Y) - Bt @ (Q.T @ Y)

    L = omega.shape[1]
    for start in range(0, L, block_size):
        if start > 0 and remaining <= threshold:  # the first block always runs (zero A)
            break
        Qi = _orth(resid(omega[:, start:start + block_size]))
        for _ in range(n_iter):
            Qi = _orth(resid(_orth(resid_t(Qi))))
        if Q.shape[1]:
            Qi = _orth(Qi - Q @ (Q.T @ Qi))
        Bti = op.rmatmat(Qi)
        Q = np.concatenate([Q, Qi], axis=1)
        Bt = np.concatenate([Bt, Bti], axis=1)
        remaining -= float(np.sum(Bti.astype(np.float64) ** 2))

    l = Q.shape[1]
    U, S, Vh = _small_svd(Q, Bt, l)
    captured = np.cumsum(S.astype(np.float64) ** 2)[: min(max_rank, l)]
    hits = np.nonzero(frob_sq - captured <= threshold)[0]
    r = int(hits[0]) + 1 if hits.size else min(max_rank, l)
    err2 = max(frob_sq - float(captured[r - 1]), 0.0)
    rel_err = math.sqrt(err2 / frob_sq) if frob_sq > 0 else 0.0
    U, S, Vh = _finalize(U[:, :r], S[:r], Vh[:r], transposed)
    return U, S, Vh, rel_err
