"""rsvd/pca behaviour: result types, dtypes, devices, batching, low precision, strides,
sparse and operator inputs, adaptive rank, PCA centring, determinism and backend parity.
Torch tests run on every device (CUDA ones are marked `cuda` and skip without a GPU)."""
from __future__ import annotations


import numpy as np
import pytest

import svdlora
from helpers import (HAS_COMPILED, assert_sign_convention, matrix_with_spectrum, needs_compiled,
                     cuda_only, needs_torch, optimal_error, orthonormality_defect,
                     reconstruction_error, spectrum, torch)

sp = pytest.importorskip("scipy.sparse")
spla = pytest.importorskip("scipy.sparse.linalg")


def _decaying(m=120, n=80, seed=0, dtype=np.float64):
    return matrix_with_spectrum(m, n, spectrum("i^-1", min(m, n)), seed=seed).astype(dtype)


def test_result_is_named_tuple_like_torch_linalg_svd():
    A = _decaying()
    res = svdlora.rsvd(A, 5, seed=0)
    assert isinstance(res, svdlora.SVDResult)
    U, S, Vh = res
    assert res.U is U and res.S is S and res.Vh is Vh
    assert U.shape == (120, 5) and S.shape == (5,) and Vh.shape == (5, 80)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_in_numpy_out_keeps_dtype(dtype):
    U, S, Vh = svdlora.rsvd(_decaying(dtype=dtype), 4, seed=0)
    assert all(isinstance(x, np.ndarray) and x.dtype == dtype for x in (U, S, Vh))


def test_numpy_float16_computes_in_float32():
    A = _decaying(dtype=np.float16)
    U, S, Vh = svdlora.rsvd(A, 4, seed=0)
    assert U.dtype == np.float32
    assert reconstruction_error(A, U, S, Vh) <= 1.01 * optimal_error(A.astype(np.float32), 4) + 1e-3


def test_sign_convention_and_determinism():
    A = _decaying()
    r1 = svdlora.rsvd(A, 6, seed=7)
    r2 = svdlora.rsvd(A, 6, seed=7)
    assert_sign_convention(r1.U)
    for a, b in zip(r1, r2):
        np.testing.assert_array_equal(a, b)
    # flipping the sign of A flips Vh, not U (U is pinned by the convention)
    U2, S2, Vh2 = svdlora.rsvd(-A, 6, seed=7)
    np.testing.assert_allclose(U2, r1.U, atol=1e-10)
    np.testing.assert_allclose(Vh2, -r1.Vh, atol=1e-10)


def test_negative_stride_and_transposed_numpy_views():
    A = _decaying()
    flipped = A[::-1, ::-1]
    U, S, Vh = svdlora.rsvd(flipped, 8, seed=0)
    assert reconstruction_error(flipped, U, S, Vh) <= 1.01 * optimal_error(flipped, 8)
    U, S, Vh = svdlora.rsvd(A.T, 8, seed=0)  # Fortran-ordered view
    assert reconstruction_error(A.T, U, S, Vh) <= 1.01 * optimal_error(A, 8)


def test_read_only_array_is_accepted_and_not_modified():
    A = _decaying()
    A.setflags(write=False)
    before = A.copy()
    svdlora.rsvd(A, 3, seed=0)
    np.testing.assert_array_equal(A, before)


def test_scipy_sparse_and_linear_operator_inputs():
    rng = np.random.default_rng(0)
    dense = sp.random(300, 200, density=0.05, random_state=1, format="csr") @ sp.diags(
        1.0 / np.arange(1, 201))
    dense = dense.toarray() + 0.0
    A = sp.csr_matrix(dense)
    U, S, Vh = svdlora.rsvd(A, 10, seed=0)
    assert isinstance(U, np.ndarray)
    assert reconstruction_error(dense, U, S, Vh) <= 1.01 * optimal_error(dense, 10)
    op = spla.aslinearoperator(A)
    U2, S2, Vh2 = svdlora.rsvd(op, 10, seed=0)
    np.testing.assert_allclose(S2, S, rtol=1e-10)
    del rng


def test_linear_operator_producing_nan_is_rejected():
    op = spla.LinearOperator((30, 20), matvec=lambda v: np.full(30, np.nan),
                             rmatvec=lambda v: np.full(20, np.nan), dtype=np.float64)
    with pytest.raises(ValueError, match="NaN"):
        svdlora.rsvd(op, 3, seed=0)


