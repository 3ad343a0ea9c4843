"""Truncated SVDs of many matrices at once (e.g. every weight of a model), batched by shape."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._checks import check_bool, check_int, check_matrix, is_torch_tensor
from .._progress import progress as progress_bar
from .plan import DEFAULT_OVERSAMPLE
from .results import SVDResult
from .truncated_svd import rsvd

__all__ = ["rsvd_many"]

#: Default cap on the bytes of one stacked batch (a copy of the inputs in their own dtype).
DEFAULT_STACK_BYTES = 64 * 2**20


def _group_key(A: Any) -> Tuple:
    if is_torch_tensor(A):
        return ("torch", tuple(A.shape), str(A.dtype), str(A.device))
    return ("numpy", tuple(A.shape), str(A.dtype), "cpu")


def _nbytes(A: Any) -> int:
    return A.numel() * A.element_size() if is_torch_tensor(A) else A.nbytes


def _chunks(indices: List[int], item_bytes: int, budget: int) -> List[List[int]]:
    """Split one shape group into stacks of at most ``budget`` bytes (singles if larger)."""
    per_stack = max(1, budget // max(item_bytes, 1))
    return [indices[i:i + per_stack] for i in range(0, len(indices), per_stack)]


def rsvd_many(matrices: Sequence[Any], rank: int, *, oversample: int = DEFAULT_OVERSAMPLE,
              n_iter: Optional[int] = None, seed: Optional[int] = 0, method: str = "auto",
              max_stack_bytes: int = DEFAULT_STACK_BYTES, progress: bool = False) -> List[SVDResult]:
    """Rank-``rank`` randomized SVD of every matrix in ``matrices``.

    Matrices of one shape, dtype and device are stacked and factorised in batched calls of
    :func:`svdlora.rsvd` (one launch sequence per stack instead of one per matrix).  Stacking
    copies the inputs (in their own dtype), so a stack holds at most ``max_stack_bytes``;
    a matrix larger than that is factorised on its own, without a copy.  On CUDA the calls do
    not synchronise with the host, so consecutive calls queue up back to back.

    Parameters
    ----------
    matrices : sequence of 2-D numpy arrays or torch tensors
        Any mix of shapes, dtypes (bf16/fp16 tensors are read in place) and devices.
    rank : int
        Target rank, capped at ``min(m, n)`` of each matrix.
    oversample, n_iter, seed, method
        As in :func:`svdlora.rsvd`; ``seed`` is shared, so equal matrices give equal factors.
    max_stack_bytes : int, default 64 MiB
        Largest copy made to stack one batch.
    progress : bool
        A tqdm progress bar over the batched calls (when tqdm is installed and stderr is a
        terminal).

    Returns
    -------
    list of SVDResult
        One ``(U, S, Vh)`` per input, in input order (views into the batched results).
    """
    if isinstance(matrices, (str, bytes)) or not hasattr(matrices, "__len__"):
        raise TypeError(f"matrices must be a sequence of 2-D arrays/tensors, got "
                        f"{type(matrices).__name__}")
    if len(matrices) == 0:
        raise ValueError("matrices must not be empty")
    rank = check_int(rank, "rank", minimum=1)
    max_stack_bytes = check_int(max_stack_bytes, "max_stack_bytes", minimum=1)
    progress = check_bool(progress, "progress")
    groups: Dict[Tuple, List[int]] = defaultdict(list)
    for i, A in enumerate(matrices):
        check_matrix(A, f"matrices[{i}]", allow_batch=False)
        groups[_group_key(A)].append(i)

    batches = []
    for indices in groups.values():
        batches.extend(_chunks(indices, _nbytes(matrices[indices[0]]), max_stack_bytes))
    results: List[Optional[SVDResult]] = [None] * len(matrices)
    for chunk in progress_bar(batches, desc="svdlora.rsvd_many", unit="batch", enabled=progress):
        first = matrices[chunk[0]]
        k = min(rank, *first.shape)
        if len(chunk) == 1:
            results[chunk[0]] = rsvd(first, k, oversample=oversample, n_iter=n_iter, seed=seed,
                                     method=method)
            continue
        stacked = _stack([matrices[i] for i in chunk])
        U, S, Vh = rsvd(stacked, k, oversample=oversample, n_iter=n_iter, seed=seed, method=method)
        for j, i in enumerate(chunk):
            results[i] = SVDResult(U[j], S[j], Vh[j])
    return results  # type: ignore[return-value]


def _stack(items: List[Any]) -> Any:
    if is_torch_tensor(items[0]):
        import torch
        return torch.stack([t.detach() for t in items])
    import numpy as np
    return np.stack(items)
