"""`svdlora spectrum`: Marchenko–Pastur fit, outliers and effective rank per weight matrix."""
from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional

import numpy as np

from .. import spectral
from .errors import UsageError, progress
from .tables import format_table
from .tensor_files import TensorFile, save_json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "spectrum", help="random-matrix-theory summary of every 2-D tensor in a weight file",
        description="For every 2-D tensor: shape, Marchenko-Pastur noise level and bulk edge, "
                    "number of singular values above the edge, effective rank and the top "
                    "singular values.")
    p.add_argument("weights", metavar="WEIGHTS", help=".safetensors, .npz or .npy file")
    p.add_argument("--tensor", action="append", default=None, metavar="NAME",
                   help="only this tensor (repeatable); default: every 2-D tensor")
    p.add_argument("--top", type=int, default=3, help="top singular values to print (default 3)")
    p.add_argument("--plot", metavar="OUT.png", default=None,
                   help="histogram of each spectrum with the fitted MP density (needs matplotlib)")
    p.add_argument("--json", metavar="OUT.json", default=None, help="write the table as JSON")
    p.set_defaults(run=run)


def analyze(name: str, W: np.ndarray, top: int = 3) -> Dict[str, Any]:
    """One row of the spectrum table (plus the singular values, for plotting).  A matrix with
    no noise bulk to fit (zero, or rank far below min(m, n)) gets None in the MP columns."""
    m, n = W.shape
    S = spectral.singular_values(W)
    row: Dict[str, Any] = {"name": name, "shape": [m, n], "mp_sigma": None, "bulk_edge": None,
                           "outlier_threshold": None, "outliers": None}
    try:
        fit = spectral.fit_marchenko_pastur(S, m, n)
    except ValueError:
        pass
    else:
        row.update(mp_sigma=fit.sigma, bulk_edge=fit.upper, outliers=int(fit.outliers.size),
                   outlier_threshold=spectral.outlier_threshold(m, n, fit.sigma))
    row["effective_rank"] = spectral.effective_rank(S) if S.sum() > 0 else 0.0
    row["top_singular_values"] = [float(s) for s in S[:top]]
    row["singular_values"] = S
    return row


def analyze_file(tensors: TensorFile, names: Optional[List[str]], top: int) -> List[Dict[str, Any]]:
    selected = tensors.matrices(names)
    results = []
    for name in progress(selected, total=len(selected), desc="spectra"):
        W = tensors.load(name)
        if not np.isfinite(W).all():
            raise UsageError(f"{tensors.role}: tensor {name!r} contains NaN or Inf")
        try:
            results.append(analyze(name, W, top))
        except ValueError as exc:  # e.g. singular values beyond float64's range
            raise UsageError(f"{tensors.role}: tensor {name!r}: {exc}") from None
    return results


def print_table(results: List[Dict[str, Any]], *, markdown: bool = False) -> str:
    def cell(value):
        return "-" if value is None else value

    rows = [(r["name"], tuple(r["shape"]), cell(r["mp_sigma"]), cell(r["bulk_edge"]),
             cell(r["outliers"]), r["effective_rank"],
             ", ".join(f"{s:.4g}" for s in r["top_singular_values"])) for r in results]
    text = format_table(["tensor", "shape", "MP sigma", "bulk edge", "outliers", "eff. rank",
                         "top singular values"], rows, markdown=markdown)
    print(text)
    return text


def run(args: argparse.Namespace) -> None:
    if args.top < 1:
        raise UsageError(f"--top: must be >= 1, got {args.top}")
    for option, suffix in (("--plot", ".png"), ("--json", ".json")):
        value = getattr(args, option[2:])
        if value is not None and not value.endswith(suffix):
            raise UsageError(f"{option}: expected a {suffix} path, got {value}")
    if args.plot is not None:
        from .plots import plot_spectra  # fail on a missing matplotlib before the work
    tensors = TensorFile(args.weights, "WEIGHTS")
    results = analyze_file(tensors, args.tensor, args.top)
    print_table(results)
    if args.json is not None:
        save_json(args.json, [{k: v for k, v in r.items() if k != "singular_values"}
                              for r in results])
        print(f"wrote {args.json}")
    if args.plot is not None:
        plot_spectra(results, args.plot)
        print(f"wrote {args.plot}")
