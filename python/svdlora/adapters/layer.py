"""``SVDLoRALinear``: a drop-in replacement of ``nn.Linear`` fine-tuned through its SVD.

``W_eff = U (diag(S) + scale·X Y) Vh`` (drop mode) or ``W + U (diag(S) - diag(S0) + scale·X Y) Vh``
(keep mode, the original layer untouched).  Only ``S`` (r), ``X`` (r×r') and ``Y`` (r'×r)
train.  The forward/backward is the fused custom op ``svdlora::adapter_forward`` (or its
pure-torch reference where no compiled kernel exists).
"""
from __future__ import annotations

import copy
import math
from typing import Optional, Tuple

import torch
from torch import nn

from .._checks import check_choice
from . import ops
from .config import SVDLoRAConfig
from .factors import truncated_factors
from .linear_like import LINEAR_LIKE_NAMES, bias_of, dense_weight, features, is_conv1d, is_linear_like

__all__ = ["SVDLoRALinear", "affine_map_of", "initial_inner_factor", "factor_product",
           "keep_wide", "trainable_dtype"]


def trainable_dtype(dtype: Optional[torch.dtype]) -> Optional[torch.dtype]:
    """float32 for float16/bfloat16 layers, else the layer's own dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def factor_product(U: torch.Tensor, C: torch.Tensor,
                   Vh: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``U C`` (or ``U C Vh``) formed in the wider of the two dtypes and returned in U's: the
    float32 core of a bf16 layer is not rounded to bf16 before the product."""
    dt = torch.promote_types(C.dtype, U.dtype)
    out = U.to(dt) @ C.to(dt)
    if Vh is not None:
        out = out @ Vh.to(dt)
    return out.to(U.dtype)


def keep_wide(tensors) -> None:
    """Store any float16/bfloat16 tensor among ``tensors`` in float32 again, in place.

    Called after ``module.to(dtype)``/``.half()``: the trainable S, X, Y (and S0) of a 16-bit
    layer stay float32, as at conversion, because a bf16 S near 8 has a spacing of 0.06 and
    optimiser steps of 1e-3 would round away.
    """
    for t in tensors:
        if t is not None and t.dtype in (torch.float16, torch.bfloat16):
            t.data = t.data.float()


