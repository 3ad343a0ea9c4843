"""Block Krylov rsvd (method="krylov") beyond the accuracy bar of test_rsvd_accuracy.py:
backend parity, seeds, batching, bf16, PCA centring, sparse and operator inputs, rank
deficiency, the pass counter, the plan's method choice and the stopping rule."""
from __future__ import annotations

import numpy as np
import pytest

import svdlora
from svdlora.linalg import count_passes, make_plan
from svdlora.linalg.plan import KRYLOV_MIN_SHORT_SIDE, default_n_iter, subspace_passes
from helpers import (HAS_COMPILED, assert_sign_convention, case_seed, matrix_with_spectrum,
                     needs_compiled, optimal_error, orthonormality_defect, reconstruction_error,
                     spectrum, torch)

sp = pytest.importorskip("scipy.sparse")
spla = pytest.importorskip("scipy.sparse.linalg")


def _matrix(m, n, spec="i^-1", dtype=np.float64):
    seed = case_seed("krylov", m, n, spec)
    s = spectrum(spec, min(m, n), np.random.default_rng(seed))
    return matrix_with_spectrum(m, n, s, seed=seed).astype(dtype)


def _within_bar(A, U, S, Vh, k, bar=1.01):
    assert reconstruction_error(A, U, S, Vh) <= bar * optimal_error(A, k)


@needs_compiled
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 2e-3)])
@pytest.mark.parametrize("shape", [(300, 200), (200, 300)])
def test_compiled_and_numpy_backends_agree(dtype, rtol, shape):
    # Same sketch, same recurrence, same stopping decisions: the same factors to rounding
    # (CholeskyQR against Householder QR).  A gapped spectrum so vectors are well defined.
    A = matrix_with_spectrum(*shape, 0.8 ** np.arange(min(shape)), seed=3).astype(dtype)
    results = {}
    for backend in ("compiled", "numpy"):
        with count_passes() as log:
            results[backend] = svdlora.rsvd(A, 8, seed=5, method="krylov", backend=backend)
        results[backend + "_passes"] = log.passes
    assert results["compiled_passes"] == results["numpy_passes"]
    for a, b in zip(results["compiled"], results["numpy"]):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


def test_same_seed_same_result_and_sign_convention(rsvd_backend):
    A = _matrix(260, 180)
    r1 = svdlora.rsvd(A, 12, seed=11, method="krylov", backend=rsvd_backend)
    r2 = svdlora.rsvd(A, 12, seed=11, method="krylov", backend=rsvd_backend)
    for a, b in zip(r1, r2):
        np.testing.assert_array_equal(a, b)
    assert_sign_convention(r1.U)
    _within_bar(A, *r1, 12)


@pytest.mark.parametrize("spec", ["i^-0.5", "noise+spikes", "exp(-i/20)"])
def test_fixed_n_iter_makes_the_subspace_pass_count(spec, rsvd_backend):
    # n_iter=q: 2q + 2 passes for both methods, no stopping rule; at equal passes the Krylov
    # space (which contains a polynomial of the same degree) is at least as accurate, up to
    # the difference in block width.
    A = _matrix(400, 300, spec)
    k = 20
    for q in (1, 2, 3):
        errors = {}
        for method in ("subspace", "krylov"):
            with count_passes() as log:
                U, S, Vh = svdlora.rsvd(A, k, seed=q, n_iter=q, method=method, backend=rsvd_backend)
            assert log.passes == subspace_passes(q) == 2 * q + 2
            assert log.last.method == method
            errors[method] = reconstruction_error(A, U, S, Vh)
        assert errors["krylov"] <= 1.02 * errors["subspace"]


