"""Saving, loading and exporting SVD-LoRA adapters.

* ``save_adapter``/``load_adapter``: a directory with ``adapter.safetensors`` (U, Vh, S0, S,
  X, Y per layer) and ``adapter_config.json`` (each layer's :class:`SVDLoRAConfig` as
  ``to_dict()`` plus its shape).  Files are written to a temporary name and renamed into
  place; loading never unpickles and validates everything before it touches the model.
* ``export_peft``: keep-mode adapters as a PEFT LoRA adapter directory
  (``B = U (C - diag(S0))``, ``A = Vh``, ``lora_alpha = r`` so PEFT's scale is 1).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from .._checks import check_path
from .adapter_file import AdapterTensors
from ._module_tree import set_submodule, unchanged_on_error
from .config import SVDLoRAConfig
from .layer import SVDLoRALinear
from .linear_like import (LINEAR_LIKE_NAMES, features, is_linear_like, refuse_sharded,
                          unwrap_compiled)
from .model import freeze_all_but_adapters

__all__ = ["save_adapter", "load_adapter", "export_peft", "ADAPTER_FILE", "CONFIG_FILE"]

ADAPTER_FILE = "adapter.safetensors"
CONFIG_FILE = "adapter_config.json"
FORMAT = "svdlora-adapter"
FORMAT_VERSION = 2
TENSORS = ("U", "Vh", "S0", "S", "X", "Y")
_CONFIG_FIELDS = {f.name for f in dataclasses.fields(SVDLoRAConfig)}
#: A config lists a few hundred bytes per layer; anything this large is not one.
_MAX_CONFIG_BYTES = 64 * 2**20


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError as exc:  # pragma: no cover - safetensors is a torch-extra dependency
        raise ImportError("saving/loading adapters needs safetensors: pip install safetensors") from exc
    return st


def _adapters(model: nn.Module) -> List[Tuple[str, SVDLoRALinear]]:
    """The model's adapters by name, named as in the uncompiled model (a ``torch.compile``
    wrapper's ``_orig_mod.`` prefix would not be found in a fresh model)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model = unwrap_compiled(model)
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


def _write_json(tmp: str, payload: Dict[str, Any]) -> None:
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1, sort_keys=True)


def save_adapter(model: nn.Module, path: str) -> None:
    """Save every :class:`SVDLoRALinear` of ``model`` into the directory ``path``.

    Writes ``adapter.safetensors`` (``<layer>.U``, ``.Vh``, ``.S0``, ``.S``, ``.X``, ``.Y``) and
    ``adapter_config.json`` (per layer: its :class:`SVDLoRAConfig` and shape), each
    atomically.

    Raises
    ------
    TypeError, ValueError
        ``model`` is not a module or has no adapters; ``path`` exists and is not a directory.
    """
    path = check_path(path, "path")
    layers = _adapters(model)
    if layers[0][0] == "":
        raise ValueError("model itself is an SVDLoRALinear; save the module that contains it "
                         "(e.g. torch.nn.Sequential(layer)) so the layer has a name")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"path {path!r} exists and is not a directory")
    os.makedirs(path, exist_ok=True)
    tensors: Dict[str, torch.Tensor] = {}
    config: Dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION, "layers": {}}
    for name, layer in layers:
        for t in TENSORS:
            tensors[f"{name}.{t}"] = getattr(layer, t).detach().cpu().contiguous()
        config["layers"][name] = {
            "config": layer.config.to_dict(), "in_features": layer.in_features,
            "out_features": layer.out_features, "dtype": str(layer.U.dtype).replace("torch.", ""),
        }
    st = _safetensors()
    _atomic_write(path, ADAPTER_FILE, lambda tmp: st.save_file(tensors, tmp, metadata={"format": FORMAT}))
    _atomic_write(path, CONFIG_FILE, lambda tmp: _write_json(tmp, config))


