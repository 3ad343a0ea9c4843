"""Backends of rsvd/pca: ``compiled`` (the C++/CUDA ops, dense input) and ``numpy`` (any
input through a :class:`~.linear_maps.LinearMap`), and the rule that picks one."""
from __future__ import annotations

from ..._checks import DENSE_NUMPY, DENSE_TORCH, MatrixInput
from ..._extension import HAS_COMPILED, require_compiled, torch

#: Values of the public ``backend=`` argument.
BACKENDS = ("auto", "compiled", "numpy", "cusolver_gesvdr")


def use_compiled(info: MatrixInput, backend: str) -> bool:
    """Whether ``backend`` ("auto", "compiled" or "numpy") runs the compiled op on ``info``.

    "auto" takes the compiled op for dense input whenever the core is loaded (torch tensors
    require it) and the numpy backend otherwise.
    """
    dense = info.kind in (DENSE_NUMPY, DENSE_TORCH)
    if backend == "numpy":
        if info.kind == DENSE_TORCH and (info.value.dtype not in (torch.float32, torch.float64)
                                         or info.value.device.type != "cpu"):
            raise ValueError("backend='numpy' needs a float32/float64 CPU tensor; "
                             f"got {info.value.dtype} on {info.value.device}")
        return False
    if backend == "compiled":
        if not dense:
            raise ValueError(f"backend='compiled' supports dense arrays/tensors only, got {info.kind}")
        require_compiled("svdlora.rsvd(backend='compiled')")
        return True
    if info.kind == DENSE_TORCH:
        require_compiled("svdlora.rsvd on torch tensors")
        return True
    return info.kind == DENSE_NUMPY and HAS_COMPILED
