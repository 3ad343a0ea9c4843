"""Render bench/results/*.json as markdown: the tables of docs/benchmarks.md (and of the
README's headline rows).

    python bench/report.py [RESULTS.json ...]              print the tables
    python bench/report.py --write docs/benchmarks.md      regenerate the benchmarks page

`make bench` and `make bench-hf` run their CPU benchmarks and then the second form.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

def rsvd_table(section: dict) -> str:
    rows = ["| shape | k | svdlora ms (err/opt, q) | svd_lowrank ms (err/opt) | ratio | sklearn defaults ms (err/opt) "
            "| svdlora at sklearn's accuracy ms (q) | ratio | torch.linalg.svd ms |",
            "|---|---|---|---|---|---|---|---|---|"]
    for c in section["cases"]:
        ours, low, skl = c["svdlora"], c["svd_lowrank"], c["sklearn_default"]
        match = c["svdlora_at_sklearn_accuracy"]
        full = f"{c['linalg_svd']['time_s'] * 1e3:.0f}" if "linalg_svd" in c else "—"
        path = ", exact" if c.get("exact_path") else ""
        rows.append(
            f"| {c['shape'][0]}×{c['shape'][1]} | {c['k']} "
            f"| {ours['time_s'] * 1e3:.1f} ({ours['err_over_opt']:.4f}, {c['n_iter_ours']}{path}) "
            f"| {low['time_s'] * 1e3:.1f} ({low['err_over_opt']:.4f}) | {c['vs_lowrank']:.2f}× "
            f"| {skl['time_s'] * 1e3:.1f} ({skl['err_over_opt']:.4f}) "
            f"| {match['time_s'] * 1e3:.1f} ({match['n_iter']}) | {c['vs_sklearn']:.2f}× | {full} |")
    b = section["batched"]
    rows.append("")
    rows.append("| batched | k | svdlora ms (max err/opt) | svd_lowrank ms (max err/opt) | ratio | sklearn loop ms |")
    rows.append("|---|---|---|---|---|---|")
    rows.append(f"| {b['shape'][0]}×{b['shape'][1]}×{b['shape'][2]} | {b['k']} "
                f"| {b['svdlora']['time_s'] * 1e3:.1f} ({b['svdlora']['err_over_opt_max']:.4f}) "
                f"| {b['svd_lowrank']['time_s'] * 1e3:.1f} ({b['svd_lowrank']['err_over_opt_max']:.4f}) "
                f"| {b['vs_lowrank']:.2f}× | {b['sklearn_loop_same_n_iter']['time_s'] * 1e3:.1f} |")
    return "\n".join(rows)


def time_to_accuracy_table(section: dict) -> str:
    def cell(r: dict, extra: str = "") -> str:
        return (f"{r['time_s'] * 1e3:.0f} ({r['err_over_opt']:.4f}, P={r['passes']}{extra}, "
                f"{r['gemm_bound']:.2f})")
    rows = ["Each cell: ms (err/opt, P = passes over A, GEMM-bound ratio = time / (P × one "
            "A·X GEMM of the method's block width)).  Ratios are the peer's time over "
            "svdlora's default.", "",
            "| matrix | k | svdlora default | svdlora subspace (old default) | ratio "
            "| svd_lowrank, smallest niter ≤ 1.01 | ratio | sklearn defaults | ratio |",
            "|---|---|---|---|---|---|---|---|---|"]
    for c in section["cases"]:
        ours, old, low, skl = c["svdlora"], c["svdlora_subspace"], c["svd_lowrank"], c["sklearn"]
        method = "" if ours["method"] == "subspace" else f", {ours['method']} b={ours['block']}"
        low_extra = f", niter={low['niter']}" + ("" if low["reached"] else ", misses 1.01")
        rows.append(f"| {c['matrix']} | {c['k']} | {cell(ours, method)} | {cell(old)} "
                    f"| {c['vs_subspace']:.2f}× | {cell(low, low_extra)} "
                    f"| {c['vs_lowrank']:.2f}× | {cell(skl)} | {c['vs_sklearn']:.2f}× |")
    sm = section.get("summary", {})
    if sm.get("geomean_vs_subspace"):
        rows += ["", f"Over the {sm['cases_min_side_ge_2000']} cases with min(m, n) ≥ 2000: "
                 f"geometric mean {sm['geomean_vs_subspace']:.2f}× faster than the old default, "
                 f"{sm['geomean_vs_lowrank']:.2f}× than svd_lowrank (smallest ratio "
                 f"{sm['min_vs_lowrank']:.2f}×); largest err/opt of the default "
                 f"{sm['max_err_over_opt']:.4f}; on the MiniLM weights the default is at least "
                 f"{sm['minilm_min_vs_subspace']:.2f}× the old default's speed."]
    return "\n".join(rows)


def adapter_table(section: dict) -> str:
    rows = ["| N, D=K, r, r' | dense fwd+dx ms | drop fused ms | drop unfused ms | fused/unfused | "
            "fused/unfused, recycling off | vs dense | keep fused ms | keep unfused ms | PEFT LoRA ms | keep overhead / PEFT overhead "
            "| saved activations fused / unfused / PEFT (MiB) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in section["configs"]:
        v = c["variants"]
        ms = {k: v[k]["time_s"] * 1e3 for k in v}
        mib = {k: v[k]["saved_activation_bytes"] / 2**20 for k in v}
        peft = f"{ms['peft_lora']:.1f}" if "peft_lora" in ms else "—"
        ratio = f"{c['keep_overhead_ratio_vs_peft']:.2f}" if "keep_overhead_ratio_vs_peft" in c else "—"
        plain_alloc = c.get("drop_fused_vs_unfused_without_recycling")
        plain_alloc = f"{plain_alloc:.2f}×" if plain_alloc is not None else "—"
        rows.append(
            f"| {c['N']}, {c['D']}, {c['r']}, {c['inner_rank']} | {ms['dense']:.1f} | {ms['drop_fused']:.1f} "
            f"| {ms['drop_unfused']:.1f} | {c['drop_fused_vs_unfused']:.2f}× | {plain_alloc} "
            f"| {c['drop_fused_vs_dense']:.2f}× "
            f"| {ms['keep_fused']:.1f} | {ms['keep_unfused']:.1f} | {peft} | {ratio} "
            f"| {mib['drop_fused']:.1f} / {mib['drop_unfused']:.1f} / {mib.get('peft_lora', float('nan')):.1f} |")
    return "\n".join(rows)


def peft_init_table(section: dict) -> str:
    rows = ["| model | rank | layers | method | seconds | err/opt (model) | worst layer err/opt "
            "| time / pissa_niter_4 | error / full pissa |",
            "|---|---|---|---|---|---|---|---|---|"]
    for c in section["cases"]:
        for method, m in c["methods"].items():
            rows.append(f"| {c['model']} | {c['rank']} | {c['layers']} | {method} | {m['seconds']:.2f} "
                        f"| {m['error_over_optimum']:.5f} | {m['worst_layer_over_optimum']:.4f} "
                        f"| {m['time_vs_pissa_niter_4']:.2f} | {m['error_vs_pissa']:.5f} |")
    return "\n".join(rows)


def finetune_table(section: dict) -> str:
    rows = [f"{section['model']}; {section['steps']} steps, batch {section['batch']}, "
            f"{section['tokens']} tokens; accuracy is the best over the learning-rate grid.", "",
            "| method | trainable params | conversion s | median step ms (interleaved) | step / LoRA | peak RSS MB "
            "| RSS / LoRA | test accuracy (lr) | grid |",
            "|---|---|---|---|---|---|---|---|---|"]
    for m in section["methods"]:
        grid = ", ".join(f"{g['lr']:g}: {g['accuracy']:.3f}" for g in m["grid"])
        step_ratio = f"{m['step_vs_lora']:.2f}" if "step_vs_lora" in m else "—"
        rss_ratio = f"{m['rss_vs_lora']:.2f}" if "rss_vs_lora" in m else "—"
        rows.append(f"| {m['label']} | {m['trainable_params']:,} | {m['convert_s']:.2f} "
                    f"| {m['median_step_s'] * 1e3:.0f} | {step_ratio} | {m['peak_rss_mb']:.0f} "
                    f"| {rss_ratio} | {m['accuracy']:.3f} ({m['lr']:g}) | {grid} |")
    return "\n".join(rows)


def dask_table(section: dict) -> str:
    rows = section["rows"]
    names = list(rows[0]["methods"])
    lines = ["s (err/opt): median of the timed runs, taken round robin after one warm-up each "
             "(successive runs on one cluster drift, so every method gets the same mix of "
             "slots), each on A's row chunks pinned round robin over the workers; err/opt of the "
             "warm-up's factors, computed after all the timings (an error graph moves chunks "
             "of A between workers).  The ratio is `svd_compressed` QR's time over svdlora's "
             "at the same k, "
             "oversampling and iterations.", "",
             "| matrix (float32, σᵢ=1/i) | k | workers | " + " | ".join(names) + " | QR / svdlora |",
             "|---|---|---|" + "---|" * len(names) + "---|"]
    for row in rows:
        methods = row["methods"]
        cells = [f"{methods[n]['seconds']:.2f} ({methods[n]['err_over_opt']:.4f})" if n in methods
                 else "—" for n in names]
        ours = methods[f"svdlora n_iter={row['q']}"]["seconds"]
        qr = methods[f"svd_compressed QR q={row['q']}"]["seconds"]
        lines.append(f"| {row['shape'][0]}×{row['shape'][1]} | {row['k']} | {row['workers']} | "
                     + " | ".join(cells) + f" | {qr / ours:.2f}× |")
    scaling = section.get("scaling_1_to_2_workers", {})
    if scaling:
        lines += ["", "svdlora's speed-up from 1 to 2 workers: " + ", ".join(
            f"{shape} {ratio:.2f}×" for shape, ratio in scaling.items()) + "."]
    return "\n".join(lines)


def machine_line(machine: dict) -> str:
    parts = [f"{machine.get('cpu')} ({machine.get('cores')} cores)", f"torch {machine.get('torch')}",
             f"{machine.get('torch_threads')} threads", f"numpy {machine.get('numpy')}",
             f"Python {machine.get('python')}"]
    if machine.get("gpu"):
        parts.insert(0, str(machine["gpu"]))
    return ", ".join(parts)


def render(path: str) -> str:
    """All known sections of one results file as markdown."""
    with open(path) as f:
        data = json.load(f)
    out = [f"### `{os.path.relpath(path, os.path.dirname(HERE))}`", "",
           f"Machine: {machine_line(data.get('machine', {}))}.", ""]
    if "rsvd" in data:
        old = any("method_ours" not in c for c in data["rsvd"]["cases"])
        note = ("; measured before block Krylov became the default for `min(m, n) ≥ 2000` — "
                "the time-to-accuracy table below has the current default" if old else "")
        out += [f"**Truncated SVD** (`bench/bench_rsvd.py`, float32, spectrum `σᵢ = 1/i`; `q` "
                f"is the subspace iteration count{note}).", "",
                rsvd_table(data["rsvd"]), ""]
    if "rsvd_time_to_accuracy" in data:
        out += ["**Time to accuracy** (`bench/time_to_accuracy.py`, also run by "
                "`bench/bench_rsvd.py`; float32, every method at the 1.01 bar).", "",
                time_to_accuracy_table(data["rsvd_time_to_accuracy"]), ""]
    if "adapter" in data:
        out += ["**SVD-LoRA layer, forward + backward** (`bench/bench_adapter.py`, float32).", "",
                adapter_table(data["adapter"]), ""]
    if "peft_init" in data:
        out += ["**PiSSA initialisation of a PEFT LoRA model** (`bench/bench_peft_init.py`, "
                "float32).", "", peft_init_table(data["peft_init"]), ""]
    if "hf_finetune" in data:
        out += ["**Fine-tuning MiniLM with a classification head** (`bench/bench_hf_finetune.py`).",
                "", finetune_table(data["hf_finetune"]), ""]
    if "dask" in data:
        out += ["**Dask** (`bench/bench_dask.py`: svdlora against "
                "`dask.array.linalg.svd_compressed` on a LocalCluster, 1 thread per worker).", "",
                dask_table(data["dask"]), ""]
    if "batched" in data:
        b = data["batched"]
        out += [f"**Batched** {b['shape'][0]} × {b['shape'][1]}×{b['shape'][2]}, k = {b['k']} "
                f"(`bench/bench_rsvd.py --batched-only`): svdlora "
                f"{b['svdlora']['time_s'] * 1e3:.1f} ms (max err/opt "
                f"{b['svdlora']['err_over_opt_max']:.4f}), `torch.svd_lowrank` "
                f"{b['svd_lowrank']['time_s'] * 1e3:.1f} ms "
                f"({b['svd_lowrank']['err_over_opt_max']:.4f}): {b['vs_lowrank']:.2f}×.", ""]
    other = sorted(set(data) - {"machine", "rsvd", "rsvd_time_to_accuracy", "adapter",
                                "peft_init", "hf_finetune", "dask", "batched", "note",
                                "commands"})
    if other:
        out += [f"Further sections in the JSON (not tabulated here): {', '.join(other)}.", ""]
    return "\n".join(out)


PAGE = """# Benchmarks

