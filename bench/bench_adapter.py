"""CPU benchmark of the fused SVD-LoRA layer, fwd+bwd, against the same math as a plain
torch autograd chain, a dense nn.Linear (forward + dx) and a PEFT LoRA layer of equal rank,
in one process and run.

    python bench/bench_adapter.py [--quick] [--processes 3] [--out bench/results/cpu.json]

Reports median times (15 runs after warm-up, all variants interleaved round-robin, in each of
3 fresh processes; medians over the processes), the ratios behind the goals, and the bytes
of saved activations (tensors autograd saves that are not parameters/buffers), measured
with saved-tensor hooks.  Outputs of every variant are checked against each other first.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved_medians, machine, merge_section, write_json_atomic  # noqa: E402

import svdlora  # noqa: E402


def unfused_chain(layer: svdlora.SVDLoRALinear, base: nn.Linear, keep: bool):
    """Same math as the fused op, written as an ordinary autograd chain."""
    U, Vh, S0 = layer.U, layer.Vh, layer.S0

    def fn(x):
        S = layer.S - S0 if keep else layer.S
        C = (torch.diag(S) + layer.scale * (layer.X @ layer.Y)).to(x.dtype)
        y = ((x @ Vh.T) @ C.T) @ U.T
        return y + base(x) if keep else y + base.bias
    return fn


def peft_layer(base: nn.Linear, r: int):
    import peft

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = base

        def forward(self, x):
            return self.lin(x)

    model = peft.get_peft_model(Wrap(), peft.LoraConfig(r=r, lora_alpha=r, target_modules=["lin"],
                                                         lora_dropout=0.0))
    with torch.no_grad():  # non-zero B so the timed path is the real one
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    return model


def fwd_bwd(fn, x, dy):
    def run():
        x.grad = None
        y = fn(x)
        y.backward(dy)
        if x.is_cuda:  # wall time of queued kernels: wait for them
            torch.cuda.synchronize()
    return run


def saved_activation_bytes(fn, x, params) -> int:
    ptrs = {p.data_ptr() for p in params}
    total = 0

    def pack(t):
        nonlocal total
        if t.data_ptr() not in ptrs and t.data_ptr() != 0:
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn(x)
    del y
    return total


def run_config(N, D, K, r, rr, repeats, device="cpu", dtype=torch.float32, with_peft=True):
    """Time every variant of one layer shape; returns the results dict (also printed)."""
    torch.manual_seed(0)
    base = nn.Linear(K, D).to(device, dtype)
    for p in base.parameters():
        p.requires_grad_(False)
    x = torch.randn(N, K, device=device, dtype=dtype, requires_grad=True)
    dy = torch.randn(N, D, device=device, dtype=dtype)
    out = {"N": N, "D": D, "K": K, "r": r, "inner_rank": rr}
    variants = {"dense": (base, list(base.parameters()))}
    for keep in (False, True):
        layer = svdlora.SVDLoRALinear.from_linear(base, r, rr, residual=keep, seed=0)
        with torch.no_grad():
            layer.Y.normal_(0, 0.1)
        unfused = unfused_chain(layer, base, keep)
        tol = 1e-4 if dtype == torch.float32 else 5e-2
        torch.testing.assert_close(layer(x), unfused(x), rtol=tol, atol=tol)
        params = list(layer.parameters()) + list(layer.buffers()) + list(base.parameters())
        mode = "keep" if keep else "drop"
        variants[f"{mode}_fused"] = (layer, params)
        variants[f"{mode}_unfused"] = (unfused, params)
    if with_peft:
        try:
            lora = peft_layer(base, r).to(device, dtype)
            variants["peft_lora"] = (lora, list(lora.parameters()))
        except ImportError:
            pass
    times = interleaved_medians({k: fwd_bwd(fn, x, dy) for k, (fn, _) in variants.items()}, repeats)
    # How much of the drop-mode gain is the recycled CPU outputs (svdlora.buffer_cache): the
    # same comparison again with recycling off.  Its own round-robin, since turning the cache
    # off and on between runs would empty it every time.
    without_recycling = {}
    if device == "cpu":
        limit = svdlora.buffer_cache_info()["limit_bytes"]
        svdlora.set_buffer_cache_limit(0)
        try:
            without_recycling = interleaved_medians(
                {k: fwd_bwd(variants[k][0], x, dy) for k in ("drop_fused", "drop_unfused")}, repeats)
        finally:
            svdlora.set_buffer_cache_limit(limit)
    saved = {k: saved_activation_bytes(fn, x, params) for k, (fn, params) in variants.items()}
    out["variants"] = {k: {"time_s": times[k], "saved_activation_bytes": saved[k]} for k in variants}
    dense = times["dense"]
    out["drop_fused_vs_unfused"] = times["drop_unfused"] / times["drop_fused"]
    if without_recycling:
        out["without_recycling"] = {k: {"time_s": v} for k, v in without_recycling.items()}
        out["drop_fused_vs_unfused_without_recycling"] = (
            without_recycling["drop_unfused"] / without_recycling["drop_fused"])
    out["drop_fused_vs_dense"] = dense / times["drop_fused"]
    out["keep_fused_vs_unfused"] = times["keep_unfused"] / times["keep_fused"]
    if "peft_lora" in times:
        out["keep_overhead_ratio_vs_peft"] = (times["keep_fused"] - dense) / (times["peft_lora"] - dense)
    out["saved_activation_values_per_token_fused"] = saved["drop_fused"] / (x.element_size() * N)
    print(f"N={N} D={D} K={K} r={r} r'={rr}: " + ", ".join(
        f"{k} {v * 1e3:.1f} ms" for k, v in times.items()), flush=True)
    print("  " + ", ".join(f"{k}={out[k]:.2f}" for k in out if k.startswith(("drop_", "keep_"))) +
          "; saved activations (bytes): " + ", ".join(f"{k} {v}" for k, v in saved.items()), flush=True)
    return out


def combine_processes(runs: list) -> dict:
    """One config's results over several processes: median times and median ratios, plus each
    process's ratios."""
    out = {k: v for k, v in runs[0].items() if not isinstance(v, (dict, float))}
    out["processes"] = len(runs)
    out["variants"] = {k: {"time_s": statistics.median(r["variants"][k]["time_s"] for r in runs),
                           "saved_activation_bytes": v["saved_activation_bytes"]}
                       for k, v in runs[0]["variants"].items()}
    if "without_recycling" in runs[0]:
        out["without_recycling"] = {k: {"time_s": statistics.median(r["without_recycling"][k]["time_s"]
                                                                   for r in runs)}
                                    for k in runs[0]["without_recycling"]}
    ratios = [k for k, v in runs[0].items() if isinstance(v, float)]
    for k in ratios:
        out[k] = statistics.median(r[k] for r in runs)
    out["per_process"] = [{k: r[k] for k in ratios} for r in runs]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--processes", type=int, default=3,
                    help="run each shape in this many fresh processes and report medians: within "
                         "one process the unfused chain's time depends on the allocator state it "
                         "starts in (17-29 ms at D=K=1024 between processes on the 2-core machine)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "cpu.json"))
    ap.add_argument("--one-config", type=int, help=argparse.SUPPRESS)  # internal: child process
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.processes < 1 or args.repeats < 1:
        ap.error("--processes and --repeats must be >= 1")
    configs = [(512, 256, 256, 32, 4)] if args.quick else [(4096, 1024, 1024, 64, 8), (4096, 4096, 4096, 256, 16)]
    if args.one_config is not None:
        write_json_atomic(args.child_out, run_config(*configs[args.one_config], args.repeats))
        return
    print(machine())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(len(configs)):
            runs = []
            for p in range(args.processes):
                child = os.path.join(tmp, f"{i}_{p}.json")
                cmd = [sys.executable, __file__, "--one-config", str(i), "--repeats", str(args.repeats),
                       "--child-out", child] + (["--quick"] if args.quick else [])
                subprocess.run(cmd, check=True)
                with open(child) as f:
                    runs.append(json.load(f))
            results.append(combine_processes(runs))
            c = results[-1]
            print(f"  median over {args.processes} processes: " + ", ".join(
                f"{k}={c[k]:.2f}" for k in c if k.startswith(("drop_", "keep_"))), flush=True)
    merge_section(args.out, "adapter", {"dtype": "float32", "configs": results}, machine())
    print("wrote", args.out)


if __name__ == "__main__":
    main()
