"""Locate optional dependencies: torch and the compiled core ``svdlora._C``.

Everything else in the package asks this module what is available instead of importing
torch itself, so a numpy-only install imports cleanly.

The compiled core is tied to the C++ ABI of the one torch release it was built against,
recorded at build time in ``svdlora/_compiled_for.py``.  When another torch is installed the
core is not loaded (that would fail with undefined symbols) and ``import svdlora`` raises a
:class:`MissingExtensionError` naming the torch the build needs.
"""
from __future__ import annotations

from types import ModuleType
from typing import Optional

__all__ = ["torch", "compiled", "HAS_TORCH", "HAS_COMPILED", "MissingExtensionError",
           "require_torch", "require_compiled", "unavailable_reason", "compiled_for_torch",
           "check_torch_matches"]


class MissingExtensionError(ImportError):
    """Raised when a feature needs torch or the compiled core and this install lacks it."""


_REBUILD = ("pip install --no-build-isolation --force-reinstall --no-deps svdlora (from its "
            "source directory: pip install --no-build-isolation --force-reinstall --no-deps .)")
_FIX = ("Install PyTorch (pip install 'svdlora[torch]' or pip install torch), then rebuild "
        "svdlora against it: " + _REBUILD)


def _public(version: str) -> str:
    """``2.13.0+cpu`` -> ``2.13.0``: the release, without the local build tag."""
    return version.split("+", 1)[0]


def compiled_for_torch() -> Optional[str]:
    """The torch version the compiled core was built against, or None (no compiled core)."""
    try:
        from ._compiled_for import TORCH_VERSION  # written by CMake next to _C
    except ImportError:
        return None
    return TORCH_VERSION


def check_torch_matches(built: Optional[str], running: str) -> None:
    """Raise :class:`MissingExtensionError` unless ``running`` is the torch release ``built``
    names (``None``: no compiled core, nothing to check)."""
    if built is None or _public(built) == _public(running):
        return
    raise MissingExtensionError(
        f"svdlora's compiled core was built for torch {_public(built)}, but torch {running} is "
        f"installed; a torch extension only loads with the torch release it was compiled "
        f"against.  Install torch=={_public(built)}, or rebuild svdlora for this torch: "
        + _REBUILD)


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
    check_torch_matches(compiled_for_torch(), torch.__version__)
    try:
        from . import _C as compiled  # type: ignore[attr-defined,no-redef]
    except ImportError as exc:
        built = compiled_for_torch()
        _reason = ("svdlora was built without its compiled core" if built is None else
                   f"svdlora's compiled core (built for torch {built}) did not load ({exc})")

HAS_TORCH = torch is not None
HAS_COMPILED = compiled is not None


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
