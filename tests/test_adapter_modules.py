"""SVDLoRALinear and the model-level API: initial identity, gradients, parameter counts,
convert/merge, training, save/load, PEFT export and bad inputs."""
from __future__ import annotations

import json
import os

import pytest

from conftest import needs_compiled, torch

pytestmark = needs_compiled

if torch is not None:
    from torch import nn

    import svdlora


def mlp(seed=0, dtype=None):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 32), nn.GELU(), nn.Linear(32, 24), nn.GELU(),
                         nn.Linear(24, 6)).to(dtype or torch.float64)


def move_off_init(model, s_factor=1.0):
    """Give every adapter a non-trivial core (Y != 0, optionally S scaled) as after training."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, svdlora.SVDLoRALinear):
                m.Y.normal_()
                m.S.mul_(s_factor)


def truncated(W, r):
    U, S, Vh = torch.linalg.svd(W.double(), full_matrices=False)
    return (U[:, :r] * S[:r]) @ Vh[:r]


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
def test_module_gradcheck(inner_rank, residual):
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
    # and the module's own parameters receive the same gradients as a plain-torch reference
    y = layer(x)
    W_eff = layer.effective_weight()
    y_ref = x @ W_eff.T + lin.bias
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y)
    g = torch.autograd.grad(y, (x, layer.S, layer.X, layer.Y), dy)
    g_ref = torch.autograd.grad(y_ref, (x, layer.S, layer.X, layer.Y), dy)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


def test_keep_mode_with_a_non_linear_base_uses_its_output():
    class Quantized(nn.Linear):  # stands for any base layer that is not a plain nn.Linear
        def forward(self, x):
            return nn.functional.linear(x, self.weight.round(decimals=2), self.bias)

    base = Quantized(12, 9).double()
    layer = svdlora.SVDLoRALinear.from_linear(base, 4, 2, svd="exact")
    with torch.no_grad():
        layer.Y.normal_()
    x = torch.randn(5, 12, dtype=torch.float64)
    expected = base(x) + x @ layer.delta_weight().T
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_scale_conventions():
    lin = nn.Linear(10, 10)
    assert svdlora.SVDLoRALinear.from_linear(lin, 8, 4).scale == 1.0
    assert svdlora.SVDLoRALinear.from_linear(lin, 8, 4, alpha=8).scale == 2.0
    assert svdlora.SVDLoRALinear.from_linear(lin, 8, 4, alpha=8, rank_stabilized=True).scale == 4.0


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


def test_convert_targets_energy_and_summary(capsys):
    model = mlp()
    svdlora.convert(model, rank=4, inner_rank=2, target_modules=["2"], progress=True)
    err = capsys.readouterr().err
    assert "1 layers" in err and "trainable" in err
    assert isinstance(model[2], svdlora.SVDLoRALinear) and type(model[0]) is nn.Linear
    model = mlp()
    svdlora.convert(model, rank=4, inner_rank=2, target_modules=r"[04]", progress=False)
    assert isinstance(model[0], svdlora.SVDLoRALinear) and isinstance(model[4], svdlora.SVDLoRALinear)
    assert type(model[2]) is nn.Linear
    model = mlp()
    weights = [model[i].weight.detach().clone() for i in (0, 2, 4)]
    svdlora.convert(model, energy=0.9, inner_rank=8, progress=False)
    for i, W in zip((0, 2, 4), weights):
        s2 = torch.linalg.svdvals(W) ** 2
        share = torch.cumsum(s2, 0) / s2.sum()
        r = model[i].rank
        assert share[r - 1] >= 0.9 and (r == 1 or share[r - 2] < 0.9)
        assert model[i].inner_rank == min(8, r)


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


@pytest.mark.parametrize("residual", [True, False])
def test_save_load_round_trip(tmp_path, residual):
    model = mlp()
    svdlora.convert(model, rank=5, inner_rank=2, residual=residual, progress=False)
    move_off_init(model)
    x = torch.randn(4, 20, dtype=torch.float64)
    y = model(x)
    svdlora.save_adapter(model, tmp_path / "ad")
    assert sorted(os.listdir(tmp_path / "ad")) == ["adapter.safetensors", "adapter_config.json"]
    fresh = mlp()
    svdlora.load_adapter(fresh, tmp_path / "ad")
    assert torch.equal(fresh(x), y)
    assert svdlora.count_parameters(fresh) == svdlora.count_parameters(model)


def test_load_errors_leave_model_unchanged(tmp_path):
    model = mlp()
    svdlora.convert(model, rank=5, inner_rank=2, progress=False)
    svdlora.save_adapter(model, tmp_path / "ad")
    wrong = nn.Sequential(nn.Linear(20, 32), nn.GELU(), nn.Linear(32, 25)).double()
    before = {k: v.clone() for k, v in wrong.state_dict().items()}
    with pytest.raises(ValueError, match="not found|->"):
        svdlora.load_adapter(wrong, tmp_path / "ad")
    assert all(torch.equal(before[k], v) for k, v in wrong.state_dict().items())
    assert type(wrong[0]) is nn.Linear  # nothing was converted
    with pytest.raises(ValueError, match="not an svdlora adapter"):
        svdlora.load_adapter(mlp(), tmp_path / "missing")
    cfg = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    cfg["layers"]["0"]["rank"] = 4
    (tmp_path / "ad" / "adapter_config.json").write_text(json.dumps(cfg))
    fresh = mlp()
    with pytest.raises(ValueError, match="shape"):
        svdlora.load_adapter(fresh, tmp_path / "ad")
    assert type(fresh[0]) is nn.Linear


def test_peft_export_reproduces_outputs(tmp_path):
    peft = pytest.importorskip("peft")
    model = mlp()
    base = mlp()  # identical weights (same seed)
    svdlora.convert(model, rank=5, inner_rank=2, target_modules=["0", "2"], progress=False)
    with torch.no_grad():
        model[0].Y.normal_()
        model[2].S.mul_(1.2)
    x = torch.randn(6, 20, dtype=torch.float64)
    y = model(x)
    svdlora.export_peft(model, tmp_path / "peft")
    peft_model = peft.PeftModel.from_pretrained(base, str(tmp_path / "peft"))
    torch.testing.assert_close(peft_model(x), y, rtol=1e-10, atol=1e-10)


def test_peft_export_with_per_layer_ranks(tmp_path):
    # energy picks a different rank per layer: PEFT needs rank_pattern/alpha_pattern
    peft = pytest.importorskip("peft")
    model, base = mlp(), mlp()
    svdlora.convert(model, energy=0.8, inner_rank=2, progress=False)
    ranks = {model[i].rank for i in (0, 2, 4)}
    assert len(ranks) > 1
    with torch.no_grad():
        for i in (0, 2, 4):
            model[i].Y.normal_()
    x = torch.randn(6, 20, dtype=torch.float64)
    svdlora.export_peft(model, tmp_path / "peft")
    peft_model = peft.PeftModel.from_pretrained(base, str(tmp_path / "peft"))
    torch.testing.assert_close(peft_model(x), model(x), rtol=1e-10, atol=1e-10)


def test_peft_export_rejects_drop_mode(tmp_path):
    model = mlp()
    svdlora.convert(model, rank=5, inner_rank=2, residual=False, progress=False)
    with pytest.raises(ValueError, match="keep-mode"):
        svdlora.export_peft(model, tmp_path / "p")


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"rank": 0}, ValueError, "rank"),
    ({"rank": 21}, ValueError, "rank"),
    ({"rank": 4, "inner_rank": 5}, ValueError, "inner_rank"),
    ({"rank": 2.5}, TypeError, "rank"),
    ({"rank": 4, "svd": "fast"}, ValueError, "svd"),
    ({"rank": 4, "target_modules": ["nothing"]}, ValueError, "matched no"),
    ({"rank": 4, "target_modules": ["1"]}, TypeError, "not an nn.Linear"),
    ({}, ValueError, "rank=|energy="),
    ({"energy": 1.5}, ValueError, "energy"),
    ({"rank": 4, "residual": "keep"}, TypeError, "residual"),
])
def test_convert_bad_inputs_leave_model_unchanged(kwargs, exc, match):
    model = mlp()
    kwargs.setdefault("progress", False)
    with pytest.raises(exc, match=match):
        svdlora.convert(model, **kwargs)
    assert all(type(model[i]) is nn.Linear for i in (0, 2, 4))


def test_from_linear_bad_inputs():
    with pytest.raises(TypeError, match="nn.Linear"):
        svdlora.SVDLoRALinear.from_linear(nn.Conv1d(3, 3, 1), 2, 1)
    with pytest.raises(ValueError, match="inner_rank"):
        svdlora.SVDLoRALinear.from_linear(nn.Linear(8, 8), 2, 3)


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
    torch.testing.assert_close(y16.float(), l32(x), rtol=0.05, atol=0.05)
    y16.float().square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in (l16.S, l16.X, l16.Y))
    S_before = l16.S.detach().clone()
    torch.optim.Adam([l16.S, l16.X, l16.Y], lr=1e-3).step()
    assert (l16.S.detach() - S_before).abs().min() > 5e-4  # every singular value moved
    merged = svdlora.merge(nn.Sequential(l16))[0]
    assert merged.weight.dtype == torch.bfloat16


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


def test_load_checks_scale_settings_values_and_config(tmp_path):
    model = mlp()
    svdlora.convert(model, rank=5, inner_rank=2, progress=False)
    svdlora.save_adapter(model, tmp_path / "ad")
    other = mlp()
    svdlora.convert(other, rank=5, inner_rank=2, alpha=8.0, progress=False)
    with pytest.raises(ValueError, match="alpha"):
        svdlora.load_adapter(other, tmp_path / "ad")
    # a config key missing for a later layer: nothing may be converted before the error
    cfg_path = tmp_path / "ad" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["layers"]["4"]["alpha"]
    cfg_path.write_text(json.dumps(cfg))
    fresh = mlp()
    with pytest.raises(ValueError, match="malformed"):
        svdlora.load_adapter(fresh, tmp_path / "ad")
    assert all(type(fresh[i]) is nn.Linear for i in (0, 2, 4))
    # NaN in a saved tensor
    svdlora.save_adapter(model, tmp_path / "nan")
    st = pytest.importorskip("safetensors.torch")
    tensors = st.load_file(str(tmp_path / "nan" / "adapter.safetensors"))
    tensors["2.S"][0] = float("nan")
    st.save_file(tensors, str(tmp_path / "nan" / "adapter.safetensors"))
    fresh = mlp()
    with pytest.raises(ValueError, match="finite"):
        svdlora.load_adapter(fresh, tmp_path / "nan")
    assert all(type(fresh[i]) is nn.Linear for i in (0, 2, 4))


def test_from_factors_checks_shapes():
    lin = nn.Linear(8, 6)
    U, S, Vh = torch.randn(6, 1), torch.ones(3), torch.randn(3, 8)
    with pytest.raises(ValueError, match="U must have shape"):
        svdlora.SVDLoRALinear.from_factors(lin, U, S, Vh, 2)
