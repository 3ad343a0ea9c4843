"""Intruder dimensions (Shuttleworth et al. 2024): singular vectors of a fine-tuned weight
that no singular vector of the pretrained weight resembles, and how much of the top
subspace survives fine-tuning."""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import numpy as np

from .._checks import check_int, check_real
from ._inputs import as_matrix, power_of_two_scaled, rounding_unit


class IntruderReport(NamedTuple):
    """Intruder-dimension analysis of a fine-tuned weight (see :func:`intruder_report`)."""

    count: int                #: number of intruder dimensions among the top ``k``
    indices: np.ndarray       #: which of the top-``k`` singular vectors of W1 are intruders
    max_cosines: np.ndarray   #: (k,) largest |cosine| of each with any singular vector of W0
    span_overlap: np.ndarray  #: (k,) squared norm of each inside span(U0[:, :reference_rank])
    subspace_overlap: float   #: mean of ``span_overlap`` (1 = top-k subspace unchanged)
    examined: int             #: top-k vectors with a non-zero singular value (the rest are
                              #: an arbitrary null-space basis and are never counted)



def intruder_report(W0: Any, W1: Any, k: int = 10, eps: float = 0.5, *,
                    reference_rank: Optional[int] = None) -> IntruderReport:
    """Intruder dimensions of a fine-tuned weight (Shuttleworth et al. 2024).

    Of the top-``k`` left singular vectors of ``W1``, an *intruder* is one whose largest
    |cosine| with every left singular vector of ``W0`` (all of them) is below ``eps``.

    Both SVDs are exact (LAPACK): all of ``W0``'s vectors are needed anyway, and individual
    singular vectors of ``W1`` must be accurate even where its top singular values are close
    (a randomized SVD resolves the top subspace, not each vector inside a near-flat stretch of
    the spectrum, which would show up as spurious intruders).

    Singular vectors of ``W1`` whose singular value is at the rounding level of ``W1``'s dtype
    (when ``rank(W1) < k``) are an arbitrary basis of its null space, so they are excluded
    (see ``examined``).

    Because an adapter that mixes directions *inside* ``span(U0[:, :r])`` can produce
    vectors that no single ``U0`` column matches, the report also gives each vector's squared
    projection onto that span (``span_overlap``) and its mean (``subspace_overlap``): an
    intruder with overlap near 1 is a rotation inside the old top subspace, not a new
    direction.

    Parameters
    ----------
    W0, W1 : array_like or torch.Tensor, shape (m, n)
        Pretrained and fine-tuned weights (torch convention: out_features × in_features).
    k : int, default 10
        Number of top singular vectors of ``W1`` examined.
    eps : float in (0, 1], default 0.5
        Cosine threshold.
    reference_rank : int or None
        Size of the ``W0`` subspace for the overlap; default ``k``.
    """
    A0 = as_matrix(W0, "W0")
    A1 = as_matrix(W1, "W1")
    if A0.shape != A1.shape:
        raise ValueError(f"W1 must have the shape of W0 {A0.shape}, got {A1.shape}")
    short = min(A0.shape)
    k = check_int(k, "k", minimum=1, maximum=short)
    reference_rank = k if reference_rank is None else reference_rank
    reference_rank = check_int(reference_rank, "reference_rank", minimum=1, maximum=short)
    eps = check_real(eps, "eps", low=0.0, high=1.0, low_open=True)
    # Everything below is invariant under scaling each matrix by its own constant, so entries
    # near float64's limits are brought into range first (exactly, by powers of two).
    A0, A1 = power_of_two_scaled(A0)[0], power_of_two_scaled(A1)[0]
    U0 = np.linalg.svd(A0, full_matrices=False)[0]
    U1, S1, _ = np.linalg.svd(A1, full_matrices=False)
    U1, S1 = U1[:, :k], S1[:k]
    # Singular values at the rounding level of W1's own dtype count as zero: storing W1
    # perturbs it by E with ||E||_2 ~ eps * rms(W1) * (sqrt(m) + sqrt(n)).
    m, n = A1.shape
    rms = float(np.linalg.norm(A1)) / math.sqrt(m * n)
    unit = max(rounding_unit(W1), np.finfo(np.float64).eps)
    null_level = 2.0 * unit * rms * (math.sqrt(m) + math.sqrt(n))
    examined = int(np.sum(S1 > null_level))
    cosines = np.abs(U0.T @ U1)                       # (short, k)
    max_cosines = cosines.max(axis=0)
    span_overlap = np.sum(cosines[:reference_rank] ** 2, axis=0)
    indices = np.flatnonzero(max_cosines[:examined] < eps)
    overlap = float(span_overlap[:examined].mean()) if examined else float("nan")
    return IntruderReport(int(indices.size), indices, max_cosines, span_overlap, overlap, examined)


def intruder_dimensions(W0: Any, W1: Any, k: int = 10, eps: float = 0.5) -> int:
    """Number of intruder dimensions of ``W1`` against ``W0``; see :func:`intruder_report`."""
    return intruder_report(W0, W1, k, eps).count
