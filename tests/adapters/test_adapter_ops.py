"""The fused SVD-LoRA op (svdlora.svd_lora_linear) against the library's pure-torch reference
on every device: values and gradients in float64 (autograd of the reference is the oracle),
float32, bf16 within twice the error of exact bf16 storage, both core paths, batch dims and
strides, opcheck, torch.compile, CUDA graphs, the reference fallback and bad input."""
from __future__ import annotations

import pytest

from helpers import (adapter_factors, cuda_only, needs_compiled, needs_torch,
                     reference_output, torch)

pytestmark = needs_torch

BASES = ["drop", "keep_weight", "keep_out"]
# (N, r, r', structured): the core formed as an r x r matrix, and applied through its structure
CORE_PATHS = [(64, 32, 24, False), (2048, 128, 4, True)]


def op(*args, **kw):
    import svdlora
    return svdlora.svd_lora_linear(*args, **kw)


def base_args(kind, lead, D=12, K=10, *, requires_grad=False, device="cpu", dtype=None):
    """Keyword arguments of the three ways the op is called: drop mode (bias), keep mode with
    a plain base weight (+ bias), keep mode with an opaque base layer's output."""
    g = torch.Generator().manual_seed(11)
    dt = dtype or torch.float64

    def rand(*shape, grad=False):
        t = torch.randn(*shape, generator=g, dtype=torch.float64).to(device, dt)
        return t.requires_grad_(grad)

    if kind == "drop":
        return {"bias": rand(D, grad=requires_grad)}
    if kind == "keep_weight":
        return {"base_weight": rand(D, K) / K ** 0.5, "bias": rand(D)}
    return {"base_out": rand(*lead, D, grad=requires_grad)}


def grads(y, wrt, dy):
    return torch.autograd.grad(y, wrt, dy)


@needs_compiled
@pytest.mark.parametrize("rr", [1, 3, 6])
@pytest.mark.parametrize("kind", BASES)
def test_gradcheck_float64(rr, kind, device):
    U, S, Vh, X, Y = adapter_factors(rr=rr, device=device)
    x = torch.randn(2, 3, 10, dtype=torch.float64, device=device, requires_grad=True)
    kw = base_args(kind, (2, 3), requires_grad=True, device=device)
    names = sorted(kw)

    def fn(x, S, X, Y, *extra):
        return op(x, U, S, Vh, X, Y, 0.7, **dict(zip(names, extra)), backend="compiled")

    assert torch.autograd.gradcheck(fn, (x, S, X, Y, *(kw[n] for n in names)))


# (5, 7): fewer tokens than D, the core is applied to the activations in forward;
# (10, 9): more tokens than D and K, the core is folded into U and Vh in both directions.
@needs_compiled
@pytest.mark.parametrize("lead", [(5, 7), (10, 9)])
@pytest.mark.parametrize("kind", BASES)
def test_matches_the_reference_in_float64(kind, lead, device):
    U, S, Vh, X, Y = adapter_factors(D=40, K=30, r=16, rr=4, device=device)
    x = torch.randn(*lead, 30, dtype=torch.float64, device=device, requires_grad=True)
    kw = base_args(kind, lead, D=40, K=30, device=device)
    y = op(x, U, S, Vh, X, Y, 1.3, **kw, backend="compiled")
    y_ref = reference_output(x, U, S, Vh, X, Y, 1.3, **kw)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y)
    for a, b in zip(grads(y, (x, S, X, Y), dy), grads(y_ref, (x, S, X, Y), dy)):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


@needs_compiled
@pytest.mark.parametrize("rr", [1, 8, 64])
@pytest.mark.parametrize("kind", BASES)
def test_float32_matches_the_float64_reference(kind, rr, device):
    # float32 rounding of a K=192 / r=64 chain: relative errors of a few 1e-7
    U, S, Vh, X, Y = adapter_factors(D=256, K=192, r=64, rr=rr, device=device)
    x = torch.randn(3, 50, 192, dtype=torch.float64, device=device, requires_grad=True)
    kw = base_args(kind, (3, 50), D=256, K=192, device=device)
    y_ref = reference_output(x, U, S, Vh, X, Y, 0.5, **kw)
    dy = torch.randn_like(y_ref)
    g_ref = grads(y_ref, (x, S, X, Y), dy)
    f32 = [t.detach().float().requires_grad_(t.requires_grad) for t in (x, U, S, Vh, X, Y)]
    y = op(*f32, 0.5, **{k: v.float() for k, v in kw.items()}, backend="compiled")
    scale = float(y_ref.detach().abs().max())
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5 * scale)
    for a, b in zip(grads(y, (f32[0], f32[2], f32[4], f32[5]), dy.float()), g_ref):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5 * float(b.detach().abs().max()))


