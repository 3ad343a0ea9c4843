"""Fused SVD-LoRA ops: gradients (gradcheck, plain-torch autograd reference), opcheck,
torch.compile(fullgraph=True), dtypes, batch dims and non-contiguous inputs."""
from __future__ import annotations

import pytest

from conftest import needs_compiled, torch

pytestmark = needs_compiled


def make_factors(D=12, K=10, r=6, rr=3, dtype=None, seed=0, requires_grad=True):
    dtype = dtype or torch.float64
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(D, r, generator=g, dtype=torch.float64))[0].to(dtype)
    Vh = torch.linalg.qr(torch.randn(K, r, generator=g, dtype=torch.float64))[0].T.contiguous().to(dtype)
    S = (torch.rand(r, generator=g, dtype=torch.float64) + 0.5).to(dtype)
    X = torch.randn(r, rr, generator=g, dtype=torch.float64).to(dtype)
    Y = torch.randn(rr, r, generator=g, dtype=torch.float64).to(dtype)
    for t in (S, X, Y):
        t.requires_grad_(requires_grad)
    return U, S, Vh, X, Y


def reference(x, U, S, Vh, X, Y, scale, base_out=None, bias=None, base_weight=None):
    """Plain-torch autograd chain of the same math (no custom ops)."""
    C = torch.diag(S) + scale * X @ Y
    y = ((x @ Vh.T) @ C.T) @ U.T
    if base_weight is not None:
        y = y + x @ base_weight.T
    if base_out is not None:
        y = y + base_out
    if bias is not None:
        y = y + bias
    return y


def op(*args, **kw):
    import svdlora
    return svdlora.svd_lora_linear(*args, **kw)


BASES = ["drop", "keep_weight", "keep_out"]


def base_args(kind, lead, D=12, K=10, requires_grad=False):
    """Keyword arguments of the three ways the op is called: drop mode (bias), keep mode with a
    plain base weight (+ bias), keep mode with an opaque base layer's output."""
    dt = torch.float64
    if kind == "drop":
        return {"bias": torch.randn(D, dtype=dt, requires_grad=requires_grad)}
    if kind == "keep_weight":
        return {"base_weight": torch.randn(D, K, dtype=dt), "bias": torch.randn(D, dtype=dt)}
    return {"base_out": torch.randn(*lead, D, dtype=dt, requires_grad=requires_grad)}


@pytest.mark.parametrize("rr", [1, 3, 6])
@pytest.mark.parametrize("kind", BASES)
def test_gradcheck_float64(rr, kind):
    U, S, Vh, X, Y = make_factors(rr=rr)
    x = torch.randn(2, 3, 10, dtype=torch.float64, requires_grad=True)
    kw = base_args(kind, (2, 3), requires_grad=True)
    names = sorted(kw)

    def fn(x, S, X, Y, *extra):
        return op(x, U, S, Vh, X, Y, 0.7, **dict(zip(names, extra)))

    assert torch.autograd.gradcheck(fn, (x, S, X, Y, *(kw[n] for n in names)))


# (5, 7): fewer tokens than D, the core is applied to the activations in forward;
# (10, 9): more tokens than D and K, the core is folded into U and Vh in both directions.
@pytest.mark.parametrize("lead", [(5, 7), (10, 9)])
@pytest.mark.parametrize("kind", BASES)
def test_matches_plain_torch_reference(kind, lead):
    U, S, Vh, X, Y = make_factors(D=40, K=30, r=16, rr=4)
    x = torch.randn(*lead, 30, dtype=torch.float64, requires_grad=True)
    kw = base_args(kind, lead, D=40, K=30)
    y = op(x, U, S, Vh, X, Y, 1.3, **kw)
    y_ref = reference(x, U, S, Vh, X, Y, 1.3, **kw)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, S, X, Y), dy)
    grads_ref = torch.autograd.grad(y_ref, (x, S, X, Y), dy)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("kind", BASES)
