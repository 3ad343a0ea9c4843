"""Model-level helpers: convert every matching ``nn.Linear`` into an ``SVDLoRALinear``, merge
back to plain ``nn.Linear`` layers, and count parameters."""
from __future__ import annotations

import re
import sys
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .nn import SVD_METHODS, SVDLoRALinear, _check_ranks, truncated_factors

__all__ = ["convert", "merge", "count_parameters", "find_targets", "freeze_all_but_adapters",
           "TRAINABLE_NAMES"]

TRAINABLE_NAMES = ("S", "X", "Y")
Targets = Union[None, str, Sequence[str]]


def _matches(name: str, target_modules: Targets) -> bool:
    if target_modules is None:
        return True
    if isinstance(target_modules, str):  # a regex, matched against the full name (PEFT rule)
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)


def find_targets(model: nn.Module, target_modules: Targets = None) -> List[Tuple[str, nn.Linear]]:
    """``(name, module)`` of every ``nn.Linear`` selected by ``target_modules``.

    ``None`` selects all ``nn.Linear``; a list selects names equal to or ending in
    ``.suffix``; a string is a regex that must match the full name (PEFT's convention).
    A named target that is not an ``nn.Linear`` raises TypeError; targets matching nothing
    raise ValueError.
    """
    if target_modules is not None and not isinstance(target_modules, str):
        if not all(isinstance(t, str) for t in target_modules):
            raise TypeError("target_modules must be None, a regex string or a list of name suffixes")
    found: List[Tuple[str, nn.Linear]] = []
    adapters = [n for n, m in model.named_modules() if isinstance(m, SVDLoRALinear)]
    for name, module in model.named_modules():
        if not name or not _matches(name, target_modules):
            continue
        if any(name.startswith(a + ".") for a in adapters if a):
            continue  # the frozen base layer inside an adapter: never wrap it again
        if isinstance(module, nn.Linear) and not isinstance(module, SVDLoRALinear):
            found.append((name, module))
        elif target_modules is not None and not isinstance(module, SVDLoRALinear) \
                and not isinstance(target_modules, str):
            raise TypeError(f"target module {name!r} is a {type(module).__name__}, not an nn.Linear")
    if not found:
        raise ValueError(f"target_modules={target_modules!r} matched no nn.Linear in the model")
    return found


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _energy_rank(S_full: torch.Tensor, energy: float) -> int:
    share = torch.cumsum(S_full.double() ** 2, 0) / torch.sum(S_full.double() ** 2)
    return int(torch.searchsorted(share, torch.tensor(energy - 1e-12, dtype=share.dtype))) + 1


