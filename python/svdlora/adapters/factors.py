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

__all__ = ["truncated_factors", "energy_rank"]

Factors = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _exact(weight: torch.Tensor) -> Factors:
    W = weight.detach()
    W = W if W.dtype == torch.float64 else W.float()
    return torch.linalg.svd(W, full_matrices=False)


def energy_rank(S: torch.Tensor, energy: float) -> int:
    """Smallest ``r`` with ``sum(S[:r]**2) >= energy * sum(S**2)`` of a full spectrum."""
    s2 = S.double() ** 2
    share = torch.cumsum(s2, 0) / torch.sum(s2)
    return int(torch.searchsorted(share, torch.tensor(energy - 1e-12, dtype=share.dtype))) + 1


def truncated_factors(weight: torch.Tensor, rank: int, svd: str, seed: int,
                      energy: Optional[float] = None) -> Factors:
    """``(U, S, Vh)`` of a (D, K) weight in float32 (float64 for float64 weights).

    Without ``energy``: the rank-``rank`` truncation.  With ``energy``: the smallest rank
    ``<= rank`` whose share of ``sum(sigma^2)`` reaches ``energy``.  ``svd="exact"`` finds
    it from the full spectrum; ``svd="randomized"`` runs :func:`svdlora.rsvd` in its
    adaptive mode with ``tol = sqrt(1 - energy)`` (the relative Frobenius error of keeping
    that share) and ``rank`` as the cap, so only the chosen rank is ever computed.
    """
    if svd == "exact":
        U, S, Vh = _exact(weight)
        r = rank if energy is None else min(rank, energy_rank(S, energy))
        return U[:, :r].contiguous(), S[:r].contiguous(), Vh[:r].contiguous()
    tol = None if energy is None else math.sqrt(max(1.0 - energy, 0.0))
    if tol == 0.0:
        tol = None  # energy 1.0 keeps everything up to the cap
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
