"""Finite inputs at the edges of their dtype's range: entries whose squares overflow or
underflow are factorised through an exact power-of-two rescaling (or refused with a reason
when the singular values themselves do not fit), never a NaN or a traceback."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import svdlora
from svdlora import spectral
from helpers import case_seed, needs_compiled, needs_torch, torch

BACKENDS = ["numpy", pytest.param("compiled", marks=needs_compiled)]


def _base(dtype, *params, shape=(120, 80)) -> np.ndarray:
    rng = np.random.default_rng(case_seed("extreme", np.dtype(dtype).name, *params))
    return rng.standard_normal(shape).astype(dtype)


def _assert_scaled_copy(result, reference, exponent: int, dtype) -> None:
    """``result`` is the factorisation of ``reference``'s matrix times 2**exponent.

    Multiplying by a power of two commutes with rounding, so both runs do the same arithmetic
    on the same mantissas: the factors agree to a few units of the dtype's rounding (not
    merely to the accuracy bar), and the singular values scale by exactly 2**exponent.
    """
    eps = float(np.finfo(dtype).eps)
    U, S, Vh = (np.asarray(x, dtype=np.float64) for x in result[:3])
    U0, S0, Vh0 = (np.asarray(x, dtype=np.float64) for x in reference[:3])
    assert np.isfinite(S).all() and np.isfinite(U).all() and np.isfinite(Vh).all()
    tol = 64 * eps
    np.testing.assert_allclose(np.ldexp(S, -exponent), S0, rtol=tol, atol=tol * S0[0])
    np.testing.assert_allclose(U, U0, atol=tol * 16)
    np.testing.assert_allclose(Vh, Vh0, atol=tol * 16)


# exponents that push max|A|^2 past the float32/float64 range (or below its normal range)
EXPONENTS = {np.float32: (110, -110), np.float64: (990, -990)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("direction", [0, 1], ids=["huge", "tiny"])
def test_numpy_input_scaled_to_the_edge_of_its_range(backend, dtype, direction):
    exponent = EXPONENTS[dtype][direction]
    B = _base(dtype, backend, direction)
    A = np.ldexp(B, exponent).astype(dtype)
    with np.errstate(over="ignore", under="ignore"):
        square = np.square(np.abs(A).max())
    assert np.isfinite(A).all()
    assert (not np.isfinite(square)) if direction == 0 else square < np.finfo(dtype).tiny
    result = svdlora.rsvd(A, 5, seed=3, backend=backend)
    reference = svdlora.rsvd(B, 5, seed=3, backend=backend)
    assert result.S.dtype == dtype
    _assert_scaled_copy(result, reference, exponent, dtype)


@needs_torch
@needs_compiled
def test_batched_tensor_scales_each_matrix_on_its_own():
    B = torch.from_numpy(np.stack([_base(np.float32, "batch", i) for i in range(3)]))
    exponents = torch.tensor([110, 0, -110], dtype=torch.int32)
    A = torch.ldexp(B, exponents.view(3, 1, 1).to(torch.float32)).to(torch.float32)
    result = svdlora.rsvd(A, 4, seed=1)
    reference = svdlora.rsvd(B, 4, seed=1)
    for i, e in enumerate(exponents.tolist()):
        _assert_scaled_copy([x[i].numpy() for x in result], [x[i].numpy() for x in reference],
                            e, np.float32)


@pytest.mark.parametrize("backend", ["numpy", "auto"])
def test_sparse_input_near_the_float32_maximum(backend):
    dense = _base(np.float32, "sparse", backend, shape=(200, 150))
    dense[np.abs(dense) < 1.0] = 0.0
    B = sp.csr_matrix(dense)
    A = sp.csr_matrix(np.ldexp(dense, 110).astype(np.float32))
    result = svdlora.rsvd(A, 4, seed=2, backend=backend)
    reference = svdlora.rsvd(B, 4, seed=2, backend=backend)
    _assert_scaled_copy(result, reference, 110, np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pca_of_huge_data_unscales_the_mean(backend):
    B = _base(np.float64, "pca", backend) + 3.0
    A = np.ldexp(B, 990)
    result = svdlora.pca(A, 4, seed=5, backend=backend)
    reference = svdlora.pca(B, 4, seed=5, backend=backend)
    _assert_scaled_copy(result, reference, 990, np.float64)
    np.testing.assert_allclose(np.ldexp(result.mean, -990), reference.mean, rtol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_singular_values_beyond_the_dtype_are_a_clear_error(backend, dtype):
    rng = np.random.default_rng(case_seed("beyond", np.dtype(dtype).name, backend))
    # every entry near half the maximum: the top singular value is ~ sqrt(m n) times larger
    A = (0.5 * np.finfo(dtype).max * rng.uniform(0.5, 1.0, (60, 40))).astype(dtype)
    with pytest.raises(ValueError, match=f"A \\(shape \\(60, 40\\)\\) has singular values "
                                         f"beyond the {np.dtype(dtype).name} range") as err:
        svdlora.rsvd(A, 2, seed=0, backend=backend)
    assert ("pass it as float64" in str(err.value)) == (dtype == np.float32)
    # PCA: columns of random signs keep their spread after centring
    signs = np.where(rng.uniform(size=(60, 40)) < 0.5, -1.0, 1.0)
    X = (0.5 * np.finfo(dtype).max * signs).astype(dtype)
    with pytest.raises(ValueError, match="X \\(shape \\(60, 40\\)\\) has singular values"):
        svdlora.pca(X, 2, seed=0, backend=backend)
    # the same matrix in float64 (float32 case) fits; its dominant singular value (a gap of
    # 20x to the next) is resolved to the float64 rounding level
    if dtype == np.float32:
        U, S, Vh = svdlora.rsvd(A.astype(np.float64), 2, seed=0, backend=backend)
        assert np.isfinite(S).all() and np.isfinite(U).all()
        exact = np.linalg.svd(np.ldexp(A.astype(np.float64), -127), compute_uv=False)
        assert exact[0] > 10 * exact[1]
        assert np.ldexp(S[0], -127) == pytest.approx(exact[0], rel=1e-10)


def test_spectral_functions_are_scale_free_at_the_edges():
    B = _base(np.float64, "spectral", shape=(90, 60))
    S = np.linalg.svd(B, compute_uv=False)
    for exponent in (1000, -1000):
        A = np.ldexp(B, exponent)
        np.testing.assert_allclose(np.ldexp(spectral.singular_values(A), -exponent), S,
                                   rtol=1e-13)
        assert spectral.effective_rank(np.ldexp(S, exponent)) == pytest.approx(
            spectral.effective_rank(S), rel=1e-12)
        W1 = B + 0.3 * _base(np.float64, "spectral-tuned", shape=(90, 60))
        report = spectral.intruder_report(A, np.ldexp(W1, exponent), k=5)
        reference = spectral.intruder_report(B, W1, k=5)
        assert report.count == reference.count and report.examined == reference.examined
        np.testing.assert_allclose(report.max_cosines, reference.max_cosines, atol=1e-12)
    with pytest.raises(ValueError, match="beyond the float64 range"):
        spectral.singular_values(np.full((30, 20), 0.5 * np.finfo(np.float64).max))