@pytest.mark.parametrize("tol", [0.3, 0.1, 0.05])
def test_adaptive_rank_reaches_tolerance_with_smallest_rank(tol):
    A = _decaying(300, 200)
    s = np.linalg.svd(A, compute_uv=False)
    rel = np.sqrt(np.maximum(1 - np.cumsum(s ** 2) / np.sum(s ** 2), 0))
    assert (rel[:150] <= tol).any()
    best = int(np.argmax(rel <= tol)) + 1  # smallest exact rank reaching tol
    for backend in (["compiled", "numpy"] if HAS_COMPILED else ["numpy"]):  # both, one matrix
        U, S, Vh = svdlora.rsvd(A, 150, tol=tol, seed=0, backend=backend)
        r = S.shape[0]
        err = reconstruction_error(A, U, S, Vh) / np.linalg.norm(A)
        assert err <= tol * (1 + 1e-6)
        assert best <= r <= best + 2, (backend, r, best)
        assert orthonormality_defect(U) < 1e-10


def test_adaptive_rank_warns_when_unreachable():
    A = np.random.default_rng(0).standard_normal((100, 80))
    with pytest.warns(svdlora.ToleranceWarning, match="not reached"):
        U, S, Vh = svdlora.rsvd(A, 5, tol=0.01, seed=0)
    assert S.shape == (5,)


def test_pca_matches_explicit_centring():
    rng = np.random.default_rng(2)
    X = _decaying(200, 60) + rng.uniform(-3, 3, size=60)
    U, S, Vh, mean = svdlora.pca(X, 6, seed=0)
    np.testing.assert_allclose(mean, X.mean(axis=0), rtol=1e-12)
    Xc = X - X.mean(axis=0)
    Uc, Sc, Vhc = np.linalg.svd(Xc, full_matrices=False)
    np.testing.assert_allclose(S, Sc[:6], rtol=1e-4)  # randomized: approximate values
    assert reconstruction_error(Xc, U, S, Vh) <= 1.01 * optimal_error(Xc, 6)
    U0, S0, Vh0, mean0 = svdlora.pca(X, 6, center=False, seed=0)
    np.testing.assert_array_equal(mean0, np.zeros(60))


def test_pca_sparse_stays_sparse_and_matches_dense():
    X = sp.random(400, 120, density=0.1, random_state=3, format="csr")
    before = X.copy()
    U, S, Vh, mean = svdlora.pca(X, 5, seed=0)
    dense = X.toarray()
    np.testing.assert_allclose(mean, dense.mean(axis=0), rtol=1e-12)
    Ud, Sd, Vhd, _ = svdlora.pca(dense, 5, seed=0, backend="numpy")
    np.testing.assert_allclose(S, Sd, rtol=1e-10)
    assert sp.issparse(X) and (X != before).nnz == 0


@needs_compiled
def test_backend_parity_compiled_numpy_lapack():
    A = matrix_with_spectrum(150, 100, 0.7 ** np.arange(100), seed=3)
    Uc, Sc, Vhc = svdlora.rsvd(A, 12, seed=5, backend="compiled")
    Un, Sn, Vhn = svdlora.rsvd(A, 12, seed=5, backend="numpy")
    np.testing.assert_allclose(Sc, Sn, rtol=1e-12)
    np.testing.assert_allclose(Uc, Un, atol=1e-10)
    np.testing.assert_allclose(Vhc, Vhn, atol=1e-10)
    s = np.linalg.svd(A, compute_uv=False)
    np.testing.assert_allclose(Sc, s[:12], rtol=1e-10)


# ----------------------------------------------------------------------------- torch inputs
@needs_compiled
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_in_torch_out(dtype, device):
    A = torch.from_numpy(_decaying()).to(device, getattr(torch, dtype))
    U, S, Vh = svdlora.rsvd(A, 5, seed=0)
    assert all(isinstance(x, torch.Tensor) and x.dtype == A.dtype and x.device == A.device
               for x in (U, S, Vh))
    assert reconstruction_error(A, U, S, Vh) <= 1.01 * optimal_error(A, 5)


