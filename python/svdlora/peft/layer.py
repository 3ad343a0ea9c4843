"""``SVDLoRAPeftLayer``: PEFT's tuner layer for SVD-LoRA, holding any number of named adapters
on one ``nn.Linear`` or ``Conv1D`` and running the fused op for the active ones."""
from __future__ import annotations

import warnings
from typing import Any, List, Optional

import torch
from torch import nn

from peft.tuners._buffer_dict import BufferDict
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge

from ..adapters.config import adapter_scale
from ..adapters.factors import truncated_factors
from ..adapters.layer import factor_product, initial_inner_factor, keep_wide, trainable_dtype
from ..adapters.linear_like import LINEAR_LIKE_NAMES, dense_weight, features, is_conv1d, is_linear_like
from ..adapters.ops import svd_lora_linear
from .config import SVDLoRAPeftConfig

__all__ = ["SVDLoRAPeftLayer"]


class SVDLoRAPeftLayer(nn.Module, BaseTunerLayer):
    """One linear layer with SVD-LoRA adapters, as PEFT manages them.

    Per adapter name: frozen buffers ``svdlora_U`` (D×r), ``svdlora_Vh`` (r×K) and
    ``svdlora_S0`` (r), and trainable ``svdlora_S`` (r), ``svdlora_X`` (r×r'),
    ``svdlora_Y`` (r'×r), so that adapter ``a`` adds ``U (diag(S - S0) + scale·X Y) Vh`` to the
    base weight.  ``U``/``Vh`` have the base weight's dtype; ``S0``/``S``/``X``/``Y`` are float32
    for 16-bit bases, also after ``model.to(torch.bfloat16)``.  The base layer stays frozen
    and unchanged unless merged.
    """

    adapter_layer_names = ("svdlora_S", "svdlora_X", "svdlora_Y")
    other_param_names = ("svdlora_U", "svdlora_Vh", "svdlora_S0", "svdlora_scale",
                         "svdlora_rank", "svdlora_inner_rank")

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: SVDLoRAPeftConfig,
                 rank: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.svdlora_U = BufferDict({}, persistent=True)
        self.svdlora_Vh = BufferDict({}, persistent=True)
        self.svdlora_S0 = BufferDict({}, persistent=True)
        self.svdlora_S = nn.ParameterDict({})
        self.svdlora_X = nn.ParameterDict({})
        self.svdlora_Y = nn.ParameterDict({})
        self.svdlora_scale: dict = {}
        self.svdlora_rank: dict = {}
        self.svdlora_inner_rank: dict = {}
        self._disable_adapters = False
        self.merged_adapters: List[str] = []
        self.kwargs = kwargs
        base = self.get_base_layer()
        if not is_linear_like(base):
            raise TypeError(f"SVD-LoRA targets {LINEAR_LIKE_NAMES}, got {type(base).__name__}")
        self.in_features, self.out_features = features(base)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config, rank)

    # ------------------------------------------------------------------ adapters

    def update_layer(self, adapter_name: str, config: SVDLoRAPeftConfig,
                     rank: Optional[int] = None) -> None:
        """Add adapter ``adapter_name``: the truncated SVD of the base weight (rank ``rank``
        when given, else from ``config``), ``S = S0``, random ``X`` and zero ``Y``."""
        base = self.get_base_layer()
        weight = dense_weight(base)
        native = config.svdlora_config(rank)
        K, D = self.in_features, self.out_features
        cap, _ = native.layer_ranks(K, D)
        if weight.device.type == "meta":  # created empty, filled from a checkpoint later
            r = cap
            U = torch.empty(D, r, device="meta")
            S = torch.empty(r, device="meta")
            Vh = torch.empty(r, K, device="meta")
        else:
            U, S, Vh = truncated_factors(weight, cap, native.svd, native.seed, native.energy)
            r = int(S.shape[0])
        inner = min(config.inner_rank, r) if config.energy is not None else config.inner_rank
        if inner > r:
            raise ValueError(f"inner_rank must satisfy 1 <= inner_rank <= rank = {r}, got {inner}")
        small = {"dtype": trainable_dtype(weight.dtype), "device": weight.device}
        big = {"dtype": weight.dtype, "device": weight.device}
        with torch.no_grad():
            self.svdlora_U[adapter_name] = U.to(**big).contiguous()
            self.svdlora_Vh[adapter_name] = Vh.to(**big).contiguous()
            self.svdlora_S0[adapter_name] = S.to(**small)
            self.svdlora_S[adapter_name] = nn.Parameter(S.to(**small).clone())
            X = initial_inner_factor(r, inner, native.seed)
            self.svdlora_X[adapter_name] = nn.Parameter(X.to(**small) if weight.device.type != "meta"
                                                        else torch.empty(r, inner, **small))
            self.svdlora_Y[adapter_name] = nn.Parameter(torch.zeros(inner, r, **small))
        self.svdlora_scale[adapter_name] = adapter_scale(inner, config.alpha, config.rank_stabilized)
        self.svdlora_rank[adapter_name] = r
        self.svdlora_inner_rank[adapter_name] = inner
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def _apply(self, fn, recurse=True):
        # model.to(torch.bfloat16) casts U, Vh and the base; S0, S, X, Y stay float32
        super()._apply(fn, recurse)
        keep_wide([*self.svdlora_S.values(), *self.svdlora_X.values(), *self.svdlora_Y.values(),
                   *self.svdlora_S0.values()])
        return self

    def restore_factor_dtypes(self, adapter_name: str) -> None:
        """``U``/``Vh`` back in the base weight's dtype (PEFT's upcasting of adapter tensors
        to float32 is meant for trainable ones; frozen factors would only cost memory and a
        cast of the activations)."""
        dtype = dense_weight(self.get_base_layer()).dtype
        for store in (self.svdlora_U, self.svdlora_Vh):
            if adapter_name in store and store[adapter_name].dtype != dtype:
                store[adapter_name] = store[adapter_name].to(dtype)

    def _core_delta(self, adapter: str) -> torch.Tensor:
        """``diag(S - S0) + scale·X Y`` (float32, float64 for float64 adapters)."""
        S = self.svdlora_S[adapter] - self.svdlora_S0[adapter]
        return torch.diag(S) + self.svdlora_scale[adapter] * (self.svdlora_X[adapter] @ self.svdlora_Y[adapter])

    def lora_factors(self, adapter: str = "default"):
        """``(B, A)`` with ``B A`` = this adapter's update: ``B = U (diag(S - S0) + scale·X Y)``
        (D×r) and ``A = Vh`` (r×K), in the base weight's dtype (for :func:`svdlora.export_peft`)."""
        return factor_product(self.svdlora_U[adapter], self._core_delta(adapter)), \
            self.svdlora_Vh[adapter]

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """``U (diag(S - S0) + scale·X Y) Vh`` (D×K, the base weight's dtype): what adapter
        ``adapter`` adds to ``x Wᵀ``."""
        if adapter not in self.svdlora_S:
            raise ValueError(f"adapter {adapter!r} not found in this layer")
        return factor_product(self.svdlora_U[adapter], self._core_delta(adapter),
                              self.svdlora_Vh[adapter])

    # ------------------------------------------------------------------ merging

    def _delta_in_base_layout(self, adapter: str) -> torch.Tensor:
        """The update as the base layer stores its weight (K×D for a Conv1D)."""
        base = self.get_base_layer()
        delta = self.get_delta_weight(adapter).to(base.weight.dtype)
        return delta.mT if is_conv1d(base) else delta

    def merge(self, safe_merge: bool = False, adapter_names: Optional[List[str]] = None) -> None:
        """Add the active (or the named) adapters' updates into the base weight.

        Raises
        ------
        ValueError
            ``safe_merge=True`` and the merged weight would hold NaN or Inf.
        """
        adapter_names = check_adapters_to_merge(self, adapter_names)
        base = self.get_base_layer()
        for adapter in adapter_names:
            if adapter not in self.svdlora_S:
                continue
            with torch.no_grad():
                delta = self._delta_in_base_layout(adapter)
                if safe_merge:
                    merged = base.weight.data + delta
                    if not bool(torch.isfinite(merged).all()):
                        raise ValueError(f"merging adapter {adapter!r} gives NaN/Inf weights; the "
                                         "adapter seems broken")
                    base.weight.data = merged
                else:
                    base.weight.data += delta
            self.merged_adapters.append(adapter)

    def unmerge(self) -> None:
        """Subtract every merged adapter's update from the base weight again."""
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.")
            return
        base = self.get_base_layer()
        while self.merged_adapters:
            adapter = self.merged_adapters.pop()
            if adapter in self.svdlora_S:
                with torch.no_grad():
                    base.weight.data -= self._delta_in_base_layout(adapter)

    # ------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        if self.merged:
            return self.base_layer(x, *args, **kwargs)
        active = [a for a in self.active_adapters if a in self.svdlora_S]
        if not active:
            return self.base_layer(x, *args, **kwargs)
        if len(active) == 1 and type(self.base_layer) is nn.Linear and not args and not kwargs:
            # one adapter on a plain linear: the op accumulates into x Wᵀ + b itself
            a = active[0]
            return svd_lora_linear(x, self.svdlora_U[a], self.svdlora_S[a] - self.svdlora_S0[a],
                                   self.svdlora_Vh[a], self.svdlora_X[a], self.svdlora_Y[a],
                                   self.svdlora_scale[a], base_weight=self.base_layer.weight,
                                   bias=self.base_layer.bias)
        out = self.base_layer(x, *args, **kwargs)
        for a in active:
            out = svd_lora_linear(x, self.svdlora_U[a], self.svdlora_S[a] - self.svdlora_S0[a],
                                  self.svdlora_Vh[a], self.svdlora_X[a], self.svdlora_Y[a],
                                  self.svdlora_scale[a], base_out=out)
        return out

    def __repr__(self) -> str:
        return "svdlora." + super().__repr__()