Generated by `bench/report.py --write docs/benchmarks.md` from the measured JSON in
`bench/results/`; do not edit by hand (`make bench` reruns the SVD and adapter benchmarks,
`make bench-hf` the Hugging Face ones, and each regenerates it).

**Method.** Every script compares svdlora with its peers in the same process and run: medians of
at least 5 timed runs after a warm-up, the peers interleaved round-robin so that drifts in the
machine's load hit all of them alike.  Every time has its accuracy beside it (the Frobenius
error over the Eckart–Young optimum, err/opt): a faster answer that misses the accuracy bar is
not a win.  Ratios are peer time / svdlora time (above 1: svdlora is faster).

**Truncated SVD columns.** `q` is svdlora's default `n_iter`; `torch.svd_lowrank` gets the same
sketch size (`k + 10`) and the same `q`.  The scikit-learn columns run `randomized_svd` with its
defaults (`n_iter='auto'`, LU-normalised), then svdlora's `n_iter` is raised until its error is at
most scikit-learn's.  "exact" marks the full-short-side path (sketch = the whole short side).

**Adapter columns.** N tokens, D = K, rank r and inner rank r'.  "unfused" is the same math as a
plain autograd chain (`h = x Vhᵀ`, `z = h Cᵀ`, `y = z Uᵀ`); "dense" is `nn.Linear` forward + dx;
PEFT LoRA has the same rank r.  The overhead ratio is `(keep fused − dense) / (PEFT − dense)`.
"recycling off" repeats the drop-mode comparison with `svdlora.set_buffer_cache_limit(0)`.
Saved activations are the bytes autograd keeps that are not parameters or buffers.  Each
configuration is run in 3 fresh processes (15 interleaved runs each) and the median over the
processes is reported.