@needs_compiled
def test_torch_batched_matches_per_matrix(device):
    A = torch.stack([torch.from_numpy(_decaying(60, 40, seed=s)) for s in range(6)]).reshape(
        2, 3, 60, 40).to(device)
    U, S, Vh = svdlora.rsvd(A, 4, seed=1)
    assert U.shape == (2, 3, 60, 4) and S.shape == (2, 3, 4) and Vh.shape == (2, 3, 4, 40)
    for i in range(2):
        for j in range(3):
            Ui, Si, Vhi = svdlora.rsvd(A[i, j], 4, seed=1)
            torch.testing.assert_close(S[i, j], Si, rtol=1e-10, atol=0)
            torch.testing.assert_close(U[i, j], Ui, rtol=0, atol=1e-9)
    assert_sign_convention(U)


@needs_compiled
@pytest.mark.parametrize("low", ["bfloat16", "float16"])
def test_low_precision_input_computes_in_float32(low, device):
    A32 = torch.from_numpy(_decaying(300, 200, dtype=np.float32))
    A = A32.to(device, getattr(torch, low))
    U, S, Vh = svdlora.rsvd(A, 10, seed=0)
    assert U.dtype == S.dtype == Vh.dtype == torch.float32
    # exact reference: the SVD of the (exactly representable) low-precision values
    assert reconstruction_error(A.float(), U, S, Vh) <= 1.01 * optimal_error(A.float(), 10)
    assert orthonormality_defect(U) <= 1e-5


@needs_compiled
def test_low_precision_input_is_not_copied_to_float32():
    # Up-casting happens in row blocks of ~16 MB, so no allocation may reach the size of a
    # full float32 copy of A (64 MB here).
    A = torch.randn(4096, 4096).to(torch.bfloat16)
    full_copy = A.numel() * 4
    with torch.profiler.profile(profile_memory=True) as prof:
        svdlora.rsvd(A, 8, seed=0, n_iter=0)
    biggest = max(e.cpu_memory_usage for e in prof.events())
    assert 0 < biggest < full_copy / 2


@cuda_only
@pytest.mark.parametrize("low", ["bfloat16", "float16"])
def test_low_precision_input_is_read_in_place_on_cuda(low):
    A = torch.from_numpy(matrix_with_spectrum(4096, 2048, spectrum("i^-1", 2048))).to(
        "cuda", getattr(torch, low))
    svdlora.rsvd(A, 32, seed=0)  # warm-up: cuBLAS allocates its workspace on first use
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    U, S, Vh = svdlora.rsvd(A, 32, seed=0)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    assert S.dtype == torch.float32
    assert reconstruction_error(A, U, S, Vh) <= 1.01 * optimal_error(A, 32)
    assert peak < A.numel() * 4 / 2, "an fp32-sized copy of A was made"


@needs_compiled
def test_non_contiguous_and_transposed_tensors(device):
    base = torch.from_numpy(_decaying(200, 150)).to(device)
    for A in (base.T, base[::2], base[:, 10:110]):
        assert not A.is_contiguous()
        U, S, Vh = svdlora.rsvd(A, 7, seed=0)
        assert reconstruction_error(A, U, S, Vh) <= 1.01 * optimal_error(A, 7)


@needs_compiled
def test_batched_non_contiguous_views(device):
    mats = [matrix_with_spectrum(200, 150, spectrum("i^-1", 150), seed=s) for s in range(4)]
    A = torch.from_numpy(np.stack(mats)).float().to(device)
    for view in (A, A.mT, A[:, ::2, :], A.mT.contiguous().mT):
        U, S, Vh = svdlora.rsvd(view, 8, seed=0)
        for i in range(view.shape[0]):
            assert reconstruction_error(view[i], U[i], S[i], Vh[i]) <= \
                1.01 * optimal_error(view[i], 8) + 1e-6
            assert orthonormality_defect(U[i]) <= 1e-5


@needs_compiled
def test_torch_sparse_inputs():
    dense = torch.from_numpy(_decaying(150, 100))
    dense[dense.abs() < 0.01] = 0
    for A in (dense.to_sparse_coo(), dense.to_sparse_csr()):
        U, S, Vh = svdlora.rsvd(A, 6, seed=0)
        assert isinstance(U, torch.Tensor) and U.dtype == torch.float64
        assert reconstruction_error(dense, U, S, Vh) <= 1.01 * optimal_error(dense, 6)


