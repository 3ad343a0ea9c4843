"""Locate optional dependencies: torch and the compiled core ``svdlora._C``.

Everything else in the package asks this module what is available instead of importing
torch itself, so a numpy-only install imports cleanly.
"""
from __future__ import annotations

from types import ModuleType
from typing import Optional

__all__ = ["torch", "compiled", "HAS_TORCH", "HAS_COMPILED", "MissingExtensionError",
           "require_torch", "require_compiled", "unavailable_reason"]


class MissingExtensionError(ImportError):
    """Raised when a feature needs torch or the compiled core and this install lacks it."""


torch: Optional[ModuleType]
compiled: Optional[ModuleType]
_reason = ""

try:
    import torch  # noqa: F401  (must precede _C: it loads libc10/libtorch)
except Exception as exc:  # noqa: BLE001 - any import failure means "no torch"
    torch = None
    _reason = f"torch is not importable ({exc})"

compiled = None
if torch is not None:
    try:
        from . import _C as compiled  # type: ignore[attr-defined,no-redef]
    except ImportError as exc:
        _reason = (f"svdlora was built without its compiled core or against another torch ({exc})")

HAS_TORCH = torch is not None
HAS_COMPILED = compiled is not None

_FIX = ("Install PyTorch (pip install 'svdlora[torch]' or pip install torch), then rebuild "
        "svdlora against it: pip install --no-build-isolation --force-reinstall --no-deps .")


def unavailable_reason() -> str:
    """Why the compiled core is unavailable ('' when it is loaded)."""
    return _reason


def require_torch(feature: str) -> ModuleType:
    """Return the torch module or raise :class:`MissingExtensionError` naming the fix."""
    if torch is None:
        raise MissingExtensionError(f"{feature} needs PyTorch, which is not installed. {_FIX}")
    return torch


def require_compiled(feature: str) -> ModuleType:
    """Return ``svdlora._C`` (ops registered) or raise :class:`MissingExtensionError`."""
    require_torch(feature)
    if compiled is None:
        raise MissingExtensionError(f"{feature} needs svdlora's compiled core: {_reason}. {_FIX}")
    return compiled
