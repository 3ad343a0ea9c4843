"""Model-level helpers: convert every selected ``nn.Linear`` into an ``SVDLoRALinear``, merge
back to plain ``nn.Linear`` layers, and count parameters."""
from __future__ import annotations

import sys
from typing import Any, List, Optional, Tuple

import torch
from torch import nn

from .._checks import check_bool
from .._progress import progress as progress_bar
from ._module_tree import set_submodule, unchanged_on_error
from .config import ALL_LINEAR, SVDLoRAConfig, Targets, _check_targets, select_modules
from .factors import truncated_factors
from .layer import SVDLoRALinear
from .linear_like import (LINEAR_LIKE_NAMES, dense_weight, features, is_linear_like, refuse_sharded,
                          unwrap_compiled)

__all__ = ["convert", "merge", "count_parameters", "find_targets", "freeze_all_but_adapters",
           "TRAINABLE_NAMES"]

TRAINABLE_NAMES = ("S", "X", "Y")


def _output_layer_names(model: nn.Module) -> set:
    """Names of the model's output projection (``lm_head``, a classifier's last linear),
    which ``"all-linear"`` leaves out as PEFT does."""
    names = set()
    get_out = getattr(model, "get_output_embeddings", None)
    head = get_out() if callable(get_out) else None
    for name, module in model.named_modules():
        if head is not None and module is head:
            names.add(name)
    if not names:  # a plain module tree: its last linear-like layer is the output layer
        last = [n for n, m in model.named_modules() if n and is_linear_like(m)]
        names.update(last[-1:])
    return names


def find_targets(model: nn.Module, target_modules: Targets = None) -> List[Tuple[str, nn.Module]]:
    """``(name, module)`` of every linear-like layer (``nn.Linear`` or transformers'
    ``Conv1D``) selected by ``target_modules``.

    ``None`` selects all of them; ``"all-linear"`` all but the output layer (PEFT's rule); a
    list selects names equal to or ending in ``.name``; any other string is a regex that must
    match the full name (PEFT's convention).  A named target that is not linear-like raises
    TypeError; targets matching nothing raise ValueError.
    """
    target_modules = _check_targets(target_modules)
    model = unwrap_compiled(model)
    found: List[Tuple[str, nn.Module]] = []
    adapters = [n for n, m in model.named_modules() if isinstance(m, SVDLoRALinear)]
    all_linear = target_modules == ALL_LINEAR
    skip = _output_layer_names(model) if all_linear else set()
    for name, module in model.named_modules():
        if not name or name in skip:
            continue
        if not all_linear and not select_modules(name, target_modules):
            continue
        if any(name.startswith(a + ".") for a in adapters if a):
            continue  # the frozen base layer inside an adapter: never wrap it again
        if is_linear_like(module) and not isinstance(module, SVDLoRALinear):
            found.append((name, module))
        elif target_modules is not None and not isinstance(module, SVDLoRALinear) \
                and not isinstance(target_modules, str):
            raise TypeError(f"target module {name!r} is a {type(module).__name__}, not "
                            f"{LINEAR_LIKE_NAMES}")
    if not found:
        raise ValueError(f"target_modules={target_modules!r} matched no linear layer "
                         f"({LINEAR_LIKE_NAMES}) in the model")
    return found


def _resolve_config(config: Optional[SVDLoRAConfig], options: dict) -> SVDLoRAConfig:
    """One config from ``config=`` or from keyword arguments (not both)."""
    given = {k: v for k, v in options.items() if v is not None}
    residual = given.pop("residual", None)
    if residual is not None:
        if not isinstance(residual, bool):
            raise TypeError(f"residual must be a bool, got {type(residual).__name__}")
        mode = "keep" if residual else "drop"
        if given.get("mode", mode) != mode:
            raise ValueError(f"residual={residual} contradicts mode={given['mode']!r}")
        given["mode"] = mode
    if config is not None:
        if not isinstance(config, SVDLoRAConfig):
            raise TypeError(f"config must be an SVDLoRAConfig, got {type(config).__name__}")
        if given:
            raise TypeError(f"give config= or individual settings, not both (got config and "
                            f"{', '.join(sorted(given))})")
        return config
    return SVDLoRAConfig(**given)


