"""DistributedDataParallel with 2 CPU processes (gloo): gradients of S, X, Y match
single-process training on the whole batch."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np

from helpers import needs_compiled

pytestmark = needs_compiled

WORKER = os.path.join(os.path.dirname(__file__), "_ddp_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp(out, env, worker: str = WORKER):
    """Run ranks 0 and 1 of ``worker``; their exit codes and stderr."""
    procs = [subprocess.Popen([sys.executable, worker, str(r), "2", str(out)], env=env,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        results = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return [p.returncode for p in procs], "".join(err for _, err in results)


def run_two_ranks(out, env, worker: str = WORKER) -> None:
    """Both ranks of ``worker`` on a free port; fails with their stderr unless both exit 0."""
    for _attempt in range(2):  # a second try only guards against a port taken in between
        env["MASTER_PORT"] = str(free_port())
        codes, errors = run_ddp(out, env, worker)
        if codes == [0, 0]:
            return
    assert codes == [0, 0], errors[-2000:]


def test_ddp_gradients_match_single_process(tmp_path):
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1")
    single = tmp_path / "single.npz"
    subprocess.run([sys.executable, WORKER, "0", "1", str(single)], env=env, check=True, timeout=120)
    dist_out = tmp_path / "ddp.npz"
    run_two_ranks(dist_out, env)
    a, b = np.load(single), np.load(dist_out)
    assert sorted(a.files) == sorted(b.files) and len(a.files) == 6  # S, X, Y of 2 layers
    for k in a.files:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-10, atol=1e-12)
