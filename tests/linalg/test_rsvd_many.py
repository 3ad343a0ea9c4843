"""svdlora.rsvd_many: grouping by shape, batching under a memory cap, equality with rsvd."""
from __future__ import annotations

import numpy as np
import pytest

import svdlora
from helpers import (matrix_with_spectrum, needs_compiled, optimal_error,
                     reconstruction_error, spectrum)


def matrices(seed: int = 0):
    rng = np.random.default_rng(seed)
    shapes = [(60, 40), (40, 60), (60, 40), (30, 30), (60, 40), (40, 60)]
    return [(rng.standard_normal(s) / np.arange(1, s[1] + 1)).astype(np.float32) for s in shapes]


@pytest.mark.parametrize("budget", [1, 10**9])
def test_equals_one_call_per_matrix(budget):
    mats = matrices()
    many = svdlora.rsvd_many(mats, 8, seed=3, max_stack_bytes=budget)
    assert len(many) == len(mats)
    for A, (U, S, Vh) in zip(mats, many):
        U1, S1, Vh1 = svdlora.rsvd(A, 8, seed=3)
        assert U.shape == (A.shape[0], 8) and Vh.shape == (8, A.shape[1])
        np.testing.assert_allclose(S, S1, rtol=1e-5)
        np.testing.assert_allclose(U * S @ Vh, U1 * S1 @ Vh1, atol=1e-5 * np.abs(A).max())


def test_rank_is_capped_per_matrix_and_dtypes_are_kept():
    rng = np.random.default_rng(1)
    mats = [rng.standard_normal((50, 5)), rng.standard_normal((50, 20)).astype(np.float32)]
    (U0, S0, _), (U1, S1, _) = svdlora.rsvd_many(mats, 10, seed=0)
    assert S0.shape == (5,) and S0.dtype == np.float64
    assert S1.shape == (10,) and S1.dtype == np.float32


@needs_compiled
def test_torch_bf16_and_float32_mixed(device):
    import torch

    gen = torch.Generator().manual_seed(0)
    mats = [torch.randn(64, 48, generator=gen).to(device, torch.bfloat16) for _ in range(3)]
    mats += [torch.randn(48, 64, generator=gen).to(device) for _ in range(2)]
    out = svdlora.rsvd_many(mats, 4, seed=1, max_stack_bytes=2 * 64 * 48 * 2)
    for A, (U, S, Vh) in zip(mats, out):
        ref = svdlora.rsvd(A, 4, seed=1)
        assert S.dtype == torch.float32 and U.device == A.device
        torch.testing.assert_close(S, ref.S, rtol=1e-5, atol=1e-6)
        assert reconstruction_error(A, U, S, Vh) <= 1.01 * optimal_error(A, 4)


@needs_compiled
def test_decaying_weights_of_several_shapes_meet_the_accuracy_bar(device):
    import torch

    mats = [torch.from_numpy(matrix_with_spectrum(256, 128, spectrum("i^-1", 128), seed=s))
            .to(device, torch.bfloat16) for s in range(3)]
    mats.append(torch.from_numpy(matrix_with_spectrum(128, 256, spectrum("i^-1", 128), seed=9))
                .to(device, torch.float32))
    for A, (U, S, Vh) in zip(mats, svdlora.rsvd_many(mats, 16, seed=0)):
        assert U.device == A.device
        assert reconstruction_error(A, U, S, Vh) <= 1.01 * optimal_error(A, 16)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: svdlora.rsvd_many([], 3), ValueError, "must not be empty"),
    (lambda: svdlora.rsvd_many(np.ones((3, 3)), 3), ValueError, "matrices\\[0\\]"),
    (lambda: svdlora.rsvd_many("abc", 3), TypeError, "sequence"),
    (lambda: svdlora.rsvd_many([np.ones((4, 4)), np.ones(3)], 2), ValueError, "matrices\\[1\\]"),
    (lambda: svdlora.rsvd_many([np.ones((4, 4))], 0), ValueError, "rank"),
    (lambda: svdlora.rsvd_many([np.ones((4, 4))], 2, max_stack_bytes=0), ValueError,
     "max_stack_bytes"),
    (lambda: svdlora.rsvd_many([np.full((4, 4), np.nan)], 2), ValueError, "NaN"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
