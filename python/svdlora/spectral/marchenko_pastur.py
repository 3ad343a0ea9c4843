"""Random-matrix theory of a noise matrix's singular values: the Marchenko–Pastur bulk
(edges, density, median, a fit to an observed spectrum with a Tracy–Widom margin) and the
BBP location of a rank-one spike.

Matrices are m×n with i.i.d. entries of standard deviation sigma; the formulas use the short
side as m, so either orientation may be passed.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional, Tuple

import numpy as np

from .._checks import check_optional_real, check_real
from .._extension import torch
from ._inputs import as_vector, positive_float, short_long

#: 99th percentile of the Tracy–Widom (β = 1) law: the default finite-size margin above the
#: bulk edge before a singular value counts as an outlier.
TW1_QUANTILE_99 = 2.0234


class MPFit(NamedTuple):
    """Marchenko–Pastur fit of a spectrum (see :func:`fit_marchenko_pastur`)."""

    sigma: float          #: estimated noise standard deviation of one entry
    lower: float          #: lower bulk edge  sigma * |sqrt(n) - sqrt(m)|
    upper: float          #: upper bulk edge  sigma * (sqrt(n) + sqrt(m))
    outliers: np.ndarray  #: indices (into S) of singular values above the edge (see
                          #: :func:`fit_marchenko_pastur`: the edge's finite-size margin)


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
    m, n = short_long(m, n)
    sigma = positive_float(sigma, "sigma")
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
    short, _ = short_long(m, n)
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
    short, long = short_long(m, n)
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
    return positive_float(sigma, "sigma") * _unit_quantile(m, n, 0.5)


def _check_margin(tw_margin: Any) -> Optional[float]:
    return check_optional_real(tw_margin, "tw_margin")


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
    short, long = short_long(m, n)
    sigma = positive_float(sigma, "sigma")
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
    short, long = short_long(m, n)
    values = as_vector(S, "S")
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
    short, long = short_long(m, n)
    sigma = positive_float(sigma, "sigma")
    theta = check_real(theta, "theta")
    c = short / long
    t = abs(theta) / (sigma * math.sqrt(long))
    if t <= c ** 0.25:
        return marchenko_pastur_edges(short, long, sigma)[1]
    return sigma * math.sqrt(long) * math.sqrt((1 + t * t) * (c + t * t)) / t
