"""`svdlora svd`: truncated SVD of one matrix from a file, written to an .npz."""
from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np

from ..linalg import ToleranceWarning, rsvd
from .errors import UsageError
from .tensor_files import TensorFile, require_matrix, save_npz

MAX_N_ITER = 100  # far beyond any useful count; a typo like 1000000 would run for hours


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "svd", help="randomized truncated SVD of a matrix in a file",
        description="Randomized truncated SVD of one 2-D matrix; writes U, S and Vh to an .npz "
                    "and prints the rank, the relative error and the time.")
    p.add_argument("input", metavar="INPUT", help=".npy, .npz (one array) or .safetensors file")
    p.add_argument("-k", "--rank", dest="k", type=int, required=True,
                   help="target rank (the maximum rank with --tol)")
    p.add_argument("--tol", type=float, default=None,
                   help="adaptive rank: smallest rank <= K with relative Frobenius error <= TOL")
    p.add_argument("--tensor", default=None, help="tensor name (needed when the file holds several)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random sketch (default 0)")
    p.add_argument("--n-iter", type=int, default=None,
                   help=f"power iterations, 0..{MAX_N_ITER} (default: automatic)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz", help="output .npz file")
    p.set_defaults(run=run)


def _pick_tensor(tensors: TensorFile, name) -> str:
    if name is not None:
        return name
    if len(tensors.names) != 1:
        raise UsageError(f"INPUT: {tensors.path} holds {len(tensors.names)} tensors; choose one "
                         "with --tensor NAME")
    return tensors.names[0]


def relative_error(A: np.ndarray, U: np.ndarray, S: np.ndarray, Vh: np.ndarray) -> float:
    """||A - U S Vh||_F / ||A||_F in float64, a block of rows at a time."""
    # Divided by a power of two near max|A| (exact, and the ratio is scale-free) so that the
    # squares of entries near float64's maximum do not overflow.
    scale = np.ldexp(1.0, int(np.frexp(float(np.abs(A).max()))[1]))
    US = U.astype(np.float64) * (S.astype(np.float64) / scale)
    Vh = Vh.astype(np.float64)
    residual = total = 0.0
    for start in range(0, A.shape[0], 2048):
        block = A[start:start + 2048].astype(np.float64) / scale
        residual += float(np.sum((block - US[start:start + 2048] @ Vh) ** 2))
        total += float(np.sum(block ** 2))
    return float(np.sqrt(residual / total)) if total > 0 else 0.0


def run(args: argparse.Namespace) -> None:
    tensors = TensorFile(args.input, "INPUT")
    name = _pick_tensor(tensors, args.tensor)
    m, n = require_matrix(tensors, name)
    if not 1 <= args.k <= min(m, n):
        raise UsageError(f"-k: must be in [1, {min(m, n)}] for tensor {name!r} of shape "
                         f"{m}x{n}, got {args.k}")
    if args.tol is not None and not 0 < args.tol < 1:
        raise UsageError(f"--tol: must be in (0, 1), got {args.tol}")
    if not args.output.endswith(".npz"):
        raise UsageError(f"-o: output must be a .npz file, got {args.output}")
    if os.path.exists(args.output) and os.path.samefile(args.output, args.input):
        raise UsageError(f"-o: {args.output} is the input file; choose another output")
    if args.n_iter is not None and not 0 <= args.n_iter <= MAX_N_ITER:
        raise UsageError(f"--n-iter: must be in [0, {MAX_N_ITER}], got {args.n_iter}")
    A = tensors.load(name)
    if not np.isfinite(A).all():
        raise UsageError(f"INPUT: tensor {name!r} contains NaN or Inf")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ToleranceWarning)
        start = time.perf_counter()
        try:
            U, S, Vh = rsvd(A, args.k, tol=args.tol, seed=args.seed, n_iter=args.n_iter)
        except (ValueError, TypeError) as exc:
            raise UsageError(str(exc)) from None
        seconds = time.perf_counter() - start
    error = relative_error(A, U, S, Vh)
    save_npz(args.output, {"U": U, "S": S, "Vh": Vh})
    print(f"{name}: {m}x{n} {tensors.dtype(name)} -> rank {S.shape[0]}, relative error "
          f"||A - U S Vh||_F / ||A||_F = {error:.3e}, {seconds * 1e3:.1f} ms; wrote {args.output}")
    for warning in caught:
        if issubclass(warning.category, ToleranceWarning):
            print(f"note: {warning.message}")
        else:  # not ours to swallow
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)
