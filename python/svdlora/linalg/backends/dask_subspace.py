"""Subspace iteration on a dask array with the long-side panels kept where A's chunks live:
the client sees only l x l Gram matrices, the short-side panels and U."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .linear_maps import LinearMap

#: An intermediate long-side panel Y is used without orthonormalising it while
#: ``eps (max r_ii / min r_ii)²`` of its Cholesky factor stays below this (the test of the
#: compiled op's single CholeskyQR sweep); beyond, Dask's TSQR orthonormalises it first.
_WELL_CONDITIONED = 1.0 / 64


def _tsqr(Y: Any) -> Any:
    """Orthonormal basis of a dask panel by Dask's own TSQR: Householder QR per row chunk,
    one QR of the stacked R factors, one product per chunk.  The fallback for panels too
    ill-conditioned for CholeskyQR."""
    import dask.array as da
    return da.linalg.tsqr(Y.rechunk({1: -1}))[0]


def _gram(Y: Any) -> Any:
    """``YᵀY`` as a lazy dask array: a Gram per row chunk, summed."""
    return Y.T @ Y


def _upper_cholesky(gram: Any) -> Optional[np.ndarray]:
    """The upper Cholesky factor (float64) of a computed Gram, or None when it is not
    numerically positive definite."""
    try:
        lower = np.linalg.cholesky(np.asarray(gram, dtype=np.float64))
    except np.linalg.LinAlgError:
        return None
    return lower.T if np.isfinite(lower).all() else None


def _well_conditioned(R: Optional[np.ndarray], dtype: np.dtype) -> bool:
    if R is None:
        return False
    diag = np.abs(np.diag(R))
    return bool(np.finfo(dtype).eps * (diag.max() / diag.min()) ** 2 <= _WELL_CONDITIONED)


def _right_divide(Y: Any, R: np.ndarray) -> Any:
    """``Y R⁻¹`` chunk by chunk (``R`` small, upper triangular, float64); the explicit
    inverse is accurate to ``O(eps cond(R))``, which the callers' checks bound."""
    inverse = np.linalg.inv(R).astype(Y.dtype)
    return Y.map_blocks(np.matmul, inverse, dtype=Y.dtype)


def _refuse_non_finite(finite: bool) -> None:
    if not finite:
        raise ValueError("A (a dask array) produced NaN or Inf in A @ X; expected finite values")


def _householder(Z: Any, dtype: np.dtype) -> np.ndarray:
    """Orthonormal basis of a short-side panel (the size of the sketch), on the client."""
    return np.linalg.qr(np.asarray(Z, dtype=dtype), mode="reduced")[0]


def _next_short_side_basis(op: LinearMap, Y: Any, check_finite: bool) -> np.ndarray:
    """One half-iteration from the persisted long-side panel ``Y = A X``: an orthonormal
    basis of ``range(Aᵀ Y)``, computed with ``YᵀY`` in the same round trip.

    ``Aᵀ Y`` spans what ``Aᵀ Q`` spans for any basis Q of range(Y), so Y needs no
    orthonormalisation here as long as it is well conditioned: its columns then carry their
    directions to within ``eps cond(Y)``, the accuracy of one CholeskyQR sweep, and the
    later iterations contract such errors.  An ill-conditioned Y (checked on the Gram) is
    orthonormalised by TSQR first, at the cost of one more pass over A.
    """
    import dask
    import dask.array as da
    work = [op.rmatmat(Y), _gram(Y)]
    if check_finite:  # NaN/Inf in A reach every product; A itself is not scanned (a pass)
        work.append(da.isfinite(Y).all())
    Z, gram, *finite = dask.compute(*work)
    if finite:
        _refuse_non_finite(bool(finite[0]))
    if not _well_conditioned(_upper_cholesky(gram), op.dtype):
        Z = op.rmatmat(_tsqr(Y)).compute()
    return _householder(Z, op.dtype)


def _orthonormal_basis_and_b(op: LinearMap, Y: Any) -> Tuple[Any, np.ndarray]:
    """``Q``, an orthonormal basis of the persisted panel Y to working precision, and
    ``Bᵀ = Aᵀ Q``: CholeskyQR2, with the second Gram computed in the same round trip as
    ``Aᵀ Q₁`` (then ``Bᵀ = Aᵀ Q₁ R₂⁻¹``, accurate since ``cond(R₂) ≤ 3`` is checked:
    ``||R₂ - I||_F < 1/2``).  TSQR when a Gram is not positive definite or the check fails."""
    import dask
    R1 = _upper_cholesky(_gram(Y).compute())
    if R1 is not None:
        Q1 = _right_divide(Y, R1).persist()
        Z, gram = dask.compute(op.rmatmat(Q1), _gram(Q1))
        R2 = _upper_cholesky(gram)
        if R2 is not None and np.sum((R2 - np.eye(R2.shape[0])) ** 2) < 0.25:
            Bt = np.linalg.solve(R2.T, np.asarray(Z, np.float64).T).T  # Z R₂⁻¹
            return _right_divide(Q1, R2).persist(), Bt.astype(op.dtype)
    Q = _tsqr(Y).persist()
    return Q, np.asarray(op.rmatmat(Q).compute(), dtype=op.dtype)


def rsvd_fixed_dask(op: LinearMap, rank: int, omega: np.ndarray,
                    n_iter: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank-``rank`` randomized SVD by ``n_iter`` subspace iterations from the sketch
    ``omega`` (min(m, n) x l), for a map with lazy dask products
    (:func:`.dask_map.lazy_dask_linear_map`, possibly centred).

    The iterations span the subspaces of the numpy backend's ``rsvd_fixed``, so the factors
    equal the in-memory ones for the same sketch to rounding.  The long-side panels stay on
    the workers; each iteration is one round trip that brings the short-side panel (the size
    of the sketch) and an l x l Gram to the client, where the Householder QR is cheap.  The
    last panel is orthonormalised by CholeskyQR2 (TSQR where it is too ill-conditioned) and
    the client computes the small SVD of ``B = Qᵀ A``.  Returns numpy ``(U, S, Vh)`` in the
    sign convention.
    """
    from .numpy_backend import _finalize, _small_svd
    transposed = op.shape[0] < op.shape[1]
    if transposed:
        op = op.T
    X = omega.astype(op.dtype, copy=False)
    for i in range(n_iter):
        X = _next_short_side_basis(op, op.matmat(X).persist(), check_finite=i == 0)
    Y = op.matmat(X).persist()
    if n_iter == 0:
        import dask.array as da
        _refuse_non_finite(bool(da.isfinite(Y).all().compute()))
    Q, Bt = _orthonormal_basis_and_b(op, Y)
    U, S, Vh = _small_svd(Q, Bt, rank)  # U = Q Ũ, one task per chunk of Q
    return _finalize(np.asarray(U.compute(), dtype=op.dtype), S, Vh, transposed)
