"""Spectral diagnostics from random-matrix theory (DESIGN.md section 3).

Marchenko–Pastur bulk of the singular values of a noise matrix, its fit to an observed
spectrum, the BBP location of a rank-one spike, intruder dimensions between a pretrained and
a fine-tuned weight (Shuttleworth et al. 2024) and the Roy–Vetterli effective rank.

All functions take numpy arrays or torch tensors (any float dtype, CPU or CUDA; tensors are
copied to host float64) and return Python floats, numpy arrays or small named tuples.
Matrices are m×n; the formulas use the short side as m, so either orientation may be passed.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple, Optional, Tuple

import numpy as np

from ._extension import torch
from ._validation import DENSE_NUMPY, DENSE_TORCH, check_int, check_matrix
from .truncated_svd import rsvd

__all__ = [
    "MPFit", "IntruderReport", "marchenko_pastur_edges", "marchenko_pastur_pdf",
    "marchenko_pastur_median", "fit_marchenko_pastur", "outlier_threshold", "spike_singular_value",
    "singular_values", "top_singular_vectors", "intruder_dimensions", "intruder_report",
    "effective_rank",
]

#: 99th percentile of the Tracy–Widom (β = 1) law: the default finite-size margin above the
#: bulk edge before a singular value counts as an outlier.
TW1_QUANTILE_99 = 2.0234

# Below this short side, a full SVD is cheaper than a randomized one for the top vectors.
_FULL_SVD_BELOW = 256


class MPFit(NamedTuple):
    """Marchenko–Pastur fit of a spectrum (see :func:`fit_marchenko_pastur`)."""

    sigma: float          #: estimated noise standard deviation of one entry
    lower: float          #: lower bulk edge  sigma * |sqrt(n) - sqrt(m)|
    upper: float          #: upper bulk edge  sigma * (sqrt(n) + sqrt(m))
    outliers: np.ndarray  #: indices (into S) of singular values above the edge (see
                          #: :func:`fit_marchenko_pastur`: the edge's finite-size margin)


class IntruderReport(NamedTuple):
    """Intruder-dimension analysis of a fine-tuned weight (see :func:`intruder_report`)."""

    count: int                #: number of intruder dimensions among the top ``k``
    indices: np.ndarray       #: which of the top-``k`` singular vectors of W1 are intruders
    max_cosines: np.ndarray   #: (k,) largest |cosine| of each with any singular vector of W0
    span_overlap: np.ndarray  #: (k,) squared norm of each inside span(U0[:, :reference_rank])
    subspace_overlap: float   #: mean of ``span_overlap`` (1 = top-k subspace unchanged)
    examined: int             #: top-k vectors with a non-zero singular value (the rest are
                              #: an arbitrary null-space basis and are never counted)


# --------------------------------------------------------------------------- validation


def _positive_int(value: Any, name: str) -> int:
    return check_int(value, name, minimum=1)


def _positive_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive float, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value}")
    return value


def _short_long(m: Any, n: Any) -> Tuple[int, int]:
    m, n = _positive_int(m, "m"), _positive_int(n, "n")
    return min(m, n), max(m, n)


def _as_vector(values: Any, name: str) -> np.ndarray:
    """Host float64 copy of a 1-D array/tensor of finite values."""
    if hasattr(values, "detach"):  # torch tensor
        values = values.detach().to("cpu").double().numpy()
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or Inf; expected only finite values")
    return arr


def _as_matrix(W: Any, name: str) -> np.ndarray:
    """Host float64 copy of a dense 2-D matrix, validated like every other public input."""
    info = check_matrix(W, name, allow_batch=False)
    if info.kind == DENSE_TORCH:
        return W.detach().to("cpu", torch.float64).numpy()
    if info.kind == DENSE_NUMPY:
        return np.asarray(W, dtype=np.float64)
    raise TypeError(f"{name} must be a dense numpy array or torch tensor, got {type(W).__name__}")


def _rounding_unit(W: Any) -> float:
    """Machine epsilon of W's own dtype (a float32 weight is only float32-accurate)."""
    if torch is not None and isinstance(W, torch.Tensor):
        return float(torch.finfo(W.dtype).eps) if W.is_floating_point() else 0.0
    dtype = getattr(W, "dtype", np.float64)
    return float(np.finfo(dtype).eps) if np.dtype(dtype).kind == "f" else 0.0