def test_outputs_are_not_views_and_allow_in_place_ops(kind):
    # a custom op that returned a view would make autograd refuse y.relu_() (or an in-place
    # nn.ReLU / dropout after the layer)
    U, S, Vh, X, Y = make_factors(D=40, K=30, r=16, rr=4)
    x = torch.randn(4, 6, 30, dtype=torch.float64, requires_grad=True)
    kw = base_args(kind, (4, 6), D=40, K=30)
    y = op(x, U, S, Vh, X, Y, 0.9, **kw)
    assert y._base is None
    y.relu_()
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, S, X, Y), dy)
    y_ref = reference(x, U, S, Vh, X, Y, 0.9, **kw).relu()
    grads_ref = torch.autograd.grad(y_ref, (x, S, X, Y), dy)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)
    assert grads[0]._base is None


def test_non_contiguous_and_batched_x():
    U, S, Vh, X, Y = make_factors(D=20, K=16, r=8, rr=2, dtype=torch.float32)
    base = torch.randn(16, 6, 4, dtype=torch.float32)
    x = base.permute(2, 1, 0)  # (4, 6, 16), non-contiguous
    assert not x.is_contiguous()
    torch.testing.assert_close(op(x, U, S, Vh, X, Y, 1.0), reference(x, U, S, Vh, X, Y, 1.0),
                               rtol=1e-5, atol=1e-5)


def test_bfloat16_error_within_twice_plain_bf16():
    # flash-attention rule: |fused_bf16 - exact| <= 2 x |plain_torch_bf16 - exact| (+ tiny)
    U, S, Vh, X, Y = make_factors(D=256, K=192, r=32, rr=8, dtype=torch.float64, requires_grad=False)
    x = torch.randn(64, 192, dtype=torch.float64)
    exact = reference(x, U, S, Vh, X, Y, 1.0)
    bf = [t.to(torch.bfloat16) for t in (x, U, S, Vh, X, Y)]
    fused = op(*bf[:6], 1.0).double()
    plain = reference(*bf, 1.0).double()
    err_fused = (fused - exact).abs().max().item()
    err_plain = (plain - exact).abs().max().item()
    assert op(*bf[:6], 1.0).dtype == torch.bfloat16
    assert err_fused <= 2 * err_plain + 1e-6


# (N, r, r'): the core formed as an r x r matrix, and applied through its structure
CORE_PATHS = [(64, 32, 24, False), (2048, 128, 4, True)]


def test_core_path_choice_is_what_the_tests_assume():
    from svdlora._extension import compiled
    for N, r, rr, structured in CORE_PATHS:
        assert compiled._adapter_core_is_structured(N, r, rr) is structured


