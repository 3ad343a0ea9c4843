"""The demo's PNG figures (matplotlib via svdlora.cli.plots)."""
from __future__ import annotations

import os
from typing import Dict, List

import numpy as np

from ..cli.plots import grid, plt, save_figure


def compression_grid(image: np.ndarray, reconstructions: Dict[int, np.ndarray],
                     rows: List[Dict], path: str) -> None:
    panels = [("original", image)] + [
        (f"rank {r['rank']}: {100 * r['storage']:.1f}% storage, {r['psnr_db']:.1f} dB",
         reconstructions[r["rank"]]) for r in rows]
    fig, axes = grid(len(panels), panel=3.6)
    for ax, (title, picture) in zip(axes, panels):
        ax.imshow(picture)
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, "--out")


def tradeoff(rows: List[Dict], path: str) -> None:
    """Accuracy on the new task and what is kept of the old one, against trainable parameters."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    styles = {"full fine-tuning": "ks", "LoRA": "o-", "SVD-LoRA keep": "^-", "SVD-LoRA drop": "v-"}
    for method, style in styles.items():
        chosen = [r for r in rows if r["method"] == method]
        x = [r["trainable"] for r in chosen]
        left.plot(x, [r["new_task_accuracy"] for r in chosen], style, label=method)
        right.plot(x, [r["old_task_accuracy"] for r in chosen], style, label=method)
    for ax, title in ((left, "new task (digits 5-9)"), (right, "old task kept (digits 0-4)")):
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel("test accuracy")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, "--out")


def write_all(out: str, compression, digits_rows, spectra) -> List[str]:
    written = []
    rows, image, reconstructions = compression
    path = os.path.join(out, "compression.png")
    compression_grid(image, reconstructions, rows, path)
    written.append(path)
    path = os.path.join(out, "tradeoff.png")
    tradeoff(digits_rows, path)
    written.append(path)
    if spectra:
        from ..cli.plots import plot_spectra
        path = os.path.join(out, "minilm_spectra.png")
        plot_spectra(spectra, path)
        written.append(path)
    return written
