"""End to end: a small transformer built here (no hub), converted with svdlora.convert, takes
training steps whose loss decreases and whose gradients match the same model with every
adapter computed by the library's pure-torch reference.  Runs on every device."""
from __future__ import annotations

import copy

import pytest

from helpers import needs_compiled, torch

pytestmark = needs_compiled


def tiny_transformer(seed: int = 0):
    from torch import nn

    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, dropout=0.0,
                                       batch_first=True)
    body = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    return nn.Sequential(nn.Linear(16, 64), body, nn.Linear(64, 8)).double()


def reference_model(converted):
    """A copy whose adapters run the pure-torch reference (autograd differentiates it)."""
    import svdlora

    ref = copy.deepcopy(converted)
    for module in ref.modules():
        if isinstance(module, svdlora.SVDLoRALinear):
            module.backend = "reference"
    return ref


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

    ref_model = reference_model(model)
    ref_out = ref_model(x)
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
