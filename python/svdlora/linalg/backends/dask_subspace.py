"""Subspace iteration on a dask array as one lazy graph, with the long-side panels kept where
A's chunks live: only the l-wide short-side panel of the last pass and U reach the client."""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from .linear_maps import LinearMap


def _orth(Y: Any) -> Any:
    """Orthonormal basis of a dask panel by Dask's own TSQR: Householder QR per row chunk,
    one QR of the stacked R factors, one product per chunk."""
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


def rsvd_fixed_dask(op: LinearMap, rank: int, omega: np.ndarray,
                    n_iter: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank-``rank`` randomized SVD by ``n_iter`` subspace iterations from the sketch
    ``omega`` (min(m, n) x l), for a map with lazy dask products
    (:func:`.dask_map.lazy_dask_linear_map`, possibly centred).

    The steps are those of the numpy backend's ``rsvd_fixed`` (Householder QR, here as TSQR
    over row chunks), so the factors equal the in-memory ones for the same sketch to
    rounding.  The iterations are one graph (no round trip to the client between passes);
    the client computes the small SVD of ``B = Qᵀ A``.  Returns numpy ``(U, S, Vh)`` in the
    sign convention.
    """
    from .numpy_backend import _finalize, _small_svd
    transposed = op.shape[0] < op.shape[1]
    if transposed:
        op = op.T
    Q = _orth(_check_finite_first(op.matmat(omega.astype(op.dtype, copy=False))))
    for _ in range(n_iter):
        Q = _orth(op.matmat(_orth(op.rmatmat(Q))))
    Q = Q.persist()  # used twice below: for B and for U
    Bt = np.asarray(op.rmatmat(Q).compute(), dtype=op.dtype)
    U, S, Vh = _small_svd(Q, Bt, rank)  # U = Q Ũ, one task per chunk of Q
    return _finalize(np.asarray(U.compute(), dtype=op.dtype), S, Vh, transposed)