# --------------------------------------------------------------------------- Marchenko–Pastur


def marchenko_pastur_edges(m: int, n: int, sigma: float = 1.0) -> Tuple[float, float]:
    """Bulk edges of the singular values of an m×n noise matrix.

    Parameters
    ----------
    m, n : int
        Matrix shape (either orientation).
    sigma : float, default 1.0
        Standard deviation of one i.i.d. entry.

    Returns
    -------
    (lower, upper) : tuple of float
        ``sigma * |sqrt(n) - sqrt(m)|`` and ``sigma * (sqrt(n) + sqrt(m))``.
    """
    m, n = _short_long(m, n)
    sigma = _positive_float(sigma, "sigma")
    return sigma * (math.sqrt(n) - math.sqrt(m)), sigma * (math.sqrt(n) + math.sqrt(m))


def marchenko_pastur_pdf(x: Any, m: int, n: int, sigma: float = 1.0) -> Any:
    """Limiting density of the singular values of an m×n noise matrix.

    With ``c = min(m, n) / max(m, n)`` and edges ``a < b`` from
    :func:`marchenko_pastur_edges`, the density of one singular value ``s`` is
    ``sqrt((b² - s²)(s² - a²)) / (pi * sigma² * min(m, n) * s)`` on ``[a, b]`` and 0 outside;
    it integrates to 1.  It is the Marchenko–Pastur law of the eigenvalues of ``W Wᵀ / n``
    carried over to ``s = sqrt(n * lambda)``.

    Parameters
    ----------
    x : float, array_like or torch.Tensor
        Points at which to evaluate the density.
    m, n : int
        Matrix shape.
    sigma : float, default 1.0
        Standard deviation of one entry.

    Returns
    -------
    Density values with the shape of ``x``: a float for a scalar, a torch tensor (float64,
    on ``x``'s device) for a tensor, a numpy array otherwise.
    """
    short, _ = _short_long(m, n)
    lower, upper = marchenko_pastur_edges(m, n, sigma)
    as_torch = hasattr(x, "detach")
    xs = x.detach().to("cpu").double().numpy() if as_torch else np.asarray(x, dtype=np.float64)
    inside = (xs > lower) & (xs < upper)
    safe = np.where(inside, xs, 0.5 * (lower + upper))
    density = np.sqrt(np.clip((upper**2 - safe**2) * (safe**2 - lower**2), 0.0, None))
    density = np.where(inside, density / (math.pi * sigma**2 * short * safe), 0.0)
    if as_torch:
        return torch.from_numpy(density).to(x.device)
    return float(density) if density.ndim == 0 else density


def _unit_quantile(m: int, n: int, q: float) -> float:
    """``q``-quantile of the singular values of an m×n noise matrix with sigma = 1."""
    short, long = _short_long(m, n)
    lower, upper = marchenko_pastur_edges(short, long)
    # s = a + (b - a)(1 - cos t)/2 turns the square-root edges into smooth sin² factors,
    # so a plain trapezoid rule on t is accurate to ~1e-7 with a few thousand points.
    t = np.linspace(0.0, math.pi, 4097)
    s = lower + (upper - lower) * (1.0 - np.cos(t)) / 2.0
    half = (upper - lower) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        integrand = (np.sqrt((upper + s) * (s + lower)) * half**2 * np.sin(t) ** 2
                     / (math.pi * short * s))
    integrand[0] = 0.0 if lower > 0 else integrand[1]  # s = 0 only when m == n; finite limit
    cdf = np.concatenate([[0.0], np.cumsum((integrand[1:] + integrand[:-1]) / 2.0 * np.diff(t))])
    cdf /= cdf[-1]
    return float(np.interp(q, cdf, s))


def marchenko_pastur_median(m: int, n: int, sigma: float = 1.0) -> float:
    """Median of the limiting singular-value distribution of an m×n noise matrix."""
    return _positive_float(sigma, "sigma") * _unit_quantile(m, n, 0.5)


