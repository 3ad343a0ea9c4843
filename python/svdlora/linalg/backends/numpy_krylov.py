"""Randomized block Krylov SVD on any :class:`LinearMap`: the numpy twin of
``csrc/common/block_krylov.h`` (same recurrence, projected matrix and stopping rule; Householder
QR where the compiled op uses CholeskyQR), so both backends give the same factors to rounding."""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import numpy as np

from ..plan import RSVDPlan
from .linear_maps import LinearMap


def _t(X: np.ndarray) -> np.ndarray:
    return np.swapaxes(X, -1, -2)


def _orth(Y: np.ndarray) -> np.ndarray:
    return np.linalg.qr(Y, mode="reduced")[0]


def _extend_basis(basis: np.ndarray, W: np.ndarray,
                  local: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Orthonormal basis of the part of ``W`` outside span(basis), and ``lastᵀ W`` for the
    newest ``local`` basis columns: Gram–Schmidt against those, normalise, then against the
    whole basis (see ``svdlora::extend_basis``)."""
    if basis.shape[-1] == 0:
        return _orth(W), None
    last = basis[..., basis.shape[-1] - local:]
    C = _t(last) @ W
    Q = _orth(W - last @ C)
    for _ in range(4):  # see svdlora::extend_basis: sweep again while columns come out short
        R = Q - basis @ (_t(basis) @ Q)
        Q = _orth(R)
        if np.linalg.norm(R, axis=-2).min() > 0.5:
            break
    return Q, C


def _ritz_energies(B: np.ndarray, k: int, frob2: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Top-k Ritz energy and the stopping rule's estimate of the optimum's squared error."""
    s2 = np.linalg.svd(B, compute_uv=False).astype(np.float64) ** 2
    top = s2[..., :k].sum(axis=-1)
    return top, np.maximum(frob2 - top, s2[..., k:].sum(axis=-1))


class _Stop:
    """The stopping rule of ``svdlora::KrylovStop``, fed after every A pass (odd ``p``)."""

    def __init__(self, plan: RSVDPlan, rank_pass: int) -> None:
        self.plan, self.rank_pass = plan, rank_pass
        self.history: List[np.ndarray] = []

    def after_pass(self, p: int, top: np.ndarray, optimum2: np.ndarray) -> bool:
        h, plan = self.history, self.plan
        h.append(top)
        if p < self.rank_pass or len(h) < 2:
            return False
        gain = top - h[-2]
        if plan.gain_tol > 0 and np.all(gain <= plan.gain_tol * optimum2):
            return True
        if plan.stop_tol <= 0 or p - 4 < plan.settle_passes or len(h) < 3:
            return False
        before = h[-2] - h[-3]
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(gain <= 0, 0.0, np.where(before <= 0, math.inf, gain / before))
            rest = np.where(rate < 1, gain * rate / (1 - rate), math.inf)
        return bool(np.all(rest <= plan.stop_tol * (optimum2 - rest)))


def rsvd_krylov(op: LinearMap, omega: np.ndarray, plan: RSVDPlan,
                frob2: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Block Krylov factors of a tall map (``op`` rows >= cols) and the passes made; see
    ``svdlora::rsvd_block_krylov`` for the recurrence and the stopping rule.  ``frob2``:
    ``||A||_F²`` per matrix (needed with a stopping rule)."""
    N = op.shape[-1]
    b, k, max_passes = omega.shape[1], plan.rank, plan.max_passes
    adaptive = plan.stop_tol > 0 or plan.gain_tol > 0
    V1 = _orth(omega.astype(op.dtype, copy=False))
    W = op.matmat(V1)
    batch, M = W.shape[:-2], W.shape[-2]
    cap_u = (max_passes + 1) // 2 * b
    cap_v = (max_passes // 2 + 1) * b
    U_all = np.zeros(batch + (M, cap_u), op.dtype)
    V_all = np.zeros(batch + (N, cap_v), op.dtype)
    B = np.zeros(batch + (cap_u, cap_v), op.dtype)
    V_all[..., :b] = V1
    u, v, passes = 0, b, 0
    stop = _Stop(plan, 2 * (-(-k // b)) - 1)
    while True:
        if passes % 2 == 0:
            if passes > 0:
                W = op.matmat(V_all[..., v - b:v])
            Q, C = _extend_basis(U_all[..., :u], W, b)
            U_all[..., u:u + b] = Q
            if C is not None:
                B[..., u - b:u, v - b:v] = C
            B[..., u:u + b, v - b:v] = _t(Q) @ W
            u += b
        else:
            Z = op.rmatmat(U_all[..., u - b:u])
            Q, D = _extend_basis(V_all[..., :v], Z, b)
            V_all[..., v:v + b] = Q
            B[..., u - b:u, v - b:v] = _t(D)
            B[..., u - b:u, v:v + b] = _t(Z) @ Q
            v += b
        passes += 1
        if passes >= max_passes:
            break
        if adaptive and passes % 2 == 1:
            top, optimum2 = _ritz_energies(B[..., :u, :v], k, frob2)
            if stop.after_pass(passes, top, optimum2):
                break
    # float64, as in the compiled op: float32 LAPACK blurs the weak end of large ranks
    Ub, S, Vbh = np.linalg.svd(B[..., :u, :v].astype(np.float64), full_matrices=False)
    U = U_all[..., :u] @ Ub[..., :k].astype(op.dtype)
    Vh = Vbh[..., :k, :].astype(op.dtype) @ _t(V_all[..., :v])
    return U, S[..., :k].astype(op.dtype), Vh, passes
