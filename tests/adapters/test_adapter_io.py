"""Adapter files: save/load round trips (bit-exact), the config file as SVDLoRAConfig dicts,
version-1 files, validation before anything changes, and lossless PEFT export."""
from __future__ import annotations

import json
import os

import pytest

from helpers import mlp, move_off_init, needs_torch, torch

pytestmark = needs_torch

if torch is not None:
    from torch import nn

    import svdlora


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


def test_config_file_holds_each_layers_svdlora_config(tmp_path):
    model = mlp()
    svdlora.convert(model, energy=0.8, inner_rank=2, alpha=3.0, rank_stabilized=True,
                    progress=False)
    svdlora.save_adapter(model, tmp_path / "ad")
    saved = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert saved["format"] == "svdlora-adapter" and saved["version"] == 2
    for name, spec in saved["layers"].items():
        layer = model.get_submodule(name)
        config = svdlora.SVDLoRAConfig.from_dict(spec["config"])
        assert config == layer.config and config.to_dict() == spec["config"]
        assert (config.rank, config.alpha, config.rank_stabilized) == (layer.rank, 3.0, True)
        assert (spec["in_features"], spec["out_features"]) == (layer.in_features, layer.out_features)


def test_reads_version_1_files(tmp_path):
    model = mlp()
    svdlora.convert(model, rank=5, inner_rank=2, progress=False)
    move_off_init(model)
    svdlora.save_adapter(model, tmp_path / "ad")
    path = tmp_path / "ad" / "adapter_config.json"
    saved = json.loads(path.read_text())
    v1 = {"format": "svdlora-adapter", "version": 1, "layers": {}}
    for name, spec in saved["layers"].items():
        c = spec["config"]
        v1["layers"][name] = {"in_features": spec["in_features"], "out_features": spec["out_features"],
                              "rank": c["rank"], "inner_rank": c["inner_rank"], "alpha": c["alpha"],
                              "rank_stabilized": c["rank_stabilized"], "residual": c["mode"] == "keep",
                              "dtype": spec["dtype"]}
    path.write_text(json.dumps(v1))
    fresh = mlp()
    svdlora.load_adapter(fresh, tmp_path / "ad")
    x = torch.randn(3, 20, dtype=torch.float64)
    assert torch.equal(fresh(x), model(x))


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
    path = tmp_path / "ad" / "adapter_config.json"
    cfg = json.loads(path.read_text())
    cfg["layers"]["4"]["config"]["rank"] = 4  # a later layer: the earlier ones must not change
    path.write_text(json.dumps(cfg))
    fresh = mlp()
    with pytest.raises(ValueError, match="shape"):
        svdlora.load_adapter(fresh, tmp_path / "ad")
    assert all(type(fresh[i]) is nn.Linear for i in (0, 2, 4))
    assert all(p.requires_grad for p in fresh.parameters())  # layers 0 and 2 were built first


def test_layer_names_that_cannot_hold_an_adapter_are_rejected(tmp_path):
    layer = svdlora.SVDLoRALinear.from_linear(nn.Linear(8, 8), 4, 2)
    with pytest.raises(ValueError, match="model itself is an SVDLoRALinear"):
        svdlora.save_adapter(layer, tmp_path / "bare")
    model = mlp()
    svdlora.convert(model, rank=5, inner_rank=2, progress=False)
    svdlora.save_adapter(model, tmp_path / "ad")
    path = tmp_path / "ad" / "adapter_config.json"
    cfg = json.loads(path.read_text())
    for bad in ("", "0.base_layer"):
        edited = dict(cfg, layers={bad: cfg["layers"]["0"]})
        path.write_text(json.dumps(edited))
        target = mlp()
        svdlora.convert(target, rank=5, inner_rank=2, target_modules=["0"], progress=False)
        with pytest.raises(ValueError, match="does not name a layer"):
            svdlora.load_adapter(target, tmp_path / "ad")
    path.write_text(json.dumps(dict(cfg, layers={})))
    with pytest.raises(ValueError, match="lists no layers"):
        svdlora.load_adapter(mlp(), tmp_path / "ad")


@pytest.mark.parametrize("edit, match", [
    (lambda layer: layer["config"].pop("alpha"), "malformed.*SVDLoRAConfig fields"),
    (lambda layer: layer["config"].update(mode="sideways"), "malformed.*mode"),
    (lambda layer: layer["config"].update(inner_rank=99), "malformed.*inner_rank"),
    (lambda layer: layer["config"].update(rank="5"), "malformed.*rank"),
    (lambda layer: layer.update(in_features=-1), "malformed.*in_features"),
    (lambda layer: layer.update(extra=1), "malformed.*unknown keys"),
])
def test_malformed_layer_configs_are_rejected_before_any_change(tmp_path, edit, match):
    model = mlp()
    svdlora.convert(model, rank=5, inner_rank=2, progress=False)
    svdlora.save_adapter(model, tmp_path / "ad")
    path = tmp_path / "ad" / "adapter_config.json"
    cfg = json.loads(path.read_text())
    edit(cfg["layers"]["4"])
    path.write_text(json.dumps(cfg))
    fresh = mlp()
    with pytest.raises(ValueError, match=match):
        svdlora.load_adapter(fresh, tmp_path / "ad")
    assert all(type(fresh[i]) is nn.Linear for i in (0, 2, 4))