@needs_compiled
@pytest.mark.parametrize("kind", BASES)
def test_outputs_are_not_views_and_allow_in_place_ops(kind, device):
    # a custom op that returned a view would make autograd refuse y.relu_() (or an in-place
    # nn.ReLU / dropout after the layer)
    U, S, Vh, X, Y = adapter_factors(D=40, K=30, r=16, rr=4, device=device)
    x = torch.randn(4, 6, 30, dtype=torch.float64, device=device, requires_grad=True)
    kw = base_args(kind, (4, 6), D=40, K=30, device=device)
    y = op(x, U, S, Vh, X, Y, 0.9, **kw)
    assert y._base is None
    y.relu_()
    dy = torch.randn_like(y)
    got = grads(y, (x, S, X, Y), dy)
    y_ref = reference_output(x, U, S, Vh, X, Y, 0.9, **kw).relu()
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(got, grads(y_ref, (x, S, X, Y), dy)):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)
    assert got[0]._base is None


@needs_compiled
@pytest.mark.parametrize("r", [8, 256, 1024])
def test_non_contiguous_batched_x_and_large_ranks(r, device):
    U, S, Vh, X, Y = adapter_factors(D=1024, K=1024, r=r, rr=16, dtype=torch.float32,
                                     device=device)
    x = torch.randn(4, 6, 2048, device=device)[..., ::2]  # (4, 6, 1024), non-contiguous
    assert not x.is_contiguous()
    y = op(x, U, S, Vh, X, Y, 1.0)
    expected = reference_output(*(t.double() for t in (x, U, S, Vh, X, Y)), 1.0)
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-4)


def test_core_path_choice_is_what_the_tests_assume():
    from svdlora._extension import compiled
    if compiled is None:
        pytest.skip("svdlora built without its compiled core")
    for N, r, rr, structured in CORE_PATHS:
        assert compiled._adapter_core_is_structured(N, r, rr) is structured


