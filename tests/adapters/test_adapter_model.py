"""Model-level API: convert (targets, energy, config), merge (exact for any affine base),
parameter counts, freezing, training, and bad input that leaves the model unchanged."""
from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import mlp, move_off_init, torch

pytest.importorskip("torch")  # the classes below subclass nn.Linear

from torch import nn  # noqa: E402

import svdlora  # noqa: E402


class Quantized(nn.Linear):
    """A base whose forward applies a weight other than its `weight` attribute."""

    def forward(self, x):
        return nn.functional.linear(x, self.weight.round(decimals=2), self.bias)


class Clipped(nn.Linear):
    """A base whose forward is not affine in x (it clips its activations)."""

    def forward(self, x):
        return super().forward(x).clamp(-0.1, 0.1)


@pytest.mark.parametrize("residual", [True, False])
def test_parameter_count_and_freezing(residual):
    model = mlp()
    svdlora.convert(model, rank=5, inner_rank=2, residual=residual, progress=False)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted({n.rsplit(".", 1)[1] for n in trainable}) == ["S", "X", "Y"]
    t, total = svdlora.count_parameters(model)
    assert t == 3 * (5 + 2 * 5 * 2)
    for m in model.modules():
        if isinstance(m, svdlora.SVDLoRALinear):
            assert sum(p.numel() for p in m.parameters() if p.requires_grad) == m.rank + 2 * m.rank * m.inner_rank


