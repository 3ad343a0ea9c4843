"""The floating dtype a factorisation computes in (``dtype=`` of rsvd/pca), and the floating
form of integer and boolean input such as the count matrices of text analysis."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .._checks import is_dask_array, is_torch_tensor
from .._extension import torch

try:
    import scipy.sparse as _scipy_sparse
except ImportError:  # pragma: no cover - exercised in the numpy-only CI lane
    _scipy_sparse = None

#: What integer and boolean input computes in unless ``dtype=`` says otherwise (as
#: scikit-learn does: counts can exceed float32's 24-bit mantissa).
INTEGER_DEFAULT = np.dtype(np.float64)
_CHOICES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


def check_compute_dtype(dtype: Any) -> Optional[np.dtype]:
    """``dtype`` (None, ``"float32"``/``"float64"``, a numpy dtype or a torch dtype) as a numpy
    float32/float64 dtype, or None."""
    if dtype is None:
        return None
    if torch is not None and isinstance(dtype, torch.dtype):
        name = str(dtype).replace("torch.", "")
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            raise TypeError(f"dtype must be None, 'float32' or 'float64' (or the numpy/torch "
                            f"dtype), got {dtype!r}") from None
    if name not in _CHOICES:
        raise ValueError(f"dtype must be float32 or float64, got {name}")
    return _CHOICES[name]


def _is_discrete(kind: str) -> bool:
    return kind in "iub"  # signed, unsigned, bool


def _natural_dtype(kind: str, itemsize: int) -> np.dtype:
    """What a float input of this kind computes in by default (float64 stays float64)."""
    return np.dtype(np.float64) if kind == "f" and itemsize == 8 else np.dtype(np.float32)


def as_floating(A: Any, dtype: Optional[np.dtype]) -> Any:
    """``A`` itself, or its conversion to the compute dtype when ``A`` is integer/boolean or
    ``dtype`` asks for another one than ``A`` computes in by default.

    Float16/bfloat16 tensors asked for float32 stay as they are (they are read in place).
    Sparse input is converted as sparse (only its stored values are copied).  Complex and
    other dtypes are passed through for the matrix check to reject.
    """
    if is_torch_tensor(A):
        if A.is_complex():
            return A
        discrete = not A.is_floating_point()
        natural = np.dtype(np.float64) if A.dtype == torch.float64 else np.dtype(np.float32)
        target = dtype or (INTEGER_DEFAULT if discrete else natural)
        if discrete or target != natural:
            return A.to(torch.float64 if target == np.float64 else torch.float32)
        return A
    is_array = isinstance(A, np.ndarray) or is_dask_array(A)  # dask's astype is lazy, per chunk
    is_sparse = _scipy_sparse is not None and _scipy_sparse.issparse(A)
    if not (is_array or is_sparse):
        return _retyped_operator(A, dtype)
    kind, itemsize = A.dtype.kind, A.dtype.itemsize
    if kind not in "fiub":
        return A
    discrete = _is_discrete(kind)
    natural = _natural_dtype(kind, itemsize)
    target = dtype or (INTEGER_DEFAULT if discrete else natural)
    if discrete or target != natural:
        return A.astype(target)
    return A


class _RetypedOperator:
    """A linear operator with an integer/boolean ``dtype`` seen as one of a float dtype: its
    products with float blocks are float already; only the declared dtype changes."""

    def __init__(self, operator: Any, dtype: np.dtype) -> None:
        self._operator, self.dtype, self.shape = operator, dtype, tuple(operator.shape)

    def matmat(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self._operator.matmat(X), dtype=self.dtype)

    def rmatmat(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self._operator.rmatmat(X), dtype=self.dtype)


def _retyped_operator(A: Any, dtype: Optional[np.dtype]) -> Any:
    declared = getattr(A, "dtype", None)
    if not (hasattr(A, "matmat") and hasattr(A, "rmatmat") and hasattr(A, "shape")):
        return A
    try:
        declared = None if declared is None else np.dtype(declared)
    except TypeError:
        return A
    if declared is not None and _is_discrete(declared.kind):
        return _RetypedOperator(A, dtype or INTEGER_DEFAULT)
    if dtype is not None and (declared is None or _natural_dtype(declared.kind, declared.itemsize) != dtype):
        return _RetypedOperator(A, dtype)
    return A