@needs_compiled
@pytest.mark.parametrize("shape", [(100, 50), (50, 100)])
def test_torch_pca_uses_compiled_centring(device, shape):
    X = torch.from_numpy(_decaying(*shape)).to(device) + 5.0
    U, S, Vh, mean = svdlora.pca(X, 4, seed=0)
    torch.testing.assert_close(mean, X.mean(0))
    Xc = X - X.mean(0)
    assert reconstruction_error(Xc, U, S, Vh) <= 1.01 * optimal_error(Xc, 4)
    if device != "cpu":  # the same sketch gives the CPU op's values
        cpu = svdlora.pca(X.cpu(), 4, seed=0)
        torch.testing.assert_close(S.cpu(), cpu.S, rtol=1e-10, atol=0)


@needs_compiled
@pytest.mark.parametrize("shape", [(300, 80), (80, 300)])
def test_adaptive_op_error_estimate_with_centring_and_a_large_mean(device, shape):
    # The adaptive op's error estimate uses ||X - 1 mu^T||_F^2 of the implicitly centred
    # matrix; with a mean 10^4 times the spread of the data it must still be the exact
    # relative error of the returned factors.
    X = torch.from_numpy(_decaying(*shape)).to(device) + 1e4
    mean = X.mean(0)
    Xc = X - mean
    omega = torch.randn(min(shape), 60, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(0)).to(device)
    U, S, Vh, err = torch.ops.svdlora.rsvd_adaptive(X, omega, mean, 0.2, 16, 60, 2)
    exact = reconstruction_error(Xc, U, S, Vh) / float(torch.linalg.norm(Xc))
    assert float(err) == pytest.approx(exact, rel=1e-6, abs=1e-12)
    assert float(err) <= 0.2


@cuda_only
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cuda_op_matches_the_cpu_op_given_the_same_sketch(dtype):
    t = getattr(torch, dtype)
    A = torch.from_numpy(matrix_with_spectrum(300, 200, spectrum("i^-1", 200), seed=4)).to(t)
    omega = torch.randn(200, 20, dtype=t, generator=torch.Generator().manual_seed(0))
    cpu = torch.ops.svdlora.rsvd(A, omega, None, 10, 2)
    gpu = torch.ops.svdlora.rsvd(A.cuda(), omega.cuda(), None, 10, 2)
    rtol = 1e-4 if dtype == "float32" else 1e-10
    torch.testing.assert_close(gpu[1].cpu(), cpu[1], rtol=rtol, atol=0)
    # same subspaces and, with the sign convention, the same vectors
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=0, atol=100 * rtol)
    torch.testing.assert_close(gpu[2].cpu(), cpu[2], rtol=0, atol=100 * rtol)


@cuda_only
def test_adaptive_rank_on_cuda_matches_the_cpu_rank():
    A = torch.from_numpy(matrix_with_spectrum(600, 400, spectrum("i^-1", 400))).cuda()
    U, S, Vh = svdlora.rsvd(A, 200, tol=0.05, seed=0)
    assert reconstruction_error(A, U, S, Vh) / float(torch.linalg.norm(A)) <= 0.05
    assert S.shape == svdlora.rsvd(A.cpu(), 200, tol=0.05, seed=0).S.shape


@cuda_only
def test_cusolver_gesvdr_peer():
    A = torch.from_numpy(matrix_with_spectrum(800, 600, spectrum("i^-1", 600))).float().cuda()
    U, S, Vh = svdlora.rsvd(A, 20, seed=0, backend="cusolver_gesvdr")
    assert U.shape == (800, 20) and Vh.shape == (20, 600)
    assert reconstruction_error(A, U, S, Vh) <= 1.05 * optimal_error(A, 20)


@needs_torch
def test_build_info_reports_install():
    info = svdlora.build_info()
    for key in ("compiled", "cuda", "torch_version", "cuda_version"):
        assert key in info
    assert info["torch_version"] == torch.__version__
    assert info["compiled"] == HAS_COMPILED


