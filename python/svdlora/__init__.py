"""svdlora: fast randomized truncated SVD, SVD-LoRA adapters and spectral diagnostics.

Works with numpy alone; with PyTorch and the compiled core it adds torch tensors (CPU, and
CUDA when built with it), batched and bf16 inputs.  See :func:`build_info`.
"""
from ._build_info import build_info
from ._extension import HAS_COMPILED, MissingExtensionError
from ._results import PCAResult, SVDResult
from .truncated_svd import ToleranceWarning, pca, rsvd

if HAS_COMPILED:
    from . import _ops  # noqa: F401  (registers fake kernels for the compiled ops)

__version__ = "0.1.0"

__all__ = ["rsvd", "pca", "SVDResult", "PCAResult", "ToleranceWarning", "build_info",
           "MissingExtensionError", "__version__"]
