"""Argument checks shared by every public function: one rule per kind of argument.

Every public entry point runs these before any compiled code, so bad input gets a
``TypeError`` (wrong type) or ``ValueError`` (wrong value) whose message names the argument
and what was expected, instead of a crash inside a kernel.  Integers may be any
``numbers.Integral`` (Python or numpy ints, never ``bool``); reals any ``numbers.Real``.
"""
from __future__ import annotations

import math
import numbers
import os
import sys
from dataclasses import dataclass, replace
from typing import Any, Iterable, Optional, Tuple

import numpy as np

from ._extension import compiled, torch

try:  # scipy is optional: only needed to recognise scipy.sparse inputs
    import scipy.sparse as _scipy_sparse
except ImportError:  # pragma: no cover - exercised in the numpy-only CI lane
    _scipy_sparse = None

DENSE_NUMPY = "numpy"
DENSE_TORCH = "torch"
SPARSE_TORCH = "torch_sparse"
SPARSE_SCIPY = "scipy_sparse"
OPERATOR = "operator"
DASK = "dask"


# --------------------------------------------------------------------------- scalars


def check_int(value: Any, name: str, *, minimum: int, maximum: Optional[int] = None) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        upper = f", {maximum}]" if maximum is not None else ", inf)"
        raise ValueError(f"{name} must be in [{minimum}{upper}, got {value}")
    return value


def check_optional_int(value: Any, name: str, *, minimum: int,
                       maximum: Optional[int] = None) -> Optional[int]:
    return None if value is None else check_int(value, name, minimum=minimum, maximum=maximum)


