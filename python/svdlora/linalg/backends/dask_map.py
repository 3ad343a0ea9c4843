"""A dask array as a :class:`~.linear_maps.LinearMap`: ``A @ X`` and ``A.T @ Y`` run as block
products where A's chunks live (threaded scheduler or a ``dask.distributed`` cluster), and
only the thin m×l / n×l panels come back to the caller.

A itself is never gathered: every pass is one graph over its chunks (a lazily generated A is
regenerated chunk by chunk each pass); a task holds one chunk and the matching rows of the
panel, and its product is NumPy's GEMM, or the compiled core's with ``backend="compiled"``.
The sketch, the orthonormalisations and the small SVD are those of the numpy backend, on the
client, so a dask array gives the in-memory result for the same seed, to rounding, whatever
its chunking.  This map serves block Krylov and the adaptive mode; subspace iteration, the
default on dask, keeps the long-side panels on the workers instead (:mod:`.dask_subspace`).
"""
from __future__ import annotations

import operator
from typing import Any

import numpy as np

from .linear_maps import LinearMap


def _compiled_chunk_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One chunk's ``A_ij @ P_j`` by torch's matmul (the BLAS of svdlora's compiled core: MKL
    in the CPU build), shaped ``(rows, 1, l)`` for the sum over A's column chunks.  Runs on
    a worker; strided chunks (Aᵀ's are transposed views) are read in place."""
    import warnings

    import torch
    a = a if all(s >= 0 for s in a.strides) else np.ascontiguousarray(a)
    b = b if all(s >= 0 for s in b.strides) else np.ascontiguousarray(b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only chunks: never written
        product = torch.matmul(torch.from_numpy(a), torch.from_numpy(b))
    return product.numpy()[:, None, :]


def _compiled_chunk_products(A: Any, panel: Any, dtype: np.dtype) -> Any:
    import dask.array as da
    if isinstance(panel, np.ndarray):
        panel = da.from_array(panel, chunks=(A.chunks[1], -1))
    else:
        panel = panel.rechunk((A.chunks[1], -1))
    # one task per chunk of A (no contraction inside blockwise: j stays an output index of
    # length 1 per block), then Dask's tree sum over the column chunks
    partial = da.blockwise(_compiled_chunk_product, "ijk", A, "ij", panel, "jk",
                           adjust_chunks={"j": 1}, dtype=dtype, concatenate=False,
                           meta=np.empty((0, 0, 0), dtype))
    return partial.sum(axis=1, dtype=dtype)


def lazy_products(A: Any, panel: Any, dtype: np.dtype, compiled_chunks: bool = False) -> Any:
    """``A @ panel`` as a dask array, for a 2-D dask array ``A`` and a panel
    (A.shape[1] × l) that is a numpy array or a dask array chunked like A's columns: one task
    per chunk of A, with the matching rows of the panel, then a tree sum over A's column
    chunks.  Nothing runs until the result is computed or persisted.

    With ``compiled_chunks`` the block product of dense chunks is torch's matmul, the GEMM
    of svdlora's compiled core; the workers then import svdlora and torch (a worker process
    measured 62 MB before and 253 MB after).  Without it, it is NumPy's matmul through Dask's own ``@``
    (``operator.matmul`` for sparse chunks, always), and the workers never import svdlora.
    Which is faster, as measured: see :func:`svdlora.linalg.backends.compiled_chunks`.
    """
    import dask.array as da
    if isinstance(A._meta, np.ndarray):
        if compiled_chunks:
            return _compiled_chunk_products(A, panel, dtype)
        # dense chunks: Dask's own matmul (a blockwise product and a tree sum, like the loop
        # below for sparse chunks, but measured 3.5x faster for Aᵀ Q, 40000 x 1000 float32)
        return (A @ panel).astype(dtype, copy=False)
    parts, start = [], 0
    for width in A.chunks[1]:
        piece = panel[start:start + width]
        if isinstance(piece, np.ndarray):
            piece = da.from_array(piece, chunks=-1)
        parts.append(da.blockwise(operator.matmul, "ik", A[:, start:start + width], "ij",
                                  piece, "jk", dtype=dtype, concatenate=True,
                                  meta=np.empty((0, 0), dtype)))
        start += width
    return parts[0] if len(parts) == 1 else da.stack(parts).sum(axis=0)


def lazy_dask_linear_map(A: Any, dtype: np.dtype, compiled_chunks: bool = False) -> LinearMap:
    """The map of the 2-D dask array ``A`` in ``dtype`` with lazy products: a numpy or dask
    panel in, a dask array out, nothing run until it is computed or persisted.
    ``compiled_chunks``: see :func:`lazy_products`."""
    A = A.astype(dtype)
    At = A.T
    return LinearMap(tuple(int(s) for s in A.shape), np.dtype(dtype),
                     lambda X: lazy_products(A, X, dtype, compiled_chunks),
                     lambda Y: lazy_products(At, Y, dtype, compiled_chunks))


def dask_linear_map(A: Any, dtype: np.dtype, compiled_chunks: bool = False) -> LinearMap:
    """The map of the 2-D dask array ``A``, computing in ``dtype``: each product runs on the
    current scheduler and comes back as numpy."""
    lazy = lazy_dask_linear_map(A, dtype, compiled_chunks)

    def computed(product):
        return lambda P: np.asarray(product(np.ascontiguousarray(P, dtype=dtype)).compute(),
                                    dtype=dtype)

    return LinearMap(lazy.shape, lazy.dtype, computed(lazy.matmat), computed(lazy.rmatmat))


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
