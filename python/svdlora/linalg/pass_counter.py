"""A debug hook that records how many passes over A each rsvd/pca call made (for benchmarks
and tests: passes, not wall time, are what the algorithms trade)."""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

__all__ = ["count_passes", "PassRecord", "PassLog"]


@dataclass(frozen=True)
class PassRecord:
    """One factorisation: its method ("subspace", "krylov", "exact", "adaptive"), the shape
    of A and the passes over A it made (None where not counted: the adaptive-rank mode)."""

    method: str
    shape: Tuple[int, ...]
    passes: Optional[int]


@dataclass
class PassLog:
    """The records of the calls made inside one :func:`count_passes` block."""

    records: List[PassRecord] = field(default_factory=list)

    @property
    def last(self) -> PassRecord:
        if not self.records:
            raise LookupError("no rsvd/pca call was recorded")
        return self.records[-1]

    @property
    def passes(self) -> Optional[int]:
        """Passes of the last call."""
        return self.last.passes


_active: contextvars.ContextVar[Optional[PassLog]] = contextvars.ContextVar("svdlora_passes",
                                                                            default=None)


@contextmanager
def count_passes() -> Iterator[PassLog]:
    """Record the passes over A of every rsvd/pca call in the block.

    Examples
    --------
    >>> import numpy as np, svdlora
    >>> with svdlora.linalg.count_passes() as log:
    ...     _ = svdlora.rsvd(np.random.default_rng(0).standard_normal((300, 200)), 5, seed=0)
    >>> log.passes, log.last.method
    (6, 'subspace')
    """
    log = PassLog()
    token = _active.set(log)
    try:
        yield log
    finally:
        _active.reset(token)


def record(method: str, shape: Tuple[int, ...], passes: Optional[int]) -> None:
    """Called by the backends after each factorisation."""
    log = _active.get()
    if log is not None:
        log.records.append(PassRecord(method, tuple(shape), passes))
