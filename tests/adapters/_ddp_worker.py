"""Worker for tests/test_adapter_ddp.py: one rank of a 2-process gloo DDP step on a
converted model; writes its S/X/Y gradients to a .npz file (no pickle)."""
from __future__ import annotations

import sys

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

import svdlora


def build_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 24), nn.Tanh(), nn.Linear(24, 8)).double()
    svdlora.convert(model, rank=6, inner_rank=2, progress=False)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, svdlora.SVDLoRALinear):
                m.Y.normal_()
    return model


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 16, generator=g, dtype=torch.float64), torch.randn(32, 8, generator=g,
                                                                              dtype=torch.float64)


def grads(model: nn.Module):
    return {n: p.grad.numpy() for n, p in model.named_parameters() if p.requires_grad}


def main(rank: int, world: int, out: str) -> None:
    model = build_model()
    x, y = batch()
    if world == 1:
        nn.functional.mse_loss(model(x), y).backward()
        np.savez(out, **grads(model))
        return
    dist.init_process_group("gloo", rank=rank, world_size=world)
    ddp = nn.parallel.DistributedDataParallel(model)
    shard = slice(rank * 32 // world, (rank + 1) * 32 // world)
    nn.functional.mse_loss(ddp(x[shard]), y[shard]).backward()
    if rank == 0:
        np.savez(out, **{k.replace("module.", ""): v for k, v in grads(ddp.module).items()})
    # Tear down together: a rank that destroys its group while the other still works makes
    # gloo's connection threads abort the other process ("terminate called ...").
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
