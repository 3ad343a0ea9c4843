"""Bad input to rsvd/pca/rsvd_many: a ValueError/TypeError naming the argument,
before any compiled code runs, and never a crash or a silent NaN."""
from __future__ import annotations

import numpy as np
import pytest

import svdlora
from helpers import needs_compiled, needs_torch, torch

A = np.random.default_rng(0).standard_normal((20, 12))


@pytest.mark.parametrize("bad, match", [
    (np.ones(5), "shape"),                      # 1-D
    (np.ones((0, 4)), "empty"),
    (np.ones((4, 0)), "empty"),
])
def test_wrong_shape_or_empty(bad, match):
    with pytest.raises(ValueError, match=match):
        svdlora.rsvd(bad, 1)


@pytest.mark.parametrize("rank", [0, -1, 13, 100])
def test_rank_out_of_range(rank):
    with pytest.raises(ValueError, match="rank"):
        svdlora.rsvd(A, rank)


@pytest.mark.parametrize("rank", [2.0, "3", None, True])
def test_rank_wrong_type(rank):
    with pytest.raises(TypeError, match="rank"):
        svdlora.rsvd(A, rank)


# integer and boolean input is accepted (computed in float64: test_rsvd_integer_input.py)
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, object, "U3", "datetime64[s]",
                                   np.longdouble])
def test_unsupported_numpy_dtype(dtype):
    with pytest.raises(TypeError, match="A"):
        svdlora.rsvd(A.astype(dtype), 2)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values(value):
    B = A.copy()
    B[3, 4] = value
    with pytest.raises(ValueError, match="NaN or Inf"):
        svdlora.rsvd(B, 2)


def test_huge_finite_values_are_not_mistaken_for_inf():
    # The float32 sum overflows although every value is finite: that must not be reported as
    # NaN/Inf.  A float32 Gram matrix of such values overflows too, which must be a clear
    # error (compiled backend) -- or, where the arithmetic is wide enough (numpy's LAPACK
    # runs in float64), a correct finite result.  Never a silent NaN.
    rng = np.random.default_rng(0)
    B = (1e37 * rng.uniform(0.5, 1, (40, 30))).astype(np.float32)
    try:
        U, S, Vh = svdlora.rsvd(B, 1, seed=0)
    except ValueError as exc:
        assert "overflow" in str(exc)
    else:
        assert np.isfinite(S).all() and np.isfinite(U).all()
        np.testing.assert_allclose(S[0], np.linalg.svd(B.astype(np.float64), compute_uv=False)[0],
                                   rtol=1e-3)
    U, S, Vh = svdlora.rsvd((B / np.float32(1e37)).astype(np.float32), 1, seed=0)
    assert np.isfinite(S).all() and np.isfinite(U).all()


def test_not_an_array():
    with pytest.raises(TypeError, match="A must be"):
        svdlora.rsvd([[1.0, 2.0], [3.0, 4.0]], 1)
    with pytest.raises(TypeError, match="A must be"):
        svdlora.rsvd("matrix", 1)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"oversample": -1}, ValueError, "oversample"),
    ({"oversample": 1.5}, TypeError, "oversample"),
    ({"n_iter": -2}, ValueError, "n_iter"),
    ({"tol": 0.0}, ValueError, "tol"),
    ({"tol": 1.5}, ValueError, "tol"),
    ({"tol": "small"}, TypeError, "tol"),
    ({"seed": -5}, ValueError, "seed"),
    ({"seed": 1.5}, TypeError, "seed"),
    ({"backend": "gpu"}, ValueError, "backend"),
    ({"backend": None}, ValueError, "backend"),
    ({"block_size": 0}, ValueError, "block_size"),
])
def test_bad_keyword_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        svdlora.rsvd(A, 2, **kwargs)


def test_pca_has_no_gesvdr_backend():
    with pytest.raises(ValueError, match="backend"):
        svdlora.pca(A, 2, backend="cusolver_gesvdr")


def test_tol_with_batched_input():
    with pytest.raises(ValueError, match="tol"):
        svdlora.rsvd(np.ones((2, 5, 4)), 1, tol=0.1)


def test_pca_bad_center_and_shape():
    with pytest.raises(TypeError, match="center"):
        svdlora.pca(A, 2, center="yes")
    with pytest.raises(ValueError, match="X"):
        svdlora.pca(np.ones(4), 1)


def test_operator_with_bad_shape():
    class Op:
        shape = (5,)
        def matmat(self, X): return X
        def rmatmat(self, X): return X
    with pytest.raises(ValueError, match="shape"):
        svdlora.rsvd(Op(), 1)


def test_sparse_non_finite():
    sp = pytest.importorskip("scipy.sparse")
    M = sp.csr_matrix(np.eye(5))
    M.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        svdlora.rsvd(M, 1)


@needs_torch
@pytest.mark.parametrize("dtype", ["complex64", "complex128", "float8_e4m3fn"])
def test_unsupported_torch_dtype(dtype):
    with pytest.raises(TypeError, match="A"):
        svdlora.rsvd(torch.ones(5, 4, dtype=getattr(torch, dtype)), 1)


@needs_torch
def test_torch_non_finite_and_empty():
    t = torch.randn(6, 5)
    t[1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        svdlora.rsvd(t, 1)
    half = torch.full((300, 300), 1000.0, dtype=torch.float16)  # fp16 sum overflows, values finite
    with pytest.raises(ValueError, match="NaN"):
        half[0, 0] = float("inf")
        svdlora.rsvd(half, 1)
    with pytest.raises(ValueError, match="empty"):
        svdlora.rsvd(torch.ones(3, 0, 4), 1)


@needs_torch
def test_tensor_on_a_device_without_kernels():
    if svdlora.build_info()["cuda"]:
        pytest.skip("this build has CUDA kernels")
    with pytest.raises(ValueError, match="A is on meta"):
        svdlora.rsvd(torch.ones(5, 4, device="meta"), 1)


@needs_compiled
def test_backend_numpy_rejects_bf16_tensor_and_compiled_rejects_sparse():
    with pytest.raises(ValueError, match="backend"):
        svdlora.rsvd(torch.ones(5, 4, dtype=torch.bfloat16), 1, backend="numpy")
    sp = pytest.importorskip("scipy.sparse")
    with pytest.raises(ValueError, match="backend"):
        svdlora.rsvd(sp.eye(5, format="csr"), 1, backend="compiled")


@needs_compiled
def test_direct_op_calls_are_checked_not_crashing():
    op = torch.ops.svdlora.rsvd
    X = torch.randn(10, 6)
    with pytest.raises(RuntimeError, match="omega"):
        op(X, torch.randn(5, 3), None, 2, 1)              # wrong omega rows
    with pytest.raises(RuntimeError, match="dtype"):
        op(X, torch.randn(6, 3, dtype=torch.float64), None, 2, 1)
    with pytest.raises(RuntimeError, match="rank"):
        op(X, torch.randn(6, 3), None, 4, 1)
    with pytest.raises(RuntimeError, match="float"):
        op(torch.ones(10, 6, dtype=torch.int64), torch.randn(6, 3), None, 2, 1)
    with pytest.raises(RuntimeError, match="col_mean"):
        op(X, torch.randn(6, 3), torch.zeros(5), 2, 1)
    with pytest.raises(RuntimeError, match="col_mean"):  # batch dims must match A's
        op(torch.randn(2, 10, 6), torch.randn(6, 3), torch.zeros(3, 6), 2, 1)