@pytest.mark.parametrize("residual", [True, False])
def test_merge_reproduces_adapter_output(residual):
    model = mlp()
    svdlora.convert(model, rank=6, inner_rank=3, residual=residual, progress=False)
    move_off_init(model, s_factor=1.1)
    x = torch.randn(11, 20, dtype=torch.float64)
    y = model(x)
    svdlora.merge(model)
    assert not any(isinstance(m, svdlora.SVDLoRALinear) for m in model.modules())
    assert all(type(m) is nn.Linear for m in (model[0], model[2], model[4]))
    torch.testing.assert_close(model(x), y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_merge_is_exact_for_a_base_that_is_not_a_plain_linear(bias):
    torch.manual_seed(0)
    model = nn.Sequential(Quantized(12, 9, bias=bias).double(), nn.Tanh(), nn.Linear(9, 4).double())
    svdlora.convert(model, rank=4, inner_rank=2, progress=False)
    move_off_init(model)
    x = torch.randn(5, 12, dtype=torch.float64)
    y = model(x)
    svdlora.merge(model)
    assert type(model[0]) is nn.Linear and (model[0].bias is not None) == bias
    torch.testing.assert_close(model(x), y, rtol=1e-12, atol=1e-12)


def test_merge_of_a_low_precision_subclassed_base_is_as_accurate_as_the_layer():
    # measured in the base's own bf16, b = base(0) would put the rounding of a large bias into
    # every entry of W; the merge measures a float64 copy instead
    torch.manual_seed(0)

    class Scaled(nn.Linear):
        def forward(self, x):
            return nn.functional.linear(x, 2 * self.weight, self.bias)

    base = Scaled(64, 48).to(torch.bfloat16)
    with torch.no_grad():
        base.weight.normal_(0, 0.01)
        base.bias.fill_(4.0)
    model = nn.Sequential(base)
    svdlora.convert(model, rank=8, inner_rank=2, progress=False)
    move_off_init(model)
    x = torch.randn(16, 64).to(torch.bfloat16)
    y = model(x).float().detach()
    svdlora.merge(model)
    err = float((model(x).float() - y).detach().abs().max())
    assert err <= 4 * 2.0 ** -8 * float(y.abs().max()), err  # a few bf16 roundings of y


def test_merge_refuses_a_base_whose_forward_is_not_affine():
    model = nn.Sequential(Clipped(12, 9).double(), nn.Tanh(), nn.Linear(9, 4).double())
    svdlora.convert(model, rank=4, inner_rank=2, progress=False)
    with pytest.raises(ValueError, match="layer '0'.*affine"):
        svdlora.merge(model)
    assert all(isinstance(model[i], svdlora.SVDLoRALinear) for i in (0, 2))  # unchanged


def test_convert_targets_and_summary(capsys):
    model = mlp()
    svdlora.convert(model, rank=4, inner_rank=2, target_modules=["2"], progress=True)
    err = capsys.readouterr().err
    assert "1 layers" in err and "trainable" in err
    assert isinstance(model[2], svdlora.SVDLoRALinear) and type(model[0]) is nn.Linear
    model = mlp()
    svdlora.convert(model, rank=4, inner_rank=2, target_modules=r"[04]", progress=False)
    assert isinstance(model[0], svdlora.SVDLoRALinear) and isinstance(model[4], svdlora.SVDLoRALinear)
    assert type(model[2]) is nn.Linear


@pytest.mark.parametrize("svd", ["exact", "randomized"])
def test_energy_picks_each_layers_rank_with_the_requested_svd(svd):
    model = mlp()
    weights = [model[i].weight.detach().clone() for i in (0, 2, 4)]
    svdlora.convert(model, energy=0.9, inner_rank=8, svd=svd, progress=False)
    for i, W in zip((0, 2, 4), weights):
        s2 = torch.linalg.svdvals(W) ** 2
        share = torch.cumsum(s2, 0) / s2.sum()
        exact_rank = int((share < 0.9).sum()) + 1
        r = model[i].rank
        assert model[i].inner_rank == min(8, r)
        if svd == "exact":
            assert r == exact_rank
            continue
        # randomized: the adaptive rsvd with tol = sqrt(1 - energy) chose the rank and gave
        # the factors (its sign convention, its values), not a full SVD
        tol = math.sqrt(1 - 0.9)
        U, S, Vh = svdlora.rsvd(W, min(W.shape), tol=tol, seed=0)
        assert r == S.shape[0] and exact_rank <= r <= exact_rank + 2
        torch.testing.assert_close(model[i].S0, S)
        torch.testing.assert_close(model[i].U, U)
        kept = float(torch.sum(model[i].S0 ** 2) / s2.sum())
        assert kept >= 0.9 - 1e-6


def test_energy_with_a_rank_cap_and_energy_one():
    model = mlp()
    svdlora.convert(model, rank=3, energy=0.999, inner_rank=2, progress=False)
    assert all(model[i].rank <= 3 for i in (0, 2, 4))
    model = mlp()
    svdlora.convert(model, energy=1.0, inner_rank=2, svd="randomized", progress=False)
    assert [model[i].rank for i in (0, 2, 4)] == [20, 24, 6]  # full rank


def test_convert_takes_a_config_object():
    model = mlp()
    config = svdlora.SVDLoRAConfig(rank=5, inner_rank=2, mode="drop", target_modules=["0", "4"])
    svdlora.convert(model, config, progress=False)
    assert not model[0].residual and model[0].rank == 5 and type(model[2]) is nn.Linear
    model = mlp()
    svdlora.convert(model, config=config, progress=False)
    assert isinstance(model[4], svdlora.SVDLoRALinear)
    with pytest.raises(TypeError, match="not both"):
        svdlora.convert(mlp(), config=config, rank=4, progress=False)
    with pytest.raises(ValueError, match="contradicts"):
        svdlora.convert(mlp(), rank=4, inner_rank=2, mode="drop", residual=True, progress=False)


def test_training_reduces_loss():
    torch.manual_seed(0)
    teacher = mlp(seed=1)
    model = mlp(seed=2)
    svdlora.convert(model, rank=6, inner_rank=3, progress=False)
    x = torch.randn(256, 20, dtype=torch.float64)
    with torch.no_grad():
        target = teacher(x)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"rank": 0}, ValueError, "rank"),
    ({"rank": 21, "inner_rank": 2}, ValueError, "rank"),
    ({"rank": 4, "inner_rank": 5}, ValueError, "inner_rank"),
    ({"rank": 2.5}, TypeError, "rank"),
    ({"rank": 4, "inner_rank": 2, "svd": "fast"}, ValueError, "svd"),
    ({"rank": 4, "inner_rank": 2, "target_modules": ["nothing"]}, ValueError, "matched no"),
    ({"rank": 4, "inner_rank": 2, "target_modules": ["1"]}, TypeError, "not an nn.Linear"),
    ({"rank": 4, "inner_rank": 2, "target_modules": 3}, TypeError, "target_modules"),
    ({}, ValueError, "rank=|energy="),
    ({"energy": 1.5}, ValueError, "energy"),
    ({"energy": "0.9"}, TypeError, "energy"),
    ({"energy": True}, TypeError, "energy"),
    ({"rank": 4, "residual": "keep"}, TypeError, "residual"),
    ({"rank": 4, "mode": "both"}, ValueError, "mode"),
    ({"rank": 4, "inner_rank": 2, "alpha": "big"}, TypeError, "alpha"),
    ({"rank": 4, "inner_rank": 2, "progress": "yes"}, TypeError, "progress"),
])
def test_convert_bad_inputs_leave_model_unchanged(kwargs, exc, match):
    model = mlp()
    kwargs.setdefault("progress", False)
    with pytest.raises(exc, match=match):
        svdlora.convert(model, **kwargs)
    assert all(type(model[i]) is nn.Linear for i in (0, 2, 4))


