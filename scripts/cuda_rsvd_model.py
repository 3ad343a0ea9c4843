"""A numpy model of the CUDA rsvd's numerical scheme, to check it without a GPU.

It mirrors csrc/cuda/: the float64 shifted CholeskyQR3 with the full-rank nudge (orth_cuda.cpp),
the Gram + eigensolver small SVD with S = ||B^T w_i|| (small_svd_cuda.cpp), and for bf16 input
the split panels (one bf16 piece for the sketch and power iterations, three for B = Q^T A;
passes_cuda.cpp).  It checks the accuracy bar (error / Eckart-Young optimum), orthonormality,
rank-deficient and zero inputs.  It models the arithmetic only: cuBLAS/cuSOLVER calls, layouts
and streams are what the `cuda`-marked tests (`pytest -m cuda`) check on a GPU.

    python scripts/cuda_rsvd_model.py        (from the repository root, in the dev venv)
"""
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from helpers import (matrix_with_spectrum, optimal_error, orthonormality_defect,  # noqa: E402
                     reconstruction_error, spectrum)


def noise(m, l):
    idx = np.arange(m*l, dtype=np.float64).reshape(m, l)
    v = np.sin(idx*12.9898 + 78.233)*43758.5453
    return v - np.trunc(v)


def sweeps(m, l, unit, shift):
    rm, rl = math.sqrt(m), math.sqrt(l)
    sigma = 4*unit/(rm*rl)*max(0.5*(rm-rl), 0.5/rm)
    n = 0
    while n < 8 and math.sqrt(sigma*sigma+shift)/sigma > 1e6:
        sigma = sigma/math.sqrt(sigma*sigma+shift); n += 1
    return max(n, 1)


def orth(Y, prec):
    m, l = Y.shape
    Z = Y.astype(np.float64)
    nrm = np.sqrt((Z**2).sum()); Z = Z/(nrm if nrm > 0 else 1)
    unit = np.finfo(prec).eps
    Z = Z + noise(m, l)*(4*unit/math.sqrt(m*l))
    shift = 11*(m*l + l*(l+1))*np.finfo(np.float64).eps
    ns = sweeps(m, l, unit, shift)
    for s in range(ns+2):
        G = Z.T@Z
        if s < ns: G = G + shift*np.eye(l)
        R = np.linalg.cholesky(G).T
        Z = np.linalg.solve(R.T, Z.T).T
    return Z.astype(prec), ns


def small_svd(Q, Bt, k, prec):
    B64 = Bt.astype(np.float64)
    G = B64.T@B64
    w, W = np.linalg.eigh(G)
    Wk = W[:, ::-1][:, :k]
    V = B64@Wk
    S = np.sqrt((V**2).sum(0))
    o = np.argsort(-S, kind='stable'); S = S[o]; Wk = Wk[:, o]; V = V[:, o]
    V = V*np.where(S > 0, 1/np.where(S > 0, S, 1), 0)
    U = (Q.astype(np.float64)@Wk).astype(prec)
    Vh = orth(V, prec)[0].T
    return U, S.astype(prec), Vh


def rsvd(A, k, p=10, q=None, prec=np.float32):
    A = A.astype(prec)
    m, n = A.shape
    T = A.T if m < n else A
    short = min(m, n); l = min(k+p, short)
    exact = 2*l > short
    if exact: l = short
    if q is None:
        q = 0 if exact else (2 if k <= 16 else 3 + max(0, math.ceil(math.log2(k/64))))
    rng = np.random.default_rng(0)
    Om = np.eye(short, dtype=prec) if exact else rng.standard_normal((short, l)).astype(prec)
    Y = T@Om
    for _ in range(q):
        Z = orth(T.T@orth(Y, prec)[0], prec)[0]
        Y = T@Z
    Q = orth(Y, prec)[0]
    U, S, Vh = small_svd(Q, T.T@Q, k, prec)
    if m < n: U, Vh = Vh.T, U.T
    return U, S, Vh

worst = {}
for prec in (np.float32, np.float64):
    for (m, n) in [(700, 420), (420, 700), (300, 300)]:
        for spec in ["i^-0.5", "i^-1", "i^-2", "exp(-i/20)", "noise+spikes"]:
            A = matrix_with_spectrum(m, n, spectrum(spec, min(m, n)), seed=1).astype(prec)
            for k in (1, 5, 32, 100):
                U, S, Vh = rsvd(A, k, prec=prec)
                r = reconstruction_error(A, U, S, Vh)/max(optimal_error(A, k), 1e-300)
                d = max(orthonormality_defect(U), orthonormality_defect(Vh.T))
                key = (prec.__name__,)
                worst[key] = (max(worst.get(key, (0, 0))[0], r), max(worst.get(key, (0, 0))[1], d))
                if r > 1.01 and not (prec == np.float32 and spec == "exp(-i/20)"):
                    print("FAIL", prec.__name__, m, n, spec, k, r, d)


print("worst err/opt, orth defect:", worst)
for true_rank in (1, 3, 7):
    rng = np.random.default_rng(true_rank)
    A = rng.standard_normal((80, true_rank))@rng.standard_normal((true_rank, 50))
    for prec, rel in ((np.float64, 1e-10), (np.float32, 1e-4)):
        U, S, Vh = rsvd(A, 12, prec=prec)
        print("rank-def", true_rank, prec.__name__, int((S > rel*S[0]).sum()), orthonormality_defect(U), orthonormality_defect(Vh.T), reconstruction_error(A, U, S, Vh)/np.linalg.norm(A))


for prec in (np.float32, np.float64):
    U, S, Vh = rsvd(np.zeros((60, 40)), 5, prec=prec)
    print("zero", prec.__name__, np.isfinite(U).all(), S.max(), orthonormality_defect(U))


print("sweeps fp32 (11008,266):", sweeps(11008, 266, np.finfo(np.float32).eps, 11*(11008*266+266*267)*2.2e-16), "fp64:", sweeps(11008, 266, 2.2e-16, 11*(11008*266+266*267)*2.2e-16), "fp64 square 300:", sweeps(300, 300, 2.2e-16, 11*(300*300+300*301)*2.2e-16))


def bf16(x):
    x = np.asarray(x, np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16   # round to nearest even
    return u.astype(np.uint32).view(np.float32)


def mult(A, X, terms):   # A holds bf16 values; fp32 accumulate of pieces
    rest = X.astype(np.float32); out = np.zeros((A.shape[0], X.shape[1]), np.float64)
    for t in range(terms):
        piece = bf16(rest)
        out += A.astype(np.float64)@piece.astype(np.float64)
        rest = rest - piece
    return out.astype(np.float32)


def rsvd_bf16(A, k, p=10):
    m, n = A.shape; T = A; l = k+p
    q = 2 if k <= 16 else 3 + max(0, math.ceil(math.log2(k/64)))
    Om = np.random.default_rng(0).standard_normal((n, l)).astype(np.float32)
    Y = mult(T, Om, 1)
    for _ in range(q):
        Z = orth(mult(T.T, orth(Y, np.float32)[0], 1), np.float32)[0]
        Y = mult(T, Z, 1)
    Q = orth(Y, np.float32)[0]
    return small_svd(Q, mult(T.T, Q, 3), k, np.float32)

for spec in ["i^-0.5", "i^-1", "i^-2", "noise+spikes"]:
    A = bf16(matrix_with_spectrum(700, 420, spectrum(spec, 420), seed=2))
    for k in (5, 32, 100):
        U, S, Vh = rsvd_bf16(A, k)
        print("bf16", spec, k, round(reconstruction_error(A, U, S, Vh)/optimal_error(A, k), 5))
