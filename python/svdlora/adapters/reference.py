"""The SVD-LoRA adapter map in plain torch ops: the fallback where no compiled kernel exists
and the oracle the compiled ops are tested against.

:func:`forward` and :func:`backward` have the signatures of the ops ``svdlora::adapter_forward``
and ``svdlora::adapter_backward`` (declared in ``csrc/schemas.cpp``) and the same precision
contract: GEMMs over the activations run in the activations' dtype (bf16/fp16 GEMMs
accumulate in fp32), the core ``C`` and the parameter gradients are formed in float32 (float64
for float64 activations).  :func:`forward` is differentiable with torch autograd, which makes
autograd itself the reference for the gradients; :func:`backward` spells the gradient
formulas out, as the compiled op does.

For error analysis, ``storage_dtype`` rounds every stored intermediate (and the output) to a
lower precision while computing in the inputs' dtype: with float64 inputs and
``storage_dtype=torch.bfloat16`` it is an exact, CPU-independent model of "bf16 storage,
wide accumulation", the precision floor a bf16 kernel is measured against.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch

__all__ = ["forward", "backward", "core"]


def core(S: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, scale: float,
         dtype: torch.dtype) -> torch.Tensor:
    """The r×r core ``C = diag(S) + scale · X Y`` in ``dtype``."""
    # diag(S) as eye * S (exact): aten::diag has no ONNX translation in the TorchScript exporter
    eye = torch.eye(S.shape[0], dtype=dtype, device=S.device)
    return eye * S.to(dtype) + scale * (X.to(dtype) @ Y.to(dtype))


def accumulation_dtype(activations: torch.dtype) -> torch.dtype:
    """float64 for float64 activations, else float32 (the core and parameter gradients)."""
    return torch.float64 if activations == torch.float64 else torch.float32


def _rounding(storage_dtype: Optional[torch.dtype]) -> Callable[[torch.Tensor], torch.Tensor]:
    if storage_dtype is None:
        return lambda t: t
    return lambda t: t.to(storage_dtype).to(t.dtype)


def forward(x: torch.Tensor, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor,
            X: torch.Tensor, Y: torch.Tensor, scale: float,
            base_weight: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
            base_out: Optional[torch.Tensor] = None, *,
            storage_dtype: Optional[torch.dtype] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(y, h)``: ``h = x Vhᵀ`` and ``y = (h Cᵀ) Uᵀ + x Wᵀ + base_out + bias``.

    Shapes: ``x`` (..., K), ``U`` (D, r), ``S`` (r,), ``Vh`` (r, K), ``X`` (r, r'),
    ``Y`` (r', r), ``base_weight`` (D, K), ``bias`` (D,), ``base_out`` (..., D).  ``S`` is the
    core's diagonal as the op sees it (keep mode passes ``S - S0``).  Inputs are not checked
    here (:func:`svdlora.svd_lora_linear` does that).
    """
    dt = x.dtype
    acc = accumulation_dtype(dt)
    store = _rounding(storage_dtype)
    C = core(S, X, Y, scale, acc)
    h = store(x @ Vh.to(dt).transpose(-2, -1))
    z = store((h.to(acc) @ C.transpose(-2, -1)).to(dt))
    y = store(z @ U.to(dt).transpose(-2, -1))
    if base_weight is not None:
        y = store(y + store(x @ base_weight.to(dt).transpose(-2, -1)))
    if base_out is not None:
        y = store(y + base_out.to(dt))
    if bias is not None:
        y = store(y + bias.to(dt))
    return y, h


def backward(dy: torch.Tensor, h: torch.Tensor, U: torch.Tensor, S: torch.Tensor,
             Vh: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, scale: float,
             base_weight: Optional[torch.Tensor] = None, need_dx: bool = True, *,
             storage_dtype: Optional[torch.dtype] = None
             ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dx, dS, dX, dY)`` of :func:`forward` from ``dy`` and the saved ``h``.

    ``g = dy U``, ``dC = gᵀ h`` (summed over every token), ``dS = diag(dC)``,
    ``dX = scale dC Yᵀ``, ``dY = scale Xᵀ dC``, ``dx = (g C) Vh + dy W``.  ``dx`` is an empty
    tensor when ``need_dx`` is false; the parameter gradients have the dtypes of ``S``, ``X``
    and ``Y``.
    """
    dt = dy.dtype
    acc = accumulation_dtype(dt)
    store = _rounding(storage_dtype)
    r = S.shape[0]
    g = store(dy @ U.to(dt))
    g2, h2 = g.reshape(-1, r).to(acc), h.reshape(-1, r).to(acc)
    dC = g2.transpose(-2, -1) @ h2
    Xa, Ya = X.to(acc), Y.to(acc)
    dS, dX, dY = torch.diagonal(dC), scale * (dC @ Ya.transpose(-2, -1)), scale * (Xa.transpose(-2, -1) @ dC)
    if need_dx:
        C = core(S, X, Y, scale, acc)
        dx = store(store((g.to(acc) @ C).to(dt)) @ Vh.to(dt))
        if base_weight is not None:
            dx = store(dx + store(dy @ base_weight.to(dt)))
    else:
        dx = dy.new_empty((0,))
    return dx, dS.to(S.dtype), dX.to(X.dtype), dY.to(Y.dtype)
