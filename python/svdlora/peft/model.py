"""``SVDLoRAPeftModel``: PEFT's tuner for SVD-LoRA -- which layers get adapters, checked before
the model is touched, and how they are created and replaced."""
from __future__ import annotations

from typing import Any, Optional

from torch import nn

from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from peft.utils.other import get_pattern_key

from ..adapters.linear_like import LINEAR_LIKE_NAMES, features, is_linear_like
from ._registry import PREFIX
from .config import SVDLoRAPeftConfig
from .layer import SVDLoRAPeftLayer

__all__ = ["SVDLoRAPeftModel"]


def _pattern_rank(config: SVDLoRAPeftConfig, key: str) -> Optional[int]:
    if not config.rank_pattern:
        return None
    pattern = get_pattern_key(config.rank_pattern.keys(), key)
    return config.rank_pattern.get(pattern)


class SVDLoRAPeftModel(BaseTuner):
    """The PEFT tuner of SVD-LoRA; built by ``peft.get_peft_model`` (or transformers'
    ``add_adapter``) from an :class:`SVDLoRAPeftConfig` -- not called directly.

    Targets default to LoRA's per-architecture defaults when ``target_modules`` is None.
    """

    prefix: str = PREFIX
    tuner_layer_cls = SVDLoRAPeftLayer
    target_module_mapping = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    def _check_new_adapter_config(self, config: SVDLoRAPeftConfig) -> None:
        if not isinstance(config, SVDLoRAPeftConfig):
            raise TypeError(f"config must be an SVDLoRAPeftConfig, got {type(config).__name__}")
        super()._check_new_adapter_config(config)

    def _pre_injection_hook(self, model: nn.Module, config: SVDLoRAPeftConfig,
                            adapter_name: str) -> None:
        """Check every targeted layer before any is replaced, so a bad rank or a layer type
        that cannot hold an adapter leaves the model unchanged."""
        super()._pre_injection_hook(model, config, adapter_name)
        # to restore if loading a saved adapter into this injection fails (see below)
        self._requires_grad_before = {n: p.requires_grad for n, p in model.named_parameters()}
        if config.target_modules is None or config.target_modules == "all-linear":
            return  # filled in by PEFT from the architecture; checked layer by layer
        matched = False
        for key, module in model.named_modules():
            if not key or not self._check_target_module_exists(config, key):
                continue
            matched = True
            if isinstance(module, SVDLoRAPeftLayer):
                module = module.get_base_layer()
            if not is_linear_like(module):
                if isinstance(config.target_modules, str):
                    continue  # a regex may also match containers; PEFT skips those
                raise TypeError(f"target module {key!r} is a {type(module).__name__}; SVD-LoRA "
                                f"targets {LINEAR_LIKE_NAMES}")
            rank = _pattern_rank(config, key)
            K, D = features(module)
            try:
                config.svdlora_config(rank).layer_ranks(K, D)
            except ValueError as exc:
                raise ValueError(f"layer {key!r} ({K}->{D}): {exc}") from None
        if not matched:
            targets = sorted(config.target_modules) if isinstance(config.target_modules, set) \
                else config.target_modules
            raise ValueError(f"target_modules={targets!r} matched no layer of the model")

    def _create_and_replace(self, config: SVDLoRAPeftConfig, adapter_name: str, target: nn.Module,
                            target_name: str, parent: nn.Module, current_key: str,
                            **optional_kwargs: Any) -> None:
        if current_key is None:
            raise ValueError("current_key must not be None")
        rank = _pattern_rank(config, current_key)
        if isinstance(target, SVDLoRAPeftLayer):
            target.update_layer(adapter_name, config, rank)
            layer = target
        else:
            base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
            if not is_linear_like(base):
                raise TypeError(f"target module {current_key!r} is a {type(base).__name__}; "
                                f"SVD-LoRA targets {LINEAR_LIKE_NAMES}")
            layer = SVDLoRAPeftLayer(target, adapter_name, config, rank)
            if adapter_name not in self.active_adapters:
                layer.requires_grad_(False)  # an added adapter is not trainable until set active
            self._replace_module(parent, target_name, layer, target)
        if config.energy is not None and rank is None:
            # the ranks energy chose, so that the saved config reloads with the same shapes
            config.rank_pattern[current_key] = layer.svdlora_rank[adapter_name]

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model: nn.Module, config: SVDLoRAPeftConfig,
                                           adapter_name: str, state_dict: dict) -> dict:
        """PEFT's key mapping, then a shape check of every SVD-LoRA tensor against the layers
        just injected: a saved adapter that does not fit (another rank, another base) raises
        ValueError naming the tensor, and the injection is undone first, so the base model
        is left as it was."""
        remapped = super()._remap_adapter_state_dict_for_load(model, config, adapter_name,
                                                              state_dict)
        own = {k: v.shape for k, v in model.state_dict().items()}
        for key, value in remapped.items():
            have = own.get(key, own.get(key.removeprefix("base_model.model.")))
            if PREFIX in key and have is not None and tuple(have) != tuple(value.shape):
                undo_injection(model, adapter_name)
                raise ValueError(
                    f"saved adapter tensor {key!r} has shape {tuple(value.shape)} but the model "
                    f"built from its config has {tuple(have)}: the adapter was saved for another "
                    f"base model or with other rank/inner_rank settings")
        return remapped

    def _cast_adapter_dtype(self, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        super()._cast_adapter_dtype(adapter_name, autocast_adapter_dtype)
        for module in self.model.modules():
            if isinstance(module, SVDLoRAPeftLayer):
                module.restore_factor_dtypes(adapter_name)


def undo_injection(model: nn.Module, adapter_name: str) -> None:
    """Remove adapter ``adapter_name`` from every SVD-LoRA layer of ``model``: a layer left
    without adapters is replaced by its base layer again (and a ``modules_to_save`` wrapper by
    the module it wraps), and parameters get back the
    ``requires_grad`` they had before the injection (when the tuner recorded it)."""
    from peft.utils.other import AuxiliaryTrainingWrapper

    def replace(name: str, module: nn.Module) -> None:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, module)

    tuner = next((m for m in model.modules() if isinstance(m, SVDLoRAPeftModel)), None)
    for name, layer in list(model.named_modules()):
        if isinstance(layer, AuxiliaryTrainingWrapper):  # modules_to_save copies of this adapter
            if layer._get_available_adapters() <= {adapter_name}:
                replace(name, layer.original_module)
            continue
        if not isinstance(layer, SVDLoRAPeftLayer) or adapter_name not in layer.svdlora_S:
            continue
        if set(layer.svdlora_S) == {adapter_name}:
            replace(name, layer.base_layer)
        else:
            layer.delete_adapter(adapter_name)
    flags = getattr(tuner, "_requires_grad_before", None)
    if tuner is not None and flags:
        for pname, p in tuner.model.named_parameters():
            if pname in flags:
                p.requires_grad_(flags[pname])
