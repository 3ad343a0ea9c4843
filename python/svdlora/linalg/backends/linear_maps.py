"""Uniform ``A @ X`` / ``A.T @ Y`` access to every input the numpy backend accepts.

Dense (possibly batched) numpy arrays, scipy.sparse matrices, LinearOperator-like objects and
torch sparse tensors all become a :class:`LinearMap`; PCA centring and the tall/wide
transpose are further wrappers, so the algorithm in ``numpy_backend`` never forms a dense
centred or transposed copy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import numpy as np

from ..._checks import (DASK, DENSE_NUMPY, DENSE_TORCH, OPERATOR, SPARSE_SCIPY, SPARSE_TORCH,
                        MatrixInput)
from ..._extension import torch


@dataclass(frozen=True)
class LinearMap:
    """A matrix known only through its products (shape may carry batch dims for dense)."""

    shape: Tuple[int, ...]
    dtype: np.dtype
    matmat: Callable[[np.ndarray], np.ndarray]
    rmatmat: Callable[[np.ndarray], np.ndarray]

    @property
    def T(self) -> "LinearMap":
        shape = self.shape[:-2] + (self.shape[-1], self.shape[-2])
        return LinearMap(shape, self.dtype, self.rmatmat, self.matmat)

    def centered(self, mean: np.ndarray) -> "LinearMap":
        """The map of ``A - 1 mean^T`` (mean has shape (..., n)).  The products may also be
        lazy dask arrays: the rank-one terms broadcast, nothing m x l is formed for them."""

        def matmat(X: np.ndarray) -> np.ndarray:
            return self.matmat(X) - mean[..., None, :] @ X  # the row meanᵀX, broadcast down

        def rmatmat(Y: np.ndarray) -> np.ndarray:
            return self.rmatmat(Y) - mean[..., :, None] * Y.sum(axis=-2, keepdims=True)

        return LinearMap(self.shape, self.dtype, matmat, rmatmat)


def compute_dtype(dtype: Any) -> np.dtype:
    """float64 stays float64; float16/float32 compute in float32."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def input_compute_dtype(info: MatrixInput) -> np.dtype:
    """The dtype rsvd computes in for this input: float64 for float64 input (and operators
    without a dtype), float32 for everything else (float16/bfloat16 are widened)."""
    A = info.value
    if info.kind in (DENSE_TORCH, SPARSE_TORCH):
        return np.dtype(np.float64 if A.dtype == torch.float64 else np.float32)
    return compute_dtype(getattr(A, "dtype", None) or np.float64)


def to_linear_map(info: MatrixInput, compiled_chunks: bool = False) -> LinearMap:
    """Wrap a validated input (any kind except dense torch) as a :class:`LinearMap`;
    ``compiled_chunks``: a dask array's chunk products on the compiled core's GEMM."""
    A = info.value
    if info.kind == DENSE_NUMPY:
        dtype = compute_dtype(A.dtype)
        A = A.astype(dtype, copy=False)
        At = np.swapaxes(A, -1, -2)
        return LinearMap(info.shape, dtype, lambda X: np.matmul(A, X), lambda Y: np.matmul(At, Y))
    if info.kind == SPARSE_SCIPY:
        dtype = compute_dtype(A.dtype)
        A = A.tocsr().astype(dtype, copy=False)
        At = A.T.tocsr()
        return LinearMap(info.shape, dtype, lambda X: np.asarray(A @ X), lambda Y: np.asarray(At @ Y))
    if info.kind == SPARSE_TORCH:
        return _torch_sparse_map(info)
    if info.kind == DASK:
        from .dask_map import dask_linear_map
        dtype = compute_dtype(A.dtype)
        checked = _FiniteCheck("a dask array")
        inner = dask_linear_map(A, dtype, compiled_chunks)
        return LinearMap(info.shape, dtype, lambda X: checked(inner.matmat(X)),
                         lambda Y: checked(inner.rmatmat(Y)))
    if info.kind == OPERATOR:
        dtype = compute_dtype(getattr(A, "dtype", None) or np.float64)
        checked = _FiniteCheck("a linear operator")
        return LinearMap(info.shape, dtype,
                         lambda X: checked(np.asarray(A.matmat(X), dtype=dtype)),
                         lambda Y: checked(np.asarray(A.rmatmat(Y), dtype=dtype)))
    raise AssertionError(f"unexpected input kind {info.kind}")


