"""svdlora: fast randomized truncated SVD, SVD-LoRA adapters and spectral diagnostics.

The package is laid out by part: :mod:`svdlora.linalg` (rsvd, pca, rsvd_many),
:mod:`svdlora.adapters` (SVD-LoRA layers, conversion, files, the fused op; needs PyTorch),
:mod:`svdlora.spectral` (random-matrix diagnostics) and :mod:`svdlora.cli` (the ``svdlora``
command).  The main entry points are importable from ``svdlora`` itself (``svdlora.rsvd``,
``svdlora.SVDLoRAConfig``, ...; the diagnostics as ``svdlora.spectral.*``).  It works with numpy
alone; with PyTorch and the compiled core it adds torch tensors (CPU, and CUDA when built
with it), batched and bf16 inputs, and the fused adapter kernels.  See :func:`build_info`.
"""
from __future__ import annotations

import importlib
from typing import Any

from ._build_info import build_info
from ._extension import HAS_COMPILED, HAS_TORCH, MissingExtensionError
from . import spectral
from .linalg import PCAResult, SVDResult, ToleranceWarning, pca, rsvd, rsvd_many

if HAS_COMPILED:
    # Register the fake kernels and autograd formulas of the compiled ops on import, so
    # torch.compile and opcheck work on torch.ops.svdlora.* from the start.
    from .linalg.backends import compiled as _compiled_rsvd  # noqa: F401
    from .adapters import ops as _adapter_ops  # noqa: F401

__version__ = "0.1.0"

# The adapters need torch: imported on first use, so that a numpy-only install imports
# cleanly and reports what is missing when one of these is touched.
_TORCH_API = ("SVDLoRAConfig", "SVDLoRALinear", "convert", "merge", "count_parameters",
              "save_adapter", "load_adapter", "export_peft", "svd_lora_linear",
              "buffer_cache_info", "set_buffer_cache_limit", "empty_buffer_cache")


# scikit-learn estimators: imported on first use (scikit-learn is an optional dependency,
# `svdlora[sklearn]`; without it, touching these raises an ImportError naming the extra).
_SKLEARN_API = ("TruncatedSVD", "PCA")


def __getattr__(name: str) -> Any:
    if name in _SKLEARN_API:
        value = getattr(importlib.import_module(".linalg.estimators", __name__), name)
        globals()[name] = value
        return value
    if name in _TORCH_API:
        value = getattr(importlib.import_module(".adapters", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'svdlora' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SKLEARN_API) | set(_TORCH_API if HAS_TORCH else ()))


__all__ = ["rsvd", "rsvd_many", "pca", "spectral", "SVDResult", "PCAResult", "ToleranceWarning",
           "build_info", "MissingExtensionError", "__version__",
           *(_TORCH_API if HAS_TORCH else ())]
