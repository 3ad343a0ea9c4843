"""The rsvd plan: every algorithm choice of one call (method, sketch width, passes over A,
block width, stopping rule, full-side shortcut), made once from the arguments and the shape."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from .sketch import gaussian_sketch

#: Extra sketch columns ``p`` beyond the rank: ``l = k + p``.
DEFAULT_OVERSAMPLE = 10

#: Values of the public ``method=`` argument.
METHODS = ("auto", "subspace", "krylov")

#: ``method="auto"`` takes block Krylov when the short side is at least this long.  Below it
#: (measured: 2048x1024, and 384-wide transformer weights) subspace iteration's fewer, wider
#: GEMMs win; see docs/rsvd-methods.md.
KRYLOV_MIN_SHORT_SIDE = 2000

#: Stopping rule of block Krylov: stop once the predicted remaining reduction of the squared
#: error is below this fraction of the optimum's (estimated) squared error -- half of the
#: 2.01% that the 1.01 bar allows ...
KRYLOV_STOP_TOL = 0.01
#: ... or once a pass reduced it by less than this fraction.
KRYLOV_GAIN_TOL = 0.004


#: Subspace iteration takes one iteration more when its sketch covers at least this share of
#: the short side (and ``rank > 32``): the ranks then reach into the flat middle of a noise
#: bulk, where the gap ``σ_k / σ_{k+p}`` closes fastest (see :func:`default_n_iter`).
DEEP_SKETCH_SHARE = 1.0 / 8


def default_n_iter(rank: int, *, exact_range: bool, short: Optional[int] = None,
                   oversample: int = DEFAULT_OVERSAMPLE) -> int:
    """Power iterations of subspace iteration when ``n_iter=None``.

    Rule: 0 when the sketch spans the whole short side (``exact_range``: the range is then
    captured exactly); otherwise 2 for ``rank <= 16``, 3 up to 64, and one more per doubling
    beyond (``3 + ceil(log2(rank / 64))``: 4 up to 128, 5 up to 256, ...); plus one when
    ``32 < rank <= 64`` and the sketch ``rank + oversample`` covers at least
    :data:`DEEP_SKETCH_SHARE` of the ``short`` side (when given).

    Why: with a fixed oversampling of 10 the relative gap ``σ_k / σ_{k+p}`` shrinks as ``k``
    grows, so flat spectra need more iterations at large ranks.  Measured worst cases at the
    previous count (700x420 and larger, float32): rank 32 inside a Marchenko–Pastur noise
    bulk reaches 1.010x the optimum with 2 iterations and 1.007x with 3; rank 100 1.014x
    with 3 and 1.008x with 4; rank 256 with an ``i^-0.5`` spectrum 1.010x with 3 and 1.006x
    with 4.  The gap also closes with the depth ``l / short`` of the sketch into the bulk:
    ranks 48-64 of that noise bulk with a short side of 192-512 need 4 iterations (rank 64:
    1.0128x with 3 at 1024x256, 1.0114x at 700x420, 1.0106x at 2048x512), while a short side
    of 768 or more meets the bar with 3.  Ranks above 64 already get 4.  The rule keeps every
    case of the accuracy tests within 1%.
    """
    if exact_range:
        return 0
    if rank <= 16:
        return 2
    deep = short is not None and 32 < rank <= 64 and (rank + oversample) >= DEEP_SKETCH_SHARE * short
    return 3 + max(0, math.ceil(math.log2(rank / 64))) + int(deep)


def subspace_passes(n_iter: int) -> int:
    """Passes over A made by subspace iteration with ``n_iter`` iterations: the sketch
    ``A Ω``, two per iteration, and ``B = Qᵀ A``."""
    return 2 * n_iter + 2


def default_block_size(width: int) -> int:
    """Block width of the adaptive-rank scheme: ``min(l, 64, max(16, ceil(l / 8)))``."""
    return min(width, 64, max(16, -(-width // 8)))


#: Narrowest default block of block Krylov: thinner GEMMs lose efficiency (on the 2-core test
#: machine a 4096 x 4096 product with 37 columns runs at ~90 GFLOP/s against ~115 with 74).
KRYLOV_MIN_BLOCK = 32


def default_krylov_block(width: int) -> int:
    """Block width of block Krylov: ``min(l, max(ceil(l / 2), 48))``.

    Measured on the accuracy-test spectra (float32 and float64) and at 4096 scale: about
    ``l / 2`` reaches the 1.01 bar in the fewest flops at large ranks (``b = l`` grows the
    basis so fast that the re-orthogonalisation dominates, and at ``k = 100`` on a 420-wide
    matrix it runs out of room before reaching the bar), while at small ranks blocks under
    ~48 columns run the passes at poor GEMM efficiency.  See docs/rsvd-methods.md.
    """
    return min(width, max(-(-width // 2), KRYLOV_MIN_BLOCK))


@dataclass(frozen=True)
class RSVDPlan:
    """What one rsvd/pca call will do.

    Attributes
    ----------
    rank : int
        Components returned (the maximum with ``tol``).
    sketch_rows : int
        ``min(m, n)``: the sketch acts on the short side.
    width : int
        Sketch columns: ``l = rank + oversample`` (subspace iteration, adaptive rank), the
        block width ``b`` (block Krylov), or ``min(m, n)`` (exact).
    n_iter : int
        Power iterations ``q`` (subspace iteration; per block in the adaptive mode).
    block : int
        Block width of the adaptive scheme.
    exact : bool
        The whole short side is sketched (with the identity): the result is exact to rounding.
    tol : float or None
        Relative Frobenius error target (adaptive rank), or None.
    center : bool
        Factorise ``A - 1 mean^T`` (PCA).
    seed : int
        Seed of the Gaussian sketch.
    method : str
        "subspace" or "krylov" (fixed rank), "adaptive" (``tol``), "exact".
    settle_passes, max_passes : int
        Block Krylov: the first pass whose basis holds ``l`` columns (the convergence rate
        is estimated from there on), and the cap (the exact count without a stopping rule).
    stop_tol, gain_tol : float
        Block Krylov stopping rule (both 0: a fixed count of ``max_passes``); see
        :data:`KRYLOV_STOP_TOL` and :data:`KRYLOV_GAIN_TOL`.
    """

    rank: int
    sketch_rows: int
    width: int
    n_iter: int
    block: int
    exact: bool
    tol: Optional[float]
    center: bool
    seed: int
    method: str = "subspace"
    settle_passes: int = 0
    max_passes: int = 0
    stop_tol: float = 0.0
    gain_tol: float = 0.0

    @property
    def adaptive(self) -> bool:
        return self.tol is not None

    @property
    def krylov(self) -> bool:
        return self.method == "krylov"

    def sketch(self, dtype: Any, *, as_torch: bool, device: Any = None) -> Any:
        """The test matrix Ω (``sketch_rows x width``) this plan prescribes."""
        return gaussian_sketch(self.sketch_rows, self.width, self.seed, dtype, as_torch=as_torch,
                               device=device, identity=self.exact)


def _krylov_fits(rank: int, block: int, short: int) -> int:
    """Largest pass count whose bases (``floor(P/2) + 1`` blocks of ``block`` on the wider
    side) fit in the short side, or 0 when not even a ``rank``-column basis fits."""
    most = 2 * (short // block) - 1  # floor(P/2) + 1 <= short // block
    least = 2 * (-(-rank // block)) - 1
    return most if most >= least else 0


def make_plan(m: int, n: int, rank: int, *, oversample: int, n_iter: Optional[int],
              tol: Optional[float], block_size: Optional[int], seed: int, center: bool,
              method: str = "auto", full_side_shortcut: bool = True) -> RSVDPlan:
    """Choose the method, sketch width, pass counts and block width for an m x n matrix.

    Arguments are assumed valid (the public functions check them first).  When the sketch
    would cover more than half of the short side, randomization saves nothing, so the whole
    side is taken (exactly, with the identity) and one pass suffices -- unless ``tol`` is
    given, whose blocks only reach the full width if the tolerance demands it, or
    ``full_side_shortcut`` is off (the cuSOLVER peer takes its own sketch).

    ``method="auto"`` is block Krylov with adaptive stopping when ``n_iter`` is None and the
    short side is at least :data:`KRYLOV_MIN_SHORT_SIDE`, else subspace iteration.  An
    explicit ``n_iter`` keeps its fixed meaning: ``q`` subspace iterations, or with
    ``method="krylov"`` the same number of passes (``2q + 2``) of block Krylov.
    """
    short = min(m, n)
    width = min(rank + oversample, short)
    if full_side_shortcut and tol is None and 2 * width > short:
        width = short
    exact = full_side_shortcut and tol is None and width == short
    block = block_size or default_block_size(width)
    if tol is None and not exact:
        if method == "auto":
            method = "krylov" if n_iter is None and short >= KRYLOV_MIN_SHORT_SIDE else "subspace"
        if method == "krylov":
            plan = _krylov_plan(rank, width, short, n_iter, block_size, seed, center)
            if plan is not None:
                return plan
            method = "subspace"  # no room for a Krylov basis: a rare, tiny case
    if n_iter is None:
        # Adaptive mode: each block is a small sketch of what is left of A, so iterate as for
        # a fixed rank equal to the block width (rank only caps the total; the blocks never
        # reach deep into the short side at once, so its depth rule does not apply).
        n_iter = (default_n_iter(block, exact_range=exact) if tol is not None else
                  default_n_iter(rank, exact_range=exact, short=short, oversample=oversample))
    label = "adaptive" if tol is not None else ("exact" if exact else "subspace")
    return RSVDPlan(rank=rank, sketch_rows=short, width=width, n_iter=n_iter, block=block,
                    exact=exact, tol=tol, center=center, seed=seed, method=label)


def _krylov_plan(rank: int, width: int, short: int, n_iter: Optional[int],
                 block_size: Optional[int], seed: int, center: bool) -> Optional[RSVDPlan]:
    b = block_size or default_krylov_block(width)
    fits = _krylov_fits(rank, b, short)
    if fits == 0:
        return None
    least = 2 * (-(-rank // b)) - 1  # the first pass whose basis holds `rank` columns
    settle = 2 * (-(-width // b)) - 1  # ... and `l` columns
    common = dict(rank=rank, sketch_rows=short, width=b, block=b, exact=False, tol=None,
                  center=center, seed=seed, method="krylov", settle_passes=settle)
    if n_iter is not None:  # fixed count, no stopping rule
        passes = min(max(subspace_passes(n_iter), least), fits)
        return RSVDPlan(n_iter=n_iter, max_passes=passes, **common)
    # The cap: twice subspace iteration's default passes at half its width -- its flops --
    # reached only where the Ritz values stall on rounding (steep float32 spectra).
    old_passes = subspace_passes(default_n_iter(rank, exact_range=False))
    cap = min(max(2 * old_passes, least + 1), fits)
    return RSVDPlan(n_iter=0, max_passes=cap, stop_tol=KRYLOV_STOP_TOL,
                    gain_tol=KRYLOV_GAIN_TOL, **common)
