"""Integer and boolean input (count matrices, masks) and the dtype= choice: computed in
float64 by default or in the dtype asked for, identical to factorising the float conversion,
sparse input never densified, complex input still a TypeError."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import svdlora
from svdlora import spectral
from helpers import case_seed, needs_torch, reconstruction_error, torch

sp = pytest.importorskip("scipy.sparse")


def _counts(dtype, *params, shape=(300, 200), rate=0.3) -> np.ndarray:
    """A term-document-like count matrix: mostly zeros, small non-negative integers."""
    rng = np.random.default_rng(case_seed("counts", np.dtype(dtype).name, *params))
    return rng.poisson(rate, shape).astype(dtype)


def _assert_same(result, reference) -> None:
    for got, want in zip(result, reference):
        got, want = np.asarray(got), np.asarray(want)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.int8, np.bool_])
@pytest.mark.parametrize("kind", ["dense", "csr", "csc", "coo"])
def test_integer_and_boolean_input_computes_in_float64(dtype, kind, rsvd_backend):
    if kind != "dense" and rsvd_backend == "compiled":
        pytest.skip("the compiled backend takes dense input only")
    C = _counts(dtype, kind)
    A = C if kind == "dense" else getattr(sp, f"{kind}_matrix")(C)
    reference = svdlora.rsvd(A.astype(np.float64), 6, seed=4, backend=rsvd_backend)
    result = svdlora.rsvd(A, 6, seed=4, backend=rsvd_backend)
    assert result.S.dtype == np.float64
    _assert_same(result, reference)  # exactly the factorisation of the float64 conversion
    s = np.linalg.svd(C.astype(np.float64), compute_uv=False)
    assert reconstruction_error(C.astype(np.float64), *result) <= 1.01 * np.sqrt(np.sum(s[6:] ** 2))


@pytest.mark.parametrize("dtype", ["float32", np.float32])
def test_dtype_float32_on_request(dtype, rsvd_backend):
    C = _counts(np.int64, "f32")
    result = svdlora.rsvd(C, 5, seed=2, dtype=dtype, backend=rsvd_backend)
    _assert_same(result, svdlora.rsvd(C.astype(np.float32), 5, seed=2, backend=rsvd_backend))
    assert result.U.dtype == np.float32


def test_dtype_converts_float_input_and_keeps_it_when_it_matches(rsvd_backend):
    A = np.random.default_rng(case_seed("float-dtype")).standard_normal((120, 90)).astype(np.float32)
    up = svdlora.rsvd(A, 4, seed=0, dtype="float64", backend=rsvd_backend)
    _assert_same(up, svdlora.rsvd(A.astype(np.float64), 4, seed=0, backend=rsvd_backend))
    same = svdlora.rsvd(A, 4, seed=0, dtype=np.float32, backend=rsvd_backend)
    _assert_same(same, svdlora.rsvd(A, 4, seed=0, backend=rsvd_backend))


def test_pca_of_counts_has_a_float64_mean():
    C = _counts(np.int32, "pca")
    result = svdlora.pca(sp.csr_matrix(C), 4, seed=1)
    reference = svdlora.pca(sp.csr_matrix(C.astype(np.float64)), 4, seed=1)
    _assert_same(result, reference)
    np.testing.assert_allclose(result.mean, C.mean(axis=0), rtol=1e-14)


def test_sparse_counts_are_never_densified():
    # 20000 x 5000 at 0.1% density: a dense float64 copy would take 800 MB, the sparse one
    # (values, indices, row pointers) about 1.3 MB
    rng = np.random.default_rng(case_seed("no-dense-copy"))
    m, n, nnz = 20000, 5000, 100_000
    C = sp.csr_matrix((rng.integers(1, 5, nnz).astype(np.int64),
                       (rng.integers(0, m, nnz), rng.integers(0, n, nnz))), shape=(m, n))
    tracemalloc.start()
    try:
        U, S, Vh = svdlora.rsvd(C, 10, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the factors and sketches: (m + n) x (k + p) float64 panels, a few of them at a time
    assert peak < 60 * 2**20, peak
    assert S.dtype == np.float64 and U.shape == (m, 10)


@needs_torch
@pytest.mark.parametrize("layout", ["dense", "coo", "csr"])
def test_integer_torch_tensors(layout):
    C = torch.from_numpy(_counts(np.int64, "torch", layout))
    A = {"dense": lambda: C, "coo": C.to_sparse, "csr": C.to_sparse_csr}[layout]()
    result = svdlora.rsvd(A, 5, seed=3)
    assert result.S.dtype == torch.float64
    reference = svdlora.rsvd(A.to(torch.float64), 5, seed=3)
    for got, want in zip(result, reference):
        assert torch.equal(got, want)
    boolean = svdlora.rsvd(C > 0, 5, seed=3, dtype=torch.float32)
    assert boolean.S.dtype == torch.float32
    for got, want in zip(boolean, svdlora.rsvd((C > 0).to(torch.float32), 5, seed=3)):
        assert torch.equal(got, want)


def test_integer_linear_operator():
    spla = pytest.importorskip("scipy.sparse.linalg")
    C = _counts(np.int64, "operator")
    op = spla.aslinearoperator(sp.csr_matrix(C))
    assert op.dtype.kind == "i"
    result = svdlora.rsvd(op, 5, seed=6)
    assert result.S.dtype == np.float64
    s = np.linalg.svd(C.astype(np.float64), compute_uv=False)
    assert reconstruction_error(C.astype(np.float64), *result) <= 1.01 * np.sqrt(np.sum(s[5:] ** 2))


def test_spectral_functions_take_counts():
    C = _counts(np.int16, "spectral", shape=(60, 40), rate=2.0)
    np.testing.assert_array_equal(spectral.singular_values(C),
                                  np.linalg.svd(C.astype(np.float64), compute_uv=False))


def test_complex_input_and_bad_dtype_arguments_are_rejected():
    C = _counts(np.int64, "bad")
    with pytest.raises(TypeError, match="A has complex dtype"):
        svdlora.rsvd(C + 1j, 3)
    with pytest.raises(TypeError, match="X has complex dtype"):
        svdlora.pca(sp.csr_matrix(C.astype(np.complex64)), 3)
    with pytest.raises(ValueError, match="dtype must be float32 or float64, got int8"):
        svdlora.rsvd(C, 3, dtype="int8")
    with pytest.raises(ValueError, match="dtype must be float32 or float64, got float16"):
        svdlora.rsvd(C, 3, dtype=np.float16)
    with pytest.raises(TypeError, match="dtype must be None"):
        svdlora.rsvd(C, 3, dtype=object())
    with pytest.raises(TypeError, match="dtype must be None"):
        svdlora.pca(C, 3, dtype="a string that is no dtype")
