"""Subspace iteration on a dask array with the long-side panels kept where A's chunks live:
only l-wide short-side panels and l x l factors reach the client."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .dask_map import lazy_products


class _TallMap:
    """``T - a bᵀ`` for a tall dask array ``T`` (p x s, p >= s) and an optional rank-one
    centring term (``a`` long, ``b`` short): the map of ``A - 1 μᵀ`` or of its transpose.

    Long-side panels stay dask arrays chunked like T's rows; short-side ones are numpy.
    """

    def __init__(self, T: Any, a: Any, b: Optional[np.ndarray], dtype: np.dtype) -> None:
        self.T, self.Tt, self.a, self.b, self.dtype = T, T.T, a, b, dtype

    def matmat(self, X: np.ndarray) -> Any:
        """``(T - a bᵀ) X`` for a numpy X (s x l): a lazy p x l dask array."""
        Y = lazy_products(self.T, X, self.dtype)
        if self.b is not None:
            Y = Y - self.a[:, None] * (self.b @ X)[None, :]
        return Y

    def rmatmat(self, Q: Any) -> np.ndarray:
        """``(T - a bᵀ)ᵀ Q`` for a dask Q (p x l, chunked like T's rows), computed: s x l."""
        import dask
        Z = lazy_products(self.Tt, Q, self.dtype)
        if self.b is None:
            return np.asarray(Z.compute(), dtype=self.dtype)
        Z, aQ = dask.compute(Z, self.a @ Q)
        return np.asarray(Z - self.b[:, None] * aQ[None, :], dtype=self.dtype)


def _orth_tall(Y: Any) -> Any:
    """Orthonormal basis of a tall dask panel by Dask's own communication-avoiding TSQR
    (a QR per row chunk, one QR of the stacked R factors, one product per chunk), kept in
    the workers' memory for the next product."""
    import dask.array as da
    Y = Y.rechunk({1: -1})
    return da.linalg.tsqr(Y)[0].persist()


def _check_finite_first(Y: Any) -> Any:
    """NaN/Inf in A reach every product: the first one is checked (A itself is not scanned,
    which would cost a pass)."""
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
    for the same sketch to rounding.  Returns numpy ``(U, S, Vh)`` in the sign convention.
    """
    import dask.array as da
    from .numpy_backend import _finalize, _orth, _small_svd
    A = A.astype(dtype)
    m, n = A.shape
    transposed = m < n
    if mean is None:
        tall = _TallMap(A.T if transposed else A, None, None, dtype)
    elif transposed:  # (A - 1 μᵀ)ᵀ = Aᵀ - μ 1ᵀ: μ is on the long side
        tall = _TallMap(A.T, da.from_array(mean.astype(dtype), chunks=(A.chunks[1],)),
                        np.ones(m, dtype), dtype)
    else:
        tall = _TallMap(A, da.ones(m, dtype=dtype, chunks=(A.chunks[0],)), mean.astype(dtype), dtype)
    omega = omega.astype(dtype, copy=False)
    Q = _orth_tall(_check_finite_first(tall.matmat(omega)))
    for _ in range(n_iter):
        Q = _orth_tall(tall.matmat(_orth(tall.rmatmat(Q))))
    # the small SVD of B = Qᵀ A on the client; U = Q Ũ is one task per chunk of Q
    U, S, Vh = _small_svd(Q, tall.rmatmat(Q), rank)
    return _finalize(np.asarray(U.compute(), dtype=dtype), S, Vh, transposed)
