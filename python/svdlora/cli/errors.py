"""The command line's user-facing errors and its optional dependencies.

A :class:`UsageError` becomes a one-line message and exit status 2; anything else that
escapes is a bug and keeps its traceback.
"""
from __future__ import annotations

import importlib
from types import ModuleType


class UsageError(Exception):
    """Bad arguments or an unreadable input: reported in one line, exit status 2."""


def require_extra(module: str, extra: str = "cli", purpose: str = "the command line") -> ModuleType:
    """Import an optional dependency or explain which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"{purpose} needs {module}, which is not installed; install the "
                         f"'{extra}' extra: pip install 'svdlora[{extra}]'") from None


def progress(iterable, total: int, desc: str):
    """A tqdm progress bar on stderr (silent when stderr is not a terminal)."""
    tqdm = require_extra("tqdm").tqdm
    return tqdm(iterable, total=total, desc=desc, unit="tensor", leave=False, disable=None)
