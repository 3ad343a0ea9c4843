"""Public randomized truncated SVD and PCA: validation, the plan, backend choice and result
types.

The numerical work happens in a backend (:mod:`.backends`): the compiled op
(``torch.ops.svdlora.rsvd``, C++ on the CPU, CUDA when built) for dense input, or the numpy
implementation for sparse matrices, linear operators and numpy-only installs.
"""
from __future__ import annotations

import functools
import warnings
from typing import Any, Optional

import numpy as np

from .._checks import (DASK, DENSE_TORCH, MatrixInput, check_bool, check_choice, check_int,
                       check_matrix, check_optional_int, check_rank, check_seed, check_tol)
from .._extension import require_compiled, torch
from . import backends, pass_counter, rescale
from .backends import numpy_backend
from .backends.linear_maps import input_compute_dtype
from .input_dtype import as_floating, check_compute_dtype
from .plan import DEFAULT_OVERSAMPLE, METHODS, RSVDPlan, make_plan
from .results import PCAResult, SVDResult
from .sketch import resolve_seed

__all__ = ["rsvd", "pca", "ToleranceWarning"]

BACKENDS = backends.BACKENDS


class ToleranceWarning(UserWarning):
    """``tol`` could not be reached within the maximum ``rank``."""


def rsvd(A: Any, rank: int, *, oversample: int = DEFAULT_OVERSAMPLE, n_iter: Optional[int] = None,
         tol: Optional[float] = None, seed: Optional[int] = None,
         block_size: Optional[int] = None, method: str = "auto",
         backend: str = "auto", dtype: Any = None, compute: bool = True) -> SVDResult:
    """Randomized truncated SVD ``A ≈ U @ diag(S) @ Vh``.

    Parameters
    ----------
    A : array_like, shape (..., m, n)
        A dense numpy array or torch tensor (leading batch dimensions are factorised in one
        call), a 2-D ``scipy.sparse`` matrix, a 2-D torch sparse COO/CSR tensor, a 2-D
        ``dask.array.Array`` (numpy or scipy.sparse chunks; every pass runs where the chunks
        live, on the current dask scheduler, and only the thin m×l / n×l panels and the
        numpy factors come back), or any object with ``shape``, ``matmat`` and ``rmatmat``
        (e.g. ``scipy.sparse.linalg.LinearOperator``).
        torch float16/bfloat16 inputs are read in their own dtype and computed in float32;
        no float32 copy of ``A`` is made.  Integer and boolean input (e.g. the sparse count
        matrix of ``CountVectorizer``) is computed in float64, or in ``dtype``; sparse input
        is converted as sparse, never densified.  Complex input is a ``TypeError``.
    rank : int
        Target rank ``k``, ``1 <= k <= min(m, n)``.  With ``tol`` it is the maximum rank.
    oversample : int, default 10
        Extra sketch columns ``p``; the sketch has ``l = k + p`` columns.  When ``l`` would
        exceed half of ``min(m, n)`` the whole short side is sketched instead and the result
        is exact up to rounding.
    n_iter : int or None, default None
        None: the method decides how many passes over ``A`` to make (block Krylov stops
        adaptively; subspace iteration picks ``q`` = 2 for ``rank <= 16``, 3 up to 64 and
        one more per doubling of ``rank`` beyond, plus one for ``32 < rank <= 64`` when
        ``rank + oversample`` is at least 1/8 of ``min(m, n)``, or 0 when the whole short
        side is sketched).  An integer ``q`` fixes the work: ``q`` subspace iterations (``2q + 2``
        passes), or with ``method="krylov"`` ``2q + 2`` block Krylov passes.  With ``tol``
        the subspace rule is applied to the block width instead of ``rank``.
    tol : float in (0, 1) or None
        Adaptive rank (2-D input only): return the smallest rank ``<= rank`` whose relative
        Frobenius error ``||A - U S Vh||_F / ||A||_F`` is ``<= tol``.  A
        :class:`ToleranceWarning` is issued, and ``rank`` components returned, if it cannot
        be reached.  The achievable ``tol`` is limited to about ``sqrt(eps)`` of the dtype.
    seed : int or None
        Seed of the Gaussian test matrix.  The same seed, input and machine give identical
        results.  None draws fresh OS entropy.
    block_size : int or None
        Block width of the adaptive-rank (``tol``) scheme, default
        ``min(64, max(16, ceil(l / 8)))``, or of block Krylov, default ``ceil(l / 2)``.
    method : {"auto", "subspace", "krylov"}
        Fixed-rank algorithm.  "krylov": randomized block Krylov (block Lanczos
        bidiagonalisation with full reorthogonalisation) that stops once the rank-``k``
        Ritz values have converged; "subspace": subspace iteration with a fixed ``q``.
        "auto" (default) takes "krylov" when ``n_iter`` is None and ``min(m, n) >= 2000``,
        "subspace" otherwise (on smaller matrices its fewer, wider products win), and always
        "subspace" on a dask array (whose long-side panels then stay on the workers; block
        Krylov's growing basis makes a round trip to the client every pass).  Ignored
        with ``tol`` and when the whole short side is sketched.  Both meet the same accuracy
        bar; :func:`svdlora.linalg.count_passes` reports the passes each call made.
    backend : {"auto", "compiled", "numpy", "cusolver_gesvdr"}
        "auto" uses the compiled op for dense inputs when the compiled core is available and
        the numpy implementation otherwise.  For a dask array it picks the GEMM of each
        chunk's product: the compiled core's (torch's matmul) under "auto" when the core is
        loaded, and under "compiled"; NumPy's under "numpy", whose workers then never import
        svdlora or torch (lighter worker processes, slower products).  "cusolver_gesvdr"
        runs cuSOLVER's own randomized SVD (``cusolverDnXgesvdr``, its own random sketch, no
        sign convention) on a 2-D float32/float64 CUDA tensor: a peer for benchmarks, not a
        recommendation.
    dtype : {None, "float32", "float64"} or the numpy/torch dtype, default None
        The dtype to compute in and return.  None: float64 for float64 and integer/boolean
        input, float32 for float32/float16/bfloat16.  Another choice converts ``A`` first
        (a copy; sparse input stays sparse), except that float16/bfloat16 tensors are read
        in place for float32.
    compute : bool, default True
        For a dask array ``A`` only.  True: ``U`` and ``Vh`` come back as numpy arrays.
        False: as dask arrays chunked like ``A``'s rows (``U``) and columns (``Vh``), to be
        combined lazily with ``A`` or data chunked like it; ``S`` is numpy either way.  The
        factorisation itself runs during the call in both cases (unlike
        ``dask.array.linalg.svd_compressed(compute=False)``): the small SVD runs on the
        client, the sign convention needs ``U``'s values, and block Krylov's stopping rule
        needs each pass's result.

    Returns
    -------
    SVDResult
        Named tuple ``(U, S, Vh)``: ``U`` (..., m, k) orthonormal columns, ``S`` (..., k)
        descending and non-negative, ``Vh`` (..., k, n) orthonormal rows.  numpy in gives
        numpy out (float64 stays float64, float32/float16 give float32); torch in gives torch
        out on the same device (float64 stays float64, otherwise float32).  Each column of
        ``U`` has its largest-magnitude entry positive, and ``Vh`` is flipped to match.

    Raises
    ------
    TypeError
        ``A`` of an unsupported type or dtype (integer, complex), non-integer ``rank`` etc.
    ValueError
        Wrong shape, empty ``A``, NaN/Inf in ``A``, ``rank`` outside ``[1, min(m, n)]``,
        ``tol`` outside (0, 1) or with batched ``A``, unknown ``backend``; singular values
        beyond the range of the compute dtype (entries near its maximum; smaller extremes
        are handled, see Notes).
    svdlora.MissingExtensionError
        A torch tensor (or ``backend="compiled"``) in an install without the compiled core.

    Notes
    -----
    Entries so large that their squares overflow (or so small that they underflow) are
    factorised through an exact power-of-two rescaling of each matrix, so such input gives
    the same factors as if the arithmetic had the range.

    Halko, Martinsson & Tropp (2011), "Finding structure with randomness", Alg. 4.4 with
    orthonormalisation after every product (subspace iteration)::

        Q = orth(A Ω);  repeat q times: Q = orth(A orth(Aᵀ Q))
        B = Qᵀ A;  B = Ũ S Vh;  U = Q Ũ

    working on the transpose when ``m < n`` so the sketch is on the short side.

    Block Krylov (Musco & Musco 2015; Tropp & Webber 2023) keeps the whole sequence
    ``V₁ = orth(Ω), U₁ = orth(A V₁), V₂ = orth(Aᵀ U₁ ⟂ V₁), …`` (each block
    Gram–Schmidt-orthogonalised twice against all earlier ones), fills the projected matrix
    ``B = Uᵀ A V`` from the products themselves, and returns the rank-``k`` SVD of ``B``
    lifted by ``U`` and ``V``.  Its error is exactly ``||A||_F² - Σ_{i≤k} s_i(B)²``, so a pass
    that raises ``Σ_{i≤k} s_i²`` by less than 1% of ``Σ_{i>k} s_i²`` (a lower bound of the
    optimum's squared error) leaves little to gain: that is where it stops.  The compiled
    op orthonormalises with CholeskyQR2 (falling back to Householder QR for rank-deficient
    blocks) and computes the SVD of ``B`` through a QR of ``Bᵀ`` and an ``l x l`` SVD.  The
    adaptive mode is the blocked randQB_EI scheme of Yu, Gu & Li (2018), "Efficient
    randomized algorithms for the fixed-precision low-rank matrix approximation", whose error
    ``||A||_F² - ||B||_F²`` is tracked in float64.

    The default ``q`` keeps the error within 1% of the Eckart–Young optimum
    ``sqrt(sum_{i>k} σ_i²)`` on the spectra in the test-suite (``i^-0.5 … i^-2``, geometric,
    a noise bulk plus spikes) in float32 and float64 for ranks 1-256; a smaller ``n_iter``
    trades accuracy for speed.
    """
    info = check_matrix(as_floating(A, check_compute_dtype(dtype)), "A")
    rank = check_rank(rank, info)
    compute = _check_compute(compute, info, "A")
    oversample = check_int(oversample, "oversample", minimum=0)
    n_iter = check_optional_int(n_iter, "n_iter", minimum=0)
    tol = check_tol(tol)
    block_size = check_optional_int(block_size, "block_size", minimum=1)
    seed = resolve_seed(check_seed(seed))
    backend = check_choice(backend, "backend", BACKENDS)
    if tol is not None and info.batch_shape:
        raise ValueError(f"tol (adaptive rank) needs a 2-D A, got batched shape {info.shape}; "
                         "call rsvd per matrix or pass tol=None")
    method = _method_for(info, check_choice(method, "method", METHODS))
    if backend == "cusolver_gesvdr":
        return _factorize_gesvdr(info, rank, oversample, n_iter, tol)
    plan = make_plan(info.m, info.n, rank, oversample=oversample, n_iter=n_iter, tol=tol,
                     block_size=block_size, seed=seed, center=False, method=method)
    U, S, Vh = _factorize(info, plan, backend)[:3]
    U, Vh = _deliver(U, Vh, info, compute)
    return SVDResult(U, S, Vh)


