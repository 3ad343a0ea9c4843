"""Input validation shared by the public functions (DESIGN.md section 7).

Every public entry point calls these before any compiled code runs, so bad input gets a
ValueError/TypeError naming the argument instead of a crash deep inside a kernel.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
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


@dataclass(frozen=True)
class MatrixInput:
    """A validated matrix argument and what we learned about it."""

    kind: str
    value: Any
    shape: Tuple[int, ...]

    @property
    def m(self) -> int:
        return self.shape[-2]

    @property
    def n(self) -> int:
        return self.shape[-1]

    @property
    def batch_shape(self) -> Tuple[int, ...]:
        return self.shape[:-2]

    @property
    def is_torch(self) -> bool:
        return self.kind in (DENSE_TORCH, SPARSE_TORCH)


def is_torch_tensor(x: Any) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


def check_matrix(A: Any, name: str = "A", *, allow_batch: bool = True) -> MatrixInput:
    """Classify ``A`` and reject wrong types, shapes, dtypes, empty input and NaN/Inf."""
    if is_torch_tensor(A):
        if A.layout in (torch.sparse_coo, torch.sparse_csr):
            info = MatrixInput(SPARSE_TORCH, A, tuple(A.shape))
            _check_shape(info, name, allow_batch=False)
            _check_torch_dtype(A, name)
            values = A._values() if A.layout == torch.sparse_coo else A.values()
            _check_finite_torch(values, name)
            return info
        if A.layout != torch.strided:
            raise TypeError(f"{name}: unsupported torch layout {A.layout}; use a dense, COO or CSR tensor")
        info = MatrixInput(DENSE_TORCH, A, tuple(A.shape))
        _check_shape(info, name, allow_batch=allow_batch)
        _check_torch_dtype(A, name)
        check_device(A, name)
        _check_finite_torch(A, name)
        return info
    if isinstance(A, np.ndarray):
        info = MatrixInput(DENSE_NUMPY, A, tuple(A.shape))
        _check_shape(info, name, allow_batch=allow_batch)
        _check_numpy_dtype(A.dtype, name)
        total = A.sum(dtype=np.float64)
        if not np.isfinite(total) and not np.isfinite(A).all():
            raise ValueError(f"{name} contains NaN or Inf; expected only finite values")
        return info
    if _scipy_sparse is not None and _scipy_sparse.issparse(A):
        info = MatrixInput(SPARSE_SCIPY, A, tuple(A.shape))
        _check_shape(info, name, allow_batch=False)
        _check_numpy_dtype(A.dtype, name)
        if not np.isfinite(A.tocsr().data).all():  # tocsr() is free for CSR input
            raise ValueError(f"{name} contains NaN or Inf; expected only finite values")
        return info
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
        f"{name} must be a numpy array, torch tensor, scipy.sparse matrix or an object with "
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


def _check_finite_torch(A: Any, name: str) -> None:
    # One cheap reduction instead of an m*n boolean mask; only when the sum is not finite
    # (NaN/Inf, or a genuine overflow) do we pay for the exact elementwise check.
    total = A.sum(dtype=torch.float32) if A.dtype == torch.float16 else A.sum()
    if not bool(torch.isfinite(total)) and not bool(torch.isfinite(A).all()):
        raise ValueError(f"{name} contains NaN or Inf; expected only finite values")


def check_device(t: Any, name: str) -> None:
    """Tensors must live where this build has kernels: the CPU, or CUDA when built with it."""
    kind = t.device.type
    if kind == "cpu":
        return
    if kind == "cuda" and compiled is not None and compiled.build_info()["cuda"]:
        return
    raise ValueError(f"{name} is on {t.device}, but this svdlora build has kernels for the CPU "
                     "only (build_info()['cuda'] is False); move it to the CPU or rebuild with "
                     "SVDLORA_CUDA=ON")


def check_int(value: Any, name: str, *, minimum: int, maximum: Optional[int] = None) -> int:
    """Return ``value`` as int if it is an integer in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        upper = f", {maximum}]" if maximum is not None else ", inf)"
        raise ValueError(f"{name} must be in [{minimum}{upper}, got {value}")
    return value


def check_rank(rank: Any, info: MatrixInput, name: str = "rank") -> int:
    """``rank`` must be an int with 1 <= rank <= min(m, n)."""
    short = min(info.m, info.n)
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(rank).__name__}")
    if not 1 <= int(rank) <= short:
        raise ValueError(f"{name} must satisfy 1 <= {name} <= min(m, n) = {short} for a matrix "
                         f"of shape {info.shape[-2:]}, got {rank}")
    return int(rank)


def check_optional_int(value: Any, name: str, *, minimum: int) -> Optional[int]:
    return None if value is None else check_int(value, name, minimum=minimum)


def check_tol(tol: Any) -> Optional[float]:
    """``tol`` is None or a real number in (0, 1)."""
    if tol is None:
        return None
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a float in (0, 1) or None, got {type(tol).__name__}")
    tol = float(tol)
    if not 0.0 < tol < 1.0:
        raise ValueError(f"tol must be in (0, 1) (a relative Frobenius error), got {tol}")
    return tol


def check_seed(seed: Any) -> Optional[int]:
    if seed is None:
        return None
    return check_int(seed, "seed", minimum=0)


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value
