"""The command line's user-facing errors and its optional dependencies.

A :class:`UsageError` becomes a one-line message and exit status 2; anything else that
escapes is a bug and keeps its traceback.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .._progress import progress as progress_bar


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
    """The package's progress bar (on stderr, silent when it is not a terminal), over
    tensors; the command line requires tqdm (its ``cli`` extra) rather than going without."""
    require_extra("tqdm")
    return progress_bar(iterable, desc=desc, unit="tensor", total=total)
