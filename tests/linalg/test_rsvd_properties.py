"""Property-based checks (hypothesis) of rsvd over random shapes, ranks and dtypes, against
numpy.linalg.svd."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import svdlora
from helpers import HAS_COMPILED, orthonormality_defect, reconstruction_error

BACKENDS = ["compiled", "numpy"] if HAS_COMPILED else ["numpy"]


@st.composite
def problems(draw):
    m = draw(st.integers(1, 60))
    n = draw(st.integers(1, 60))
    k = draw(st.integers(1, min(m, n)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**31 - 1))
    decay = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    rng = np.random.default_rng(seed)
    # Low-rank-plus-decay matrices where a rank-k approximation is meaningful, plus plain noise.
    r = min(m, n)
    U, _ = np.linalg.qr(rng.standard_normal((m, r)))
    V, _ = np.linalg.qr(rng.standard_normal((n, r)))
    s = np.arange(1, r + 1, dtype=np.float64) ** -decay
    A = ((U * s) @ V.T).astype(dtype)
    backend = draw(st.sampled_from(BACKENDS))
    method = draw(st.sampled_from(["auto", "subspace", "krylov"]))
    return A, k, seed, backend, method


@settings(max_examples=90, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_factors_are_valid_and_near_optimal(problem):
    A, k, seed, backend, method = problem
    U, S, Vh = svdlora.rsvd(A, k, seed=seed, backend=backend, method=method)
    eps = np.finfo(A.dtype).eps
    m, n = A.shape
    assert U.shape == (m, k) and S.shape == (k,) and Vh.shape == (k, n)
    assert U.dtype == A.dtype
    assert np.isfinite(U).all() and np.isfinite(S).all() and np.isfinite(Vh).all()
    assert (S >= 0).all() and (np.diff(S) <= 10 * eps * max(S[0], 1e-30)).all()
    assert orthonormality_defect(U) <= 200 * eps * max(m, n) ** 0.5
    assert orthonormality_defect(Vh.T) <= 200 * eps * max(m, n) ** 0.5
    s = np.linalg.svd(A.astype(np.float64), compute_uv=False)
    optimum = np.sqrt(np.sum(s[k:] ** 2))
    floor = 50 * eps * np.linalg.norm(A.astype(np.float64)) * max(m, n) ** 0.5
    # singular values never exceed the true ones (interlacing for Q^T A), up to rounding
    assert (S <= s[:k] * (1 + 100 * eps) + floor).all()
    # 2% here (not the 1% bar of test_rsvd_accuracy.py): tiny pure-noise matrices with k deep
    # inside a flat spectrum are the worst case for any sketch with fixed oversampling.
    assert reconstruction_error(A, U, S, Vh) <= 1.02 * optimum + floor