def convert(model: nn.Module, rank: Optional[int] = None, inner_rank: int = 8, *,
            energy: Optional[float] = None, target_modules: Targets = None, residual: bool = True,
            alpha: Optional[float] = None, rank_stabilized: bool = False,
            svd: str = "randomized", seed: int = 0, progress: bool = True) -> nn.Module:
    """Replace matching ``nn.Linear`` layers by :class:`SVDLoRALinear`, in place.

    Parameters
    ----------
    model : nn.Module
    rank : int, optional
        Truncation rank of every layer (with ``energy``: the cap).
    inner_rank : int, default 8
        Rank ``r'`` of the trainable core; clipped to a layer's rank when ``energy`` picks a
        smaller one.
    energy : float in (0, 1], optional
        Per layer, the smallest rank whose share of ``sum(sigma^2)`` reaches ``energy``.
    target_modules : None, list of str or str
        None (all ``nn.Linear``), name suffixes, or a regex matched against full names.
    residual, alpha, rank_stabilized, svd, seed
        As in :meth:`SVDLoRALinear.from_linear`.
    progress : bool
        A tqdm bar over layers (only on a TTY and when tqdm is installed) and a summary.

    Returns
    -------
    nn.Module
        ``model`` itself; every parameter except the adapters' ``S``, ``X``, ``Y`` is frozen.

    Raises
    ------
    TypeError, ValueError
        Bad ranks/energy, unknown ``svd``, targets that are not linear or match nothing.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if rank is None and energy is None:
        raise ValueError("give rank=, energy= or both (energy picks ranks, rank caps them)")
    if energy is not None and (isinstance(energy, bool) or not isinstance(energy, (int, float))
                               or not 0.0 < float(energy) <= 1.0):
        raise ValueError(f"energy must be a float in (0, 1], got {energy!r}")
    if svd not in SVD_METHODS:
        raise ValueError(f"svd must be one of {SVD_METHODS}, got {svd!r}")
    if not isinstance(residual, bool):
        raise TypeError(f"residual must be a bool, got {type(residual).__name__}")
    targets = find_targets(model, target_modules)
    for name, lin in targets:  # validate everything before touching the model
        cap = rank if rank is not None else min(lin.in_features, lin.out_features)
        try:
            _check_ranks(cap, min(inner_rank, cap) if energy is not None else inner_rank,
                         lin.in_features, lin.out_features)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"layer {name!r} ({lin.in_features}->{lin.out_features}): {exc}") from None
        if not lin.weight.is_floating_point() or not bool(torch.isfinite(lin.weight).all()):
            raise ValueError(f"layer {name!r}: weight must be floating and finite (NaN/Inf found)")
    chosen: Dict[str, int] = {}
    for name, lin in _progress(targets, progress):
        cap = rank if rank is not None else min(lin.in_features, lin.out_features)
        if energy is not None:
            U, S, Vh = truncated_factors(lin.weight, min(lin.in_features, lin.out_features),
                                         "exact", seed)
            r = min(cap, _energy_rank(S, float(energy)))
            U, S, Vh = U[:, :r], S[:r], Vh[:r]
        else:
            r = cap
            U, S, Vh = truncated_factors(lin.weight, r, svd, seed)
        layer = SVDLoRALinear.from_factors(lin, U, S, Vh, min(inner_rank, r), alpha=alpha,
                                           rank_stabilized=rank_stabilized, residual=residual,
                                           seed=seed)
        _set_submodule(model, name, layer)
        chosen[name] = r
    freeze_all_but_adapters(model)
    if progress:
        trainable, total = count_parameters(model)
        ranks = sorted(set(chosen.values()))
        print(f"svdlora.convert: {len(chosen)} layers ({'keep' if residual else 'drop'} mode), "
              f"ranks {ranks if len(ranks) <= 8 else f'{ranks[0]}..{ranks[-1]}'}; trainable "
              f"{trainable:,} / total {total:,} parameters ({100.0 * trainable / max(total, 1):.3f}%)",
              file=sys.stderr)
    return model


def freeze_all_but_adapters(model: nn.Module) -> None:
    """Only the adapters' ``S``, ``X`` and ``Y`` keep ``requires_grad``."""
    for module in model.modules():
        adapter = isinstance(module, SVDLoRALinear)
        for pname, p in module.named_parameters(recurse=False):
            p.requires_grad_(adapter and pname in TRAINABLE_NAMES)


def _progress(items: List, enabled: bool) -> Iterable:
    if not enabled or not sys.stderr.isatty():
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, desc="svdlora.convert", unit="layer")


def merge(model: nn.Module) -> nn.Module:
    """Replace every :class:`SVDLoRALinear` by a plain ``nn.Linear`` holding ``W_eff``, in place.

    Returns ``model``.  The merged layers' outputs equal the adapters' outputs (to rounding).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, module in list(model.named_modules()):
        if not isinstance(module, SVDLoRALinear):
            continue
        with torch.no_grad():
            W = module.effective_weight()
            bias = module.bias
            lin = nn.Linear(module.in_features, module.out_features, bias=bias is not None,
                            dtype=W.dtype, device=W.device)
            lin.weight.copy_(W)
            if bias is not None:
                lin.bias.copy_(bias)
        if name:
            _set_submodule(model, name, lin)
        else:
            raise ValueError("merge: the model itself is an SVDLoRALinear; call "
                             "layer.effective_weight() instead")
    return model


def count_parameters(model: nn.Module) -> Tuple[int, int]:
    """``(trainable, total)`` numbers of parameters (buffers such as U, Vh, S0 excluded)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = list(model.parameters())
    return (sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))
