"""PEFT's PiSSA initialisation computed with svdlora: the principal singular triplets of every
LoRA-targeted weight from batched randomized SVDs, written where PEFT keeps them."""
from __future__ import annotations

import copy
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import torch
from peft.utils.peft_types import PeftType
from torch import nn

from .._checks import check_bool, check_int, check_optional_int
from ..linalg.many import rsvd_many
from ..linalg.plan import DEFAULT_OVERSAMPLE

__all__ = ["init_pissa"]


def _lora_layers(model: nn.Module, adapter_name: str) -> List[Tuple[str, nn.Module]]:
    from peft.tuners.lora.layer import Linear as LoraLinear

    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, LoraLinear) and adapter_name in m.lora_A]


@torch.no_grad()
def init_pissa(peft_model: nn.Module, adapter_name: str = "default", *,
               n_iter: Optional[int] = None, oversample: int = DEFAULT_OVERSAMPLE, seed: int = 0,
               progress: bool = False) -> nn.Module:
    """Give a freshly created LoRA ``PeftModel`` the PiSSA initialisation, in place.

    For every LoRA linear layer of adapter ``adapter_name`` (rank ``r``, scaling ``s``) with
    base weight ``W ≈ U_r diag(S_r) V_rᵀ``: ``lora_A = diag(sqrt(S_r/s)) V_rᵀ``,
    ``lora_B = U_r diag(sqrt(S_r/s))`` and the base weight becomes the residual
    ``W - s·B A`` -- exactly what PEFT's ``init_lora_weights="pissa"`` stores, with the SVD
    from :func:`svdlora.rsvd_many` (oversampled, power-iterated, weights of one shape batched)
    instead of a full ``torch.linalg.svd`` per layer.  The adapter's config then says
    ``init_lora_weights="pissa"``, so the result is a normal PEFT PiSSA model: it trains,
    saves, loads and converts to plain LoRA
    (``save_pretrained(..., path_initial_model_for_weight_conversion=...)``) as PEFT's own.

    Parameters
    ----------
    peft_model : peft.PeftModel
        Built by ``get_peft_model(base, LoraConfig(...))`` with ``init_lora_weights=True``
        (the default) and not trained yet.
    adapter_name : str
        The LoRA adapter to initialise.
    n_iter, oversample, seed
        As in :func:`svdlora.rsvd` (``n_iter=None``: its accuracy-driven default).
    progress : bool
        A progress bar over the batched SVD calls.

    Returns
    -------
    peft_model

    Raises
    ------
    TypeError
        ``peft_model`` is not a module.
    ValueError
        The adapter does not exist, is not LoRA, was already initialised as PiSSA (its base
        weights are residuals already), or its weights are not float32/float16/bfloat16.
    """
    if not isinstance(peft_model, nn.Module):
        raise TypeError(f"peft_model must be a peft.PeftModel, got {type(peft_model).__name__}")
    if not isinstance(adapter_name, str):
        raise TypeError(f"adapter_name must be a str, got {type(adapter_name).__name__}")
    n_iter = check_optional_int(n_iter, "n_iter", minimum=0)
    oversample = check_int(oversample, "oversample", minimum=0)
    seed = check_int(seed, "seed", minimum=0)
    progress = check_bool(progress, "progress")
    configs = getattr(peft_model, "peft_config", None)
    if not isinstance(configs, dict) or adapter_name not in configs:
        raise ValueError(f"adapter_name: the model has no PEFT adapter {adapter_name!r}")
    config = configs[adapter_name]
    if getattr(config, "peft_type", None) != PeftType.LORA:
        raise ValueError(f"adapter_name: adapter {adapter_name!r} is {config.peft_type}, not LORA")
    if config.init_lora_weights not in (True, False):
        raise ValueError(f"adapter {adapter_name!r} was created with init_lora_weights="
                         f"{config.init_lora_weights!r}; init_pissa needs a fresh LoRA adapter "
                         "(init_lora_weights=True)")
    layers = _lora_layers(peft_model, adapter_name)
    if not layers:
        raise ValueError(f"adapter {adapter_name!r} has no LoRA linear layers")
    weights: List[torch.Tensor] = []
    for name, layer in layers:
        W = layer.get_base_layer().weight
        if W.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"layer {name!r}: PiSSA needs float32, float16 or bfloat16 weights, "
                             f"got {W.dtype}")
        # the (out, in) orientation, as PEFT's pissa_init; Conv1D stores it transposed
        weights.append(W.mT if layer.fan_in_fan_out else W)
    by_rank: Dict[int, List[int]] = defaultdict(list)
    for i, (_, layer) in enumerate(layers):
        by_rank[layer.r[adapter_name]].append(i)
    factors: List = [None] * len(layers)
    for r, idx in by_rank.items():
        for i, f in zip(idx, rsvd_many([weights[i] for i in idx], r, oversample=oversample,
                                       n_iter=n_iter, seed=seed, progress=progress)):
            factors[i] = f
    for (name, layer), W, (U, S, Vh) in zip(layers, weights, factors):
        s = layer.scaling[adapter_name]
        root = torch.sqrt(S.float() / s)
        A = root[:, None] * Vh.float()
        B = U.float() * root[None, :]
        layer.lora_A[adapter_name].weight.data = A.to(layer.lora_A[adapter_name].weight.dtype)
        layer.lora_B[adapter_name].weight.data = B.to(layer.lora_B[adapter_name].weight.dtype)
        base = layer.get_base_layer()
        if base.weight.dtype == torch.float32:  # in place: one GEMM pass, no D×K temporaries
            target = base.weight.data.mT if layer.fan_in_fan_out else base.weight.data
            target.addmm_(B, A, alpha=-s)
        else:
            residual = W.float() - s * (B @ A)
            base.weight.data = (residual.mT if layer.fan_in_fan_out else residual).to(W.dtype).contiguous()
    # a copy: PEFT keeps the config object the user passed, which may be reused elsewhere
    pissa_config = copy.copy(config)
    pissa_config.init_lora_weights = "pissa"
    configs[adapter_name] = pissa_config
    return peft_model
