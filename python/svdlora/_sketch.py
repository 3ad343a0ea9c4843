"""The random test matrix and the default number of power iterations.

The Gaussian test matrix is drawn here, in Python, from ``seed`` and passed into the
compiled op, so the op itself is deterministic (and passes ``torch.library.opcheck``), and
every backend sees the same matrix for the same seed and dtype.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from ._extension import torch

DEFAULT_OVERSAMPLE = 10


def resolve_seed(seed: Optional[int]) -> int:
    """Return ``seed``, or fresh OS entropy when it is None."""
    if seed is None:
        return int.from_bytes(os.urandom(8), "little") >> 1
    return int(seed)


def default_n_iter(rank: int, sketch: int, short_side: int) -> int:
    """Power iterations used when ``n_iter=None``.

    Rule: 0 when the sketch spans the whole short side (the range is then exact), otherwise 2.
    With orthonormalisation after every product (see :func:`svdlora.rsvd`), two iterations
    keep ``||A - U S Vh||_F`` within 1% of the Eckart–Young optimum for spectra decaying like
    ``i**-0.5`` to ``i**-2``, geometric decay and noise-plus-spikes, in float32 and float64,
    for ranks 1 to 256 (tested in tests/test_rsvd_accuracy.py).
    """
    del rank
    return 0 if sketch >= short_side else 2


def gaussian_sketch(rows: int, cols: int, seed: int, dtype: Any, *, as_torch: bool,
                    device: Any = None) -> Any:
    """Standard-normal ``rows x cols`` test matrix.

    Drawn with torch's CPU generator when torch is installed (fast, and identical for the
    numpy and compiled backends) and with numpy's PCG64 otherwise.  ``dtype`` is a numpy or
    torch floating dtype; the result is a torch tensor on ``device`` when ``as_torch``.
    """
    if torch is not None:
        tdtype = dtype if isinstance(dtype, torch.dtype) else _numpy_to_torch_dtype(dtype)
        gen = torch.Generator().manual_seed(seed % (2**63))
        omega = torch.randn((rows, cols), generator=gen, dtype=tdtype)
        if as_torch:
            return omega.to(device) if device is not None else omega
        return omega.numpy()
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, cols), dtype=np.dtype(dtype))


def _numpy_to_torch_dtype(dtype: Any) -> Any:
    assert torch is not None
    return {np.dtype(np.float32): torch.float32,
            np.dtype(np.float64): torch.float64}[np.dtype(dtype)]
