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
                   help="top singular vectors examined (default 10)")
    p.add_argument("--eps", type=float, default=0.5, help="cosine threshold (default 0.5)")
    p.add_argument("--json", metavar="OUT.json", default=None, help="write the table as JSON")
    p.set_defaults(run=run)


def paired_matrices(base: TensorFile, tuned: TensorFile) -> List[str]:
    """Names of the 2-D tensors in both files; shapes must agree."""
    base_names = set(base.matrices())
    tuned_names = set(tuned.matrices())
    common = [n for n in base.matrices() if n in tuned_names]
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


def compare_matrix(name: str, W0: np.ndarray, W1: np.ndarray, k: int, eps: float) -> Dict[str, Any]:
    report = spectral.intruder_report(W0, W1, k, eps)
    base_norm = float(np.linalg.norm(W0))
    change = float(np.linalg.norm(W1 - W0)) / base_norm if base_norm > 0 else float("inf")
    return {"name": name, "shape": list(W0.shape), "intruders": report.count,
            "min_max_cosine": float(report.max_cosines.min()),
            "subspace_overlap": report.subspace_overlap, "relative_change": change}


def run(args: argparse.Namespace) -> None:
    if not 0 < args.eps <= 1:
        raise UsageError(f"--eps: must be in (0, 1], got {args.eps}")
    if args.k < 1:
        raise UsageError(f"--k: must be >= 1, got {args.k}")
    if args.json is not None and not args.json.endswith(".json"):
        raise UsageError(f"--json: expected a .json path, got {args.json}")
    base = TensorFile(args.base, "BASE")
    tuned = TensorFile(args.finetuned, "FINETUNED")
    names = paired_matrices(base, tuned)
    for name in names:
        if args.k > min(base.shape(name)):
            raise UsageError(f"--k: {args.k} exceeds min(m, n) = {min(base.shape(name))} of "
                             f"tensor {name!r}")
    results = []
    for name in progress(names, total=len(names), desc="intruders"):
        W0, W1 = base.load(name), tuned.load(name)
        for role, W in (("BASE", W0), ("FINETUNED", W1)):
            if not np.isfinite(W).all():
                raise UsageError(f"{role}: tensor {name!r} contains NaN or Inf")
        results.append(compare_matrix(name, W0, W1, args.k, args.eps))
    rows = [(r["name"], tuple(r["shape"]), r["intruders"], r["min_max_cosine"],
             r["subspace_overlap"], r["relative_change"]) for r in results]
    print(format_table(["tensor", "shape", f"intruders (k={args.k}, eps={args.eps})",
                        "min max|cos|", "top-k overlap", "|dW|/|W0|"], rows))
    print(f"total intruder dimensions: {sum(r['intruders'] for r in results)} over "
          f"{len(results)} tensors")
    if args.json is not None:
        save_json(args.json, results)
        print(f"wrote {args.json}")
