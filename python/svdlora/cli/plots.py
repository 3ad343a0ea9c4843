"""Figures of the command line and the demo (matplotlib, Agg backend, atomic PNG writes)."""
from __future__ import annotations

import math
from typing import Any, Dict, List

import numpy as np

from .. import spectral
from .errors import require_extra
from .tensor_files import write_atomically

_matplotlib = require_extra("matplotlib", purpose="plotting")
_matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after selecting the backend)


def save_figure(fig, path: str, role: str = "--plot") -> None:
    try:
        write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"), role)
    finally:
        plt.close(fig)


def grid(count: int, panel: float = 2.6):
    cols = min(count, max(1, math.ceil(math.sqrt(count))))
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(panel * cols, panel * 0.8 * rows),
                             squeeze=False)
    for ax in axes.flat[count:]:
        ax.axis("off")
    return fig, axes.flat


def plot_spectra(results: List[Dict[str, Any]], path: str) -> None:
    """Singular-value histogram of each matrix with its fitted Marchenko–Pastur density."""
    fig, axes = grid(len(results))
    for ax, r in zip(axes, results):
        S, (m, n) = r["singular_values"], r["shape"]
        ax.hist(S, bins=min(60, max(10, S.size // 8)), density=True, color="0.7")
        if r["mp_sigma"] is not None:
            x = np.linspace(0, max(S.max(), r["bulk_edge"]) * 1.02, 400)
            ax.plot(x, spectral.marchenko_pastur_pdf(x, m, n, r["mp_sigma"]), "r-", lw=1)
            ax.axvline(r["outlier_threshold"], color="b", ls=":", lw=0.8)
        outliers = "no MP fit" if r["outliers"] is None else f"{r['outliers']} outliers"
        ax.set_title(f"{r['name']}\n{m}x{n}, {outliers}", fontsize=6)
        ax.tick_params(labelsize=5)
    fig.tight_layout()
    save_figure(fig, path)
