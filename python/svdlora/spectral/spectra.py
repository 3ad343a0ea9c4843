"""Spectra of one matrix: all singular values, the top singular vectors, and the
Roy–Vetterli effective rank."""
from __future__ import annotations

import math
from typing import Any, Tuple

import numpy as np

from .._checks import check_int
from ..linalg.truncated_svd import rsvd
from ._inputs import as_matrix, as_vector, power_of_two_scaled

# Below this short side, a full SVD is cheaper than a randomized one for the top vectors.
_FULL_SVD_BELOW = 256



def singular_values(W: Any) -> np.ndarray:
    """All singular values of a 2-D matrix, descending, as float64 (LAPACK gesdd).

    Entries near float64's limits are handled by factorising a power-of-two rescaled copy
    (exact); a ``ValueError`` says so if the singular values themselves exceed float64.
    """
    A = as_matrix(W, "W")
    scaled, exponent = power_of_two_scaled(A)
    S = np.linalg.svd(scaled, compute_uv=False)
    if exponent:
        with np.errstate(over="ignore"):
            S = np.ldexp(S, exponent)
    if not np.isfinite(S).all():
        raise ValueError(f"W (shape {A.shape}) has singular values beyond the float64 range "
                         f"(largest |entry| {float(np.abs(A).max()):.3g}); rescale it")
    return S


def top_singular_vectors(W: Any, k: int, *, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Top-``k`` left singular vectors (m×k) and values of W, float64.

    Uses :func:`svdlora.rsvd` when the matrix is large compared with ``k`` (the top subspace
    and values to rsvd's accuracy bar; individual vectors inside a near-flat stretch of the
    spectrum are not resolved) and a full SVD otherwise.
    """
    A = as_matrix(W, "W")
    k = check_int(k, "k", minimum=1, maximum=min(A.shape))
    if min(A.shape) >= max(_FULL_SVD_BELOW, 4 * (k + 10)):
        U, S, _ = rsvd(A, k, seed=seed)
        return U, S
    U, S, _ = np.linalg.svd(A, full_matrices=False)
    return U[:, :k], S[:k]


def effective_rank(S: Any) -> float:
    """Roy & Vetterli (2007) effective rank ``exp(-sum p_i log p_i)``, ``p = S / sum(S)``.

    Between 1 (one non-zero singular value) and ``len(S)`` (a flat spectrum).
    """
    values = as_vector(S, "S")
    if (values < 0).any():
        raise ValueError("S must be non-negative (singular values)")
    total = values.sum()
    if total <= 0:
        raise ValueError("S must have a positive sum; the effective rank of a zero matrix is "
                         "undefined")
    values = values / values.max()  # a sum of values near float64's maximum overflows
    total = values.sum()
    p = values[values > 0] / total
    return float(math.exp(-float(np.sum(p * np.log(p)))))