def pca(X: Any, rank: int, *, center: bool = True, oversample: int = DEFAULT_OVERSAMPLE,
        n_iter: Optional[int] = None, seed: Optional[int] = None, method: str = "auto",
        backend: str = "auto", dtype: Any = None, compute: bool = True) -> PCAResult:
    """Principal component analysis by randomized SVD of the column-centred data.

    Parameters
    ----------
    X : array_like, shape (..., m, n)
        Samples in rows, features in columns; the same input kinds as :func:`rsvd`.  Centring
        is implicit: a dense centred copy is never formed and sparse input stays sparse.
    rank : int
        Number of components, ``1 <= rank <= min(m, n)``.
    center : bool, default True
        Subtract the column means first.
    oversample, n_iter, seed, method
        As in :func:`rsvd`.
    backend : {"auto", "compiled", "numpy"}
        As in :func:`rsvd` (cuSOLVER's ``gesvdr`` peer cannot centre).
    dtype : {None, "float32", "float64"}, default None
        As in :func:`rsvd` (integer and boolean data compute in float64 by default).
    compute : bool, default True
        As in :func:`rsvd` (dask input only; ``mean`` is numpy either way).

    Returns
    -------
    PCAResult
        ``(U, S, Vh, mean)`` with ``X - mean ≈ U @ diag(S) @ Vh``; ``Vh`` rows are the
        principal axes, ``S**2 / (m - 1)`` the explained variances, ``mean`` the column means
        (zeros when ``center=False``).

    Raises
    ------
    TypeError, ValueError
        As in :func:`rsvd`, plus a non-bool ``center``.

    Notes
    -----
    The centred matrix ``X - 1 μᵀ`` is applied as ``X v - 1 (μᵀ v)`` and
    ``Xᵀ u - μ (1ᵀ u)``, so the cost equals that of :func:`rsvd` on ``X``.
    """
    info = check_matrix(as_floating(X, check_compute_dtype(dtype)), "X")
    rank = check_rank(rank, info)
    compute = _check_compute(compute, info, "X")
    center = check_bool(center, "center")
    oversample = check_int(oversample, "oversample", minimum=0)
    n_iter = check_optional_int(n_iter, "n_iter", minimum=0)
    seed = resolve_seed(check_seed(seed))
    # cuSOLVER's gesvdr has no centring: it is an rsvd peer only
    backend = check_choice(backend, "backend", [b for b in BACKENDS if b != "cusolver_gesvdr"])
    method = _method_for(info, check_choice(method, "method", METHODS))
    plan = make_plan(info.m, info.n, rank, oversample=oversample, n_iter=n_iter, tol=None,
                     block_size=None, seed=seed, center=center, method=method)
    U, S, Vh, mean = _factorize(info, plan, backend, "X")
    U, Vh = _deliver(U, Vh, info, compute)
    return PCAResult(U, S, Vh, mean)