@needs_compiled
@pytest.mark.parametrize("kind", BASES)
def test_structured_core_matches_the_reference(kind, device):
    # tokens x rank large enough for the structured core; gradients against the reference
    N, r, rr = 2048, 128, 4
    U, S, Vh, X, Y = adapter_factors(D=160, K=144, r=r, rr=rr, device=device)
    x = torch.randn(N // 8, 8, 144, dtype=torch.float64, device=device, requires_grad=True)
    kw = base_args(kind, (N // 8, 8), D=160, K=144, requires_grad=True, device=device)
    y = op(x, U, S, Vh, X, Y, 0.6, **kw, backend="compiled")
    y_ref = reference_output(x, U, S, Vh, X, Y, 0.6, **kw)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y)
    wrt = (x, S, X, Y, *(t for t in kw.values() if t.requires_grad))
    for a, b in zip(grads(y, wrt, dy), grads(y_ref, wrt, dy)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def _bf16_storage_floor(reference, ins, kw, dy, scale):
    """(exact, floor): forward and backward of the reference in float64 on the given
    (already bf16-representable) values, exactly and with every stored intermediate rounded
    to bf16 -- the error any bf16-storage / wide-accumulation evaluation commits, computed
    without the CPU's bf16 kernels."""
    x, U, S, Vh, X, Y = ins
    out = {}
    for storage in (None, torch.bfloat16):
        y, h = reference.forward(x, U, S, Vh, X, Y, scale, storage_dtype=storage, **kw)
        dx, dS, dX, dY = reference.backward(dy, h, U, S, Vh, X, Y, scale,
                                            kw.get("base_weight"), True, storage_dtype=storage)
        out[storage] = {"y": y, "dx": dx, "dS": dS, "dX": dX, "dY": dY}
    return out[None], out[torch.bfloat16]


@needs_compiled
@pytest.mark.parametrize("fp32_params", [False, True])  # True: how SVDLoRALinear holds S, X, Y
@pytest.mark.parametrize("N, r, rr, structured", CORE_PATHS)
@pytest.mark.parametrize("kind", BASES)
def test_bfloat16_within_twice_the_bf16_storage_floor(kind, N, r, rr, structured, fp32_params,
                                                     device, reference):
    # The bar comes from the precision alone: the op's error (against exact arithmetic on
    # the same bf16 inputs) may be at most twice that of an exact model of bf16 storage with
    # wide accumulation (reference.forward/backward with storage_dtype=bfloat16, in float64).
    U, S, Vh, X, Y = adapter_factors(D=256, K=192, r=r, rr=rr, device=device)
    g = torch.Generator().manual_seed(N + r)
    x = torch.randn(N, 192, generator=g, dtype=torch.float64).to(device)
    dy = torch.randn(N, 256, generator=g, dtype=torch.float64).to(device)
    kw = base_args(kind, (N,), D=256, K=192, device=device)
    params_dtype = torch.float32 if fp32_params else torch.bfloat16
    inputs = [x.to(torch.bfloat16), U.detach().to(torch.bfloat16), S.detach().to(params_dtype),
              Vh.detach().to(torch.bfloat16), X.detach().to(params_dtype),
              Y.detach().to(params_dtype)]
    kw_bf = {k: v.to(torch.bfloat16) for k, v in kw.items()}
    dy_bf = dy.to(torch.bfloat16)
    exact, floor = _bf16_storage_floor(reference, [t.double() for t in inputs],
                                       {k: v.double() for k, v in kw_bf.items()}, dy_bf.double(), 0.8)
    for name in ("dS", "dX", "dY"):  # parameter gradients are stored in the parameters' dtype
        floor[name] = floor[name].to(params_dtype).double()
    wrt = [inputs[i].requires_grad_(True) for i in (0, 2, 4, 5)]
    y = op(*inputs, 0.8, **kw_bf, backend="compiled")
    assert y.dtype == torch.bfloat16
    got = dict(zip(("dx", "dS", "dX", "dY"), grads(y, wrt, dy_bf)))
    got["y"] = y
    for name in ("y", "dx", "dS", "dX", "dY"):
        assert got[name].dtype == (torch.bfloat16 if name in ("y", "dx") else params_dtype), name
        err = float(torch.linalg.norm(got[name].detach().double() - exact[name]))
        bar = 2 * float(torch.linalg.norm(floor[name] - exact[name]))
        assert err <= bar + 1e-6 * float(torch.linalg.norm(exact[name])), (name, err, bar)


@needs_compiled
def test_saves_only_h_as_activation():
    U, S, Vh, X, Y = adapter_factors(D=20, K=16, r=8, rr=2, dtype=torch.float32)
    x = torch.randn(50, 16, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = op(x, U, S, Vh, X, Y, 1.0)
    activations = [t for t in saved if t.shape[0] == 50]
    assert [tuple(t.shape) for t in activations] == [(50, 8)]  # N x r, nothing N x K or N x D
    y.sum().backward()
    assert x.grad is not None


@needs_compiled
@pytest.mark.parametrize("kind", BASES)
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_opcheck(kind, dtype, device):
    dt = getattr(torch, dtype)
    U, S, Vh, X, Y = adapter_factors(dtype=dt, device=device)
    x = torch.randn(3, 4, 10, device=device).to(dt).requires_grad_(True)
    kw = base_args(kind, (3, 4), device=device, dtype=dt)
    args = (x, U, S, Vh, X, Y, 0.5, kw.get("base_weight"), kw.get("bias"), kw.get("base_out"))
    torch.library.opcheck(torch.ops.svdlora.adapter_forward.default, args)
    dy = torch.randn(3, 4, 12, device=device).to(dt)
    h = torch.randn(3, 4, 6, device=device).to(dt)
    torch.library.opcheck(torch.ops.svdlora.adapter_backward.default,
                          (dy, h, U, S.detach(), Vh, X.detach(), Y.detach(), 0.5,
                           kw.get("base_weight"), True))


@needs_compiled
def test_torch_compile_fullgraph_forward_backward(device):
    U, S, Vh, X, Y = adapter_factors(D=20, K=16, r=8, rr=2, dtype=torch.float32, device=device)

    def loss(x, S, X, Y):
        return op(x, U, S, Vh, X, Y, 1.0).square().sum()

    x = torch.randn(6, 16, device=device, requires_grad=True)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    for a, b in zip(torch.autograd.grad(compiled(x, S, X, Y), (x, S, X, Y)),
                    torch.autograd.grad(loss(x, S, X, Y), (x, S, X, Y))):
        torch.testing.assert_close(a, b)


@cuda_only
def test_cuda_graph_capture_and_replay():
    U, S, Vh, X, Y = adapter_factors(D=64, K=48, r=16, rr=4, dtype=torch.float32, device="cuda",
                                     requires_grad=False)
    x = torch.randn(10, 48, device="cuda")
    static_x = x.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        op(static_x, U, S, Vh, X, Y, 0.5)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = op(static_x, U, S, Vh, X, Y, 0.5)
    static_x.copy_(2 * x)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(static_y, 2 * op(x, U, S, Vh, X, Y, 0.5))


@pytest.mark.parametrize("kind", BASES)
def test_reference_backend_gives_the_same_values_and_gradients(kind, device):
    U, S, Vh, X, Y = adapter_factors(D=40, K=30, r=16, rr=4, device=device)
    x = torch.randn(7, 30, dtype=torch.float64, device=device, requires_grad=True)
    kw = base_args(kind, (7,), D=40, K=30, device=device)
    y_auto = op(x, U, S, Vh, X, Y, 1.1, **kw)
    y_ref = op(x, U, S, Vh, X, Y, 1.1, **kw, backend="reference")
    torch.testing.assert_close(y_auto, y_ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y_ref)
    for a, b in zip(grads(y_auto, (x, S, X, Y), dy), grads(y_ref, (x, S, X, Y), dy)):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


def test_devices_without_a_kernel_run_the_reference():
    import svdlora
    # the meta device has no svdlora kernel anywhere: "auto" falls back to plain torch,
    # which infers the output shape; "compiled" refuses
    U, S, Vh, X, Y = (t.detach().to("meta") for t in adapter_factors())
    x = torch.empty(3, 5, 10, device="meta")
    y = op(x, U, S, Vh, X, Y, 1.0)
    assert y.device.type == "meta" and tuple(y.shape) == (3, 5, 12)
    assert svdlora.build_info()["adapter_ops"]["other"] == "reference"
    with pytest.raises(ValueError, match="no adapter kernel"):
        op(x, U, S, Vh, X, Y, 1.0, backend="compiled")


def test_bad_inputs_raise_value_or_type_errors():
    U, S, Vh, X, Y = adapter_factors()
    x = torch.randn(3, 10, dtype=torch.float64)
    with pytest.raises(ValueError, match="x must have shape"):
        op(torch.randn(3, 9, dtype=torch.float64), U, S, Vh, X, Y, 1.0)
    with pytest.raises(ValueError, match="inconsistent ranks"):
        op(x, U, S, Vh, X[:, :2], Y, 1.0)
    with pytest.raises(ValueError, match="base_out"):
        op(x, U, S, Vh, X, Y, 1.0, base_out=torch.randn(3, 11, dtype=torch.float64))
    with pytest.raises(ValueError, match="base_weight"):
        op(x, U, S, Vh, X, Y, 1.0, base_weight=torch.randn(12, 9, dtype=torch.float64))
    with pytest.raises(ValueError, match="not both"):
        op(x, U, S, Vh, X, Y, 1.0, base_weight=torch.randn(12, 10, dtype=torch.float64),
           base_out=torch.randn(3, 12, dtype=torch.float64))
    with pytest.raises(TypeError, match="x must be a floating"):
        op(torch.ones(3, 10, dtype=torch.int64), U, S, Vh, X, Y, 1.0)
    with pytest.raises(TypeError, match="U must be a torch.Tensor"):
        op(x, U.numpy(), S, Vh, X, Y, 1.0)
    with pytest.raises(TypeError, match="scale"):
        op(x, U, S, Vh, X, Y, "big")
    with pytest.raises(ValueError, match="scale"):
        op(x, U, S, Vh, X, Y, float("inf"))
    with pytest.raises(ValueError, match="on meta"):
        op(x.to("meta"), U, S, Vh, X, Y, 1.0)
    with pytest.raises(ValueError, match="backend"):
        op(x, U, S, Vh, X, Y, 1.0, backend="fast")


@needs_compiled
def test_direct_op_calls_are_checked_in_cpp_too():
    U, S, Vh, X, Y = adapter_factors()
    with pytest.raises(RuntimeError, match="x must have shape"):
        torch.ops.svdlora.adapter_forward(torch.randn(3, 9, dtype=torch.float64), U, S, Vh, X, Y,
                                          1.0, None, None, None)
    with pytest.raises(RuntimeError, match="inconsistent ranks"):
        torch.ops.svdlora.adapter_forward(torch.randn(3, 10, dtype=torch.float64), U, S, Vh,
                                          X[:, :2], Y, 1.0, None, None, None)
