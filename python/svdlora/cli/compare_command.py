"""`svdlora compare`: intruder dimensions of a fine-tuned checkpoint, tensor by tensor."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List

import numpy as np

from .. import spectral
from .errors import UsageError, progress
from .tables import format_table
from .tensor_files import TensorFile, save_json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="intruder dimensions of a fine-tuned checkpoint against its base",
        description="For every 2-D tensor present in both files: how many of the top-k left "
                    "singular vectors of the fine-tuned weight have no singular vector of the "
                    "base weight with |cosine| >= eps (Shuttleworth et al. 2024), and how much "
                    "of the top-k subspace survives.")
    p.add_argument("base", metavar="BASE", help="pretrained weights (.safetensors/.npz/.npy)")
    p.add_argument("finetuned", metavar="FINETUNED", help="fine-tuned weights, same names/shapes")
    p.add_argument("-k", "--k", dest="k", type=int, default=10,
                   help="top singular vectors examined (default 10); tensors with fewer rows "
                        "or columns are skipped")
    p.add_argument("--tensor", action="append", default=None, metavar="NAME",
                   help="only this tensor (repeatable); default: every shared 2-D tensor")
    p.add_argument("--eps", type=float, default=0.5, help="cosine threshold (default 0.5)")
    p.add_argument("--json", metavar="OUT.json", default=None, help="write the table as JSON")
    p.set_defaults(run=run)


def paired_matrices(base: TensorFile, tuned: TensorFile, names=None) -> List[str]:
    """Names of the 2-D tensors in both files (or the requested ones); shapes must agree."""
    base_names = set(base.matrices(names))
    tuned_names = set(tuned.matrices(names))
    common = [n for n in base.matrices(names) if n in tuned_names]
    if not common:
        raise UsageError(f"FINETUNED: no 2-D tensor name is shared with BASE ({base.path} vs "
                         f"{tuned.path})")
    for name in common:
        if base.shape(name) != tuned.shape(name):
            raise UsageError(f"FINETUNED: tensor {name!r} has shape {tuned.shape(name)} but "
                             f"{base.shape(name)} in BASE")
    skipped = len(base_names ^ tuned_names)
    if skipped:
        print(f"note: {skipped} 2-D tensor(s) present in only one file are skipped",
              file=sys.stderr)
    return common


def _finite_or_none(value: float):
    return value if np.isfinite(value) else None  # strict JSON has no NaN/Infinity


def relative_change(W0: np.ndarray, W1: np.ndarray) -> float:
    """||W1 - W0||_F / ||W0||_F (NaN for W0 = 0).  Both are divided by one power of two near
    their largest |entry| first (exact, and the ratio is scale-free) so that weights near
    their dtype's maximum neither overflow the difference nor the squares of the norm."""
    amax = max(float(np.abs(W0).max()), float(np.abs(W1).max()))
    exponent = int(np.frexp(amax)[1]) if amax > 0 else 0
    A0 = np.ldexp(W0.astype(np.float64), -exponent)
    A1 = np.ldexp(W1.astype(np.float64), -exponent)
    base_norm = float(np.linalg.norm(A0))
    return float(np.linalg.norm(A1 - A0)) / base_norm if base_norm > 0 else float("nan")


def compare_matrix(name: str, W0: np.ndarray, W1: np.ndarray, k: int, eps: float) -> Dict[str, Any]:
    report = spectral.intruder_report(W0, W1, k, eps)
    change = relative_change(W0, W1)
    examined = report.max_cosines[:report.examined]
    return {"name": name, "shape": list(W0.shape), "intruders": report.count,
            "examined": report.examined,
            "min_max_cosine": _finite_or_none(float(examined.min())) if examined.size else None,
            "subspace_overlap": _finite_or_none(report.subspace_overlap),
            "relative_change": _finite_or_none(change)}


def run(args: argparse.Namespace) -> None:
    if not 0 < args.eps <= 1:
        raise UsageError(f"--eps: must be in (0, 1], got {args.eps}")
    if args.k < 1:
        raise UsageError(f"--k: must be >= 1, got {args.k}")
    if args.json is not None and not args.json.endswith(".json"):
        raise UsageError(f"--json: expected a .json path, got {args.json}")
    base = TensorFile(args.base, "BASE")
    tuned = TensorFile(args.finetuned, "FINETUNED")
    names = paired_matrices(base, tuned, args.tensor)
    small = [n for n in names if min(base.shape(n)) < args.k]
    names = [n for n in names if n not in small]
    if not names:
        raise UsageError(f"--k: {args.k} exceeds min(m, n) of every shared tensor")
    if small:
        print(f"note: {len(small)} tensor(s) with fewer than k={args.k} rows or columns are "
              f"skipped ({', '.join(small[:3])}{', ...' if len(small) > 3 else ''})",
              file=sys.stderr)
    results = []
    for name in progress(names, total=len(names), desc="intruders"):
        W0, W1 = base.load(name), tuned.load(name)
        for role, W in (("BASE", W0), ("FINETUNED", W1)):
            if not np.isfinite(W).all():
                raise UsageError(f"{role}: tensor {name!r} contains NaN or Inf")
        try:
            results.append(compare_matrix(name, W0, W1, args.k, args.eps))
        except ValueError as exc:  # e.g. singular values beyond the dtype's range
            raise UsageError(f"tensor {name!r}: {exc}") from None
    def cell(value):
        return "-" if value is None else value

    rows = [(r["name"], tuple(r["shape"]), r["intruders"], cell(r["min_max_cosine"]),
             cell(r["subspace_overlap"]), cell(r["relative_change"])) for r in results]
    print(format_table(["tensor", "shape", f"intruders (k={args.k}, eps={args.eps})",
                        "min max|cos|", "top-k overlap", "|dW|/|W0|"], rows))
    print(f"total intruder dimensions: {sum(r['intruders'] for r in results)} over "
          f"{len(results)} tensors")
    if args.json is not None:
        save_json(args.json, results)
        print(f"wrote {args.json}")
