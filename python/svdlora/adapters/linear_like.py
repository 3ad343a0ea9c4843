"""The dense layers an adapter can wrap: ``nn.Linear`` and transformers' ``Conv1D`` (GPT-2's
linear layer, whose weight is stored transposed), seen through one (D, K) weight view."""
from __future__ import annotations

import sys
from typing import Optional, Tuple

import torch
from torch import nn

from .._checks import is_dtensor

__all__ = ["is_conv1d", "is_linear_like", "dense_weight", "bias_of", "features",
           "LINEAR_LIKE_NAMES", "unwrap_compiled"]

#: How error messages name the accepted layer types.
LINEAR_LIKE_NAMES = "an nn.Linear or a transformers Conv1D"


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is ``transformers.pytorch_utils.Conv1D`` (``y = x W + b``, W is K×D).

    Looked up only when transformers is already imported: a model holding a Conv1D
    cannot exist otherwise, and svdlora does not depend on transformers.
    """
    pytorch_utils = sys.modules.get("transformers.pytorch_utils")
    conv1d = getattr(pytorch_utils, "Conv1D", None)
    return conv1d is not None and isinstance(module, conv1d)


def is_linear_like(module: nn.Module) -> bool:
    """``nn.Linear`` (any subclass) or transformers' ``Conv1D``."""
    return isinstance(module, nn.Linear) or is_conv1d(module)


def features(module: nn.Module) -> Tuple[int, int]:
    """``(in_features, out_features)`` of a linear-like layer (or of an adapter layer)."""
    if is_conv1d(module):
        K, D = module.weight.shape
        return int(K), int(D)
    return int(module.in_features), int(module.out_features)


def refuse_sharded(name: str, module: nn.Module) -> None:
    """A layer whose weight is sharded (FSDP2's ``fully_shard`` makes DTensors of it) cannot
    be converted in place: its SVD needs the whole matrix, and the new factors would need
    sharding by the same plan.  Converting first and sharding the converted model works."""
    if is_dtensor(getattr(module, "weight", None)):
        raise ValueError(f"layer {name!r} has a sharded weight (a DTensor, e.g. from FSDP2's "
                         "fully_shard); apply svdlora.convert / load_adapter to the unsharded "
                         "model first, then shard the converted model")


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The (D, K) weight of ``y = x Wᵀ + b``: ``weight`` itself, or a transposed view of a
    Conv1D's (K, D) weight (no copy)."""
    return module.weight.mT if is_conv1d(module) else module.weight


def bias_of(module: nn.Module) -> Optional[torch.Tensor]:
    """The layer's bias (None when it has none)."""
    return getattr(module, "bias", None)


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper holds (``model`` itself when not compiled), so
    that adapter names never carry the wrapper's ``_orig_mod.`` prefix."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else model

