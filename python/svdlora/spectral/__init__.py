"""Spectral diagnostics from random-matrix theory.

Marchenko–Pastur bulk of the singular values of a noise matrix, its fit to an observed
spectrum, the BBP location of a rank-one spike (:mod:`.marchenko_pastur`); singular values,
top singular vectors and the Roy–Vetterli effective rank (:mod:`.spectra`); intruder
dimensions between a pretrained and a fine-tuned weight (:mod:`.intruders`).

All functions take numpy arrays or torch tensors (any float dtype, on any device: tensors
are copied to host float64) and return Python floats, numpy arrays or small named tuples.
Matrices are m×n; the formulas use the short side as m, so either orientation may be passed.
"""
from .intruders import IntruderReport, intruder_dimensions, intruder_report
from .marchenko_pastur import (TW1_QUANTILE_99, MPFit, fit_marchenko_pastur,  # noqa: F401
                               marchenko_pastur_edges, marchenko_pastur_median,
                               marchenko_pastur_pdf, outlier_threshold, spike_singular_value)
from .spectra import effective_rank, singular_values, top_singular_vectors

__all__ = [
    "MPFit", "IntruderReport", "marchenko_pastur_edges", "marchenko_pastur_pdf",
    "marchenko_pastur_median", "fit_marchenko_pastur", "outlier_threshold", "spike_singular_value",
    "singular_values", "top_singular_vectors", "intruder_dimensions", "intruder_report",
    "effective_rank",
]