@pytest.mark.parametrize("kind", BASES)
def test_structured_core_matches_plain_torch_reference(kind):
    # tokens x rank large enough for the structured core; gradients against plain autograd
    N, r, rr = 2048, 128, 4
    U, S, Vh, X, Y = make_factors(D=160, K=144, r=r, rr=rr)
    x = torch.randn(N // 8, 8, 144, dtype=torch.float64, requires_grad=True)
    kw = base_args(kind, (N // 8, 8), D=160, K=144, requires_grad=True)
    y = op(x, U, S, Vh, X, Y, 0.6, **kw)
    y_ref = reference(x, U, S, Vh, X, Y, 0.6, **kw)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y)
    wrt = (x, S, X, Y, *(t for t in kw.values() if t.requires_grad))
    for a, b in zip(torch.autograd.grad(y, wrt, dy), torch.autograd.grad(y_ref, wrt, dy)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("fp32_params", [False, True])  # True: how SVDLoRALinear holds S, X, Y
@pytest.mark.parametrize("N, r, rr, structured", CORE_PATHS)
def test_bfloat16_gradients_within_twice_plain_bf16(N, r, rr, structured, fp32_params):
    U, S, Vh, X, Y = make_factors(D=256, K=192, r=r, rr=rr, dtype=torch.float64)
    x = torch.randn(N, 192, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(N, 256, dtype=torch.float64)
    exact = torch.autograd.grad(reference(x, U, S, Vh, X, Y, 0.8), (x, S, X, Y), dy)
    bf = [t.detach().to(torch.bfloat16).requires_grad_(t.requires_grad) for t in (x, U, S, Vh, X, Y)]
    bf[0].requires_grad_(True)
    wrt = (bf[0], bf[2], bf[4], bf[5])
    plain = torch.autograd.grad(reference(*bf, 0.8), wrt, dy.to(torch.bfloat16))
    if fp32_params:
        for i in (2, 4, 5):
            bf[i] = bf[i].detach().float().requires_grad_(True)
        wrt = (bf[0], bf[2], bf[4], bf[5])
    fused = torch.autograd.grad(op(*bf, 0.8), wrt, dy.to(torch.bfloat16))
    for name, f, p, e, w in zip(("dx", "dS", "dX", "dY"), fused, plain, exact, wrt):
        assert f.dtype == w.dtype, name
        err_fused = (f.double() - e).abs().max().item()
        err_plain = (p.double() - e).abs().max().item()
        assert err_fused <= 2 * err_plain + 1e-3 * e.abs().max().item(), name


def test_saves_only_h_as_activation():
    U, S, Vh, X, Y = make_factors(D=20, K=16, r=8, rr=2, dtype=torch.float32)
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


@pytest.mark.parametrize("kind", BASES)
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_opcheck(kind, dtype):
    dt = getattr(torch, dtype)
    U, S, Vh, X, Y = make_factors(dtype=dt)
    x = torch.randn(3, 4, 10, dtype=dt, requires_grad=True)
    kw = {k: v.to(dt) for k, v in base_args(kind, (3, 4)).items()}
    args = (x, U, S, Vh, X, Y, 0.5, kw.get("base_weight"), kw.get("bias"), kw.get("base_out"))
    torch.library.opcheck(torch.ops.svdlora.adapter_forward.default, args)
    dy = torch.randn(3, 4, 12, dtype=dt)
    h = torch.randn(3, 4, 6, dtype=dt)
    torch.library.opcheck(torch.ops.svdlora.adapter_backward.default,
                          (dy, h, U, S.detach(), Vh, X.detach(), Y.detach(), 0.5,
                           kw.get("base_weight"), True))


def test_torch_compile_fullgraph_forward_backward():
    U, S, Vh, X, Y = make_factors(D=20, K=16, r=8, rr=2, dtype=torch.float32)

    def loss(x, S, X, Y):
        return op(x, U, S, Vh, X, Y, 1.0).square().sum()

    x = torch.randn(6, 16, requires_grad=True)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    g1 = torch.autograd.grad(compiled(x, S, X, Y), (x, S, X, Y))
    g2 = torch.autograd.grad(loss(x, S, X, Y), (x, S, X, Y))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_bad_inputs_raise_value_or_type_errors():
    U, S, Vh, X, Y = make_factors()
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
    with pytest.raises(ValueError, match="on meta"):
        op(x.to("meta"), U, S, Vh, X, Y, 1.0)


def test_direct_op_calls_are_checked_in_cpp_too():
    U, S, Vh, X, Y = make_factors()
    with pytest.raises(RuntimeError, match="x must have shape"):
        torch.ops.svdlora.adapter_forward(torch.randn(3, 9, dtype=torch.float64), U, S, Vh, X, Y,
                                          1.0, None, None, None)
    with pytest.raises(RuntimeError, match="inconsistent ranks"):
        torch.ops.svdlora.adapter_forward(torch.randn(3, 10, dtype=torch.float64), U, S, Vh,
                                          X[:, :2], Y, 1.0, None, None, None)
