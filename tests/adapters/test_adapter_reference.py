"""The pure-torch reference adapter (svdlora.adapters.reference), the oracle of every other
adapter test, against the definition W_eff = U (diag(S) + scale X Y) Vh, finite differences
and autograd."""
from __future__ import annotations

import pytest

from helpers import adapter_factors, needs_torch, torch

pytestmark = needs_torch

KINDS = ["drop", "keep_weight", "keep_out"]


def extras(kind, lead, D, K):
    g = torch.Generator().manual_seed(3)
    if kind == "drop":
        return {"bias": torch.randn(D, generator=g, dtype=torch.float64)}
    if kind == "keep_weight":
        return {"base_weight": torch.randn(D, K, generator=g, dtype=torch.float64),
                "bias": torch.randn(D, generator=g, dtype=torch.float64)}
    return {"base_out": torch.randn(*lead, D, generator=g, dtype=torch.float64)}


@pytest.mark.parametrize("kind", KINDS)
def test_forward_is_the_dense_definition(kind, reference):
    U, S, Vh, X, Y = adapter_factors(D=14, K=11, r=5, rr=2)
    x = torch.randn(2, 3, 11, dtype=torch.float64)
    kw = extras(kind, (2, 3), 14, 11)
    y, h = reference.forward(x, U, S, Vh, X, Y, 0.7, **kw)
    W_eff = U @ (torch.diag(S) + 0.7 * X @ Y) @ Vh  # the definition, formed densely
    expected = x @ W_eff.T
    if "base_weight" in kw:
        expected = expected + x @ kw["base_weight"].T
    expected = expected + kw.get("base_out", 0) + kw.get("bias", 0)
    torch.testing.assert_close(y, expected, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(h, x @ Vh.T, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_passes_gradcheck(kind, reference):
    U, S, Vh, X, Y = adapter_factors(D=7, K=6, r=4, rr=2)
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    kw = {k: v.requires_grad_(True) for k, v in extras(kind, (3,), 7, 6).items()}
    names = sorted(kw)

    def fn(x, S, X, Y, *extra):
        return reference.forward(x, U, S, Vh, X, Y, 1.3, **dict(zip(names, extra)))[0]

    assert torch.autograd.gradcheck(fn, (x, S, X, Y, *(kw[n] for n in names)))


@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("kind", ["drop", "keep_weight"])
def test_backward_formulas_equal_autograd(kind, need_dx, reference):
    U, S, Vh, X, Y = adapter_factors(D=20, K=16, r=8, rr=3)
    x = torch.randn(4, 5, 16, dtype=torch.float64, requires_grad=True)
    kw = extras(kind, (4, 5), 20, 16)
    y, h = reference.forward(x, U, S, Vh, X, Y, 0.9, **kw)
    dy = torch.randn_like(y)
    auto = torch.autograd.grad(y, (x, S, X, Y), dy)
    dx, dS, dX, dY = reference.backward(dy, h.detach(), U, S.detach(), Vh, X.detach(),
                                        Y.detach(), 0.9, kw.get("base_weight"), need_dx)
    if need_dx:
        torch.testing.assert_close(dx, auto[0], rtol=1e-12, atol=1e-12)
    else:
        assert dx.numel() == 0
    for a, b in zip((dS, dX, dY), auto[1:]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_storage_emulation_rounds_every_stored_value(reference):
    U, S, Vh, X, Y = (t.detach() for t in adapter_factors(D=30, K=20, r=8, rr=2))
    x = torch.randn(6, 20, dtype=torch.float64)
    exact, h_exact = reference.forward(x, U, S, Vh, X, Y, 1.0)
    y, h = reference.forward(x, U, S, Vh, X, Y, 1.0, storage_dtype=torch.bfloat16)
    for t in (y, h):  # stored in bf16: exactly representable there
        assert torch.equal(t, t.to(torch.bfloat16).double())
    rel = float(torch.linalg.norm(y - exact) / torch.linalg.norm(exact))
    assert 0 < rel < 3 * 2.0 ** -8  # a few bf16 roundings, no more
    # storage_dtype of the inputs' own precision changes nothing
    same, _ = reference.forward(x, U, S, Vh, X, Y, 1.0, storage_dtype=torch.float64)
    assert torch.equal(same, exact)
