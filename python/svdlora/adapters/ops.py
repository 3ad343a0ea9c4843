"""The fused SVD-LoRA op as users call it: the typed wrapper :func:`svd_lora_linear`, and the
fake kernels and autograd formula of ``svdlora::adapter_forward``.

Schemas live in ``csrc/schemas.cpp``; the kernels in ``csrc/cpu`` and ``csrc/cuda``.  On a
device with no compiled kernel (an install without the compiled core, a CUDA tensor in a
CPU-only build, any other device) the wrapper runs the pure-torch :mod:`.reference`, through
torch autograd; ``svdlora.build_info()["adapter_ops"]`` says which runs where.
"""
from __future__ import annotations

from typing import Optional

import torch

from .._checks import check_choice, check_real, has_kernels
from .._extension import compiled
from . import reference

__all__ = ["svd_lora_linear", "OP_BACKENDS", "uses_compiled_kernel"]

#: Values of ``backend=``: "auto" (the compiled kernel where one exists, else the reference),
#: "compiled" (raise where none exists) and "reference" (always plain torch).
OP_BACKENDS = ("auto", "compiled", "reference")


def uses_compiled_kernel(device: torch.device) -> bool:
    """Whether ``backend="auto"`` runs the compiled adapter kernel on ``device``."""
    return has_kernels(device)


if compiled is not None:
    @torch.library.register_fake("svdlora::adapter_forward")
    def _forward_fake(x, U, S, Vh, X, Y, scale, base_weight, bias, base_out):
        return x.new_empty((*x.shape[:-1], U.shape[0])), x.new_empty((*x.shape[:-1], S.shape[0]))

    @torch.library.register_fake("svdlora::adapter_backward")
    def _backward_fake(dy, h, U, S, Vh, X, Y, scale, base_weight, need_dx):
        dx = dy.new_empty((*dy.shape[:-1], Vh.shape[1])) if need_dx else dy.new_empty((0,))
        return dx, S.new_empty(S.shape), X.new_empty(X.shape), Y.new_empty(Y.shape)


def _setup_context(ctx, inputs, output):
    x, U, S, Vh, X, Y, scale, base_weight, bias, base_out = inputs
    _, h = output
    # h = x Vh^T (N x r) is the only activation kept: the rest are parameters/buffers.
    ctx.save_for_backward(h, U, S, Vh, X, Y, base_weight)
    ctx.scale = scale
    ctx.mark_non_differentiable(h)


def _backward(ctx, dy, _dh):
    h, U, S, Vh, X, Y, base_weight = ctx.saved_tensors
    needs = ctx.needs_input_grad
    if needs[1] or needs[3] or needs[7]:
        raise RuntimeError("svdlora adapter: U, Vh and the base weight are frozen; gradients for "
                           "them are not implemented (set requires_grad=False)")
    dx, dS, dX, dY = torch.ops.svdlora.adapter_backward(dy.contiguous(), h, U, S, Vh, X, Y,
                                                        ctx.scale, base_weight, bool(needs[0]))
    dbias = dy.reshape(-1, dy.shape[-1]).sum(0) if needs[8] else None
    dbase = dy if needs[9] else None
    return (dx if needs[0] else None, None, dS if needs[2] else None, None,
            dX if needs[4] else None, dY if needs[5] else None, None, None, dbias, dbase)


if compiled is not None:
    torch.library.register_autograd("svdlora::adapter_forward", _backward,
                                    setup_context=_setup_context)


