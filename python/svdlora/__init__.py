"""svdlora: fast randomized truncated SVD, SVD-LoRA adapters and spectral diagnostics.

Works with numpy alone; with PyTorch and the compiled core it adds torch tensors (CPU, and
CUDA when built with it), batched and bf16 inputs, and the SVD-LoRA adapters.  See
:func:`build_info`.
"""
from __future__ import annotations

import importlib
from typing import Any

from ._build_info import build_info
from ._extension import HAS_COMPILED, MissingExtensionError, require_compiled
from ._results import PCAResult, SVDResult
from . import spectral
from .many import rsvd_many
from .truncated_svd import ToleranceWarning, pca, rsvd

if HAS_COMPILED:
    # Register fake kernels and autograd formulas for the compiled ops on import.
    from . import _adapter_ops, _ops  # noqa: F401

__version__ = "0.1.0"

# Torch-only API, imported on first use so that a numpy-only install imports cleanly and
# reports what is missing when one of these is touched.
_TORCH_API = {
    "SVDLoRALinear": ".nn",
    "convert": ".model",
    "merge": ".model",
    "count_parameters": ".model",
    "save_adapter": ".adapter_io",
    "load_adapter": ".adapter_io",
    "export_peft": ".adapter_io",
    "svd_lora_linear": "._adapter_ops",
    "buffer_cache_info": ".buffer_cache",
    "set_buffer_cache_limit": ".buffer_cache",
    "empty_buffer_cache": ".buffer_cache",
}


def __getattr__(name: str) -> Any:
    if name in _TORCH_API:
        require_compiled(f"svdlora.{name}")
        value = getattr(importlib.import_module(_TORCH_API[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'svdlora' has no attribute {name!r}")


__all__ = ["rsvd", "rsvd_many", "pca", "spectral", "SVDResult", "PCAResult", "ToleranceWarning", "build_info",
           "MissingExtensionError", "__version__", *_TORCH_API]
