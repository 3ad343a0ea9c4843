"""Runs `svdlora` commands on many files, each run in its own forked child with a memory
limit and a timeout, and prints one JSON line per run (exit status, stderr, time, memory).

Usage: python fuzz_driver.py RUNS.json  (a list of {"id": ..., "argv": [...]})
       python fuzz_driver.py --serve      (one such list per stdin line)
Results come in the order runs end, each with its id.

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
#: children at a time (runs are independent processes; two keep both CI cores busy)
JOBS = int(os.environ.get("FUZZ_JOBS", "2"))


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


class _Run:
    """One forked child running one command; polled by the parent until it ends."""

    def __init__(self, run) -> None:
        self.id, self.chunks, self.timed_out = run["id"], [], False
        read_fd, write_fd = os.pipe()
        metrics_read, metrics_write = os.pipe()
        self.start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            os.close(metrics_read)
            _child(run["argv"], write_fd, metrics_write)
        os.close(write_fd)
        os.close(metrics_write)
        os.set_blocking(read_fd, False)
        self.pid, self.stderr_fd, self.metrics_fd = pid, read_fd, metrics_read

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.stderr_fd, 65536)
            except BlockingIOError:
                return
            if not data:
                return
            self.chunks.append(data)

    def poll(self):
        """The result once the child has ended (killed past the timeout), else None."""
        self._drain()  # keep the pipe from filling while the child writes
        done, status, _ = os.wait4(self.pid, os.WNOHANG)
        if not done:
            if time.perf_counter() - self.start <= TIMEOUT_S:
                return None
            os.kill(self.pid, signal.SIGKILL)
            _, status, _ = os.wait4(self.pid, 0)
            self.timed_out = True
        seconds = time.perf_counter() - self.start
        self._drain()
        os.close(self.stderr_fd)
        with os.fdopen(self.metrics_fd, "rb") as f:
            grown_kb = f.read()  # empty when the child was killed
        return {"id": self.id, "exit": os.waitstatus_to_exitcode(status),
                "stderr": b"".join(self.chunks).decode("utf-8", "replace"),
                "seconds": seconds, "timed_out": self.timed_out,
                "peak_extra_mb": int(grown_kb) / 1024.0 if grown_kb else None}


def run_all(runs, jobs: int = JOBS):
    """Yield each run's result as it ends, with at most ``jobs`` children at a time."""
    pending, active = list(runs)[::-1], []
    while pending or active:
        while pending and len(active) < jobs:
            active.append(_Run(pending.pop()))
        for run in list(active):
            result = run.poll()
            if result is not None:
                active.remove(run)
                yield result
        time.sleep(0.001)


def main() -> None:
    import svdlora.cli  # noqa: F401  (imported once here; children inherit it)
    if sys.argv[1] == "--serve":
        # one JSON list of run specs per stdin line, one result line per run: a test module
        # keeps one driver (one torch import) for all its tests
        for line in sys.stdin:
            for result in run_all(json.loads(line)):
                print(json.dumps(result), flush=True)
        return
    with open(sys.argv[1]) as f:
        runs = json.load(f)
    for result in run_all(runs):
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