def svd_lora_linear(x: torch.Tensor, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor,
                    X: torch.Tensor, Y: torch.Tensor, scale: float, *,
                    base_weight: Optional[torch.Tensor] = None,
                    bias: Optional[torch.Tensor] = None,
                    base_out: Optional[torch.Tensor] = None,
                    backend: str = "auto") -> torch.Tensor:
    """Fused SVD-LoRA map ``y = x Wᵀ + base_out + bias + x (U (diag(S) + scale X Y) Vh)ᵀ``.

    Parameters
    ----------
    x : Tensor, shape (..., K)
        Activations (float32, float64, bfloat16 or float16); any strides.
    U : Tensor, shape (D, r)
        Frozen left singular vectors.
    S : Tensor, shape (r,)
        Trainable diagonal of the core (in keep mode pass ``S - S0``).
    Vh : Tensor, shape (r, K)
        Frozen right singular vectors (rows).
    X, Y : Tensor, shapes (r, r') and (r', r)
        Trainable inner low-rank core.
    scale : float
        Multiplier of ``X @ Y`` (``alpha / r'`` or ``alpha / sqrt(r')``).
    base_weight : Tensor, shape (D, K), optional
        Frozen base weight (keep mode with a plain linear base): the low-rank term is
        accumulated into ``x Wᵀ`` in place, and ``dx`` into ``dy W``.
    bias : Tensor, shape (D,), optional
        Bias; written into the output first, the low-rank GEMM accumulates onto it.
    base_out : Tensor, shape (..., D), optional
        Output of a base layer that is not a plain linear map (keep mode); the low-rank term
        is accumulated into it.  Exclusive with ``base_weight``.
    backend : {"auto", "compiled", "reference"}
        "auto" runs the compiled kernel when this build has one for ``x``'s device and the
        pure-torch reference (:mod:`svdlora.adapters.reference`) otherwise; "compiled" raises
        instead of falling back; "reference" always runs plain torch.  Under
        ``torch.export`` and ``torch.onnx.export`` the reference always runs, so exported
        graphs hold plain MatMul/Add nodes.

    Returns
    -------
    Tensor, shape (..., D), dtype of ``x``; under ``torch.autocast`` with a 16-bit dtype,
    ``x``, ``U``, ``Vh``, ``base_weight``, ``bias`` and ``base_out`` are cast to that dtype
    first (as ``nn.Linear`` is) and the output has it, while ``S``, ``X``, ``Y`` keep theirs.

    Raises
    ------
    TypeError
        A non-tensor or non-floating argument, a non-numeric ``scale``.
    ValueError
        Inconsistent shapes, tensors on different devices, both ``base_weight`` and
        ``base_out``, an unknown ``backend``, or ``backend="compiled"`` where this build has
        no kernel.

    Notes
    -----
    Forward ``h = x Vhᵀ``, ``y = (h Cᵀ) Uᵀ``; backward ``g = dy U``, ``dC = gᵀ h``,
    ``dS = diag(dC)``, ``dX = scale dC Yᵀ``, ``dY = scale Xᵀ dC``, ``dx = (g C) Vh``
    (see docs/design.md), with ``C = diag(S) + scale X Y`` applied through its structure when
    ``N r (r - 2r') >= 2**24`` and otherwise formed and folded into the thinner side.  Only
    ``h`` (N x r values) is saved for backward.  GEMMs on bfloat16 accumulate in float32 and
    the core and parameter gradients are formed in float32.  Large CPU outputs come from
    svdlora's recycling cache (:mod:`svdlora.adapters.buffer_cache`).  The reference
    fallback computes the same map with plain torch ops (autograd keeps ``h`` and the r×r
    core, not ``x``).
    """
    backend = check_choice(backend, "backend", OP_BACKENDS)
    scale = _check_inputs(x, U, S, Vh, X, Y, scale, base_weight, bias, base_out)
    kernel = uses_compiled_kernel(x.device)
    if backend == "compiled" and not kernel:
        raise ValueError(f"backend='compiled': this svdlora build has no adapter kernel for "
                         f"{x.device} (see svdlora.build_info()['adapter_ops'])")
    cast = _autocast_dtype(x)
    if cast is not None:
        # as nn.Linear does under autocast: the big operands in the autocast dtype; the small
        # trainable S, X, Y stay in float32 (the kernels' bf16 mode accumulates in float32)
        x, U, Vh, base_weight, bias, base_out = (
            t if t is None else t.to(cast) for t in (x, U, Vh, base_weight, bias, base_out))
    if _exporting():
        # torch.export / ONNX export: the plain-torch map (MatMul/Add), which every exporter
        # translates, instead of a custom op that no runtime knows
        backend = "reference"
    if backend == "reference" or not kernel:
        return reference.forward(x, U, S, Vh, X, Y, scale, base_weight, bias, base_out)[0]
    y, _ = torch.ops.svdlora.adapter_forward(x, U, S, Vh, X, Y, scale, base_weight, bias,
                                             base_out)
    return y


def _autocast_dtype(x: torch.Tensor) -> Optional[torch.dtype]:
    """The dtype autocast gives matmuls on ``x``'s device, when autocast is on there."""
    kind = x.device.type
    try:
        if not torch.is_autocast_enabled(kind):
            return None
        dtype = torch.get_autocast_dtype(kind)
    except (RuntimeError, TypeError):  # a device type autocast does not know
        return None
    return dtype if dtype in (torch.bfloat16, torch.float16) else None


def _exporting() -> bool:
    """Inside ``torch.export`` or ``torch.onnx.export``."""
    return bool(torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export())


def _check_inputs(x, U, S, Vh, X, Y, scale, base_weight, bias, base_out) -> float:
    """Shapes, dtypes and devices, before any compiled code runs; returns ``scale`` as a
    float.  (Activations are not scanned for NaN/Inf: that would be a full extra pass per
    call.)"""
    named = {"x": x, "U": U, "S": S, "Vh": Vh, "X": X, "Y": Y, "base_weight": base_weight,
             "bias": bias, "base_out": base_out}
    for name, t in named.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    scale = check_real(scale, "scale")
    if U.dim() != 2 or Vh.dim() != 2 or S.dim() != 1 or X.dim() != 2 or Y.dim() != 2:
        raise ValueError("expected U (D, r), S (r,), Vh (r, K), X (r, r'), Y (r', r); got "
                         f"U {tuple(U.shape)}, S {tuple(S.shape)}, Vh {tuple(Vh.shape)}, "
                         f"X {tuple(X.shape)}, Y {tuple(Y.shape)}")
    (D, r), K = U.shape, Vh.shape[1]
    if Vh.shape[0] != r or S.shape[0] != r or X.shape[0] != r or Y.shape[1] != r or X.shape[1] != Y.shape[0]:
        raise ValueError(f"inconsistent ranks: U {tuple(U.shape)}, S {tuple(S.shape)}, "
                         f"Vh {tuple(Vh.shape)}, X {tuple(X.shape)}, Y {tuple(Y.shape)}")
    if x.dim() < 1 or x.shape[-1] != K or x.numel() == 0:
        raise ValueError(f"x must have shape (..., {K}) and be non-empty, got {tuple(x.shape)}")
    if base_weight is not None and tuple(base_weight.shape) != (D, K):
        raise ValueError(f"base_weight must have shape ({D}, {K}), got {tuple(base_weight.shape)}")
    if bias is not None and tuple(bias.shape) != (D,):
        raise ValueError(f"bias must have shape ({D},), got {tuple(bias.shape)}")
    if base_out is not None and tuple(base_out.shape) != (*x.shape[:-1], D):
        raise ValueError(f"base_out must have shape {(*x.shape[:-1], D)}, got {tuple(base_out.shape)}")
    if base_weight is not None and base_out is not None:
        raise ValueError("give base_weight or base_out, not both")
    return scale