**PiSSA columns.** Each method wraps a fresh copy of the model with `peft.get_peft_model`
(LoRA, all linear layers but the head) and initialises it; svdlora's rows run
`svdlora.peft.init_pissa` on a default-initialised LoRA model.  PiSSA leaves `W − s·B A` in the
base layer, so a layer's truncation error is the norm of its residual weight; the optimum comes
from float64 singular values.  Median of 3 timed runs per method, each on a fresh copy.

**Fine-tuning columns.** Each (method, learning rate) runs in a fresh process, so peak RSS is
that run's own, and accuracy is that run's test accuracy.  Step times (forward + backward +
AdamW on the trainable parameters) come from one more process that holds every method's model
and steps them round-robin on the same batches (median of 20 after 3 warm-up steps), since
separate processes drift with the machine's load.  The task is generated offline from templates
(see the script).

**Reading the numbers.**  The single-matrix passes are MKL GEMMs in both svdlora and
`torch.svd_lowrank`, so on a CPU svdlora's gain comes from cheaper orthonormalisation (one
CholeskyQR sweep between passes instead of Householder QR) and the QR-of-`Bᵀ` small SVD, and is
largest where the sketch covers most of the short side (the exact path).  Against
scikit-learn the gain is mostly accuracy: its defaults need more passes than svdlora's to reach
the same error.  The adapter's four big GEMMs are the same ones the unfused chain runs, so the
fused op wins on everything around them: the structured core at large r (`2·N·r·r'` instead of
three `N·r²` products), no separate bias pass, and recycled outputs; the "recycling off" column
isolates the last.  These are 2-core shared machines: repeated runs move single timings by up
to ±15%, which is why the ratios come from one interleaved run.

## Results

{results}
"""


def write_page(paths, target: str) -> None:
    text = PAGE.replace("{results}", "\n".join(render(p) for p in paths).rstrip() + "\n")
    directory = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, target)


def main() -> None:
    parser = argparse.ArgumentParser(description="Render benchmark results as markdown.")
    parser.add_argument("results", nargs="*", help="results JSON files (default bench/results/*.json)")
    parser.add_argument("--write", metavar="PAGE.md", help="write the benchmarks page there")
    args = parser.parse_args()
    paths = args.results or sorted(glob.glob(os.path.join(HERE, "results", "*.json")))
    if not paths:
        sys.exit("no results JSON found")
    if args.write:
        write_page(paths, args.write)
        print(f"wrote {args.write}")
    else:
        print("\n".join(render(p) for p in paths))


if __name__ == "__main__":
    main()