def test_stopping_rule_spends_passes_where_the_spectrum_needs_them(rsvd_backend):
    # A clear gap after k converges in a few passes; a flat noise bulk needs more.  Both end
    # within the bar, and neither runs to the cap.
    k = 30
    gapped = matrix_with_spectrum(500, 400, np.r_[np.ones(k), 1e-3 * np.ones(400 - k)], seed=1)
    flat = _matrix(500, 400, "noise+spikes")
    passes = {}
    for name, A in (("gapped", gapped), ("flat", flat)):
        with count_passes() as log:
            U, S, Vh = svdlora.rsvd(A, k, seed=2, method="krylov", backend=rsvd_backend)
        passes[name] = log.passes
        _within_bar(A, U, S, Vh, k)
    plan = make_plan(500, 400, k, oversample=10, n_iter=None, tol=None, block_size=None,
                     seed=0, center=False, method="krylov")
    assert passes["gapped"] < passes["flat"] < plan.max_passes


@needs_compiled
def test_batched_input_matches_each_matrix(device):
    # One stopping decision for the whole batch (every entry must have converged), so each
    # entry is compared with its own call at the batch's pass count.
    A = np.stack([_matrix(240, 160, spec) for spec in ("i^-1", "noise+spikes", "i^-2")])
    T = torch.from_numpy(A).to(device)
    with count_passes() as log:
        U, S, Vh = svdlora.rsvd(T, 9, seed=4, method="krylov")
    passes = log.passes
    assert passes % 2 == 1  # the rule is consulted after A passes only
    plan = make_plan(240, 160, 9, oversample=10, n_iter=None, tol=None, block_size=None,
                     seed=4, center=False, method="krylov")
    for i in range(A.shape[0]):
        _within_bar(A[i], U[i], S[i], Vh[i], 9)
        # the batch may run longer than entry i alone, never shorter; at the batch's count
        # (fixed) entry i alone gives the same factors
        with count_passes() as single:
            svdlora.rsvd(T[i], 9, seed=4, method="krylov")
        assert single.passes <= passes <= plan.max_passes
        alone = torch.ops.svdlora.rsvd_krylov(T[i], plan.sketch(T.dtype, as_torch=True, device=device),
                                              None, 9, plan.settle_passes, passes, 0.0, 0.0)
        torch.testing.assert_close(S[i], alone[1], rtol=1e-10, atol=1e-12)


@needs_compiled
def test_batched_with_numpy_backend_matches_compiled():
    A = np.stack([_matrix(200, 150, "i^-1"), _matrix(200, 150, "noise+spikes")])
    c = svdlora.rsvd(A, 6, seed=1, method="krylov", backend="compiled")
    n = svdlora.rsvd(A, 6, seed=1, method="krylov", backend="numpy")
    np.testing.assert_allclose(c.S, n.S, rtol=1e-10)


@needs_compiled
def test_bfloat16_is_read_in_place_and_matches_float32(device):
    A = torch.from_numpy(_matrix(400, 256, "i^-1", np.float32)).to(device).bfloat16()
    U, S, Vh = svdlora.rsvd(A, 16, seed=0, method="krylov")
    U32, S32, Vh32 = svdlora.rsvd(A.float(), 16, seed=0, method="krylov")
    assert U.dtype == torch.float32
    # the same float32 computation on the same values (bf16 blocks are up-cast exactly)
    torch.testing.assert_close(S, S32, rtol=1e-5, atol=1e-6)
    _within_bar(A.float().cpu().numpy(), U, S, Vh, 16)


def test_pca_centres_implicitly(rsvd_backend):
    rng = np.random.default_rng(case_seed("krylov-pca"))
    X = _matrix(400, 240) + rng.uniform(-5, 5, size=240)
    U, S, Vh, mean = svdlora.pca(X, 10, seed=0, method="krylov", backend=rsvd_backend)
    Xc = X - X.mean(axis=0)
    np.testing.assert_allclose(mean, X.mean(axis=0), rtol=1e-12)
    _within_bar(Xc, U, S, Vh, 10)
    assert orthonormality_defect(U) < 1e-12 and orthonormality_defect(Vh.T) < 1e-12


def test_sparse_and_operator_inputs_match_dense():
    A = sp.random(600, 300, density=0.05, random_state=7, format="csr")
    dense = A.toarray()
    ref = svdlora.rsvd(dense, 8, seed=3, method="krylov", backend="numpy")
    for value in (A, spla.aslinearoperator(A)):
        U, S, Vh = svdlora.rsvd(value, 8, seed=3, method="krylov")
        np.testing.assert_allclose(S, ref.S, rtol=1e-10)
        _within_bar(dense, U, S, Vh, 8)