def _check_margin(tw_margin: Any) -> Optional[float]:
    if tw_margin is None:
        return None
    if isinstance(tw_margin, bool) or not isinstance(tw_margin, numbers.Real):
        raise TypeError(f"tw_margin must be a float or None, got {type(tw_margin).__name__}")
    if not math.isfinite(tw_margin):
        raise ValueError(f"tw_margin must be finite, got {tw_margin}")
    return float(tw_margin)


def outlier_threshold(m: int, n: int, sigma: float,
                      tw_margin: Optional[float] = TW1_QUANTILE_99) -> float:
    """The value a singular value must exceed to count as an outlier of an m×n noise bulk.

    The upper edge ``sigma (sqrt(n) + sqrt(m))`` moved by the finite-size fluctuation of the
    largest noise singular value: Johnstone's (2001) centring ``mu = (sqrt(N - 1) + sqrt(M))^2``
    and scale ``(sqrt(N - 1) + sqrt(M)) (1/sqrt(N - 1) + 1/sqrt(M))^(1/3)`` of the top eigenvalue
    of ``W Wᵀ`` (``M = min(m, n)``, ``N = max(m, n)``), plus ``tw_margin`` scale units.
    ``tw_margin=None`` (or a 1-row/column matrix, where the formula does not apply) gives the
    bare asymptotic edge.
    """
    short, long = _short_long(m, n)
    sigma = _positive_float(sigma, "sigma")
    tw_margin = _check_margin(tw_margin)
    if tw_margin is None or long < 2:
        return marchenko_pastur_edges(short, long, sigma)[1]
    root_n, root_m = math.sqrt(long - 1), math.sqrt(short)
    mu = (root_n + root_m) ** 2
    scale = (root_n + root_m) * (1 / root_n + 1 / root_m) ** (1 / 3)
    return sigma * math.sqrt(max(mu + tw_margin * scale, 0.0))


def fit_marchenko_pastur(S: Any, m: int, n: int, *,
                         tw_margin: Optional[float] = TW1_QUANTILE_99) -> MPFit:
    """Fit the Marchenko–Pastur bulk to an observed spectrum.

    The noise level is estimated by matching the median of ``S`` to the median of the
    Marchenko–Pastur singular-value law, which a few large spikes barely move.

    Parameters
    ----------
    S : array_like or torch.Tensor, shape (min(m, n),)
        All singular values of the m×n matrix (any order).
    m, n : int
        Matrix shape.
    tw_margin : float or None, default 2.0234
        How far above the asymptotic edge a singular value must lie to be an outlier, in
        Tracy–Widom (β = 1) units of the finite-size fluctuation of the largest noise singular
        value (see :func:`outlier_threshold`).  The default is TW1's 99th percentile; with
        ``sigma`` estimated from the data, pure noise still shows a spurious outlier in a few
        percent of draws of small matrices (measured: 2% at 100×200, 5% at 50×50).  ``None``
        uses the bare edge, above which the top singular value of a finite noise matrix lands
        a sizeable fraction of the time.

    Returns
    -------
    MPFit
        ``(sigma, lower, upper, outliers)``; ``outliers`` are the indices of the singular
        values above the edge (with the margin), largest first.

    Raises
    ------
    ValueError
        ``S`` of the wrong length, negative or non-finite; a spectrum whose median is at
        rounding level (an all-zero or strongly rank-deficient matrix has no noise bulk).
    """
    short, long = _short_long(m, n)
    values = _as_vector(S, "S")
    if values.size != short:
        raise ValueError(f"S must hold all min(m, n) = {short} singular values of the {m}x{n} "
                         f"matrix, got {values.size}; compute them with "
                         "svdlora.spectral.singular_values")
    if (values < 0).any():
        raise ValueError("S must be non-negative (singular values)")
    tw_margin = _check_margin(tw_margin)
    median = float(np.median(values))
    # Below float32 rounding of the largest value, the "bulk" is rounding noise, not a signal.
    if median <= values.max() * long * np.finfo(np.float32).eps:
        raise ValueError("S has a median at rounding level: the matrix is zero or too "
                         "rank-deficient for a noise fit")
    sigma = median / _unit_quantile(short, long, 0.5)
    lower, upper = marchenko_pastur_edges(short, long, sigma)
    threshold = outlier_threshold(short, long, sigma, tw_margin)
    above = np.flatnonzero(values > threshold)
    outliers = above[np.argsort(-values[above], kind="stable")]
    return MPFit(sigma, lower, upper, outliers)


