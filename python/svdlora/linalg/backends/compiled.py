"""The compiled backend: calls of the ``svdlora::rsvd*`` ops (C++ on the CPU, CUDA when
built with it) and their fake kernels for ``torch.compile`` and ``opcheck``.

The schemas are declared in ``csrc/schemas.cpp``; the kernels in ``csrc/cpu`` and
``csrc/cuda``.  Imported only when the compiled core is loaded.
"""
from __future__ import annotations

import warnings
from typing import Any, Optional, Tuple

import numpy as np
import torch

from ..._checks import DENSE_NUMPY, MatrixInput
from ..plan import RSVDPlan, subspace_passes
from ..rescale import FactorizationOverflow

__all__ = ["factorize", "factorize_gesvdr", "as_tensor"]


def as_tensor(info: MatrixInput) -> torch.Tensor:
    """A dense input as a torch tensor, sharing memory with a numpy array (never copied,
    except that torch cannot view negative strides)."""
    if info.kind != DENSE_NUMPY:
        return info.value.detach()
    arr = info.value
    if any(s < 0 for s in arr.strides):
        arr = np.ascontiguousarray(arr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only arrays: we never write A
        return torch.from_numpy(arr)


def factorize(info: MatrixInput, plan: RSVDPlan,
              omega: torch.Tensor) -> Tuple[Any, Any, Any, Any, float, Optional[int]]:
    """Run ``plan`` on a dense input with test matrix ``omega`` (a tensor on A's device in
    the compute dtype): ``(U, S, Vh, mean, rel_err, passes)``, numpy for numpy input;
    ``passes`` over A is None for the adaptive-rank mode (not counted)."""
    T = as_tensor(info)
    ctype = omega.dtype
    mean = T.mean(dim=-2, dtype=ctype) if plan.center else None
    err = 0.0
    passes: Optional[int] = None
    try:
        if plan.adaptive:
            U, S, Vh, err_t = torch.ops.svdlora.rsvd_adaptive(T, omega, mean, plan.tol, plan.block,
                                                              plan.rank, plan.n_iter)
            err = float(err_t)
        elif plan.krylov:
            U, S, Vh, passes_t = torch.ops.svdlora.rsvd_krylov(
                T, omega, mean, plan.rank, plan.settle_passes, plan.max_passes, plan.stop_tol,
                plan.gain_tol)
            passes = int(passes_t)
        else:
            U, S, Vh = torch.ops.svdlora.rsvd(T, omega, mean, plan.rank, plan.n_iter)
            passes = subspace_passes(plan.n_iter)
    except torch.linalg.LinAlgError as exc:  # only reachable through overflow of finite input
        raise FactorizationOverflow(str(exc)) from None
    if mean is None:
        mean = torch.zeros(T.shape[:-2] + T.shape[-1:], dtype=ctype, device=T.device)
    if info.kind == DENSE_NUMPY:
        U, S, Vh, mean = (t.numpy() for t in (U, S, Vh, mean))
    return U, S, Vh, mean, err, passes


def factorize_gesvdr(A: torch.Tensor, plan: RSVDPlan) -> Tuple[Any, Any, Any]:
    """cuSOLVER's own randomized SVD (``cusolverDnXgesvdr``) of a 2-D CUDA tensor, with the
    plan's sketch width and iteration count: the benchmark peer."""
    return torch.ops.svdlora.cusolver_gesvdr(A.detach(), plan.rank, plan.width - plan.rank,
                                             plan.n_iter)


@torch.library.register_fake("svdlora::rsvd")
def _rsvd_fake(A, omega, col_mean, rank, n_iter):
    batch, (m, n) = A.shape[:-2], A.shape[-2:]
    return (A.new_empty((*batch, m, rank), dtype=omega.dtype),
            A.new_empty((*batch, rank), dtype=omega.dtype),
            A.new_empty((*batch, rank, n), dtype=omega.dtype))


@torch.library.register_fake("svdlora::rsvd_krylov")
def _rsvd_krylov_fake(A, omega, col_mean, rank, settle_passes, max_passes, stop_tol, gain_tol):
    U, S, Vh = _rsvd_fake(A, omega, col_mean, rank, 0)
    return U, S, Vh, A.new_empty((), dtype=torch.int64)


@torch.library.register_fake("svdlora::cusolver_gesvdr")
def _cusolver_gesvdr_fake(A, rank, oversample, n_iter):
    m, n = A.shape
    return A.new_empty((m, rank)), A.new_empty((rank,)), A.new_empty((rank, n))


@torch.library.register_fake("svdlora::rsvd_adaptive")
def _rsvd_adaptive_fake(A, omega, col_mean, tol, block_size, max_rank, n_iter):
    m, n = A.shape[-2:]
    # The chosen rank depends on the data: an unbacked size in [1, max_rank].
    r = torch.library.get_ctx().new_dynamic_size(min=1, max=max_rank)
    return (A.new_empty((m, r), dtype=omega.dtype), A.new_empty((r,), dtype=omega.dtype),
            A.new_empty((r, n), dtype=omega.dtype), A.new_empty((), dtype=torch.float64))