class _FiniteCheck:
    """An operator (or a dask array, whose values a scan would cost a pass) is not checked
    for NaN/Inf up front; its first product is, as NaN/Inf in A reach every product."""

    def __init__(self, what: str) -> None:
        self.what, self.done = what, False

    def __call__(self, out: np.ndarray) -> np.ndarray:
        if not self.done:
            if not np.isfinite(out).all():
                raise ValueError(f"A ({self.what}) produced NaN or Inf in A @ X; "
                                 "expected finite values")
            self.done = True
        return out


def _torch_sparse_map(info: MatrixInput) -> LinearMap:
    assert torch is not None
    A = info.value.detach().cpu()
    dtype = compute_dtype(np.float64 if A.dtype == torch.float64 else np.float32)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    A = A.to_sparse_coo().to(tdtype).coalesce()
    At = A.t().coalesce()
    return LinearMap(info.shape, dtype,
                     lambda X: torch.sparse.mm(A, torch.from_numpy(np.ascontiguousarray(X))).numpy(),
                     lambda Y: torch.sparse.mm(At, torch.from_numpy(np.ascontiguousarray(Y))).numpy())


def column_mean(info: MatrixInput, op: Optional[LinearMap] = None) -> np.ndarray:
    """Column means of a non-torch-dense input without densifying it."""
    A = info.value
    if info.kind == DENSE_NUMPY:
        return A.mean(axis=-2, dtype=np.float64).astype(compute_dtype(A.dtype))
    if info.kind == SPARSE_SCIPY:
        return np.asarray(A.mean(axis=0), dtype=compute_dtype(A.dtype)).ravel()
    if info.kind == DASK:
        from .dask_map import dask_column_mean
        return dask_column_mean(A, compute_dtype(A.dtype))
    assert op is not None
    ones = np.ones((info.m, 1), dtype=op.dtype)
    return (op.rmatmat(ones)[:, 0] / info.m).astype(op.dtype)


def squared_frobenius(info: MatrixInput, op: LinearMap, mean: Optional[np.ndarray]) -> float:
    """``||A - 1 mean^T||_F^2`` in float64 without forming the centred matrix (``op`` uncentred)."""
    A = info.value
    if info.kind == DENSE_NUMPY:
        total = float(np.sum(np.square(A, dtype=np.float64)))
    elif info.kind == SPARSE_SCIPY:
        csr = A.tocsr(copy=True)
        csr.sum_duplicates()  # duplicate entries add up; squaring them separately would not
        total = float(np.sum(np.square(csr.data, dtype=np.float64)))
    elif info.kind == SPARSE_TORCH:
        vals = A.detach().cpu().to_sparse_coo().coalesce().values()
        total = float(vals.double().square().sum())
    elif info.kind == DASK:
        from .dask_map import dask_squared_frobenius
        total = dask_squared_frobenius(A)
    else:  # a plain operator: exact, via products with blocks of the identity
        target = op.centered(mean) if mean is not None else op
        total = 0.0
        n = info.n
        for j in range(0, n, 256):
            E = np.zeros((n, min(256, n - j)), op.dtype)
            E[j:j + E.shape[1]] = np.eye(E.shape[1], dtype=op.dtype)
            total += float(np.sum(np.square(target.matmat(E), dtype=np.float64)))
        return total
    if mean is not None:
        # ||A - 1 mu^T||^2 = ||A||^2 - 2 mu^T (A^T 1) + m ||mu||^2
        mu = mean.astype(np.float64)
        colsum = op.rmatmat(np.ones((info.m, 1), op.dtype))[:, 0].astype(np.float64)
        total += -2.0 * float(mu @ colsum) + info.m * float(mu @ mu)
    return max(total, 0.0)
