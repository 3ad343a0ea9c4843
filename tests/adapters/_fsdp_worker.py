"""Worker for tests/test_adapter_fsdp.py: one rank of FSDP2 (``fully_shard``) training of a
converted model on gloo, or the same training in one process; writes the trained S/X/Y to a
.npz file and, for the sharded run, what ``convert`` said of an already sharded model."""
from __future__ import annotations

import json
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from _ddp_worker import batch, build_model

import svdlora

STEPS = 3


def plain_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 24), nn.Tanh(), nn.Linear(24, 8)).double()


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.2)
    for _ in range(STEPS):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


def trained(model: nn.Module):
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            full = p.full_tensor() if hasattr(p, "full_tensor") else p
            out[name] = full.detach().numpy()
    return out


def main(rank: int, world: int, out: str) -> None:
    model = build_model()
    x, y = batch()
    if world == 1:
        train(model, x, y)
        np.savez(out, **trained(model))
        return
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", rank=rank, world_size=world)
    # converted first, then sharded: each adapter layer is its own FSDP unit
    for module in model.modules():
        if isinstance(module, svdlora.SVDLoRALinear):
            fully_shard(module)
    fully_shard(model)
    shard = slice(rank * 32 // world, (rank + 1) * 32 // world)
    train(model, x[shard], y[shard])  # gradients are averaged over ranks: the full batch's
    result = trained(model)  # full_tensor() is collective: every rank takes part
    # sharded first: convert must refuse clearly and leave the model as it was
    sharded = plain_model()
    fully_shard(sharded[0])
    fully_shard(sharded)
    try:
        svdlora.convert(sharded, rank=6, inner_rank=2, progress=False)
        refusal = None
    except ValueError as exc:
        refusal = str(exc)
    untouched = not any(isinstance(m, svdlora.SVDLoRALinear) for m in sharded.modules())
    try:
        svdlora.rsvd(sharded[0].weight.detach(), 2)
        rsvd_error = None
    except TypeError as exc:
        rsvd_error = str(exc)
    if rank == 0:
        np.savez(out, **result)
        with open(out + ".json", "w") as f:
            json.dump({"refusal": refusal, "untouched": untouched, "rsvd_error": rsvd_error}, f)
    dist.barrier()  # tear down together (see _ddp_worker.py)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