@pytest.mark.parametrize("dtype, rel, orth", [(np.float64, 1e-10, 1e-10), (np.float32, 1e-4, 1e-5)])
def test_rank_deficient_and_zero_input_keep_orthonormal_factors(rsvd_backend, dtype, rel, orth):
    # The Krylov space exhausts A's rank after one block: the later blocks are rounding noise,
    # and must still come out orthonormal to the earlier ones.
    rng = np.random.default_rng(case_seed("krylov-deficient", np.dtype(dtype).name))
    A = (rng.standard_normal((300, 3)) @ rng.standard_normal((3, 200))).astype(dtype)
    U, S, Vh = svdlora.rsvd(A, 12, seed=0, method="krylov", backend=rsvd_backend)
    assert int(np.sum(S > rel * S[0])) == 3
    assert orthonormality_defect(U) <= orth and orthonormality_defect(Vh.T) <= orth
    assert reconstruction_error(A, U, S, Vh) <= rel * 10 * np.linalg.norm(A)
    Z = np.zeros((300, 200), dtype)
    U, S, Vh = svdlora.rsvd(Z, 5, seed=0, method="krylov", backend=rsvd_backend)
    assert np.isfinite(U).all() and float(np.abs(S).max()) == 0.0
    assert orthonormality_defect(U) <= orth


def test_method_choice_of_the_plan():
    common = dict(oversample=10, tol=None, block_size=None, seed=0, center=False)
    big, small = KRYLOV_MIN_SHORT_SIDE, KRYLOV_MIN_SHORT_SIDE - 1
    assert make_plan(big, 3 * big, 64, n_iter=None, **common).method == "krylov"
    assert make_plan(small, 3 * small, 64, n_iter=None, **common).method == "subspace"
    # an explicit n_iter keeps its fixed meaning under "auto": subspace iteration
    plan = make_plan(big, big, 64, n_iter=3, **common)
    assert plan.method == "subspace" and plan.n_iter == 3
    # the whole short side sketched: exact, whatever the method
    assert make_plan(100, 100, 60, n_iter=None, method="krylov", **common).method == "exact"
    # adaptive rank keeps its own scheme
    assert make_plan(big, big, 64, n_iter=None, **dict(common, tol=0.1)).method == "adaptive"
    # Krylov's cap is subspace iteration's default flops (twice its passes at ~half width)
    plan = make_plan(4096, 4096, 256, n_iter=None, method="krylov", **common)
    assert plan.width == 133 and plan.max_passes == 2 * subspace_passes(default_n_iter(256, exact_range=False))
    assert plan.stop_tol > 0 and plan.gain_tol > 0


def test_pass_counter_records_every_call():
    A = _matrix(150, 100)
    with count_passes() as log:
        svdlora.rsvd(A, 5, seed=0, method="subspace")
        svdlora.rsvd(A, 5, seed=0, n_iter=0, method="subspace")
        svdlora.rsvd(A, 60, seed=0)                    # 2 * 70 > 100: exact, two passes
        svdlora.rsvd(A, 5, seed=0, tol=0.5)            # adaptive rank: not counted
        svdlora.pca(A, 5, seed=0, method="krylov")
    methods = [(r.method, r.passes) for r in log.records]
    assert methods[:4] == [("subspace", 2 * default_n_iter(5, exact_range=False) + 2),
                           ("subspace", 2), ("exact", 2), ("adaptive", None)]
    assert methods[4][0] == "krylov" and methods[4][1] >= 3
    assert all(r.shape == (150, 100) for r in log.records)
    # outside the block nothing is recorded, and an empty log says so
    svdlora.rsvd(A, 5, seed=0)
    assert len(log.records) == 5
    with count_passes() as empty:
        pass
    with pytest.raises(LookupError):
        empty.last