def _read_config(path: str) -> Dict[str, Any]:
    cfg_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(cfg_path) or not os.path.isfile(os.path.join(path, ADAPTER_FILE)):
        raise ValueError(f"path {path!r} is not an svdlora adapter directory (needs {CONFIG_FILE} "
                         f"and {ADAPTER_FILE})")
    if os.path.getsize(cfg_path) > _MAX_CONFIG_BYTES:
        raise ValueError(f"{cfg_path}: adapter config is larger than {_MAX_CONFIG_BYTES} bytes; "
                         "not an svdlora adapter config")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise ValueError(f"{cfg_path}: unreadable adapter config ({reason})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT or not isinstance(config.get("layers"), dict):
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{cfg_path}: not an svdlora adapter config (format {found!r})")
    if config.get("version") not in (1, FORMAT_VERSION):
        raise ValueError(f"{cfg_path}: unsupported adapter format version {config.get('version')!r}")
    if not config["layers"]:
        raise ValueError(f"{cfg_path}: the adapter config lists no layers")
    return config


def load_adapter(model: nn.Module, path: str) -> nn.Module:
    """Restore an adapter saved by :func:`save_adapter` onto ``model``, in place.

    ``model`` may be the plain base model (its linear layers are converted with the saved
    factors, no SVD is recomputed), an already converted one, or either behind
    ``torch.compile``.  Everything is
    validated first -- layer names, module types, settings, tensor names and shapes -- so on
    any error the model is left unchanged.  Outputs match the saved model exactly.

    Raises
    ------
    ValueError
        Missing/unreadable files, wrong architecture, malformed settings, missing or
        mis-shaped tensors.
    """
    path = check_path(path, "path")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    outer, model = model, unwrap_compiled(model)
    config = _read_config(path)
    _safetensors()
    tensors = AdapterTensors(os.path.join(path, ADAPTER_FILE))
    modules = dict(model.named_modules())
    inside_adapters = [n + "." for n, m in modules.items() if isinstance(m, SVDLoRALinear) and n]
    # Phase 1: validate everything and build every new layer; the model is left as it was
    # if anything fails (building a layer freezes its base, which is undone then).
    plan = []
    with unchanged_on_error(model):
        for name, spec in config["layers"].items():
            if not isinstance(name, str) or not name or name.startswith(tuple(inside_adapters)):
                raise ValueError(f"adapter layer name {name!r} does not name a layer of the model "
                                 "that can hold an adapter")
            layer_config, shape = _layer_spec(name, spec, config["version"])
            plan.append((name, _prepare_layer(name, layer_config, shape, modules.get(name),
                                              tensors)))
    # Phase 2: nothing below can fail on bad input.
    for name, (module, new_layer) in plan:
        target = module
        if new_layer is not None:
            set_submodule(model, name, new_layer)
            target = new_layer
        with torch.no_grad():
            for t in TENSORS:
                getattr(target, t).copy_(tensors[f"{name}.{t}"])
    freeze_all_but_adapters(model)
    return outer


def _layer_spec(name: str, spec: Any, version: int) -> Tuple[SVDLoRAConfig, Tuple[int, int]]:
    """A saved layer's config (checked) and ``(in_features, out_features)``."""
    malformed = f"adapter config for layer {name!r} is malformed"
    if not isinstance(spec, dict):
        raise ValueError(f"{malformed} (not a JSON object)")
    shape = spec.get("in_features"), spec.get("out_features")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape):
        raise ValueError(f"{malformed} (needs positive integer in_features and out_features)")
    if version == 1:  # flat fields, written before SVDLoRAConfig existed
        keys = ("rank", "inner_rank", "alpha", "rank_stabilized", "residual")
        if any(k not in spec for k in keys):
            raise ValueError(f"{malformed} (needs {sorted(keys)})")
        fields = {k: spec[k] for k in keys[:4]}
        residual = spec["residual"]
        fields["mode"] = "keep" if residual is True else "drop" if residual is False else residual
    else:
        extra = sorted(set(spec) - {"config", "in_features", "out_features", "dtype"})
        if extra:
            raise ValueError(f"{malformed} (unknown keys {extra})")
        fields = spec.get("config")
        if not isinstance(fields, dict) or set(fields) != _CONFIG_FIELDS:
            raise ValueError(f"{malformed} (its 'config' needs exactly the SVDLoRAConfig fields "
                             f"{sorted(_CONFIG_FIELDS)})")
    try:
        layer_config = SVDLoRAConfig.from_dict(fields)
        if layer_config.rank is None:
            raise ValueError("rank is missing")
        layer_config.layer_ranks(*shape)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{malformed}: {exc}") from None
    return layer_config, shape


