"""Controls for the CPU output-buffer cache of the compiled adapter ops.

The adapter forward and backward allocate their large outputs (``y`` and ``dx``, N x D values)
from a small cache of recycled blocks instead of the system allocator.  glibc hands blocks of
more than a few MiB back to the kernel when they are freed, and the next step of a training
loop then pays a zero-filled page fault for every 4 KiB of them again; on a 2-core machine
that costs a third to a half of the time of the skinny GEMM that writes the output.  Only CPU
outputs of at least ``min_block_bytes`` (4 MiB) go through the cache; CUDA tensors use
torch's caching allocator.  The cache holds at most ``limit_bytes`` (1 GiB by default) of
free blocks, oldest released first.
"""
from __future__ import annotations

from typing import Dict

from .._checks import check_int
from .._extension import require_compiled

__all__ = ["buffer_cache_info", "set_buffer_cache_limit", "empty_buffer_cache"]


def buffer_cache_info() -> Dict[str, int]:
    """Return the cache's state.

    Returns
    -------
    dict
        ``cached_bytes`` and ``cached_blocks``: free blocks held for reuse;
        ``limit_bytes``: the most the cache holds (0: recycling is off);
        ``min_block_bytes``: the smallest output that goes through the cache;
        ``hits`` / ``misses``: allocations served from the cache / from the system so far.
    """
    return dict(require_compiled("svdlora.buffer_cache_info").buffer_cache_stats())


def set_buffer_cache_limit(nbytes: int) -> None:
    """Set the most free memory the cache may hold, releasing the oldest blocks above it.

    Parameters
    ----------
    nbytes : int
        A limit in bytes, ``0 <= nbytes < 2**63`` (any integer type).  0 turns recycling off (every output then comes from the
        system allocator) and frees what the cache holds.
    """
    compiled = require_compiled("svdlora.set_buffer_cache_limit")
    compiled.set_buffer_cache_limit(check_int(nbytes, "nbytes", minimum=0, maximum=2**63 - 1))


def empty_buffer_cache() -> None:
    """Release every free block the cache holds to the system (outputs still alive are
    unaffected; they return to the cache when freed)."""
    require_compiled("svdlora.empty_buffer_cache").empty_buffer_cache()
