"""Power-of-two rescaling for inputs whose entries are so large that products of them overflow.

A finite matrix with entries near its dtype's maximum makes the sketch's Gram matrices
overflow.  Dividing by a power of two near its largest |entry| is exact (mantissas are
unchanged), so factorising the scaled copy and multiplying the singular values back gives the
answer the unscaled arithmetic would have given, had it not overflowed.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np

from .._checks import (DENSE_NUMPY, DENSE_TORCH, SPARSE_SCIPY, SPARSE_TORCH, MatrixInput,
                       check_matrix)
from .._extension import torch


class FactorizationOverflow(ValueError):
    """A backend's arithmetic overflowed on finite input (raised by the backends, handled by
    the caller with a rescaled retry)."""


def needs_rescaling(info: MatrixInput, dtype: np.dtype) -> bool:
    """Whether ``info``'s largest |entry| is outside the window in which the sketch's
    products and Gram matrices are safe in ``dtype``.

    A Gram entry of the sketch ``Y = A Ω`` is bounded by about ``m n² max|A|² max|Ω|²``
    (``|Ω| < 8`` for a Gaussian draw in practice); below ``sqrt(tiny)`` the squares
    underflow and CholeskyQR sees a zero Gram.  Ordinary data sits far inside the window,
    so this costs nothing but the reduction the finiteness check already made.
    """
    if info.amax is None or info.amax == 0.0:
        return False
    finfo = np.finfo(dtype)
    m, n = info.m, info.n
    high = math.sqrt(float(finfo.max) / (64.0 * m * n * max(m, n)))
    low = math.sqrt(float(finfo.tiny)) * 2.0**10
    return not low <= info.amax <= high


def _exponent(amax: Any) -> Any:
    """``e`` with ``2**(e-1) <= amax < 2**e`` (0 for zero), elementwise."""
    return np.frexp(amax)[1]


def scaled_input(info: MatrixInput, name: str) -> Optional[Tuple[MatrixInput, Any]]:
    """``(A / 2**e, 2**e)`` with one exponent per matrix of a batch (shape ``batch + (1, 1)``
    for dense input, a scalar for sparse), or None for a linear operator, whose entries are
    out of reach."""
    A = info.value
    if info.kind == DENSE_TORCH:
        amax = torch.maximum(A.amax(dim=(-2, -1), keepdim=True), -A.amin(dim=(-2, -1), keepdim=True))
        _, exponent = torch.frexp(amax.to(torch.float64))
        scale = torch.ldexp(torch.ones_like(amax, dtype=torch.float64), exponent)
        scaled = (A / scale.to(A.dtype)).to(A.dtype)
        return check_matrix(scaled, name), scale
    if info.kind == DENSE_NUMPY:
        amax = np.maximum(A.max(axis=(-2, -1), keepdims=True), -A.min(axis=(-2, -1), keepdims=True))
        scale = np.ldexp(1.0, _exponent(amax.astype(np.float64)))
        return check_matrix((A / scale).astype(A.dtype), name), scale
    if info.kind == SPARSE_SCIPY:
        data = A.tocsr().data
        amax = float(np.abs(data).max()) if data.size else 0.0
        scale = float(np.ldexp(1.0, _exponent(amax)))
        return check_matrix((A / scale).astype(A.dtype), name), scale
    if info.kind == SPARSE_TORCH:
        values = A.coalesce().values() if A.layout == torch.sparse_coo else A.values()
        amax = float(values.abs().max()) if values.numel() else 0.0
        scale = float(np.ldexp(1.0, _exponent(amax)))
        return check_matrix(A * (1.0 / scale), name), scale
    return None


def unscale(S: Any, mean: Any, scale: Any) -> Tuple[Any, Any]:
    """Singular values and column means of ``A`` from those of ``A / scale``."""
    if isinstance(scale, (float, int)):
        with np.errstate(over="ignore"):  # the caller checks the result for overflow
            return S * scale, (None if mean is None else mean * scale)
    if torch is not None and isinstance(S, torch.Tensor):
        factor = torch.as_tensor(scale, dtype=torch.float64, device=S.device)
        column = factor.squeeze(-1)  # batch + (1,)
        S = (S.to(torch.float64) * column).to(S.dtype)
        if mean is not None:
            mean = (mean.to(torch.float64) * column).to(mean.dtype)
        return S, mean
    column = np.asarray(scale).squeeze(-1)
    with np.errstate(over="ignore"):  # the caller checks the result for overflow
        S = (S.astype(np.float64) * column).astype(S.dtype)
        if mean is not None:
            mean = (mean.astype(np.float64) * column).astype(mean.dtype)
    return S, mean
