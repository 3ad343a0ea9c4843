"""A dask array as a :class:`~.linear_maps.LinearMap`: ``A @ X`` and ``A.T @ Y`` run as block
products where A's chunks live (threaded scheduler or a ``dask.distributed`` cluster), and
only the thin m×l / n×l panels come back to the caller.

A itself is never gathered: every pass is one graph over its chunks (a lazily generated A is
regenerated chunk by chunk each pass); a task holds one chunk and the matching rows of the
panel.  The sketch, the orthonormalisations and the small SVD are those of
the numpy backend, on the client, so a dask array gives the in-memory result for the same
seed, to rounding, whatever its chunking.
"""
from __future__ import annotations

import operator
from typing import Any

import numpy as np

from .linear_maps import LinearMap


def _products(A: Any, panel: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``A @ panel`` for a 2-D dask array ``A`` and a numpy ``panel`` (A.shape[1] × l),
    computed on the current scheduler: one task per chunk of A, with the matching rows of
    the panel, then a tree sum over A's column chunks.

    The block product is ``operator.matmul`` itself, not a function of svdlora: dask's
    workers then never import svdlora (and with it torch, a few hundred MB per worker
    process), and it works on dense and scipy.sparse chunks alike.
    """
    import dask.array as da
    parts, start = [], 0
    for width in A.chunks[1]:
        piece = da.from_array(panel[start:start + width], chunks=-1)
        parts.append(da.blockwise(operator.matmul, "ik", A[:, start:start + width], "ij",
                                  piece, "jk", dtype=dtype, concatenate=True,
                                  meta=np.empty((0, 0), dtype)))
        start += width
    total = parts[0] if len(parts) == 1 else da.stack(parts).sum(axis=0)
    return np.asarray(total.compute(), dtype=dtype)


def dask_linear_map(A: Any, dtype: np.dtype) -> LinearMap:
    """The map of the 2-D dask array ``A``, computing in ``dtype``."""
    A = A.astype(dtype)
    At = A.T

    def matmat(X: np.ndarray) -> np.ndarray:
        return _products(A, np.ascontiguousarray(X, dtype=dtype), dtype)

    def rmatmat(Y: np.ndarray) -> np.ndarray:
        return _products(At, np.ascontiguousarray(Y, dtype=dtype), dtype)

    return LinearMap(tuple(int(s) for s in A.shape), np.dtype(dtype), matmat, rmatmat)


def chunked_like(A: Any, U: np.ndarray, Vh: np.ndarray) -> tuple:
    """``U`` and ``Vh`` as dask arrays chunked like ``A``'s rows and columns (what
    ``compute=False`` returns), so they line up block for block with ``A`` in later work."""
    import dask.array as da
    return (da.from_array(U, chunks=(A.chunks[0], -1)),
            da.from_array(Vh, chunks=(-1, A.chunks[1])))


def dask_column_mean(A: Any, dtype: np.dtype) -> np.ndarray:
    """Column means of a 2-D dask array (accumulated in float64)."""
    return np.asarray(A.astype(np.float64).mean(axis=0).compute(), dtype=dtype)


def dask_squared_frobenius(A: Any) -> float:
    """``||A||_F²`` of a 2-D dask array, in float64 (one pass)."""
    import dask.array as da
    return float(da.sum(A.astype(np.float64) ** 2).compute())