@pytest.mark.parametrize("bad", ["lanczos", "", 3, None])
def test_bad_method_is_rejected_naming_the_argument(bad):
    exc = ValueError
    with pytest.raises(exc, match="method"):
        svdlora.rsvd(np.eye(30), 3, method=bad)
    with pytest.raises(exc, match="method"):
        svdlora.pca(np.eye(30), 3, method=bad)
    with pytest.raises(exc, match="method"):
        svdlora.rsvd_many([np.eye(30)], 3, method=bad)


@needs_compiled
def test_op_rejects_inconsistent_pass_settings():
    A = torch.randn(60, 40, dtype=torch.float64)
    omega = torch.randn(40, 8, dtype=torch.float64)
    op = torch.ops.svdlora.rsvd_krylov
    with pytest.raises(RuntimeError, match="outgrow"):
        op(A, omega, None, 5, 1, 12, 0.0, 0.0)      # 7 blocks of 8 > 40 columns
    with pytest.raises(RuntimeError, match="rank"):
        op(A, omega, None, 20, 1, 2, 0.0, 0.0)      # one U block of 8 < rank 20
    with pytest.raises(RuntimeError, match="max_passes"):
        op(A, omega, None, 5, 1, 0, 0.0, 0.0)
    with pytest.raises(RuntimeError, match="stop_tol"):
        op(A, omega, None, 5, 1, 3, -1.0, 0.0)
    U, S, Vh, passes = op(A, omega, None, 5, 1, 3, 0.0, 0.0)
    assert int(passes) == 3 and U.shape == (60, 5)


@pytest.mark.parametrize("spec", ["i^-1", "noise+spikes"])
def test_defaults_on_a_large_matrix_use_block_krylov_within_the_bar(spec, rsvd_backend):
    n = KRYLOV_MIN_SHORT_SIDE
    A = _matrix(n + 100, n, spec, np.float32)
    for k in (16, 64):
        with count_passes() as log:
            U, S, Vh = svdlora.rsvd(A, k, seed=k, backend=rsvd_backend)
        assert log.last.method == "krylov"
        _within_bar(A, U, S, Vh, k)
        assert orthonormality_defect(U) <= 1e-5 and orthonormality_defect(Vh.T) <= 1e-5


@pytest.mark.parametrize("m, n, k, decay, dtype", [
    (22, 22, 1, 0.5, np.float32), (58, 53, 16, 2.0, np.float64), (45, 58, 12, 1.0, np.float32),
    (30, 30, 4, 0.0, np.float64)])
def test_small_matrices_get_the_pass_that_completes_the_bases(m, n, k, decay, dtype, rsvd_backend):
    # On a short side of s blocks, floor(P/2) + 1 <= s allows P = 2s - 1 passes, ending on an A
    # pass.  Capping at 2s - 2 (ending on an A^T pass, whose new V block no U block ever
    # sees) left the answer at one pass's accuracy: 1.03-1.30x the optimum on these.
    rng = np.random.default_rng(case_seed("complete-bases", m, n, k, decay))
    r = min(m, n)
    U0, _ = np.linalg.qr(rng.standard_normal((m, r)))
    V0, _ = np.linalg.qr(rng.standard_normal((n, r)))
    A = ((U0 * np.arange(1, r + 1, dtype=np.float64) ** -decay) @ V0.T).astype(dtype)
    plan = make_plan(m, n, k, oversample=10, n_iter=None, tol=None, block_size=None, seed=0,
                     center=False, method="krylov")
    assert (plan.max_passes // 2 + 1) * plan.block <= min(m, n)  # the bases fit
    U, S, Vh = svdlora.rsvd(A, k, seed=case_seed(m, n, k), method="krylov", backend=rsvd_backend)
    s = np.linalg.svd(A.astype(np.float64), compute_uv=False)
    optimum = np.sqrt(np.sum(s[k:] ** 2))
    floor = 50 * np.finfo(dtype).eps * np.linalg.norm(s) * max(m, n) ** 0.5
    assert reconstruction_error(A, U, S, Vh) <= 1.01 * optimum + floor
