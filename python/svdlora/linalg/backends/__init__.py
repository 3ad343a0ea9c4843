"""Backends of rsvd/pca: ``compiled`` (the C++/CUDA ops, dense input) and ``numpy`` (any
input through a :class:`~.linear_maps.LinearMap`), and the rule that picks one."""
from __future__ import annotations

from ..._checks import DASK, DENSE_NUMPY, DENSE_TORCH, MatrixInput
from ..._extension import HAS_COMPILED, require_compiled, torch

#: Values of the public ``backend=`` argument.
BACKENDS = ("auto", "compiled", "numpy", "cusolver_gesvdr")


def use_compiled(info: MatrixInput, backend: str) -> bool:
    """Whether ``backend`` ("auto", "compiled" or "numpy") runs the compiled op on ``info``.

    "auto" takes the compiled op for dense input whenever the core is loaded (torch tensors
    require it) and the numpy backend otherwise.  A dask array always runs the numpy
    backend's driver on the client; what ``backend`` chooses for it is the GEMM of each
    chunk (:func:`compiled_chunks`).
    """
    dense = info.kind in (DENSE_NUMPY, DENSE_TORCH)
    if backend == "numpy":
        if info.kind == DENSE_TORCH and (info.value.dtype not in (torch.float32, torch.float64)
                                         or info.value.device.type != "cpu"):
            raise ValueError("backend='numpy' needs a float32/float64 CPU tensor; "
                             f"got {info.value.dtype} on {info.value.device}")
        return False
    if backend == "compiled":
        if info.kind == DASK:
            return False  # the driver runs on the client; see compiled_chunks
        if not dense:
            raise ValueError(f"backend='compiled' supports dense arrays/tensors only, got {info.kind}")
        require_compiled("svdlora.rsvd(backend='compiled')")
        return True
    if info.kind == DENSE_TORCH:
        require_compiled("svdlora.rsvd on torch tensors")
        return True
    return info.kind == DENSE_NUMPY and HAS_COMPILED


def compiled_chunks(info: MatrixInput, backend: str) -> bool:
    """Whether a dask array's chunk products run on the compiled core's GEMM (torch's matmul:
    MKL in the CPU build) rather than NumPy's: only with "compiled" (which needs the core).

    "auto" keeps NumPy's: measured on 2 workers of a 2-core AMD EPYC (bench/bench_dask.py,
    k = 64), 5.2 s against 7.7 s at 200000 x 2000, 5.4 against 7.1 s at 20000 x 20000 and
    8.4 against 10.8 s on one worker (MKL's single-thread kernels there: 46-66 against OpenBLAS's 68-77
    GFLOP/s on these chunk shapes), and its workers never import svdlora or torch (62 MB
    per worker process instead of 253 MB).  False for every other kind of input."""
    if info.kind != DASK or backend != "compiled":
        return False
    require_compiled("svdlora.rsvd(dask array, backend='compiled')")
    return True