def initial_inner_factor(rank: int, inner_rank: int, seed: int) -> torch.Tensor:
    """``X`` at initialisation (float64, r×r'): kaiming-uniform like LoRA's ``A``, bound
    ``1/sqrt(r')``, from a CPU generator seeded by ``seed`` (the same on every device)."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    bound = 1.0 / math.sqrt(inner_rank)
    return (torch.rand((rank, inner_rank), generator=gen, dtype=torch.float64) * 2 - 1) * bound


def _check_linear_like(linear: nn.Module) -> None:
    if not is_linear_like(linear):
        raise TypeError(f"linear must be {LINEAR_LIKE_NAMES}, got {type(linear).__name__}")


def _mode(residual: bool) -> str:
    if not isinstance(residual, bool):
        raise TypeError(f"residual must be a bool, got {type(residual).__name__}")
    return "keep" if residual else "drop"


class SVDLoRALinear(nn.Module):
    """Linear layer fine-tuned through its truncated SVD.

    Build one with :meth:`from_linear` (or :func:`svdlora.convert` for a whole model).

    Attributes
    ----------
    U : buffer (D, r)
        Frozen left singular vectors.
    Vh : buffer (r, K)
        Frozen right singular vectors.
    S0 : buffer (r,)
        Singular values at conversion time.
    S : Parameter (r,)
        Trainable singular values (initialised to ``S0``).
    X : Parameter (r, r')
        Trainable, random at init.
    Y : Parameter (r', r)
        Trainable, zero at init (so the layer starts exactly at its conversion point).
    scale : float
        ``alpha / r'`` or ``alpha / sqrt(r')``.
    base_layer : nn.Module or None
        The original layer, frozen and never rewritten (keep mode); None in drop mode.
    bias : Tensor or None
        The original bias, frozen.
    backend : {"auto", "compiled", "reference"}
        Which implementation of the op runs (see :func:`svdlora.svd_lora_linear`).

    Notes
    -----
    For float16/bfloat16 layers ``S``, ``X``, ``Y`` and ``S0`` are float32, also after
    ``model.to(torch.bfloat16)``, ``.half()`` or ``.bfloat16()`` (``U``, ``Vh``, the base
    layer and the activations take the new dtype); ``.double()`` makes them float64.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, inner_rank: int, *,
                 alpha: Optional[float] = None, rank_stabilized: bool = False,
                 residual: bool = True, base_layer: Optional[nn.Module] = None,
                 bias: Optional[torch.Tensor] = None, dtype: Optional[torch.dtype] = None,
                 device=None) -> None:
        super().__init__()
        config = SVDLoRAConfig(rank=rank, inner_rank=inner_rank, alpha=alpha,
                               rank_stabilized=rank_stabilized, mode=_mode(residual))
        rank, inner_rank = config.layer_ranks(in_features, out_features)
        if config.residual and base_layer is None:
            raise ValueError("residual=True (keep mode) needs the original base_layer")
        if not config.residual and base_layer is not None:
            raise ValueError("residual=False (drop mode) discards the dense weight: pass bias= "
                             "instead of base_layer= (or use residual=True to keep the layer)")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.rank, self.inner_rank = rank, inner_rank
        self.alpha = float(inner_rank) if alpha is None else float(config.alpha)
        self.rank_stabilized = config.rank_stabilized
        self.residual = config.residual
        self.scale = config.scale
        self._backend = "auto"
        self._config = config
        kw = {"dtype": dtype, "device": device}
        # The small trainable tensors (and S0) stay in float32 for float16/bfloat16 layers: a
        # bf16 S near 8 has a spacing of 0.06, so optimiser steps of 1e-3 would round away.
        small = {"dtype": trainable_dtype(dtype), "device": device}
        self.register_buffer("U", torch.zeros(out_features, rank, **kw))
        self.register_buffer("Vh", torch.zeros(rank, in_features, **kw))
        self.register_buffer("S0", torch.zeros(rank, **small))
        self.S = nn.Parameter(torch.zeros(rank, **small))
        self.X = nn.Parameter(torch.zeros(rank, inner_rank, **small))
        self.Y = nn.Parameter(torch.zeros(inner_rank, rank, **small))
        if config.residual:
            for p in base_layer.parameters():
                p.requires_grad_(False)
            self.base_layer = base_layer
            self._drop_bias = None
        else:
            self.base_layer = None
            self._drop_bias = None if bias is None else nn.Parameter(bias.detach().clone(),
                                                                     requires_grad=False)

    @property
    def bias(self) -> Optional[torch.Tensor]:
        return getattr(self.base_layer, "bias", None) if self.base_layer is not None \
            else self._drop_bias

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        self._backend = check_choice(value, "backend", ops.OP_BACKENDS)

    @property
    def config(self) -> SVDLoRAConfig:
        """This layer's settings as an :class:`SVDLoRAConfig`: its own ranks, and how its
        factors were computed (``svd``, ``seed``, ``energy``, ``target_modules`` of the
        conversion that made it; defaults for a layer built directly)."""
        return self._config

    def record_config(self, config: SVDLoRAConfig) -> None:
        """Remember the conversion settings that produced this layer (see :attr:`config`).

        Raises
        ------
        ValueError
            ``config`` describes another map (ranks, alpha, rank_stabilized or mode differ).
        """
        mine = (self.rank, self.inner_rank, self.alpha, self.rank_stabilized, self.residual)
        theirs = (config.rank, config.inner_rank,
                  float(config.inner_rank) if config.alpha is None else config.alpha,
                  config.rank_stabilized, config.residual)
        if mine != theirs:
            raise ValueError(f"config {config} does not describe this layer "
                             f"(rank, inner_rank, alpha, rank_stabilized, residual) = {mine}")
        self._config = config

    @classmethod
    def from_linear(cls, linear: nn.Module, rank: int, inner_rank: int, *,
                    alpha: Optional[float] = None, rank_stabilized: bool = False,
                    residual: bool = True, svd: str = "randomized", seed: int = 0) -> "SVDLoRALinear":
        """Convert an ``nn.Linear`` (weight D×K) or a transformers ``Conv1D`` (weight K×D)
        into an SVD-LoRA layer.

        Parameters
        ----------
        linear : nn.Linear or transformers.pytorch_utils.Conv1D
            The layer to convert.  In keep mode it is kept (frozen, unchanged) as
            ``base_layer``; in drop mode its dense weight is discarded.
        rank : int
            Truncation rank ``r``, ``1 <= r <= min(D, K)``.
        inner_rank : int
            Rank ``r'`` of the trainable core ``X Y``, ``1 <= r' <= r``.
        alpha : float, optional
            Scale numerator; defaults to ``r'`` (scale 1).
        rank_stabilized : bool
            Use ``alpha / sqrt(r')`` (rsLoRA) instead of ``alpha / r'``.
        residual : bool
            Keep mode (True) or drop mode (False).
        svd : {"randomized", "exact"}
            :func:`svdlora.rsvd` or a full ``torch.linalg.svd``.
        seed : int
            Seed of the randomized SVD and of ``X``'s initialisation.

        Returns
        -------
        SVDLoRALinear
            At initialisation its output equals ``linear(x)`` (keep mode) or the rank-r
            truncation of it (drop mode), to rounding.

        Raises
        ------
        TypeError
            ``linear`` is not linear-like; non-integer ranks.
        ValueError
            Ranks out of range, unknown ``svd``.
        """
        _check_linear_like(linear)
        config = SVDLoRAConfig(rank=rank, inner_rank=inner_rank, alpha=alpha,
                               rank_stabilized=rank_stabilized, mode=_mode(residual), svd=svd,
                               seed=seed)
        r, _ = config.layer_ranks(*features(linear))
        U, S, Vh = truncated_factors(dense_weight(linear), r, config.svd, config.seed)
        layer = cls.from_factors(linear, U, S, Vh, inner_rank, alpha=alpha,
                                 rank_stabilized=rank_stabilized, residual=residual, seed=seed)
        layer.record_config(config)
        return layer

    @classmethod
    def from_factors(cls, linear: nn.Module, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor,
                     inner_rank: int, *, alpha: Optional[float] = None,
                     rank_stabilized: bool = False, residual: bool = True,
                     seed: int = 0) -> "SVDLoRALinear":
        """Build the layer from given SVD factors of ``linear.weight`` (see :meth:`from_linear`).

        Raises
        ------
        TypeError, ValueError
            ``linear`` not linear-like; factors of the wrong shape, non-finite or not
            floating tensors.
        """
        _check_linear_like(linear)
        weight = linear.weight
        K, D = features(linear)
        if not isinstance(S, torch.Tensor) or S.dim() != 1:
            raise ValueError(f"S must be a 1-D tensor, got {getattr(S, 'shape', type(S))}")
        r = S.shape[0]
        for name, t, shape in (("U", U, (D, r)), ("S", S, (r,)), ("Vh", Vh, (r, K))):
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise TypeError(f"{name} must be a floating torch.Tensor")
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} must have shape {shape} for a {K}->{D} layer, got {tuple(t.shape)}")
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} contains NaN or Inf")
        layer = cls(K, D, r, inner_rank, alpha=alpha,
                    rank_stabilized=rank_stabilized, residual=residual,
                    base_layer=linear if residual else None,
                    bias=None if residual else bias_of(linear),
                    dtype=weight.dtype, device=weight.device)
        with torch.no_grad():
            layer.U.copy_(U)
            layer.Vh.copy_(Vh)
            layer.S0.copy_(S)
            layer.S.copy_(S)
            # LoRA-style: one factor random, the other zero (so the map starts unchanged)
            layer.X.copy_(initial_inner_factor(r, layer.inner_rank, seed))
            layer.Y.zero_()
        return layer

    def _apply(self, fn, recurse=True):
        # .to(dtype)/.half()/.bfloat16() cast U, Vh and the base; the small trainables stay float32
        super()._apply(fn, recurse)
        keep_wide((self.S, self.X, self.Y, self.S0))
        return self

    def core(self) -> torch.Tensor:
        """The r×r core ``C = diag(S) + scale·X Y`` (in the trainable dtype)."""
        return torch.diag(self.S) + self.scale * (self.X @ self.Y)

    def _through_factors(self, C: torch.Tensor) -> torch.Tensor:
        return factor_product(self.U, C, self.Vh)

    def lora_factors(self):
        """``(B, A)`` with ``B A`` = the keep-mode update: ``B = U (C - diag(S0))`` (D×r) and
        ``A = Vh`` (r×K), in the layer's dtype (for :func:`svdlora.export_peft`)."""
        return factor_product(self.U, self.core() - torch.diag(self.S0)), self.Vh

    def delta_weight(self) -> torch.Tensor:
        """``U (C - diag(S0)) Vh``: what keep mode adds to the base weight (rank <= r)."""
        return self._through_factors(self.core() - torch.diag(self.S0))

    def base_affine_map(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(W, b)`` with ``base_layer(x) = x Wᵀ + b`` (keep mode).

        A plain ``nn.Linear`` gives its own weight and bias, a ``Conv1D`` its transposed
        weight and bias.  Any other base (a subclass, a
        quantized layer) is measured by running it, since its ``weight`` attribute need not
        be what its forward applies; see :func:`affine_map_of`.
        """
        base = self.base_layer
        if base is None:
            raise ValueError("a drop-mode layer has no base layer")
        if type(base) is nn.Linear or is_conv1d(base):
            return dense_weight(base), bias_of(base)
        return affine_map_of(base, self.in_features, dtype=self.U.dtype, device=self.U.device)

    def effective_map(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(W_eff, b)``: the dense D×K weight and the bias this layer applies (keep mode
        measures a non-plain base once for both)."""
        if self.base_layer is not None:
            W, b = self.base_affine_map()
            return W + self.delta_weight(), b
        return self._through_factors(self.core()), self._drop_bias

    def effective_weight(self) -> torch.Tensor:
        """The dense D×K weight this layer applies."""
        return self.effective_map()[0]

    def effective_bias(self) -> Optional[torch.Tensor]:
        """The bias this layer adds (of the base layer's affine map in keep mode)."""
        return self.effective_map()[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base_layer
        if base is None:
            return ops.svd_lora_linear(x, self.U, self.S, self.Vh, self.X, self.Y, self.scale,
                                       bias=self._drop_bias, backend=self._backend)
        S = self.S - self.S0
        if type(base) is nn.Linear:  # plain weight: let the op accumulate into x W^T itself
            return ops.svd_lora_linear(x, self.U, S, self.Vh, self.X, self.Y, self.scale,
                                       base_weight=base.weight, bias=base.bias,
                                       backend=self._backend)
        # any other base (quantized, subclassed): use its output and add into it
        return ops.svd_lora_linear(x, self.U, S, self.Vh, self.X, self.Y, self.scale,
                                   base_out=base(x), backend=self._backend)

    def extra_repr(self) -> str:
        mode = "keep" if self.residual else "drop"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.rank}, inner_rank={self.inner_rank}, scale={self.scale:g}, mode={mode}")


@torch.no_grad()
def affine_map_of(module: nn.Module, in_features: int, *, dtype: torch.dtype,
                  device: torch.device, block: int = 1024) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(W, b)`` of a module that computes ``x Wᵀ + b``, measured by running it.

    ``b = module(0)`` and ``Wᵀ = module(I) - b``, in blocks of ``block`` rows of the
    identity, on a float64 copy of the module where it can be made (in the module's own
    precision ``module(e_j) - b`` would carry the rounding of ``|b|`` into every entry of W),
    else on the module itself.  A random probe then checks that the module really is affine,
    to the rounding of the precision it was measured in.  Returns ``(W, b)`` in ``dtype``.

    Raises
    ------
    ValueError
        The module's output is not an affine function of its input (for example a layer that
        also quantizes its activations), so no single dense weight reproduces it.
    """
    probe_module, probe_dtype = module, dtype
    if dtype != torch.float64:
        try:
            probe_module, probe_dtype = copy.deepcopy(module).to(torch.float64), torch.float64
        except Exception:  # noqa: BLE001 - a module that cannot be copied or cast: measure as is
            pass
    zero = torch.zeros(1, in_features, dtype=probe_dtype, device=device)
    b = probe_module(zero)[0]
    rows = []
    for start in range(0, in_features, block):
        eye = torch.zeros(min(block, in_features - start), in_features, dtype=probe_dtype,
                          device=device)
        eye[:, start:start + eye.shape[0]].fill_diagonal_(1)
        rows.append(probe_module(eye) - b)
    W = torch.cat(rows).mT.contiguous()
    probe = torch.randn(4, in_features, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64).to(dtype=probe_dtype, device=device)
    expected = probe @ W.mT + b
    scale = (probe.abs() @ W.abs().mT + b.abs()).max()
    eps = torch.finfo(probe_dtype).eps if b.dtype == probe_dtype else torch.finfo(b.dtype).eps
    tolerance = 64 * eps * float(scale) + torch.finfo(probe_dtype).tiny
    if not bool(((probe_module(probe) - expected).abs() <= tolerance).all()):
        raise ValueError(f"the base layer ({type(module).__name__}) does not compute an affine map "
                         "x W^T + b of its input, so no dense weight reproduces it; keep the "
                         "adapter unmerged")
    has_bias = bool(b.ne(0).any()) or getattr(module, "bias", None) is not None
    return W.to(dtype), (b.to(dtype) if has_bias else None)
