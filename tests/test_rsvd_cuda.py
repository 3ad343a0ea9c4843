"""The CUDA rsvd op: accuracy bar, parity with the CPU op, bf16 read in place, batching,
non-contiguous inputs, opcheck, CUDA-graph capture and the cuSOLVER gesvdr peer.

Every test here needs a GPU and a CUDA build of svdlora; without them the module is skipped.
Run `compute-sanitizer --tool memcheck python -m pytest tests/test_rsvd_cuda.py` on a GPU
machine as well (scripts/gpu_checks.sh does both).
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import (HAS_CUDA, assert_sign_convention, matrix_with_spectrum, optimal_error,
                      orthonormality_defect, reconstruction_error, spectrum, torch)

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU and a CUDA build of svdlora")]

import svdlora  # noqa: E402

SHAPES = [(700, 420), (420, 700), (520, 520)]
SPECTRA = ["i^-0.5", "i^-1", "i^-2", "noise+spikes"]


def cuda_matrix(shape, spec, dtype, seed=0):
    m, n = shape
    A = matrix_with_spectrum(m, n, spectrum(spec, min(m, n)), seed=seed)
    return torch.from_numpy(A).to("cuda", dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("spec", SPECTRA)
@pytest.mark.parametrize("k", [1, 5, 32, 100])
def test_accuracy_bar(dtype, shape, spec, k):
    A = cuda_matrix(shape, spec, getattr(torch, dtype))
    U, S, Vh = svdlora.rsvd(A, k, seed=0)
    assert U.is_cuda and U.dtype == A.dtype
    assert reconstruction_error(A, U, S, Vh) <= 1.01 * optimal_error(A, k) + 1e-12
    tol = 1e-5 if dtype == "float32" else 1e-12
    assert orthonormality_defect(U) <= tol and orthonormality_defect(Vh.mT) <= tol
    assert bool((S[:-1] >= S[1:]).all()) and bool((S >= 0).all())
    assert_sign_convention(U)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16] if torch else [])
def test_low_precision_input_read_in_place(dtype):
    A = cuda_matrix((4096, 2048), "i^-1", dtype)
    k = 32
    svdlora.rsvd(A, k, seed=0)  # warm-up: cuBLAS allocates its workspace on first use
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    U, S, Vh = svdlora.rsvd(A, k, seed=0)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    assert S.dtype == torch.float32
    # the optimum of the matrix as stored (its bf16/fp16 values are exact)
    assert reconstruction_error(A, U, S, Vh) <= 1.01 * optimal_error(A, k)
    # thin panels only: far below one fp32 copy of A (4 bytes per entry)
    assert peak < A.numel() * 4 / 2, "an fp32-sized copy of A was made"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_parity_with_cpu_op_given_the_same_sketch(dtype):
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


def test_batched_and_non_contiguous_inputs():
    mats = [matrix_with_spectrum(200, 150, spectrum("i^-1", 150), seed=s) for s in range(4)]
    A = torch.from_numpy(np.stack(mats)).float().cuda()
    for view in (A, A.mT, A[:, ::2, :], A.mT.contiguous().mT):
        U, S, Vh = svdlora.rsvd(view, 8, seed=0)
        for i in range(view.shape[0]):
            assert reconstruction_error(view[i], U[i], S[i], Vh[i]) <= \
                1.01 * optimal_error(view[i], 8) + 1e-6
            assert orthonormality_defect(U[i]) <= 1e-5


@pytest.mark.parametrize("true_rank", [1, 3])
def test_rank_deficient_and_zero_inputs(true_rank):
    rng = np.random.default_rng(true_rank)
    A = torch.from_numpy(rng.standard_normal((80, true_rank)) @ rng.standard_normal((true_rank, 50)))
    for t, rel in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        U, S, Vh = svdlora.rsvd(A.to("cuda", t), 12, seed=0)
        assert int((S > rel * S[0]).sum()) == true_rank
        assert orthonormality_defect(U) <= (1e-5 if t == torch.float32 else 1e-10)
    U, S, Vh = svdlora.rsvd(torch.zeros(60, 40, device="cuda"), 5, seed=0)
    assert bool(torch.isfinite(U).all()) and float(S.abs().max()) == 0.0
    assert orthonormality_defect(U) <= 1e-5


def test_pca_centering_on_cuda():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((300, 40)) @ np.diag(np.linspace(3, 0.1, 40)) + 5.0
    gpu = svdlora.pca(torch.from_numpy(X).cuda(), 5, seed=0)
    cpu = svdlora.pca(torch.from_numpy(X), 5, seed=0)
    torch.testing.assert_close(gpu.S.cpu(), cpu.S, rtol=1e-10, atol=0)
    torch.testing.assert_close(gpu.mean.cpu(), cpu.mean)


def test_adaptive_rank_on_cuda():
    A = cuda_matrix((600, 400), "i^-1", torch.float64)
    U, S, Vh = svdlora.rsvd(A, 200, tol=0.05, seed=0)
    err = reconstruction_error(A, U, S, Vh) / float(torch.linalg.norm(A))
    assert err <= 0.05
    cpu = svdlora.rsvd(A.cpu(), 200, tol=0.05, seed=0)
    assert S.shape == cpu.S.shape


def test_opcheck_on_cuda():
    A = cuda_matrix((120, 80), "i^-1", torch.float32)
    omega = torch.randn(80, 12, device="cuda")
    torch.library.opcheck(torch.ops.svdlora.rsvd.default, (A, omega, None, 6, 2))
    torch.library.opcheck(torch.ops.svdlora.rsvd.default,
                          (A.to(torch.bfloat16), omega, None, 6, 1))


def test_cuda_graph_capture_and_replay():
    A = cuda_matrix((512, 384), "i^-1", torch.float32)
    omega = torch.randn(384, 26, device="cuda", generator=None)
    eager = torch.ops.svdlora.rsvd(A, omega, None, 16, 2)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on a side stream, as torch recommends
        torch.ops.svdlora.rsvd(A, omega, None, 16, 2)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = torch.ops.svdlora.rsvd(A, omega, None, 16, 2)
    A.mul_(2.0)  # new data in the captured input buffer
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(captured[1], 2.0 * eager[1], rtol=1e-5, atol=0)


def test_cusolver_gesvdr_peer():
    A = cuda_matrix((800, 600), "i^-1", torch.float32)
    U, S, Vh = svdlora.rsvd(A, 20, seed=0, backend="cusolver_gesvdr")
    assert U.shape == (800, 20) and Vh.shape == (20, 600)
    assert reconstruction_error(A, U, S, Vh) <= 1.05 * optimal_error(A, 20)


def test_rsvd_many_on_cuda():
    mats = [cuda_matrix((256, 128), "i^-1", torch.bfloat16, seed=s) for s in range(3)]
    mats.append(cuda_matrix((128, 256), "i^-1", torch.float32, seed=9))
    out = svdlora.rsvd_many(mats, 16, seed=0)
    for A, (U, S, Vh) in zip(mats, out):
        assert U.is_cuda
        assert reconstruction_error(A, U, S, Vh) <= 1.01 * optimal_error(A, 16)
