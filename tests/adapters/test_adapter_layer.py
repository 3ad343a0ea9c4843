"""SVDLoRALinear: identity at initialisation, gradients, keep mode over any base layer, scale
conventions, dtypes, devices and bad input."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import torch

pytest.importorskip("torch")  # the classes below subclass nn.Linear

from torch import nn  # noqa: E402

import svdlora  # noqa: E402


def truncated(W, r):
    U, S, Vh = torch.linalg.svd(W.double(), full_matrices=False)
    return (U[:, :r] * S[:r]) @ Vh[:r]


class Quantized(nn.Linear):
    """Stands for any base layer that is not a plain nn.Linear: its forward applies a weight
    that differs from its `weight` attribute (here rounded to 2 decimals)."""

    def forward(self, x):
        return nn.functional.linear(x, self.weight.round(decimals=2), self.bias)


@pytest.mark.parametrize("svd", ["randomized", "exact"])
def test_initial_output_identity_both_modes(svd):
    lin = nn.Linear(40, 30).double()
    x = torch.randn(7, 40, dtype=torch.float64)
    keep = svdlora.SVDLoRALinear.from_linear(lin, 12, 4, svd=svd)
    torch.testing.assert_close(keep(x), lin(x), rtol=0, atol=1e-13)
    drop = svdlora.SVDLoRALinear.from_linear(lin, 12, 4, residual=False, svd=svd)
    expected = x @ truncated(lin.weight, 12).T + lin.bias
    tol = 1e-10 if svd == "exact" else 1e-6  # randomized factors: rank-12 of a 30x40 noise matrix
    torch.testing.assert_close(drop(x), expected, rtol=0, atol=tol)
    assert drop.base_layer is None and keep.base_layer is lin
    assert torch.equal(drop.bias, lin.bias) and keep.bias is lin.bias
    assert drop.in_features == 40 and drop.out_features == 30


@pytest.mark.parametrize("inner_rank", [1, 2, 5])
@pytest.mark.parametrize("residual", [True, False])
def test_module_gradients_match_its_effective_weight(inner_rank, residual):
    lin = nn.Linear(9, 7).double()
    layer = svdlora.SVDLoRALinear.from_linear(lin, 5, inner_rank, residual=residual, svd="exact")
    with torch.no_grad():
        layer.Y.normal_()
        layer.S.add_(0.1)
    x = torch.randn(3, 9, dtype=torch.float64, requires_grad=True)
    params = (layer.S.detach().clone().requires_grad_(), layer.X.detach().clone().requires_grad_(),
              layer.Y.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda x, S, X, Y: svdlora.svd_lora_linear(
        x, layer.U, S - layer.S0 if residual else S, layer.Vh, X, Y, layer.scale,
        base_weight=lin.weight if residual else None, bias=lin.bias), (x, *params))
    # the module's own parameters get the gradients of the dense map it claims to apply
    y = layer(x)
    y_dense = x @ layer.effective_weight().T + layer.effective_bias()
    torch.testing.assert_close(y, y_dense, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y)
    g = torch.autograd.grad(y, (x, layer.S, layer.X, layer.Y), dy)
    g_dense = torch.autograd.grad(y_dense, (x, layer.S, layer.X, layer.Y), dy)
    for a, b in zip(g, g_dense):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


def test_keep_mode_with_a_non_linear_base_uses_its_output():
    base = Quantized(12, 9).double()
    layer = svdlora.SVDLoRALinear.from_linear(base, 4, 2, svd="exact")
    with torch.no_grad():
        layer.Y.normal_()
    x = torch.randn(5, 12, dtype=torch.float64)
    expected = base(x) + x @ layer.delta_weight().T
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    # the dense map it reports is the one its forward applies, not base.weight's
    torch.testing.assert_close(x @ layer.effective_weight().T + layer.effective_bias(),
                               layer(x), rtol=1e-12, atol=1e-12)


def test_scale_conventions():
    lin = nn.Linear(10, 10)
    assert svdlora.SVDLoRALinear.from_linear(lin, 8, 4).scale == 1.0
    assert svdlora.SVDLoRALinear.from_linear(lin, 8, 4, alpha=8).scale == 2.0
    assert svdlora.SVDLoRALinear.from_linear(lin, 8, 4, alpha=8, rank_stabilized=True).scale == 4.0


def test_numpy_integers_are_accepted_for_ranks():
    lin = nn.Linear(10, 12)
    layer = svdlora.SVDLoRALinear.from_linear(lin, np.int64(6), np.int32(2))
    assert (layer.rank, layer.inner_rank) == (6, 2) and type(layer.rank) is int
    layer = svdlora.SVDLoRALinear(10, 12, np.int64(4), np.int64(2), residual=False)
    assert layer.U.shape == (12, 4)


def test_drop_mode_refuses_a_base_layer():
    lin = nn.Linear(10, 12)
    with pytest.raises(ValueError, match="residual=False.*base_layer"):
        svdlora.SVDLoRALinear(10, 12, 4, 2, residual=False, base_layer=lin)
    with pytest.raises(ValueError, match="needs the original base_layer"):
        svdlora.SVDLoRALinear(10, 12, 4, 2, residual=True)


def test_from_linear_bad_inputs():
    with pytest.raises(TypeError, match="nn.Linear"):
        svdlora.SVDLoRALinear.from_linear(nn.Conv1d(3, 3, 1), 2, 1)
    with pytest.raises(ValueError, match="inner_rank"):
        svdlora.SVDLoRALinear.from_linear(nn.Linear(8, 8), 2, 3)
    with pytest.raises(ValueError, match="rank must satisfy"):
        svdlora.SVDLoRALinear.from_linear(nn.Linear(8, 6), 7, 3)
    with pytest.raises(TypeError, match="rank must be an int"):
        svdlora.SVDLoRALinear.from_linear(nn.Linear(8, 8), 2.0, 1)
    with pytest.raises(TypeError, match="residual must be a bool"):
        svdlora.SVDLoRALinear.from_linear(nn.Linear(8, 8), 2, 1, residual="keep")
    with pytest.raises(ValueError, match="svd"):
        svdlora.SVDLoRALinear.from_linear(nn.Linear(8, 8), 2, 1, svd="fast")


def test_from_factors_checks_shapes():
    lin = nn.Linear(8, 6)
    U, S, Vh = torch.randn(6, 1), torch.ones(3), torch.randn(3, 8)
    with pytest.raises(ValueError, match="U must have shape"):
        svdlora.SVDLoRALinear.from_factors(lin, U, S, Vh, 2)


@pytest.mark.parametrize("residual", [True, False])
def test_bfloat16_module_trains_and_tracks_float32(residual):
    torch.manual_seed(0)
    lin32 = nn.Linear(64, 48)
    lin16 = nn.Linear(64, 48).to(torch.bfloat16)
    with torch.no_grad():
        lin16.weight.copy_(lin32.weight)
        lin16.bias.copy_(lin32.bias)
    l32 = svdlora.SVDLoRALinear.from_linear(lin32, 16, 4, residual=residual, svd="exact")
    l16 = svdlora.SVDLoRALinear.from_linear(lin16, 16, 4, residual=residual, svd="exact")
    # big factors in the layer's dtype, the small trainable ones in float32 (a bf16 S near
    # its singular values could not absorb optimiser steps of 1e-3)
    assert l16.U.dtype == l16.Vh.dtype == torch.bfloat16
    assert l16.S.dtype == l16.X.dtype == l16.Y.dtype == l16.S0.dtype == torch.float32
    x = torch.randn(10, 64)
    y16 = l16(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16
    # bf16 rounds to 2^-8 relative; the outputs here are O(1)
    torch.testing.assert_close(y16.float(), l32(x), rtol=0.05, atol=0.05)
    y16.float().square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in (l16.S, l16.X, l16.Y))
    S_before = l16.S.detach().clone()
    torch.optim.Adam([l16.S, l16.X, l16.Y], lr=1e-3).step()
    assert (l16.S.detach() - S_before).abs().min() > 5e-4  # every singular value moved
    merged = svdlora.merge(nn.Sequential(l16))[0]
    assert merged.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("residual", [True, False])
def test_module_on_a_device_matches_the_cpu_module(residual, device):
    lin = nn.Linear(96, 80)
    layer = svdlora.SVDLoRALinear.from_linear(lin, 32, 4, residual=residual)
    with torch.no_grad():
        layer.Y.normal_(0, 0.1)
    moved = svdlora.SVDLoRALinear.from_linear(nn.Linear(96, 80), 32, 4, residual=residual).to(device)
    moved.load_state_dict(layer.state_dict())
    x = torch.randn(7, 96)
    torch.testing.assert_close(moved(x.to(device)).cpu(), layer(x), rtol=1e-5, atol=1e-5)


def test_reference_backend_of_the_module():
    lin = nn.Linear(20, 16).double()
    layer = svdlora.SVDLoRALinear.from_linear(lin, 8, 2)
    with torch.no_grad():
        layer.Y.normal_()
    x = torch.randn(5, 20, dtype=torch.float64)
    y = layer(x)
    layer.backend = "reference"
    torch.testing.assert_close(layer(x), y, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="backend"):
        layer.backend = "gpu"
