"""The ``svdlora`` command line: ``svd``, ``spectrum``, ``compare`` and ``demo``.

Bad arguments and unreadable files give a one-line message on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .errors import UsageError

__all__ = ["main", "UsageError"]


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line (no usage dump) with a pointer to --help."""

    def error(self, message: str):  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from . import compare_command, demo_command, spectrum_command, svd_command

    parser = _Parser(prog="svdlora", description="Fast truncated SVD, SVD-LoRA adapters and "
                     "spectral diagnostics from random-matrix theory.")
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"svdlora {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for command in (svd_command, spectrum_command, compare_command, demo_command):
        command.add_parser(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``svdlora`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except UsageError as exc:
        message = " ".join(str(exc).split())
        print(f"svdlora {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `svdlora spectrum ... | head`
        return 0
    except OSError as exc:  # last resort: an I/O failure not anticipated above
        message = " ".join(str(exc).split())
        print(f"svdlora {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0
