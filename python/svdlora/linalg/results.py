"""Result types returned by the truncated-SVD functions."""
from __future__ import annotations

from typing import Any, NamedTuple


class SVDResult(NamedTuple):
    """Truncated SVD ``A ≈ U @ diag(S) @ Vh``; unpacks like ``torch.linalg.svd``.

    Attributes
    ----------
    U : array or tensor, shape (..., m, k)
        Left singular vectors (orthonormal columns).
    S : array or tensor, shape (..., k)
        Singular values, non-negative and descending.
    Vh : array or tensor, shape (..., k, n)
        Right singular vectors as rows (not V).
    """

    U: Any
    S: Any
    Vh: Any


class PCAResult(NamedTuple):
    """Principal components of ``X - mean``: ``X - mean ≈ U @ diag(S) @ Vh``.

    Attributes
    ----------
    U : array or tensor, shape (..., m, k)
        Left singular vectors of the centred data (scores are ``U * S``).
    S : array or tensor, shape (..., k)
        Singular values of the centred data; explained variance is ``S**2 / (m - 1)``.
    Vh : array or tensor, shape (..., k, n)
        Principal axes as rows.
    mean : array or tensor, shape (..., n)
        Column means that were subtracted (zeros when ``center=False``).
    """

    U: Any
    S: Any
    Vh: Any
    mean: Any