def check_real(value: Any, name: str, *, low: Optional[float] = None,
               high: Optional[float] = None, low_open: bool = False,
               high_open: bool = False) -> float:
    """``value`` as a finite ``float`` within the given bounds (closed unless ``*_open``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ValueError(f"{name} must be a finite number in {span}, got {value}")
    return value


def check_optional_real(value: Any, name: str, **bounds: Any) -> Optional[float]:
    return None if value is None else check_real(value, name, **bounds)


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_seed(seed: Any) -> Optional[int]:
    return check_optional_int(seed, "seed", minimum=0)


def check_tol(tol: Any) -> Optional[float]:
    """``tol`` is None or a relative Frobenius error in (0, 1)."""
    return check_optional_real(tol, "tol", low=0.0, high=1.0, low_open=True, high_open=True)


def check_path(path: Any, name: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    return os.fspath(path)


# --------------------------------------------------------------------------- matrices


@dataclass(frozen=True)
class MatrixInput:
    """A validated matrix argument and what we learned about it."""

    kind: str
    value: Any
    shape: Tuple[int, ...]
    #: largest |entry| (None for linear operators, whose entries are not read)
    amax: Optional[float] = None

    @property
    def m(self) -> int:
        return self.shape[-2]

    @property
    def n(self) -> int:
        return self.shape[-1]

    @property
    def batch_shape(self) -> Tuple[int, ...]:
        return self.shape[:-2]


def is_torch_tensor(x: Any) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


def is_dtensor(x: Any) -> bool:
    """Whether ``x`` is a ``torch.distributed.tensor.DTensor`` (a shard of a tensor spread
    over processes, as FSDP2's ``fully_shard`` makes of parameters).  No DTensor can exist
    before its module is imported, so this never imports it."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(x, getattr(module, "DTensor", ()))


def is_dask_array(x: Any) -> bool:
    """Whether ``x`` is a ``dask.array.Array`` (never imports dask)."""
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(x, getattr(module, "Array", ()))


def _check_dask(A: Any, name: str) -> MatrixInput:
    """Shape, chunks and dtype of a dask array, from its metadata alone (no task runs; its
    values are checked for NaN/Inf through the first product, as for an operator)."""
    if A.ndim != 2:
        raise ValueError(f"{name} must have shape (m, n), got a {A.ndim}-D dask array of shape {A.shape}")
    if any(math.isnan(c) for dim in A.chunks for c in dim):
        raise ValueError(f"{name} has unknown chunk sizes (NaN in its chunks, e.g. after "
                         f"boolean indexing); call {name}.compute_chunk_sizes() first")
    info = MatrixInput(DASK, A, tuple(int(s) for s in A.shape))
    _check_shape(info, name, allow_batch=False)
    _check_numpy_dtype(np.dtype(A.dtype), name)
    return info


def check_matrix(A: Any, name: str = "A", *, allow_batch: bool = True,
                 need_kernels: bool = True) -> MatrixInput:
    """Classify ``A`` and reject wrong types, shapes, dtypes, empty input and NaN/Inf.

    ``need_kernels=False`` accepts torch tensors on any device (for callers that copy them
    to the host themselves, such as :mod:`svdlora.spectral`).
    """
    if is_dask_array(A):
        return _check_dask(A, name)
    if is_dtensor(A):
        raise TypeError(f"{name} is a DTensor (sharded over processes); gather it with "
                        f"{name}.full_tensor() first, or factorise a local matrix")
    if is_torch_tensor(A):
        if A.layout in (torch.sparse_coo, torch.sparse_csr):
            info = MatrixInput(SPARSE_TORCH, A, tuple(A.shape))
            _check_shape(info, name, allow_batch=False)
            _check_torch_dtype(A, name)
            values = A._values() if A.layout == torch.sparse_coo else A.values()
            return replace(info, amax=_finite_amax_torch(values, name))
        if A.layout != torch.strided:
            raise TypeError(f"{name}: unsupported torch layout {A.layout}; use a dense, COO or CSR tensor")
        info = MatrixInput(DENSE_TORCH, A, tuple(A.shape))
        _check_shape(info, name, allow_batch=allow_batch)
        _check_torch_dtype(A, name)
        if need_kernels:
            check_device(A, name)
        elif A.device.type == "meta":
            raise ValueError(f"{name} is on the meta device, which holds no values")
        return replace(info, amax=_finite_amax_torch(A, name))
    if isinstance(A, np.ndarray):
        info = MatrixInput(DENSE_NUMPY, A, tuple(A.shape))
        _check_shape(info, name, allow_batch=allow_batch)
        _check_numpy_dtype(A.dtype, name)
        return replace(info, amax=_finite_amax_numpy(A, name))
    if _scipy_sparse is not None and _scipy_sparse.issparse(A):
        info = MatrixInput(SPARSE_SCIPY, A, tuple(A.shape))
        _check_shape(info, name, allow_batch=False)
        _check_numpy_dtype(A.dtype, name)
        return replace(info, amax=_finite_amax_numpy(A.tocsr().data, name))  # free for CSR
    if hasattr(A, "shape") and hasattr(A, "matmat") and hasattr(A, "rmatmat"):
        shape = tuple(int(s) for s in A.shape)
        info = MatrixInput(OPERATOR, A, shape)
        _check_shape(info, name, allow_batch=False)
        if hasattr(A, "dtype") and A.dtype is not None:
            _check_numpy_dtype(np.dtype(A.dtype), name)
        return info
    if isinstance(A, (list, tuple)):
        raise TypeError(f"{name} must be an array, not a {type(A).__name__}; wrap it with numpy.asarray")
    raise TypeError(
        f"{name} must be a numpy array, torch tensor, scipy.sparse matrix, dask array or an object with "
        f"shape/matmat/rmatmat (e.g. scipy.sparse.linalg.LinearOperator); got {type(A).__name__}")


def _check_shape(info: MatrixInput, name: str, *, allow_batch: bool) -> None:
    ndim = len(info.shape)
    if ndim < 2 or (ndim > 2 and not allow_batch):
        expected = "(..., m, n)" if allow_batch else "(m, n)"
        raise ValueError(f"{name} must have shape {expected}, got shape {info.shape}")
    if any(s == 0 for s in info.shape):
        raise ValueError(f"{name} must not be empty, got shape {info.shape}")


def _check_numpy_dtype(dtype: np.dtype, name: str) -> None:
    if dtype.kind == "c":
        raise TypeError(f"{name} has complex dtype {dtype}; only real float16/32/64 is supported")
    if dtype.kind != "f" or dtype.itemsize > 8:
        raise TypeError(f"{name} must have a float16, float32 or float64 dtype, got {dtype}")


def _check_torch_dtype(A: Any, name: str) -> None:
    if A.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        kind = "complex" if A.is_complex() else "non-floating"
        raise TypeError(f"{name} has {kind} dtype {A.dtype}; expected float16, bfloat16, "
                        "float32 or float64")


def _finite_amax_torch(A: Any, name: str) -> float:
    """Largest |entry|, raising on NaN/Inf: one reduction pass (max and min propagate NaN),
    instead of an m*n boolean mask, and it tells the caller whether products may overflow."""
    if A.numel() == 0:
        return 0.0
    low, high = torch.aminmax(A)
    amax = max(float(high), -float(low))
    if not math.isfinite(amax):
        raise ValueError(f"{name} contains NaN or Inf; expected only finite values")
    return amax


def _finite_amax_numpy(values: np.ndarray, name: str) -> float:
    if values.size == 0:
        return 0.0
    amax = max(float(values.max()), -float(values.min()))
    if not math.isfinite(amax):
        raise ValueError(f"{name} contains NaN or Inf; expected only finite values")
    return amax


# Asked once: has_kernels runs on every adapter forward, and build_info() builds a dict.
_CUDA_KERNELS = compiled is not None and bool(compiled.build_info()["cuda"])


def has_kernels(device: Any) -> bool:
    """Whether this build has compiled kernels for tensors on ``device``."""
    if compiled is None:
        return False
    return device.type == "cpu" or (device.type == "cuda" and _CUDA_KERNELS)


def check_rank(rank: Any, info: MatrixInput, name: str = "rank") -> int:
    """``rank`` must be an int with ``1 <= rank <= min(m, n)`` of the matrix ``info``."""
    short = min(info.m, info.n)
    try:
        return check_int(rank, name, minimum=1, maximum=short)
    except ValueError:
        raise ValueError(f"{name} must satisfy 1 <= {name} <= min(m, n) = {short} for a matrix "
                         f"of shape {info.shape[-2:]}, got {rank}") from None


def check_device(t: Any, name: str) -> None:
    """Tensors must live where this build has kernels: the CPU (the numpy backend or the
    compiled core), or CUDA when built with it."""
    if t.device.type == "cpu" or has_kernels(t.device):
        return
    raise ValueError(f"{name} is on {t.device}, but this svdlora build has kernels for the CPU "
                     "only (build_info()['cuda'] is False); move it to the CPU or rebuild with "
                     "SVDLORA_CUDA=ON")
