"""The compiled rsvd ops themselves: opcheck (schema, fake kernel, dispatch), torch.compile,
determinism and, on CUDA, graph capture."""
from __future__ import annotations

import numpy as np
import pytest

import svdlora
from helpers import cuda_only, matrix_with_spectrum, needs_compiled, spectrum, torch

pytestmark = needs_compiled


def _inputs(dtype=None, batch=(), device="cpu"):
    g = torch.Generator().manual_seed(0)
    dtype = dtype or torch.float32
    A = torch.randn(*batch, 40, 25, generator=g).to(dtype)
    cdtype = torch.float64 if dtype == torch.float64 else torch.float32
    omega = torch.randn(25, 9, generator=g, dtype=cdtype)
    return A.to(device), omega.to(device)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("batch", [(), (3,)])
@pytest.mark.parametrize("centred", [False, True])
def test_opcheck_rsvd(dtype, batch, centred, device):
    A, omega = _inputs(getattr(torch, dtype), batch, device)
    mean = A.float().mean(-2).to(omega.dtype) if centred else None
    torch.library.opcheck(torch.ops.svdlora.rsvd.default, (A, omega, mean, 5, 2))


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("batch", [(), (3,)])
@pytest.mark.parametrize("centred", [False, True])
@pytest.mark.parametrize("stop_tol, gain_tol", [(0.0, 0.0), (0.01, 0.005)])
def test_opcheck_rsvd_krylov(dtype, batch, centred, stop_tol, gain_tol, device):
    A, omega = _inputs(getattr(torch, dtype), batch, device)
    omega = omega[:, :6].contiguous()  # blocks of 6: 3 V blocks after 4 passes fit in 25
    mean = A.float().mean(-2).to(omega.dtype) if centred else None
    torch.library.opcheck(torch.ops.svdlora.rsvd_krylov.default,
                          (A, omega, mean, 5, 1, 4, stop_tol, gain_tol))


def test_opcheck_rsvd_wide_matrix():
    A, omega = _inputs()
    torch.library.opcheck(torch.ops.svdlora.rsvd.default, (A.T.contiguous(), omega, None, 4, 1))


def test_opcheck_rsvd_adaptive():
    A, omega = _inputs(torch.float64)
    torch.library.opcheck(torch.ops.svdlora.rsvd_adaptive.default, (A, omega, None, 0.5, 4, 8, 1),
                          test_utils=("test_schema", "test_faketensor"))


def test_op_is_deterministic_given_omega():
    A, omega = _inputs()
    r1 = torch.ops.svdlora.rsvd(A, omega, None, 5, 2)
    r2 = torch.ops.svdlora.rsvd(A, omega, None, 5, 2)
    for a, b in zip(r1, r2):
        assert torch.equal(a, b)


def test_torch_compile_fullgraph_smoke():
    A, omega = _inputs()

    def lowrank(A, omega):
        U, S, Vh = torch.ops.svdlora.rsvd(A, omega, None, 5, 2)
        return (U * S) @ Vh

    compiled = torch.compile(lowrank, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(A, omega), lowrank(A, omega))


def test_numpy_and_torch_inputs_share_the_op_result():
    A = np.random.default_rng(1).standard_normal((30, 20)).astype(np.float32)
    Un, Sn, Vhn = svdlora.rsvd(A, 4, seed=3)
    Ut, St, Vht = svdlora.rsvd(torch.from_numpy(A), 4, seed=3)
    np.testing.assert_array_equal(Sn, St.numpy())
    np.testing.assert_array_equal(Un, Ut.numpy())


@cuda_only
def test_cuda_graph_capture_and_replay():
    A = torch.from_numpy(matrix_with_spectrum(512, 384, spectrum("i^-1", 384))).float().cuda()
    omega = torch.randn(384, 26, device="cuda")
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
