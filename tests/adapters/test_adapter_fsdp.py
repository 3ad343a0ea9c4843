"""FSDP2 (``torch.distributed.fsdp.fully_shard``) with 2 CPU processes on gloo: a model
converted first and sharded after trains exactly like one process on the whole batch; a model
sharded first is refused by ``convert`` with a clear error and left unchanged, and ``rsvd`` of
a sharded weight is a TypeError that says to gather it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import needs_compiled, torch
from test_adapter_ddp import run_two_ranks

pytestmark = needs_compiled

WORKER = os.path.join(os.path.dirname(__file__), "_fsdp_worker.py")


def test_convert_then_fully_shard_trains_like_one_process(tmp_path):
    pytest.importorskip("torch.distributed.fsdp")
    if not hasattr(torch.distributed.fsdp, "fully_shard"):
        pytest.skip("this torch has no FSDP2 (fully_shard)")
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1")
    single = tmp_path / "single.npz"
    subprocess.run([sys.executable, WORKER, "0", "1", str(single)], env=env, check=True, timeout=120)
    sharded = tmp_path / "fsdp.npz"
    run_two_ranks(sharded, env, WORKER)
    a, b = np.load(single), np.load(sharded)
    assert sorted(a.files) == sorted(b.files) and len(a.files) == 6  # S, X, Y of 2 layers
    for k in a.files:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-10, atol=1e-12)
    report = json.loads((tmp_path / "fsdp.npz.json").read_text())
    assert report["refusal"] is not None and "sharded weight" in report["refusal"]
    assert "'0'" in report["refusal"] and report["untouched"]
    assert report["rsvd_error"] is not None and "A is a DTensor" in report["rsvd_error"]
