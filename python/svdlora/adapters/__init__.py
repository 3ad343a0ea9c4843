"""SVD-LoRA adapters: a linear layer fine-tuned through its truncated SVD,
``W_eff = U (diag(S) + scale·X Y) Vh``.

:class:`SVDLoRAConfig` (the settings), :class:`SVDLoRALinear` (the layer), :func:`convert` /
:func:`merge` / :func:`count_parameters` (whole models), :func:`save_adapter` /
:func:`load_adapter` / :func:`export_peft` (files), :func:`svd_lora_linear` (the fused op),
:mod:`.reference` (the same map in plain torch) and the CPU output-buffer cache controls.
Needs PyTorch; the compiled core is used where it has kernels.
"""
from .._extension import require_torch

require_torch("svdlora.adapters")

from .buffer_cache import buffer_cache_info, empty_buffer_cache, set_buffer_cache_limit  # noqa: E402
from .config import SVDLoRAConfig  # noqa: E402
from .io import export_peft, load_adapter, save_adapter  # noqa: E402
from .layer import SVDLoRALinear  # noqa: E402
from .model import convert, count_parameters, merge  # noqa: E402
from .ops import svd_lora_linear  # noqa: E402

__all__ = ["SVDLoRAConfig", "SVDLoRALinear", "convert", "merge", "count_parameters",
           "save_adapter", "load_adapter", "export_peft", "svd_lora_linear",
           "buffer_cache_info", "set_buffer_cache_limit", "empty_buffer_cache"]