def _prepare_layer(name: str, config: SVDLoRAConfig, shape: Tuple[int, int], module: Any,
                   tensors: AdapterTensors):
    """Check one saved layer against the model; return (module, new SVDLoRALinear or None)."""
    if not (isinstance(module, SVDLoRALinear) or is_linear_like(module)):
        raise ValueError(f"adapter layer {name!r} not found as {LINEAR_LIKE_NAMES} in the model "
                         "(wrong architecture?)")
    refuse_sharded(name, module)
    K, D = shape
    have = features(module)
    if have != (K, D):
        raise ValueError(f"layer {name!r}: model has {have[0]}->{have[1]}, "
                         f"adapter expects {K}->{D}")
    r, rr = config.rank, config.inner_rank
    expected = {"U": (D, r), "Vh": (r, K), "S0": (r,), "S": (r,), "X": (r, rr), "Y": (rr, r)}
    for t, tshape in expected.items():
        key = f"{name}.{t}"
        tensors.check(key, tshape)  # from the header: nothing is read before this holds
        if not bool(torch.isfinite(tensors[key]).all()):
            raise ValueError(f"tensor {key!r} must be floating and finite")
    if isinstance(module, SVDLoRALinear):
        have, want = _math_settings(module.config), _math_settings(config)
        if have != want:
            raise ValueError(f"layer {name!r} is already converted with (rank, inner_rank, alpha, "
                             f"rank_stabilized, mode) = {have}, the adapter has {want}")
        return module, None
    try:
        new_layer = SVDLoRALinear.from_factors(
            module, tensors[f"{name}.U"], tensors[f"{name}.S0"], tensors[f"{name}.Vh"], rr,
            alpha=config.alpha, rank_stabilized=config.rank_stabilized, residual=config.residual)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"layer {name!r}: {exc}") from None
    new_layer.record_config(config)
    return module, new_layer


def _math_settings(config: SVDLoRAConfig) -> Tuple[Any, ...]:
    """The settings that define a layer's map (not how its factors were computed)."""
    return config.rank, config.inner_rank, config.alpha, config.rank_stabilized, config.mode


def _peft_method_layers(model: nn.Module, adapter: str) -> List[Tuple[str, Any]]:
    """SVD-LoRA layers of a PEFT model (``svdlora.peft``), named relative to the base model."""
    layers = []
    for name, module in unwrap_compiled(model).named_modules():
        if hasattr(module, "svdlora_S") and hasattr(module, "lora_factors"):
            if adapter not in module.svdlora_S:
                raise ValueError(f"adapter: layer {name!r} has no SVD-LoRA adapter {adapter!r}")
            layers.append((name.removeprefix("base_model.model."), module))
    return layers


def export_peft(model: nn.Module, directory: str, adapter: str = "default") -> None:
    """Write keep-mode adapters as a PEFT LoRA adapter (``adapter_model.safetensors`` +
    ``adapter_config.json``) loadable with ``peft.PeftModel.from_pretrained(base, directory)``.

    ``model`` is converted with :func:`svdlora.convert` (or :func:`load_adapter`), or is a
    PEFT model with SVD-LoRA adapters (:mod:`svdlora.peft`; ``adapter`` names which one).
    The keep-mode update ``U (C - diag(S0)) Vh`` has rank <= r, so it is exactly the LoRA
    ``B A`` with ``B = U (C - diag(S0))`` (D×r), ``A = Vh`` (r×K) and ``lora_alpha = r``.

    Raises
    ------
    ValueError
        A drop-mode layer (its dense weight is gone, so it is not a delta on the base); no
        adapters; a PEFT model without adapter ``adapter``.
    """
    directory = check_path(directory, "directory")
    if not isinstance(adapter, str):
        raise TypeError(f"adapter must be a str, got {type(adapter).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    peft_layers = _peft_method_layers(model, adapter)
    if peft_layers:
        factors = [(name, layer.svdlora_rank[adapter], lambda l=layer: l.lora_factors(adapter))
                   for name, layer in peft_layers]
    else:
        layers = _adapters(model)
        drop = [n for n, m in layers if not m.residual]
        if drop:
            raise ValueError(f"export_peft needs keep-mode (residual=True) adapters; drop-mode "
                             f"layers: {drop[:3]}")
        factors = [(name, layer.rank, layer.lora_factors) for name, layer in layers]
    os.makedirs(directory, exist_ok=True)
    tensors: Dict[str, torch.Tensor] = {}
    ranks: Dict[str, int] = {}
    for name, rank, lora_factors in factors:
        with torch.no_grad():
            B, A = lora_factors()
        tensors[f"base_model.model.{name}.lora_A.weight"] = A.detach().cpu().contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = B.detach().cpu().contiguous()
        ranks[name] = rank
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
