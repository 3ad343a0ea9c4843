"""End to end: a small transformer built here (no hub), converted with svdlora.convert, takes
training steps whose loss decreases and whose gradients match a plain-torch reference of the
same model.  Runs on the CPU and, when available, on CUDA."""
from __future__ import annotations

import copy

import pytest

from conftest import HAS_CUDA, needs_compiled, torch

pytestmark = needs_compiled

DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])


def tiny_transformer(seed: int = 0):
    from torch import nn

    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, dropout=0.0,
                                       batch_first=True)
    body = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    return nn.Sequential(nn.Linear(16, 64), body, nn.Linear(64, 8)).double()


def reference_forward(converted, x):
    """The converted model's forward with every adapter replaced by the plain-torch math."""
    import svdlora

    ref = copy.deepcopy(converted)
    for name, module in list(ref.named_modules()):
        if isinstance(module, svdlora.SVDLoRALinear):
            module.forward = _plain_forward(module)
    return ref, ref(x)


def _plain_forward(module):
    def forward(x):
        # keep mode adds U (diag(S - S0) + scale X Y) Vh to the frozen weight (DESIGN.md 1)
        S = module.S - module.S0 if module.residual else module.S
        C = torch.diag(S) + module.scale * module.X @ module.Y
        y = ((x @ module.Vh.T) @ C.T) @ module.U.T
        if module.residual:
            y = y + x @ module.base_layer.weight.T
        if module.bias is not None:
            y = y + module.bias
        return y
    return forward


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("residual", [True, False])
def test_training_step_matches_reference_and_loss_decreases(device, residual):
    import svdlora

    model = tiny_transformer()
    svdlora.convert(model, rank=16, inner_rank=4, residual=residual,
                    target_modules=r".*(linear1|linear2)$|^0$", progress=False)
    model.to(device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 10, 16, generator=g, dtype=torch.float64).to(device)
    target = torch.randn(4, 10, 8, generator=g, dtype=torch.float64).to(device)
    # move off the initial point so X, Y, S all get non-trivial gradients
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, svdlora.SVDLoRALinear):
                module.Y.normal_(0, 0.1, generator=torch.Generator(device).manual_seed(2))

    ref_model, ref_out = reference_forward(model, x)
    out = model(x)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    loss = torch.nn.functional.mse_loss(out, target)
    ref_loss = torch.nn.functional.mse_loss(ref_out, target)
    loss.backward()
    ref_loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    ref_grads = {n: p.grad for n, p in ref_model.named_parameters() if p.requires_grad}
    assert grads.keys() == ref_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-8, atol=1e-10)

    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    first = float(loss.detach())
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.8 * first
