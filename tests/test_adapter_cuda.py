"""The SVD-LoRA ops on CUDA: against the CPU op and a plain-torch reference (fp32 to 1e-5;
bf16 within 2x the error of the same math in plain bf16 torch), both modes, batch dims,
non-contiguous x, inner_rank 1..r, r up to 1024, opcheck, torch.compile and CUDA graphs.

Skipped without a GPU and a CUDA build.  On a GPU machine also run it under
`compute-sanitizer --tool memcheck` (scripts/gpu_checks.sh)."""
from __future__ import annotations

import pytest

from conftest import HAS_CUDA, torch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU and a CUDA build of svdlora")]

import svdlora  # noqa: E402


def factors(D, K, r, rr, dtype=torch.float32 if torch else None, seed=0):
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(D, r, generator=g, dtype=torch.float64))[0]
    Vh = torch.linalg.qr(torch.randn(K, r, generator=g, dtype=torch.float64))[0].T
    S = torch.rand(r, generator=g, dtype=torch.float64) + 0.5
    X = torch.randn(r, rr, generator=g, dtype=torch.float64) / rr ** 0.5
    Y = torch.randn(rr, r, generator=g, dtype=torch.float64) / r ** 0.5
    return [t.to("cuda", dtype).contiguous() for t in (U, S, Vh, X, Y)]


def reference(x, U, S, Vh, X, Y, scale, base_weight=None, bias=None):
    C = torch.diag(S) + scale * X @ Y
    y = ((x @ Vh.T) @ C.T) @ U.T
    if base_weight is not None:
        y = y + x @ base_weight.T
    return y if bias is None else y + bias


def run_both(x, fac, scale, keep):
    D, K = fac[0].shape[0], fac[2].shape[1]
    extra = {"bias": torch.randn(D, device="cuda", dtype=x.dtype)}
    if keep:
        extra["base_weight"] = torch.randn(D, K, device="cuda", dtype=x.dtype) / K ** 0.5
    params = [t.clone().requires_grad_(i in (1, 3, 4)) for i, t in enumerate(fac)]
    xs = x.clone().requires_grad_(True)
    y = svdlora.svd_lora_linear(xs, *params, scale, **extra)
    dy = torch.randn_like(y)
    y.backward(dy)
    grads = [xs.grad] + [params[i].grad for i in (1, 3, 4)]
    return y, grads, extra, dy


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("rr", [1, 8, 64])
def test_float32_matches_cpu_op_and_reference(keep, rr):
    fac = factors(256, 192, 64, rr)
    x = torch.randn(3, 50, 192, device="cuda")
    y, grads, extra, dy = run_both(x, fac, 0.5, keep)
    # CPU op on the same data
    cpu_params = [t.cpu().clone().requires_grad_(i in (1, 3, 4)) for i, t in enumerate(fac)]
    xc = x.cpu().requires_grad_(True)
    yc = svdlora.svd_lora_linear(xc, *cpu_params, 0.5, **{k: v.cpu() for k, v in extra.items()})
    yc.backward(dy.cpu())
    torch.testing.assert_close(y.cpu(), yc, rtol=1e-5, atol=1e-5)
    for g, gc in zip(grads, [xc.grad] + [cpu_params[i].grad for i in (1, 3, 4)]):
        torch.testing.assert_close(g.cpu(), gc, rtol=1e-5, atol=1e-4)
    # plain-torch reference in float64
    ref_params = [t.double().clone().requires_grad_(i in (1, 3, 4)) for i, t in enumerate(fac)]
    xr = x.double().requires_grad_(True)
    yr = reference(xr, *ref_params, 0.5, **{k: v.double() for k, v in extra.items()})
    yr.backward(dy.double())
    torch.testing.assert_close(y.double(), yr, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("keep", [False, True])
def test_bfloat16_error_within_twice_plain_torch_bf16(keep):
    fac32 = factors(512, 384, 128, 16)
    x32 = torch.randn(4096, 384, device="cuda")
    exact, _, extra32, _ = run_both(x32.double(), [t.double() for t in fac32], 0.5, keep)
    fac = [t.to(torch.bfloat16) if i in (0, 2) else t for i, t in enumerate(fac32)]
    x = x32.to(torch.bfloat16)
    extra = {k: v.to(torch.bfloat16) for k, v in extra32.items()}
    ours = svdlora.svd_lora_linear(x, *fac, 0.5, **extra)
    plain = reference(x, *[t.to(torch.bfloat16) for t in fac32], 0.5, **extra)
    err_ours = (ours.double() - exact.detach()).abs().max()
    err_plain = (plain.double() - exact.detach()).abs().max()
    assert err_ours <= 2 * err_plain


@pytest.mark.parametrize("r", [256, 1024])
def test_large_rank_and_non_contiguous_x(r):
    fac = factors(1024, 1024, r, 16)
    x = torch.randn(64, 2048, device="cuda")[:, ::2]  # non-contiguous
    y = svdlora.svd_lora_linear(x, *fac, 1.0)
    torch.testing.assert_close(y.double(), reference(x.double(), *[t.double() for t in fac], 1.0),
                               rtol=1e-5, atol=1e-4)


def test_module_on_cuda_matches_cpu_module():
    lin = torch.nn.Linear(96, 80)
    layer = svdlora.SVDLoRALinear.from_linear(lin, 32, 4, residual=True)
    with torch.no_grad():
        layer.Y.normal_(0, 0.1)
    gpu = svdlora.SVDLoRALinear.from_linear(lin, 32, 4, residual=True).cuda()
    gpu.load_state_dict(layer.state_dict())
    x = torch.randn(7, 96)
    torch.testing.assert_close(gpu(x.cuda()).cpu(), layer(x), rtol=1e-5, atol=1e-5)


def test_opcheck_compile_and_graph_capture():
    fac = factors(64, 48, 16, 4)
    x = torch.randn(10, 48, device="cuda")
    torch.library.opcheck(torch.ops.svdlora.adapter_forward.default,
                          (x, *fac, 0.5, None, None, None))
    h = x @ fac[2].T
    dy = torch.randn(10, 64, device="cuda")
    torch.library.opcheck(torch.ops.svdlora.adapter_backward.default,
                          (dy, h, *fac, 0.5, None, True))
    compiled = torch.compile(lambda t: svdlora.svd_lora_linear(t, *fac, 0.5), fullgraph=True)
    torch.testing.assert_close(compiled(x), svdlora.svd_lora_linear(x, *fac, 0.5))
    static_x = x.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        svdlora.svd_lora_linear(static_x, *fac, 0.5)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = svdlora.svd_lora_linear(static_x, *fac, 0.5)
    static_x.copy_(2 * x)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(static_y, 2 * svdlora.svd_lora_linear(x, *fac, 0.5))