def convert(model: nn.Module, rank: Any = None, inner_rank: Optional[int] = None, *,
            config: Optional[SVDLoRAConfig] = None, energy: Optional[float] = None,
            target_modules: Targets = None, mode: Optional[str] = None,
            residual: Optional[bool] = None, alpha: Optional[float] = None,
            rank_stabilized: Optional[bool] = None, svd: Optional[str] = None,
            seed: Optional[int] = None, progress: bool = True) -> nn.Module:
    """Replace the selected linear layers (``nn.Linear``, transformers' ``Conv1D``) by
    :class:`SVDLoRALinear`, in place.

    Parameters
    ----------
    model : nn.Module
    rank : int or SVDLoRAConfig, optional
        Truncation rank of every layer (with ``energy``: the cap), or a whole config.
    inner_rank : int, optional
        Rank ``r'`` of the trainable core (default 8); clipped to a layer's rank when
        ``energy`` picks a smaller one.
    config : SVDLoRAConfig, optional
        All settings in one object (then give none of the individual ones).
    energy, target_modules, mode, alpha, rank_stabilized, svd, seed
        As in :class:`SVDLoRAConfig` (``None``: its default).
    residual : bool, optional
        ``True`` for keep mode, ``False`` for drop mode (an alias of ``mode``).
    progress : bool
        A tqdm bar over layers (on a terminal, when tqdm is installed) and a summary line on
        stderr.

    Returns
    -------
    nn.Module
        ``model`` itself (a ``torch.compile`` wrapper is converted through the module it
        holds); every parameter except the adapters' ``S``, ``X``, ``Y`` is frozen.

    Raises
    ------
    TypeError, ValueError
        Invalid settings, layers for which a rank is out of range, non-finite weights,
        targets that are not linear or match nothing.  The model is left unchanged.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(rank, SVDLoRAConfig):
        config, rank = (rank, None) if config is None else (config, rank)
    config = _resolve_config(config, dict(rank=rank, inner_rank=inner_rank, energy=energy,
                                          target_modules=target_modules, mode=mode,
                                          residual=residual, alpha=alpha,
                                          rank_stabilized=rank_stabilized, svd=svd, seed=seed))
    progress = check_bool(progress, "progress")
    outer, model = model, unwrap_compiled(model)
    targets = find_targets(model, config.target_modules)
    for name, lin in targets:  # validate everything before touching the model
        refuse_sharded(name, lin)
        K, D = features(lin)
        try:
            config.layer_ranks(K, D)
        except ValueError as exc:
            raise ValueError(f"layer {name!r} ({K}->{D}): {exc}") from None
        if not lin.weight.is_floating_point() or not bool(torch.isfinite(lin.weight).all()):
            raise ValueError(f"layer {name!r}: weight must be floating and finite (NaN/Inf found)")
    new_layers = []
    with unchanged_on_error(model):
        for name, lin in progress_bar(targets, desc="svdlora.convert", unit="layer",
                                      enabled=progress):
            cap, _ = config.layer_ranks(*features(lin))
            try:
                U, S, Vh = truncated_factors(dense_weight(lin), cap, config.svd, config.seed,
                                             config.energy)
            except ValueError as exc:
                raise ValueError(f"layer {name!r}: {exc}") from None
            r, inner = config.layer_ranks(*features(lin), S.shape[0])
            layer = SVDLoRALinear.from_factors(
                lin, U, S, Vh, inner, alpha=config.alpha, rank_stabilized=config.rank_stabilized,
                residual=config.residual, seed=config.seed)
            layer.record_config(config.replace(rank=r, inner_rank=inner))
            new_layers.append((name, layer))
    for name, layer in new_layers:  # nothing below can fail
        set_submodule(model, name, layer)
    freeze_all_but_adapters(model)
    if progress:
        trainable, total = count_parameters(model)
        ranks = sorted({layer.rank for _, layer in new_layers})
        print(f"svdlora.convert: {len(new_layers)} layers ({config.mode} mode), "
              f"ranks {ranks if len(ranks) <= 8 else f'{ranks[0]}..{ranks[-1]}'}; trainable "
              f"{trainable:,} / total {total:,} parameters ({100.0 * trainable / max(total, 1):.3f}%)",
              file=sys.stderr)
    return outer


def freeze_all_but_adapters(model: nn.Module) -> None:
    """Only the adapters' ``S``, ``X`` and ``Y`` keep ``requires_grad``."""
    for module in model.modules():
        adapter = isinstance(module, SVDLoRALinear)
        for pname, p in module.named_parameters(recurse=False):
            p.requires_grad_(adapter and pname in TRAINABLE_NAMES)


def merge(model: nn.Module) -> nn.Module:
    """Replace every :class:`SVDLoRALinear` by a plain ``nn.Linear`` holding ``W_eff``, in place.

    The merged layers' outputs equal the adapters' outputs to rounding, whatever the base
    layer: a base that is not a plain ``nn.Linear`` (a subclass, a quantized layer) is
    merged through the affine map its forward actually computes, measured by running it.

    Returns
    -------
    nn.Module
        ``model``.

    Raises
    ------
    ValueError
        A base layer whose forward is not affine in its input (no dense weight reproduces
        it), or ``model`` itself is an adapter.  The model is left unchanged.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, SVDLoRALinear):
        raise ValueError("merge: the model itself is an SVDLoRALinear; call "
                         "layer.effective_weight() instead")
    merged = []
    for name, module in model.named_modules():
        if not isinstance(module, SVDLoRALinear):
            continue
        with torch.no_grad():
            try:
                W, bias = module.effective_map()
            except ValueError as exc:
                raise ValueError(f"merge: layer {name!r}: {exc}") from None
            lin = nn.Linear(module.in_features, module.out_features, bias=bias is not None,
                            dtype=W.dtype, device=W.device)
            lin.weight.copy_(W)
            if bias is not None:
                lin.bias.copy_(bias)
        merged.append((name, lin))
    for name, lin in merged:
        set_submodule(model, name, lin)
    return model


def count_parameters(model: nn.Module) -> Tuple[int, int]:
    """``(trainable, total)`` numbers of parameters (buffers such as U, Vh, S0 excluded)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = list(model.parameters())
    return (sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))