def test_a_failure_in_a_later_layer_leaves_the_model_as_it_was(monkeypatch):
    import svdlora.adapters.model as model_module
    model = mlp()
    real = model_module.truncated_factors
    calls = []

    def failing_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("simulated failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(model_module, "truncated_factors", failing_on_the_third)
    with pytest.raises(ValueError, match="layer '4'.*simulated"):
        svdlora.convert(model, rank=4, inner_rank=2, progress=False)
    assert all(type(model[i]) is nn.Linear for i in (0, 2, 4))
    assert all(p.requires_grad for p in model.parameters())  # earlier bases not left frozen


def test_energy_one_keeps_the_numerical_rank_with_either_svd():
    torch.manual_seed(3)
    for svd in ("exact", "randomized"):
        lin = nn.Linear(40, 64).double()
        with torch.no_grad():  # rank 3
            lin.weight.copy_(torch.randn(64, 3, dtype=torch.float64) @ torch.randn(3, 40, dtype=torch.float64))
        model = nn.Sequential(lin)
        svdlora.convert(model, rank=30, energy=1.0, inner_rank=2, svd=svd, progress=False)
        assert model[0].rank == 3, svd
        model = nn.Sequential(nn.Linear(40, 64).double())
        svdlora.convert(model, energy=1e-17, inner_rank=2, svd=svd, progress=False)
        assert model[0].rank == 1, svd


def test_layers_record_the_conversion_settings():
    model = mlp()
    svdlora.convert(model, energy=0.8, inner_rank=2, svd="exact", seed=5, target_modules=["0"],
                    progress=False)
    c = model[0].config
    assert (c.svd, c.seed, c.energy, c.target_modules, c.rank) == ("exact", 5, 0.8, ("0",), model[0].rank)
    layer = svdlora.SVDLoRALinear.from_linear(nn.Linear(10, 12), 4, 2, svd="exact", seed=9)
    assert (layer.config.svd, layer.config.seed) == ("exact", 9)
    with pytest.raises(ValueError, match="does not describe"):
        layer.record_config(svdlora.SVDLoRAConfig(rank=5, inner_rank=2))


def test_numpy_integers_are_accepted():
    model = mlp()
    svdlora.convert(model, rank=np.int64(5), inner_rank=np.int32(2), seed=np.uint8(3),
                    progress=False)
    assert model[0].rank == 5 and model[0].inner_rank == 2


def test_convert_twice_does_not_wrap_base_layers():
    model = mlp()
    svdlora.convert(model, rank=4, inner_rank=2, progress=False)
    with pytest.raises(ValueError, match="matched no"):  # only adapters' base layers are left
        svdlora.convert(model, rank=4, inner_rank=2, progress=False)
    assert all(type(model[i].base_layer) is nn.Linear for i in (0, 2, 4))
    svdlora.merge(model)
    assert all(type(model[i]) is nn.Linear for i in (0, 2, 4))


def test_convert_rejects_non_finite_weights_before_touching_the_model():
    model = mlp()
    with torch.no_grad():
        model[4].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="'4'.*finite"):
        svdlora.convert(model, rank=4, inner_rank=2, progress=False)
    assert all(type(model[i]) is nn.Linear for i in (0, 2, 4))