# --------------------------------------------------------------------------- dispatch


def _factorize(info: MatrixInput, plan: RSVDPlan, backend: str, name: str = "A"):
    """Draw the plan's sketch once and run the chosen backend: ``(U, S, Vh, mean)``.

    A factorisation that overflows (finite entries near the dtype's maximum) is redone once
    on a power-of-two rescaled copy, and its singular values and means are scaled back.
    """
    compiled = backends.use_compiled(info, backend)
    dtype = input_compute_dtype(info)
    if compiled:
        from .backends import compiled as compiled_backend
        device = info.value.device if info.kind == DENSE_TORCH else None
        omega = plan.sketch(dtype, as_torch=True, device=device)
        run = functools.partial(compiled_backend.factorize, plan=plan, omega=omega)
    else:
        omega = plan.sketch(dtype, as_torch=False)
        run = functools.partial(numpy_backend.factorize, plan=plan, omega=omega,
                                compiled_chunks=backends.compiled_chunks(info, backend))
    def attempt(target: MatrixInput):
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked below
                result = run(target)
        except (rescale.FactorizationOverflow, np.linalg.LinAlgError):
            return None  # finite input was checked: only overflow makes the SVD fail
        pass_counter.record(plan.method, info.shape, result[5])
        return result if _all_finite(result[1]) and _all_finite(result[0]) else None

    # Entries near the dtype's limits: factorise a power-of-two rescaled copy up front (an
    # overflow can also yield finite garbage, so a failed attempt is not the only signal).
    result = None if rescale.needs_rescaling(info, dtype) else attempt(info)
    if result is None:
        rescaled = rescale.scaled_input(info, name)
        if rescaled is None:
            raise ValueError(f"{name} (shape {info.shape}) has entries so large that the "
                             "factorisation overflowed its dtype; rescale it (e.g. divide by "
                             "its largest |entry|)")
        scaled_info, scale = rescaled
        result = attempt(scaled_info)
        if result is None:
            raise ValueError(f"{name} (shape {info.shape}): the factorisation failed even after "
                             "rescaling by a power of two")
        U, S, Vh, mean, err, _ = result
        S, mean = rescale.unscale(S, mean, scale)
        if not (_all_finite(S) and _all_finite(mean)):
            advice = "" if dtype == np.float64 else ", or pass it as float64"
            raise ValueError(f"{name} (shape {info.shape}) has singular values beyond the "
                             f"{dtype} range (its entries are near the dtype's maximum); "
                             f"rescale it{advice}")
    else:
        U, S, Vh, mean, err, _ = result
    if plan.adaptive and err > plan.tol:
        warnings.warn(f"tol={plan.tol:g} was not reached within rank={plan.rank} (relative "
                      f"error estimate {err:.3g}); returning {plan.rank} components",
                      ToleranceWarning, stacklevel=3)
    return U, S, Vh, mean


