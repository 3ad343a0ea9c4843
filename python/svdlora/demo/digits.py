"""Demo part 2-3: full fine-tuning vs LoRA vs SVD-LoRA on scikit-learn's digits.

A small MLP is pretrained on digits 0-4 and adapted to digits 5-9.  Every method adapts the
same three linear layers; we report accuracy on the new task, what is left of the old task,
the number of trainable parameters, and the intruder dimensions of the adapted hidden
layers against the pretrained ones.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
from torch import nn

from .. import spectral
from ..adapters.model import count_parameters, freeze_all_but_adapters
from ..adapters.layer import SVDLoRALinear

HIDDEN = 256
INTRUDER_LAYERS = ("fc1", "fc2")
REFERENCE_RANK = 64  # the old subspace an SVD-LoRA adapter of rank <= 64 may rotate within


@dataclass(frozen=True)
class Task:
    classes: Tuple[int, ...]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_tasks(seed: int = 0) -> Tuple[Task, Task]:
    """(digits 0-4, digits 5-9), each split half/half into train and test, fixed seed."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    x, y = x[order], y[order]
    tasks = []
    for labels in (range(0, 5), range(5, 10)):
        idx = torch.nonzero(torch.isin(y, torch.tensor(list(labels)))).flatten()
        half = len(idx) // 2
        tasks.append(Task(tuple(labels), x[idx[:half]], y[idx[:half]], x[idx[half:]], y[idx[half:]]))
    return tasks[0], tasks[1]


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, HIDDEN)
        self.head = nn.Linear(HIDDEN, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class LoRALinear(nn.Module):
    """Plain LoRA baseline: ``W x + (alpha / rank) B A x`` with B = 0 at the start."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.A = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * (x @ self.A.T) @ self.B.T

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight + self.scale * self.B @ self.A


def train(model: nn.Module, task: Task, steps: int, lr: float) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(task.x_train), task.y_train).backward()
        opt.step()


@torch.no_grad()
def accuracy(model: nn.Module, task: Task) -> float:
    """Test accuracy among the task's own classes (task-incremental evaluation): after
    adapting to 5-9 the head is biased towards 5-9, so the old task is scored on its logits
    0-4 to measure what the shared layers still know."""
    classes = torch.tensor(task.classes)
    predicted = classes[model(task.x_test)[:, classes].argmax(-1)]
    return float((predicted == task.y_test).float().mean())


def pretrain(task: Task, steps: int) -> MLP:
    torch.manual_seed(0)
    model = MLP()
    train(model, task, steps, lr=3e-3)
    return model


# ----------------------------------------------------------------- the adaptation methods


def full_finetune(model: MLP, seed: int) -> MLP:
    return model


def with_lora(rank: int) -> Callable[[MLP, int], MLP]:
    def adapt(model: MLP, seed: int) -> MLP:
        torch.manual_seed(seed)
        for p in model.parameters():
            p.requires_grad_(False)
        for name in ("fc1", "fc2", "head"):
            setattr(model, name, LoRALinear(getattr(model, name), rank, alpha=2.0 * rank))
        return model
    return adapt


def with_svd_lora(rank: int, inner_rank: int, residual: bool) -> Callable[[MLP, int], MLP]:
    def adapt(model: MLP, seed: int) -> MLP:
        for name in ("fc1", "fc2", "head"):
            layer = getattr(model, name)
            r = min(rank, layer.in_features, layer.out_features)
            setattr(model, name, SVDLoRALinear.from_linear(
                layer, r, min(inner_rank, r), residual=residual, svd="exact", seed=seed))
        freeze_all_but_adapters(model)
        return model
    return adapt


def adapted_weights(model: MLP) -> Dict[str, torch.Tensor]:
    weights = {}
    for name in INTRUDER_LAYERS:
        layer = getattr(model, name)
        if isinstance(layer, LoRALinear):
            weights[name] = layer.merged_weight().detach()
        elif isinstance(layer, SVDLoRALinear):
            weights[name] = layer.effective_weight().detach()
        else:
            weights[name] = layer.weight.detach()
    return weights


def methods(quick: bool) -> List[Tuple[str, str, Callable[[MLP, int], MLP], float]]:
    """(method, configuration, adapt function, learning rate)."""
    lora_ranks = (1, 4, 16) if quick else (1, 2, 4, 8, 16)
    svd_grid = ((16, 4), (64, 8)) if quick else ((8, 2), (16, 4), (32, 8), (64, 8), (64, 32))
    out = [("full fine-tuning", "all weights", full_finetune, 1e-3)]
    out += [("LoRA", f"rank {r}", with_lora(r), 5e-3) for r in lora_ranks]
    for residual, mode in ((True, "keep"), (False, "drop")):
        out += [(f"SVD-LoRA {mode}", f"r={r}, r'={ri}", with_svd_lora(r, ri, residual), 5e-3)
                for r, ri in svd_grid]
    return out


def adapt_once(base: MLP, adapt: Callable[[MLP, int], MLP], old: Task, new: Task, steps: int,
               lr: float, seed: int) -> Dict[str, float]:
    model = adapt(copy.deepcopy(base), seed)
    trainable, _ = count_parameters(model)
    train(model, new, steps, lr)
    reports = [spectral.intruder_report(getattr(base, name).weight.detach(), weight,
                                        reference_rank=REFERENCE_RANK)
               for name, weight in adapted_weights(model).items()]
    return {"trainable": trainable, "new_task_accuracy": accuracy(model, new),
            "old_task_accuracy": accuracy(model, old),
            "intruders": sum(r.count for r in reports),
            # intruders that are not just a rotation inside the old top-64 subspace
            "new_direction_intruders": sum(int(np.sum(r.span_overlap[r.indices] < 0.5))
                                           for r in reports)}


def run(quick: bool, progress) -> Tuple[List[Dict], Dict]:
    """Pretrain once, adapt with every method (mean over seeds); returns (rows, summary)."""
    old, new = load_tasks()
    steps = 300
    seeds = (1,) if quick else (1, 2, 3)
    base = pretrain(old, steps=steps)
    summary = {"old_task_accuracy": accuracy(base, old), "steps": steps, "seeds": list(seeds),
               "train_sizes": [len(old.y_train), len(new.y_train)],
               "test_sizes": [len(old.y_test), len(new.y_test)]}
    rows = []
    plan = methods(quick)
    for method, config, adapt, lr in progress(plan, total=len(plan), desc="fine-tuning"):
        start = time.perf_counter()
        runs = [adapt_once(base, adapt, old, new, steps, lr, seed) for seed in seeds]
        row = {"method": method, "config": config, "learning_rate": lr}
        for key in runs[0]:
            values = [r[key] for r in runs]
            row[key] = values[0] if key == "trainable" else float(np.mean(values))
            if key.endswith("accuracy"):
                row[key + "_std"] = float(np.std(values))
        row["seconds_per_run"] = (time.perf_counter() - start) / len(seeds)
        rows.append(row)
    return rows, summary