def spike_singular_value(theta: float, m: int, n: int, sigma: float = 1.0) -> float:
    """Limiting top singular value of ``theta * u vᵀ + noise`` (BBP transition).

    For an m×n noise matrix with entry standard deviation ``sigma`` and unit ``u``, ``v``,
    let ``c = min(m, n) / max(m, n)`` and ``t = theta / (sigma * sqrt(max(m, n)))``.  Above
    the transition ``t > c**0.25`` the outlier sits at
    ``sigma * sqrt(max(m, n)) * sqrt((1 + t²)(c + t²)) / t`` (Benaych-Georges & Nadakuditi
    2012); below it the top singular value sticks to the bulk edge, which is returned.
    (``theta + sigma²/theta`` is the symmetric Wigner eigenvalue formula, not this case.)
    """
    short, long = _short_long(m, n)
    sigma = _positive_float(sigma, "sigma")
    if isinstance(theta, bool) or not isinstance(theta, numbers.Real):
        raise TypeError(f"theta must be a real number, got {type(theta).__name__}")
    if not math.isfinite(theta):
        raise ValueError(f"theta must be finite, got {theta}")
    c = short / long
    t = abs(float(theta)) / (sigma * math.sqrt(long))
    if t <= c ** 0.25:
        return marchenko_pastur_edges(short, long, sigma)[1]
    return sigma * math.sqrt(long) * math.sqrt((1 + t * t) * (c + t * t)) / t


# --------------------------------------------------------------------------- spectra


def singular_values(W: Any) -> np.ndarray:
    """All singular values of a 2-D matrix, descending, as float64 (LAPACK gesdd)."""
    return np.linalg.svd(_as_matrix(W, "W"), compute_uv=False)


def top_singular_vectors(W: Any, k: int, *, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Top-``k`` left singular vectors (m×k) and values of W, float64.

    Uses :func:`svdlora.rsvd` when the matrix is large compared with ``k`` (the top subspace
    and values to rsvd's accuracy bar; individual vectors inside a near-flat stretch of the
    spectrum are not resolved) and a full SVD otherwise.
    """
    A = _as_matrix(W, "W")
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
    values = _as_vector(S, "S")
    if (values < 0).any():
        raise ValueError("S must be non-negative (singular values)")
    total = values.sum()
    if total <= 0:
        raise ValueError("S must have a positive sum; the effective rank of a zero matrix is "
                         "undefined")
    p = values[values > 0] / total
    return float(math.exp(-float(np.sum(p * np.log(p)))))


# --------------------------------------------------------------------------- intruders


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
    A0 = _as_matrix(W0, "W0")
    A1 = _as_matrix(W1, "W1")
    if A0.shape != A1.shape:
        raise ValueError(f"W1 must have the shape of W0 {A0.shape}, got {A1.shape}")
    short = min(A0.shape)
    k = check_int(k, "k", minimum=1, maximum=short)
    reference_rank = k if reference_rank is None else reference_rank
    reference_rank = check_int(reference_rank, "reference_rank", minimum=1, maximum=short)
    eps = _positive_float(eps, "eps")
    if eps > 1:
        raise ValueError(f"eps must be in (0, 1], got {eps}")
    U0 = np.linalg.svd(A0, full_matrices=False)[0]
    U1, S1, _ = np.linalg.svd(A1, full_matrices=False)
    U1, S1 = U1[:, :k], S1[:k]
    # Singular values at the rounding level of W1's own dtype count as zero: storing W1
    # perturbs it by E with ||E||_2 ~ eps * rms(W1) * (sqrt(m) + sqrt(n)).
    m, n = A1.shape
    rms = float(np.linalg.norm(A1)) / math.sqrt(m * n)
    unit = max(_rounding_unit(W1), np.finfo(np.float64).eps)
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