def test_load_checks_settings_of_converted_layers_and_tensor_values(tmp_path):
    model = mlp()
    svdlora.convert(model, rank=5, inner_rank=2, progress=False)
    svdlora.save_adapter(model, tmp_path / "ad")
    other = mlp()
    svdlora.convert(other, rank=5, inner_rank=2, alpha=8.0, progress=False)
    with pytest.raises(ValueError, match="alpha"):
        svdlora.load_adapter(other, tmp_path / "ad")
    # NaN in a saved tensor
    st = pytest.importorskip("safetensors.torch")
    tensors = st.load_file(str(tmp_path / "ad" / "adapter.safetensors"))
    tensors["2.S"][0] = float("nan")
    st.save_file(tensors, str(tmp_path / "ad" / "adapter.safetensors"))
    fresh = mlp()
    with pytest.raises(ValueError, match="finite"):
        svdlora.load_adapter(fresh, tmp_path / "ad")
    assert all(type(fresh[i]) is nn.Linear for i in (0, 2, 4))


def test_save_and_load_check_their_arguments(tmp_path):
    with pytest.raises(ValueError, match="no SVDLoRALinear"):
        svdlora.save_adapter(mlp(), tmp_path / "x")
    with pytest.raises(TypeError, match="path"):
        svdlora.load_adapter(mlp(), 3)
    (tmp_path / "file").write_text("x")
    model = mlp()
    svdlora.convert(model, rank=5, inner_rank=2, progress=False)
    with pytest.raises(ValueError, match="not a directory"):
        svdlora.save_adapter(model, tmp_path / "file")


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


def test_save_of_a_compiled_model_loads_into_a_fresh_one(tmp_path):
    """torch.compile wraps the model as ``_orig_mod``; saved names must not carry it."""
    model = svdlora.convert(mlp(seed=3), rank=4, inner_rank=2, progress=False)
    move_off_init(model)
    compiled = torch.compile(model, backend="eager")
    x = torch.randn(5, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = compiled(x)
    svdlora.save_adapter(compiled, str(tmp_path))
    names = json.loads((tmp_path / "adapter_config.json").read_text())["layers"]
    assert sorted(names) == ["0", "2", "4"]
    fresh = svdlora.load_adapter(mlp(seed=3), str(tmp_path))
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)
    again = torch.compile(mlp(seed=3), backend="eager")  # loading into a compiled model works too
    svdlora.load_adapter(again, str(tmp_path))
    with torch.no_grad():
        assert torch.equal(again(x), expected)


def _rewrite_safetensors_header(path, edit) -> None:
    """Apply ``edit`` to the JSON header of a safetensors file, keeping its data bytes."""
    import struct
    raw = path.read_bytes()
    (length,) = struct.unpack_from("<Q", raw)
    header = json.loads(raw[8:8 + length])
    edit(header)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + length:])


def _nested(depth: int) -> str:
    return '{"format": "svdlora-adapter", "version": 2, "layers": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("damage, match", [
    # the config declares sizes no model here has: refused by the shape check, nothing built
    ("config_features", "model has 20->32, adapter expects 1099511627776->32"),
    ("config_rank", "malformed"),
    # the tensor file declares 2**40 elements (or a byte count past int64) in a tiny file:
    # refused when its header is read, before any tensor is materialised
    ("header_huge_shape", "unreadable safetensors file"),
    ("header_overflowing_shape", "unreadable safetensors file"),
    # the tensor's bytes and header agree, but not with what the config expects
    ("header_other_shape", "shape"),
    ("config_nested", "nested too deeply"),
    ("config_oversized", "larger than"),
])
def test_damaged_adapter_files_are_refused_and_the_model_is_unchanged(tmp_path, damage, match):
    model = mlp()
    svdlora.convert(model, rank=5, inner_rank=2, progress=False)
    svdlora.save_adapter(model, tmp_path / "ad")
    cfg_path = tmp_path / "ad" / "adapter_config.json"
    st_path = tmp_path / "ad" / "adapter.safetensors"
    cfg = json.loads(cfg_path.read_text())
    if damage == "config_features":
        cfg["layers"]["0"]["in_features"] = 2**40
    elif damage == "config_rank":
        cfg["layers"]["4"]["config"]["rank"] = 2**40
    elif damage == "header_huge_shape":
        _rewrite_safetensors_header(st_path, lambda h: h["4.U"].update(shape=[2**20, 2**20]))
    elif damage == "header_overflowing_shape":
        _rewrite_safetensors_header(st_path, lambda h: h["4.U"].update(shape=[2**62, 4]))
    elif damage == "header_other_shape":
        # 4.U is (25, 5); declare (5, 25): same bytes, so the file itself is consistent
        _rewrite_safetensors_header(st_path, lambda h: h["4.U"].update(shape=[5, 25]))
    if damage == "config_nested":
        cfg_path.write_text(_nested(100_000))
    elif damage == "config_oversized":
        with open(cfg_path, "r+b") as f:  # sparse: 65 MiB declared, nothing written
            f.truncate(65 * 2**20)
    else:
        cfg_path.write_text(json.dumps(cfg))
    fresh = mlp()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        svdlora.load_adapter(fresh, tmp_path / "ad")
    assert all(type(fresh[i]) is nn.Linear for i in (0, 2, 4))
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())
    assert all(p.requires_grad for p in fresh.parameters())
