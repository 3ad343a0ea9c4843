"""The one progress-bar helper: a tqdm bar on stderr when wanted and possible."""
from __future__ import annotations

from typing import Iterable, Optional, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, desc: str, unit: str, total: Optional[int] = None,
             enabled: bool = True) -> Iterable[T]:
    """Wrap ``items`` in a tqdm bar, or return them unchanged.

    The bar is shown only when ``enabled``, tqdm is installed (the ``cli`` extra) and stderr
    is a terminal (tqdm's ``disable=None``), so logs and pipes stay clean.  It disappears
    when done (``leave=False``).
    """
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, unit=unit, total=total, leave=False, disable=None)
