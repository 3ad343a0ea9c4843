"""Truncated SVD factors of a layer's weight, at a fixed rank or at the rank an energy share
picks, from the exact or the randomized SVD."""
from __future__ import annotations

import math
import warnings
from typing import Optional, Tuple

import torch

from .._checks import has_kernels
from .._extension import HAS_COMPILED
from ..linalg.truncated_svd import ToleranceWarning, rsvd

__all__ = ["truncated_factors", "energy_rank", "energy_tolerance"]

Factors = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _exact(weight: torch.Tensor) -> Factors:
    W = weight.detach()
    W = W if W.dtype == torch.float64 else W.float()
    return torch.linalg.svd(W, full_matrices=False)


def energy_tolerance(energy: float, dtype: torch.dtype) -> float:
    """The relative Frobenius error of keeping an ``energy`` share of ``sum(sigma^2)``:
    ``sqrt(1 - energy)``, but no less than the rounding of the computation (``sqrt(8 eps)``
    of float32, or of float64 for float64 weights), so that ``energy=1.0`` keeps the
    numerically non-zero part of the spectrum and means the same for every SVD method."""
    eps = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
    return math.sqrt(max(1.0 - energy, 8.0 * eps))


def energy_rank(S: torch.Tensor, total: float, tol: float) -> int:
    """Smallest ``r`` with ``total - sum(S[:r]**2) <= tol**2 * total`` (``len(S)`` if none)."""
    captured = torch.cumsum(S.double() ** 2, 0)
    hits = torch.nonzero(total - captured <= tol * tol * total).flatten()
    return int(hits[0]) + 1 if hits.numel() else int(S.shape[0])


def truncated_factors(weight: torch.Tensor, rank: int, svd: str, seed: int,
                      energy: Optional[float] = None) -> Factors:
    """``(U, S, Vh)`` of a (D, K) weight in float32 (float64 for float64 weights).

    Without ``energy``: the rank-``rank`` truncation.  With ``energy``: the smallest rank
    ``<= rank`` whose truncation error is at most ``tol = energy_tolerance(energy)`` of
    ``||W||_F``, i.e. which keeps an ``energy`` share of ``sum(sigma^2)``.  ``svd="exact"``
    finds it from the full spectrum; ``svd="randomized"`` runs :func:`svdlora.rsvd` in its
    adaptive mode with that ``tol`` and ``rank`` as the cap, so only the chosen rank is ever
    computed (its rank comes from the method's error estimate ``||W||^2 - ||B||^2``, which
    may pick a rank or two more than the exact spectrum would).
    """
    if svd == "exact":
        U, S, Vh = _exact(weight)
        r = rank
        if energy is not None:
            total = float(torch.sum(weight.detach().double() ** 2))
            r = min(rank, energy_rank(S, total, energy_tolerance(energy, weight.dtype)))
        return U[:, :r].contiguous(), S[:r].contiguous(), Vh[:r].contiguous()
    if energy is None:
        return _rsvd_on_any_device(weight.detach(), rank, seed=seed)
    tol = energy_tolerance(energy, weight.dtype)
    if tol >= 1.0:  # a share of (almost) nothing: one component is already enough
        return _rsvd_on_any_device(weight.detach(), 1, seed=seed)
    with warnings.catch_warnings():
        # tol out of reach within the cap is expected here: the cap is the answer then
        warnings.simplefilter("ignore", ToleranceWarning)
        return _rsvd_on_any_device(weight.detach(), rank, tol=tol, seed=seed)
def _rsvd_on_any_device(W: torch.Tensor, rank: int, **options) -> Factors:
    """:func:`svdlora.rsvd` of ``W``, on the host when this build has no kernels for W's
    device (the factors are returned on W's device), and through the numpy backend when the
    compiled core is absent."""
    device = W.device
    backend = "auto"
    if not has_kernels(device):
        W = W.cpu()
    if not HAS_COMPILED:
        W = W if W.dtype in (torch.float32, torch.float64) else W.float()
        backend = "numpy"
    return tuple(t.to(device) for t in rsvd(W, rank, backend=backend, **options))
