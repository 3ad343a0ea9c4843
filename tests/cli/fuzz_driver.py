"""Runs `svdlora` commands on many files, each run in its own forked child with a memory
limit and a timeout, and prints one JSON line per run (exit status, stderr, time, memory).

Usage: python fuzz_driver.py RUNS.json  (a list of {"id": ..., "argv": [...]})

Forking from one parent that has imported svdlora (and torch) but computed nothing makes a
run cost milliseconds instead of the two seconds of a fresh interpreter, so hundreds of files
times three commands fit in CI.  Each child is a real process: a crash, a hang or a memory
blow-up in it cannot hide, and the parent sees its exit status and peak memory.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time

TIMEOUT_S = float(os.environ.get("FUZZ_TIMEOUT_S", "20"))
MEMORY_LIMIT_BYTES = int(os.environ.get("FUZZ_MEMORY_LIMIT_MB", "1536")) * 2**20


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _reset_peak_rss() -> None:
    # "5" resets VmHWM to the current RSS (proc(5), clear_refs), so the peak measured at the
    # end is this run's own; a fork copies only part of the parent's resident pages, which
    # makes the parent's RSS the wrong baseline.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _child(argv, stderr_fd: int, metrics_fd: int) -> None:
    # The address-space limit counts the parent's mappings the child inherits (torch's
    # libraries), so the budget is added on top of the current size.
    limit = 1024 * _status_kb("VmSize") + MEMORY_LIMIT_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _reset_peak_rss()
    start_kb = _status_kb("VmRSS")
    os.dup2(stderr_fd, 2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stderr = os.fdopen(2, "w", closefd=False)
    sys.stdout = os.fdopen(1, "w", closefd=False)
    status = 70
    try:
        from svdlora.cli import main
        status = main(argv)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # a traceback is exactly what the fuzz suite looks for
        import traceback
        traceback.print_exc()
        status = 99
    sys.stderr.flush()
    sys.stdout.flush()
    os.write(metrics_fd, str(_status_kb("VmHWM") - start_kb).encode())
    os._exit(status)


def run_one(argv):
    read_fd, write_fd = os.pipe()
    metrics_read, metrics_write = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        os.close(metrics_read)
        _child(argv, write_fd, metrics_write)
    os.close(write_fd)
    os.close(metrics_write)
    os.set_blocking(read_fd, False)
    chunks = []
    timed_out = False
    while True:
        try:
            data = os.read(read_fd, 65536)
            if data:
                chunks.append(data)
        except BlockingIOError:
            pass
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.perf_counter() - start > TIMEOUT_S:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            timed_out = True
            break
        time.sleep(0.002)
    seconds = time.perf_counter() - start
    while True:
        try:
            data = os.read(read_fd, 65536)
        except BlockingIOError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(read_fd)
    with os.fdopen(metrics_read, "rb") as f:
        grown_kb = f.read()  # empty when the child was killed
    code = os.waitstatus_to_exitcode(status)
    return {"exit": code, "stderr": b"".join(chunks).decode("utf-8", "replace"),
            "seconds": seconds, "timed_out": timed_out,
            "peak_extra_mb": int(grown_kb) / 1024.0 if grown_kb else None}


def main() -> None:
    with open(sys.argv[1]) as f:
        runs = json.load(f)
    import svdlora.cli  # noqa: F401  (imported once here; children inherit it)
    for run in runs:
        result = run_one(run["argv"])
        result["id"] = run["id"]
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
