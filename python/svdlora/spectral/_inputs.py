"""Input checks of the spectral functions: shapes, positive numbers, and host float64
copies of vectors and matrices (from numpy, or torch tensors on any device)."""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from .._checks import DENSE_NUMPY, DENSE_TORCH, check_int, check_matrix, check_real
from .._extension import torch
from ..linalg.input_dtype import as_floating


def positive_int(value: Any, name: str) -> int:
    return check_int(value, name, minimum=1)


def positive_float(value: Any, name: str) -> float:
    return check_real(value, name, low=0.0, low_open=True)


def short_long(m: Any, n: Any) -> Tuple[int, int]:
    m, n = positive_int(m, "m"), positive_int(n, "n")
    return min(m, n), max(m, n)


def as_vector(values: Any, name: str) -> np.ndarray:
    """Host float64 copy of a 1-D array/tensor of finite values."""
    if torch is not None and isinstance(values, torch.Tensor):
        if values.device.type == "meta":
            raise ValueError(f"{name} is on the meta device, which holds no values")
        values = values.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or Inf; expected only finite values")
    return arr


def as_matrix(W: Any, name: str) -> np.ndarray:
    """Host float64 copy of a dense 2-D matrix, validated like every other public input.

    Torch tensors may live on any device (CUDA included, whether or not svdlora was built
    with CUDA): the spectral functions copy them to the host and need no device kernels.
    """
    # integer/boolean matrices (counts, masks) are analysed as float64, as rsvd does
    W = as_floating(W, None)
    info = check_matrix(W, name, allow_batch=False, need_kernels=False)
    if info.kind == DENSE_TORCH:
        return W.detach().to("cpu", torch.float64).numpy()
    if info.kind == DENSE_NUMPY:
        return np.asarray(W, dtype=np.float64)
    raise TypeError(f"{name} must be a dense numpy array or torch tensor, got {type(W).__name__}")


# |entries| between which LAPACK's SVD and the squares taken by the analyses are safe in
# float64 (far inside its range: 2**-511 .. 2**511 squares to 2**-1022 .. 2**1022).
_SAFE_LOW, _SAFE_HIGH = 2.0**-450, 2.0**450


def power_of_two_scaled(A: np.ndarray) -> Tuple[np.ndarray, int]:
    """``(A * 2**-e, e)`` with the largest |entry| brought near 1 when it lies outside the
    safe range (``e = 0`` and ``A`` itself otherwise).  Scaling by a power of two is exact,
    so singular vectors are unchanged and singular values scale back exactly."""
    amax = float(np.abs(A).max()) if A.size else 0.0
    if amax == 0.0 or _SAFE_LOW <= amax <= _SAFE_HIGH:
        return A, 0
    exponent = int(np.frexp(amax)[1])
    return np.ldexp(A, -exponent), exponent


def rounding_unit(W: Any) -> float:
    """Machine epsilon of W's own dtype (a float32 weight is only float32-accurate)."""
    if torch is not None and isinstance(W, torch.Tensor):
        return float(torch.finfo(W.dtype).eps) if W.is_floating_point() else 0.0
    dtype = getattr(W, "dtype", np.float64)
    return float(np.finfo(dtype).eps) if np.dtype(dtype).kind == "f" else 0.0