def _factorize_gesvdr(info: MatrixInput, rank: int, oversample: int, n_iter: Optional[int],
                      tol: Optional[float]) -> SVDResult:
    """cuSOLVER's randomized SVD, for side-by-side benchmarks."""
    A = info.value
    if (info.kind != DENSE_TORCH or A.device.type != "cuda" or info.batch_shape
            or A.dtype not in (torch.float32, torch.float64)):
        raise ValueError("backend='cusolver_gesvdr' needs a 2-D float32/float64 CUDA tensor, got "
                         f"{info.kind} of shape {info.shape}"
                         + (f", {A.dtype} on {A.device}" if info.kind == DENSE_TORCH else ""))
    if tol is not None:
        raise ValueError("backend='cusolver_gesvdr' has no adaptive rank; pass tol=None")
    require_compiled("svdlora.rsvd(backend='cusolver_gesvdr')")
    from .backends import compiled as compiled_backend
    plan = make_plan(info.m, info.n, rank, oversample=oversample, n_iter=n_iter, tol=None,
                     block_size=None, seed=0, center=False, full_side_shortcut=False)
    return SVDResult(*compiled_backend.factorize_gesvdr(A, plan))


def _method_for(info: MatrixInput, method: str) -> str:
    """What ``method="auto"`` means for this input: on dask arrays subspace iteration, the
    one that runs as a single graph with the long-side panels on the workers.  Block Krylov
    brings its basis to the client every pass: 24.6 s against 9.1 s for subspace iteration
    at 200000 x 2000, k = 64, on two workers (bench/bench_dask.py)."""
    return "subspace" if method == "auto" and info.kind == DASK else method


def _check_compute(compute: Any, info: MatrixInput, name: str) -> bool:
    compute = check_bool(compute, "compute")
    if not compute and info.kind != DASK:
        raise ValueError(f"compute=False applies to a dask array {name} only (lazy factors "
                         f"chunked like it); {name} is {info.kind} input, whose factors are "
                         "always computed: drop compute=")
    return compute


def _deliver(U: Any, Vh: Any, info: MatrixInput, compute: bool) -> tuple:
    """The factors as the caller asked for them: computed, or (dask input with
    ``compute=False``) as dask arrays chunked like the input."""
    if compute:
        return U, Vh
    from .backends.dask_map import chunked_like
    return chunked_like(info.value, U, Vh)


def _all_finite(x: Any) -> bool:
    if x is None:
        return True
    return bool(np.isfinite(x).all()) if isinstance(x, np.ndarray) else bool(torch.isfinite(x).all())
