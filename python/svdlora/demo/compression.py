"""Demo part 1: truncated-SVD compression of a real photograph (scikit-learn sample image)."""
from __future__ import annotations

import time
from typing import Dict, List, Tuple

import numpy as np

from ..linalg import rsvd


def load_image() -> np.ndarray:
    """china.jpg as (3, height, width) float32 in [0, 1]: one matrix per colour channel."""
    from sklearn.datasets import load_sample_image

    return np.ascontiguousarray(load_sample_image("china.jpg").transpose(2, 0, 1),
                                dtype=np.float32) / 255.0


def psnr(reference: np.ndarray, approx: np.ndarray) -> float:
    mse = float(np.mean((reference.astype(np.float64) - np.clip(approx, 0.0, 1.0)) ** 2))
    return 10.0 * np.log10(1.0 / mse) if mse > 0 else float("inf")


def run(quick: bool) -> Tuple[List[Dict], np.ndarray, Dict[int, np.ndarray]]:
    """Rows of the table, the image, and the reconstruction at every rank."""
    image = load_image()
    channels, m, n = image.shape
    exact_S = np.linalg.svd(image.astype(np.float64), compute_uv=False)  # (3, min(m, n))
    ranks = (5, 20, 50) if quick else (5, 10, 20, 50, 100)
    rows, reconstructions = [], {}
    for k in ranks:
        rsvd(image, k, seed=0)  # warm-up, so the time is the steady state
        start = time.perf_counter()
        U, S, Vh = rsvd(image, k, seed=0)  # the three channels in one batched call
        seconds = time.perf_counter() - start
        approx = (U * S[:, None, :]) @ Vh
        error = np.linalg.norm((image - approx).reshape(channels, -1).astype(np.float64), axis=1)
        optimum = np.sqrt(np.sum(exact_S[:, k:] ** 2, axis=1))
        rows.append({"rank": k, "storage": k * (m + n + 1) / (m * n),
                     "psnr_db": psnr(image, approx), "error_over_optimum": float(np.max(error / optimum)),
                     "energy_kept": float(np.sum(S.astype(np.float64) ** 2) / np.sum(exact_S ** 2)),
                     "milliseconds": seconds * 1e3})
        reconstructions[k] = np.clip(approx.transpose(1, 2, 0), 0.0, 1.0)
    return rows, image.transpose(1, 2, 0), reconstructions
