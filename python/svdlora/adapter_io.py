"""Saving, loading and exporting SVD-LoRA adapters.

* ``save_adapter``/``load_adapter``: a directory with ``adapter.safetensors`` (U, Vh, S0, S,
  X, Y per layer) and ``adapter_config.json``.  Files are written to a temporary name and
  renamed into place; loading never unpickles and validates everything before it touches
  the model.
* ``export_peft``: keep-mode adapters as a PEFT LoRA adapter directory
  (``B = U (C - diag(S0))``, ``A = Vh``, ``lora_alpha = r`` so PEFT's scale is 1).
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from .model import _set_submodule, freeze_all_but_adapters
from .nn import SVDLoRALinear

__all__ = ["save_adapter", "load_adapter", "export_peft", "ADAPTER_FILE", "CONFIG_FILE"]

ADAPTER_FILE = "adapter.safetensors"
CONFIG_FILE = "adapter_config.json"
FORMAT = "svdlora-adapter"
FORMAT_VERSION = 1
TENSORS = ("U", "Vh", "S0", "S", "X", "Y")


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError as exc:  # pragma: no cover - safetensors is a torch-extra dependency
        raise ImportError("saving/loading adapters needs safetensors: pip install safetensors") from exc
    return st


def _adapters(model: nn.Module) -> List[Tuple[str, SVDLoRALinear]]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, SVDLoRALinear)]
    if not layers:
        raise ValueError("model has no SVDLoRALinear layers; call svdlora.convert first")
    return layers


def _atomic_write(directory: str, filename: str, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{filename}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, os.path.join(directory, filename))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _check_path(path: Any, name: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    return os.fspath(path)


def save_adapter(model: nn.Module, path: str) -> None:
    """Save every :class:`SVDLoRALinear` of ``model`` into the directory ``path``.

    Writes ``adapter.safetensors`` (``<layer>.U``, ``.Vh``, ``.S0``, ``.S``, ``.X``, ``.Y``) and
    ``adapter_config.json`` (ranks, scale, mode, shapes per layer), each atomically.

    Raises
    ------
    TypeError, ValueError
        ``model`` is not a module or has no adapters; ``path`` exists and is not a directory.
    """
    path = _check_path(path, "path")
    layers = _adapters(model)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"path {path!r} exists and is not a directory")
    os.makedirs(path, exist_ok=True)
    tensors: Dict[str, torch.Tensor] = {}
    config: Dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION, "layers": {}}
    for name, layer in layers:
        for t in TENSORS:
            tensors[f"{name}.{t}"] = getattr(layer, t).detach().cpu().contiguous()
        config["layers"][name] = {
            "in_features": layer.in_features, "out_features": layer.out_features,
            "rank": layer.rank, "inner_rank": layer.inner_rank, "alpha": layer.alpha,
            "rank_stabilized": layer.rank_stabilized, "residual": layer.residual,
            "dtype": str(layer.U.dtype).replace("torch.", ""),
        }
    st = _safetensors()
    _atomic_write(path, ADAPTER_FILE, lambda tmp: st.save_file(tensors, tmp, metadata={"format": FORMAT}))
    _atomic_write(path, CONFIG_FILE, lambda tmp: _write_json(tmp, config))


def _write_json(tmp: str, payload: Dict[str, Any]) -> None:
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1, sort_keys=True)


def _read_config(path: str) -> Dict[str, Any]:
    cfg_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(cfg_path) or not os.path.isfile(os.path.join(path, ADAPTER_FILE)):
        raise ValueError(f"path {path!r} is not an svdlora adapter directory (needs {CONFIG_FILE} "
                         f"and {ADAPTER_FILE})")
    try:
        with open(cfg_path) as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{cfg_path}: unreadable adapter config ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT or not isinstance(config.get("layers"), dict):
        raise ValueError(f"{cfg_path}: not an svdlora adapter config (format {config.get('format')!r})")
    return config


def load_adapter(model: nn.Module, path: str) -> nn.Module:
    """Restore an adapter saved by :func:`save_adapter` onto ``model``, in place.

    ``model`` may be the plain base model (its ``nn.Linear`` layers are converted with the
    saved factors, no SVD is recomputed) or an already converted one.  Everything is
    validated first -- layer names, module types, shapes, tensor names and shapes -- so on
    any error the model is left unchanged.  Outputs match the saved model exactly.

    Raises
    ------
    ValueError
        Missing/unreadable files, wrong architecture, missing or mis-shaped tensors.
    """
    path = _check_path(path, "path")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    config = _read_config(path)
    st = _safetensors()
    try:
        tensors = st.load_file(os.path.join(path, ADAPTER_FILE))
    except Exception as exc:  # safetensors raises its own error types on corrupt files
        raise ValueError(f"{os.path.join(path, ADAPTER_FILE)}: unreadable safetensors file ({exc})") from None
    modules = dict(model.named_modules())
    # Phase 1: validate everything and build every new layer; the model is not touched yet.
    plan = []
    for name, spec in config["layers"].items():
        plan.append((name, _prepare_layer(name, spec, modules.get(name), tensors)))
    # Phase 2: nothing below can fail on bad input.
    for name, (module, new_layer) in plan:
        target = module
        if new_layer is not None:
            _set_submodule(model, name, new_layer)
            target = new_layer
        with torch.no_grad():
            for t in TENSORS:
                getattr(target, t).copy_(tensors[f"{name}.{t}"])
    freeze_all_but_adapters(model)
    return model


_SPEC_KEYS = {"in_features": int, "out_features": int, "rank": int, "inner_rank": int,
              "alpha": (int, float), "rank_stabilized": bool, "residual": bool}


def _prepare_layer(name: str, spec: Any, module: Any, tensors: Dict[str, torch.Tensor]):
    """Check one saved layer against the model; return (module, new SVDLoRALinear or None)."""
    if not isinstance(spec, dict) or any(not isinstance(spec.get(k), t) or isinstance(spec.get(k), bool) != (t is bool)
                                         for k, t in _SPEC_KEYS.items()):
        raise ValueError(f"adapter config for layer {name!r} is malformed (needs {sorted(_SPEC_KEYS)})")
    if not isinstance(module, (nn.Linear, SVDLoRALinear)):
        raise ValueError(f"adapter layer {name!r} not found as an nn.Linear in the model "
                         "(wrong architecture?)")
    if (module.in_features, module.out_features) != (spec["in_features"], spec["out_features"]):
        raise ValueError(f"layer {name!r}: model has {module.in_features}->{module.out_features}, "
                         f"adapter expects {spec['in_features']}->{spec['out_features']}")
    r, rr, D, K = spec["rank"], spec["inner_rank"], spec["out_features"], spec["in_features"]
    expected = {"U": (D, r), "Vh": (r, K), "S0": (r,), "S": (r,), "X": (r, rr), "Y": (rr, r)}
    for t, shape in expected.items():
        key = f"{name}.{t}"
        if key not in tensors:
            raise ValueError(f"adapter file lacks tensor {key!r}")
        value = tensors[key]
        if tuple(value.shape) != shape:
            raise ValueError(f"tensor {key!r} has shape {tuple(value.shape)}, expected {shape}")
        if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
            raise ValueError(f"tensor {key!r} must be floating and finite")
    settings = (r, rr, spec["residual"], float(spec["alpha"]), spec["rank_stabilized"])
    if isinstance(module, SVDLoRALinear):
        have = (module.rank, module.inner_rank, module.residual, module.alpha, module.rank_stabilized)
        if have != settings:
            raise ValueError(f"layer {name!r} is already converted with (rank, inner_rank, residual, "
                             f"alpha, rank_stabilized) = {have}, the adapter has {settings}")
        return module, None
    try:
        new_layer = SVDLoRALinear.from_factors(
            module, tensors[f"{name}.U"], tensors[f"{name}.S0"], tensors[f"{name}.Vh"], rr,
            alpha=spec["alpha"], rank_stabilized=spec["rank_stabilized"], residual=spec["residual"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"layer {name!r}: {exc}") from None
    return module, new_layer


def export_peft(model: nn.Module, directory: str) -> None:
    """Write keep-mode adapters as a PEFT LoRA adapter (``adapter_model.safetensors`` +
    ``adapter_config.json``) loadable with ``peft.PeftModel.from_pretrained(base, directory)``.

    The keep-mode update ``U (C - diag(S0)) Vh`` has rank <= r, so it is exactly the LoRA
    ``B A`` with ``B = U (C - diag(S0))`` (D×r), ``A = Vh`` (r×K) and ``lora_alpha = r``.

    Raises
    ------
    ValueError
        A drop-mode layer (its dense weight is gone, so it is not a delta on the base).
    """
    directory = _check_path(directory, "directory")
    layers = _adapters(model)
    drop = [n for n, m in layers if not m.residual]
    if drop:
        raise ValueError(f"export_peft needs keep-mode (residual=True) adapters; drop-mode layers: {drop[:3]}")
    os.makedirs(directory, exist_ok=True)
    tensors: Dict[str, torch.Tensor] = {}
    ranks: Dict[str, int] = {}
    for name, layer in layers:
        with torch.no_grad():
            C = layer.core() - torch.diag(layer.S0)
            dt = torch.promote_types(C.dtype, layer.U.dtype)
            B = (layer.U.to(dt) @ C.to(dt)).to(layer.U.dtype).contiguous()
        tensors[f"base_model.model.{name}.lora_A.weight"] = layer.Vh.detach().cpu().contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = B.detach().cpu()
        ranks[name] = layer.rank
    r0 = max(set(ranks.values()), key=list(ranks.values()).count)
    config = {
        "peft_type": "LORA", "r": r0, "lora_alpha": r0, "lora_dropout": 0.0, "bias": "none",
        "target_modules": sorted(ranks), "rank_pattern": {n: r for n, r in ranks.items() if r != r0},
        "alpha_pattern": {n: r for n, r in ranks.items() if r != r0}, "fan_in_fan_out": False,
        "use_rslora": False, "init_lora_weights": True, "inference_mode": True,
        "base_model_name_or_path": None, "task_type": None, "modules_to_save": None,
    }
    st = _safetensors()
    _atomic_write(directory, "adapter_model.safetensors",
                  lambda tmp: st.save_file(tensors, tmp, metadata={"format": "pt"}))
    _atomic_write(directory, "adapter_config.json", lambda tmp: _write_json(tmp, config))
