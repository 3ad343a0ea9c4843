"""Shared benchmark helpers: timing (median after warm-up), machine description, test
matrices with a known spectrum, exact errors, and atomic JSON output."""
from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from typing import Any, Callable, Dict, List

import numpy as np


def median_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time in seconds of ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times: List[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(fns: Dict[str, Callable[[], Any]], repeats: int = 5,
                        warmup: int = 1) -> Dict[str, float]:
    """Median wall time (s) of each function, running them round-robin so that drifts in
    machine load (this 2-core machine is shared and noisy) hit every peer alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def machine() -> Dict[str, Any]:
    import torch
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "numpy": np.__version__,
            "python": platform.python_version(), "cuda": torch.version.cuda}


def known_spectrum_matrix(m: int, n: int, s: np.ndarray, seed: int = 0):
    """float32 torch matrix U diag(s) V^T with random orthonormal U (m x r), V (n x r)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    r = len(s)
    U = torch.linalg.qr(torch.randn(m, r, generator=g))[0]
    V = torch.linalg.qr(torch.randn(n, r, generator=g))[0]
    return ((U * torch.from_numpy(s).float()) @ V.T).contiguous()


def frobenius_error(A, U, S, Vh, block: int = 2048) -> float:
    """||A - U diag(S) Vh||_F accumulated in float64, row block by row block."""
    import torch
    U, S, Vh = (torch.as_tensor(x).double() for x in (U, S, Vh))
    total = 0.0
    for i in range(0, A.shape[-2], block):
        E = A[..., i:i + block, :].double() - (U[..., i:i + block, :] * S[..., None, :]) @ Vh
        total += float(E.square().sum())
    return total ** 0.5


def write_json_atomic(path: str, payload: Dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)


def merge_section(path: str, section: str, payload: Any, meta: Dict[str, Any]) -> None:
    """Replace one section of a results file, keeping the sections other scripts wrote."""
    data: Dict[str, Any] = {}
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
    data["machine"] = meta
    data[section] = payload
    write_json_atomic(path, data)


def gpu_results_path(script: str, out: Any = None) -> str:
    """Exit unless a GPU and a CUDA build of svdlora are present; the results file to write
    (``out``, or bench/results/<gpu model>.json)."""
    import sys

    import torch

    import svdlora
    if not (torch.cuda.is_available() and svdlora.build_info()["cuda"]):
        sys.exit(f"{script} needs a GPU and a CUDA build of svdlora")
    gpu = torch.cuda.get_device_name().split()[-1].lower().replace("/", "-")
    return out or os.path.join(os.path.dirname(__file__), "results", f"{gpu}.json")
