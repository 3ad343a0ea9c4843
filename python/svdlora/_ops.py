"""Python-side registration for the compiled ops: fake (meta) kernels for torch.compile and
opcheck.  Schemas live in csrc/schemas.cpp; device kernels in csrc/cpu and csrc/cuda.

Imported only when the compiled core loaded.
"""
from __future__ import annotations

import torch

__all__ = ["rsvd_op", "rsvd_adaptive_op"]

rsvd_op = torch.ops.svdlora.rsvd.default
rsvd_adaptive_op = torch.ops.svdlora.rsvd_adaptive.default


@torch.library.register_fake("svdlora::rsvd")
def _rsvd_fake(A, omega, col_mean, rank, n_iter):
    batch, (m, n) = A.shape[:-2], A.shape[-2:]
    return (A.new_empty((*batch, m, rank), dtype=omega.dtype),
            A.new_empty((*batch, rank), dtype=omega.dtype),
            A.new_empty((*batch, rank, n), dtype=omega.dtype))


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
