"""The Gaussian test matrix Ω of randomized SVD, drawn from a seed.

Ω is drawn here, in Python, and passed into the compiled op, so the op itself is
deterministic (and passes ``torch.library.opcheck``), and every backend sees the same
matrix for the same seed and dtype.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from .._extension import torch


def resolve_seed(seed: Optional[int]) -> int:
    """Return ``seed``, or fresh OS entropy when it is None."""
    if seed is None:
        return int.from_bytes(os.urandom(8), "little") >> 1
    return int(seed)


def gaussian_sketch(rows: int, cols: int, seed: int, dtype: Any, *, as_torch: bool,
                    device: Any = None, identity: bool = False) -> Any:
    """Standard-normal ``rows x cols`` test matrix, or the identity when ``identity``.

    A full-width sketch spans the whole short side anyway; the identity does so without
    mixing the small singular directions with rounding error amplified by ``cond(Ω)``, which
    keeps float32 results as accurate as a LAPACK SVD in that case.

    Drawn with torch's CPU generator when torch is installed (fast, and identical for the
    numpy and compiled backends) and with numpy's PCG64 otherwise.  ``dtype`` is a numpy or
    torch floating dtype; the result is a torch tensor on ``device`` when ``as_torch``.
    """
    if identity:
        if cols != rows:
            raise ValueError(f"an identity sketch must be square, got {rows}x{cols}")
        if torch is not None:
            eye = torch.eye(rows, dtype=_torch_dtype(dtype), device=device if as_torch else None)
            return eye if as_torch else eye.numpy()
        return np.eye(rows, dtype=np.dtype(dtype))
    if torch is not None:
        gen = torch.Generator().manual_seed(seed % (2**63))
        omega = torch.randn((rows, cols), generator=gen, dtype=_torch_dtype(dtype))
        if as_torch:
            return omega.to(device) if device is not None else omega
        return omega.numpy()
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, cols), dtype=np.dtype(dtype))


def _torch_dtype(dtype: Any) -> Any:
    assert torch is not None
    if isinstance(dtype, torch.dtype):
        return dtype
    return {np.dtype(np.float32): torch.float32,
            np.dtype(np.float64): torch.float64}[np.dtype(dtype)]
