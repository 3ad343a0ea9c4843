"""Render bench/results/<machine>.json as the markdown tables used in README.md.

    python bench/report.py [bench/results/cpu.json]
"""
from __future__ import annotations

import json
import os
import sys


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


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results", "cpu.json")
    with open(path) as f:
        data = json.load(f)
    print(f"Machine: {data['machine']}\n")
    if "rsvd" in data:
        print(rsvd_table(data["rsvd"]))
    if "adapter" in data:
        print()
        print(adapter_table(data["adapter"]))


if __name__ == "__main__":
    main()
