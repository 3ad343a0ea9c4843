"""Subspace iteration on a dask array as one lazy graph, with the long-side panels kept where
A's chunks live: only the l-wide short-side panel of the last pass and U reach the client."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .dask_map import lazy_products


class _TallMap:
    """``T - a bᵀ`` for a tall dask array ``T`` (p x s, p >= s) and an optional rank-one
    centring term (``a`` long, ``b`` short): the map of ``A - 1 μᵀ`` or of its transpose.

    Both products are lazy: long-side panels are dask arrays chunked like T's rows,
    short-side ones single-chunk dask arrays.
    """

    def __init__(self, T: Any, a: Any, b: Optional[np.ndarray], dtype: np.dtype) -> None:
        self.T, self.Tt, self.a, self.b, self.dtype = T, T.T, a, b, dtype

    def matmat(self, X: Any) -> Any:
        """``(T - a bᵀ) X`` for X (s x l, numpy or dask): p x l."""
        Y = lazy_products(self.T, X, self.dtype)
        if self.b is not None:
            Y = Y - self.a[:, None] * (self.b @ X)[None, :]
        return Y

    def rmatmat(self, Q: Any) -> Any:
        """``(T - a bᵀ)ᵀ Q`` for Q (p x l, chunked like T's rows): s x l, one chunk."""
        Z = lazy_products(self.Tt, Q, self.dtype)
        if self.b is not None:
            Z = Z - self.b[:, None] * (self.a @ Q)[None, :]
        return Z.rechunk(-1)


def _orth(Y: Any) -> Any:
    """Orthonormal basis of a panel by Dask's own TSQR: Householder QR per row chunk, one QR
    of the stacked R factors, one product per chunk (a single QR for a one-chunk panel)."""
    import dask.array as da
    return da.linalg.tsqr(Y.rechunk({1: -1}))[0]


def _check_finite_first(Y: Any) -> Any:
    """NaN/Inf in A reach every product: the first one is checked (A itself is not scanned,
    which would cost a pass), and kept in memory for the rest of the graph."""
    import dask.array as da
    Y = Y.persist()
    if not bool(da.isfinite(Y).all().compute()):
        raise ValueError("A (a dask array) produced NaN or Inf in A @ X; expected finite values")
    return Y


def rsvd_fixed_dask(A: Any, mean: Optional[np.ndarray], rank: int, omega: np.ndarray,
                    n_iter: int, dtype: np.dtype) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank-``rank`` randomized SVD of the dask array ``A`` (minus ``1 meanᵀ`` when ``mean``
    is given) by ``n_iter`` subspace iterations from the sketch ``omega`` (min(m, n) x l).

    The steps, sums and orthonormalisations are those of the numpy backend's ``rsvd_fixed``
    (Householder QR, here as TSQR over row chunks), so the factors equal the in-memory ones
    for the same sketch to rounding.  The iterations are one graph (no round trip to the
    client between passes); the client computes the small SVD of ``B = Qᵀ A``.  Returns
    numpy ``(U, S, Vh)`` in the sign convention.
    """
    import dask
    import dask.array as da
    from .numpy_backend import _finalize, _small_svd
    A = A.astype(dtype)
    m, n = A.shape
    transposed = m < n
    if mean is None:
        tall = _TallMap(A.T if transposed else A, None, None, dtype)
    elif transposed:  # (A - 1 μᵀ)ᵀ = Aᵀ - μ 1ᵀ: μ is on the long side
        tall = _TallMap(A.T, da.from_array(mean.astype(dtype), chunks=(A.chunks[1],)),
                        np.ones(m, dtype), dtype)
    else:
        tall = _TallMap(A, da.ones(m, dtype=dtype, chunks=(A.chunks[0],)), mean.astype(dtype),
                        dtype)
    Q = _orth(_check_finite_first(tall.matmat(omega.astype(dtype, copy=False))))
    for _ in range(n_iter):
        Q = _orth(tall.matmat(_orth(tall.rmatmat(Q))))
    Q = Q.persist()  # used twice below: for B and for U
    Bt = np.asarray(tall.rmatmat(Q).compute(), dtype=dtype)
    U, S, Vh = _small_svd(Q, Bt, rank)  # U = Q Ũ, one task per chunk of Q
    U = np.asarray(dask.compute(U)[0], dtype=dtype)
    return _finalize(U, S, Vh, transposed)