@needs_compiled
def test_batched_with_rank_deficient_entries_uses_fallback_per_entry():
    # entries 1 and 3 have rank 2 < sketch width: their CholeskyQR fails and only they are
    # redone with Householder QR; every entry must still be exact and orthonormal
    rng = np.random.default_rng(4)
    mats = []
    for i in range(4):
        r = 2 if i % 2 else 30
        mats.append(rng.standard_normal((40, r)) @ rng.standard_normal((r, 30)))
    A = torch.from_numpy(np.stack(mats))
    U, S, Vh = svdlora.rsvd(A, 6, seed=0, n_iter=2)
    for i in range(4):
        assert reconstruction_error(A[i], U[i], S[i], Vh[i]) <= 1.01 * optimal_error(A[i], 6) + 1e-9
        assert orthonormality_defect(U[i]) < 1e-10 and orthonormality_defect(Vh[i].T) < 1e-10
    assert float(S[1, 2]) < 1e-10 * float(S[1, 0])


@needs_compiled
@pytest.mark.parametrize("true_rank", [1, 3])
def test_rank_deficient_and_zero_tensors(device, true_rank):
    rng = np.random.default_rng(true_rank)
    A = torch.from_numpy(rng.standard_normal((80, true_rank)) @ rng.standard_normal((true_rank, 50)))
    for t, rel, orth in ((torch.float64, 1e-10, 1e-10), (torch.float32, 1e-4, 1e-5)):
        U, S, Vh = svdlora.rsvd(A.to(device, t), 12, seed=0)
        assert int((S > rel * S[0]).sum()) == true_rank
        assert orthonormality_defect(U) <= orth and orthonormality_defect(Vh.mT) <= orth
    U, S, Vh = svdlora.rsvd(torch.zeros(60, 40, device=device), 5, seed=0)
    assert bool(torch.isfinite(U).all()) and float(S.abs().max()) == 0.0
    assert orthonormality_defect(U) <= 1e-5


@pytest.mark.parametrize("scale", [0.0, 1e-170])
def test_zero_and_tiny_matrices(rsvd_backend, scale):
    backend = rsvd_backend
    A = scale * np.random.default_rng(0).standard_normal((50, 40))
    U, S, Vh = svdlora.rsvd(A, 5, seed=0, backend=backend)
    assert np.isfinite(U).all() and np.isfinite(S).all()
    assert orthonormality_defect(U) < 1e-10
    U, S, Vh = svdlora.rsvd(A, 5, tol=0.1, seed=0, backend=backend)
    assert S.shape[0] >= 1 and np.isfinite(S).all() and orthonormality_defect(U) < 1e-10
    if scale == 0.0:
        assert S.shape == (1,) and S[0] == 0.0


def test_pca_on_wide_data_centres_through_the_transpose(rsvd_backend):
    backend = rsvd_backend
    rng = np.random.default_rng(7)
    X = rng.standard_normal((30, 200)) @ np.diag(0.9 ** np.arange(200)) + rng.uniform(-4, 4, 200)
    U, S, Vh, mean = svdlora.pca(X, 5, seed=0, backend=backend)
    Xc = X - X.mean(axis=0)
    np.testing.assert_allclose(mean, X.mean(axis=0), rtol=1e-12)
    assert reconstruction_error(Xc, U, S, Vh) <= 1.01 * optimal_error(Xc, 5)


def test_scipy_sparse_with_duplicate_entries_in_tol_mode():
    rows = np.array([0, 0, 1, 2, 3, 3])
    cols = np.array([0, 0, 1, 2, 3, 3])  # (0,0) and (3,3) are stored twice and add up
    A = sp.coo_matrix((np.ones(6), (rows, cols)), shape=(20, 10))
    dense = A.toarray()
    U, S, Vh = svdlora.rsvd(A, 4, tol=0.05, seed=0)
    err = reconstruction_error(dense, U, S, Vh) / np.linalg.norm(dense)
    assert err <= 0.05
    np.testing.assert_allclose(np.sort(S)[::-1][:2], [2.0, 2.0], rtol=1e-10)


@needs_compiled
def test_gesvdr_backend_rejects_what_cusolver_cannot_take():
    with pytest.raises(ValueError, match="cusolver_gesvdr.*CUDA tensor"):
        svdlora.rsvd(torch.randn(30, 20), 5, backend="cusolver_gesvdr")
    with pytest.raises(ValueError, match="cusolver_gesvdr.*CUDA tensor"):
        svdlora.rsvd(np.ones((30, 20)), 5, backend="cusolver_gesvdr")
