"""Randomized block Krylov SVD on any :class:`LinearMap`: the numpy twin of
``csrc/common/block_krylov.h`` (same recurrence, projected matrix and stopping rule; Householder
QR where the compiled op uses CholeskyQR), so both backends give the same factors to rounding."""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

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


def _ritz_values(B: np.ndarray, k: int, frob2: np.ndarray, eps: float) -> Tuple[np.ndarray, np.ndarray]:
    """Top-k squared Ritz values and the stopping rule's estimate of the optimum's squared
    error (see ``svdlora::ritz_values``)."""
    s2 = np.linalg.svd(B, compute_uv=False).astype(np.float64) ** 2
    top = s2[..., :k]
    rest = s2[..., k:].sum(axis=-1)
    error2 = frob2 - top.sum(axis=-1)
    return top, np.where(error2 > 64 * eps * frob2, np.maximum(error2, rest), rest)


#: Basis width up to which the Ritz values are taken after every pass (``kEveryPassWidth``).
EVERY_PASS_WIDTH = 400


class _Stop:
    """The stopping rule of ``svdlora::KrylovStop``, fed after each evaluated pass."""

    def __init__(self, plan: RSVDPlan, rank_pass: int, eps: float) -> None:
        self.plan, self.rank_pass, self.eps = plan, rank_pass, eps
        self.history: Dict[int, np.ndarray] = {}

    def evaluates(self, p: int, u: int) -> bool:
        return p >= self.rank_pass and (p % 2 == 1 or u <= EVERY_PASS_WIDTH)

    def _gain(self, newer: np.ndarray, older: np.ndarray) -> np.ndarray:
        change = newer - older
        noise = 16 * self.eps * np.sqrt(newer[..., :1] * newer)
        return np.where(np.abs(change) > noise, change, 0.0).sum(axis=-1)

    def after_pass(self, p: int, top: np.ndarray, optimum2: np.ndarray) -> bool:
        h, plan = self.history, self.plan
        q = max(h) if h else None
        h[p] = top
        if q is None:
            return False
        if plan.gain_tol > 0 and np.all(self._gain(top, h[q]) <= plan.gain_tol * (p - q) * optimum2):
            return True
        if plan.stop_tol <= 0 or p - 4 < plan.settle_passes or (p - 2) not in h or (p - 4) not in h:
            return False
        gain, before = self._gain(top, h[p - 2]), self._gain(h[p - 2], h[p - 4])
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
    eps = float(np.finfo(op.dtype).eps)
    stop = _Stop(plan, 2 * (-(-k // b)) - 1, eps)
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
        if adaptive and stop.evaluates(passes, u):
            top, optimum2 = _ritz_values(B[..., :u, :v], k, frob2, eps)
            if stop.after_pass(passes, top, optimum2):
                break
    # float64, as in the compiled op: float32 LAPACK blurs the weak end of large ranks
    Ub, S, Vbh = np.linalg.svd(B[..., :u, :v].astype(np.float64), full_matrices=False)
    U = U_all[..., :u] @ Ub[..., :k].astype(op.dtype)
    Vh = Vbh[..., :k, :].astype(op.dtype) @ _t(V_all[..., :v])
    return U, S[..., :k].astype(op.dtype), Vh, passes
