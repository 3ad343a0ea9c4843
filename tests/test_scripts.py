"""The project's scripts: scripts/gpu_checks.sh, run here with stand-ins for
python/nvidia-smi/compute-sanitizer (a failing GPU test must make it fail, it must select every
GPU test, and every GPU test of the suite must carry the `cuda` marker it selects by), and
`make bench` and `make bench-hf`, which must run their CPU benchmarks and regenerate the docs'
tables."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "gpu_checks.sh")

STUB = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "{log}"
case "$*" in
  *pytest*) [ "{fail}" = 1 ] && {{ echo "1 failed"; exit 1; }} ;;
esac
exit 0
"""


def run_with_stubs(tmp_path, fail_tests: bool):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("python", "nvidia-smi", "compute-sanitizer"):
        path = bin_dir / tool
        path.write_text(STUB.format(log=log, fail=int(fail_tests)))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", OUT=str(tmp_path / "out"))
    proc = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=env, timeout=60)
    return proc, log.read_text().splitlines() if log.exists() else []


@pytest.mark.skipif(not os.path.exists("/bin/bash"), reason="needs bash")
def test_a_failing_gpu_test_fails_the_script(tmp_path):
    proc, calls = run_with_stubs(tmp_path, fail_tests=True)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert not any("bench_" in c for c in calls)  # stopped at the failure
    assert (tmp_path / "out" / "cuda_tests.log").read_text().strip() == "1 failed"  # full log kept


@pytest.mark.skipif(not os.path.exists("/bin/bash"), reason="needs bash")
def test_the_script_runs_every_gpu_test_then_memcheck_and_benchmarks(tmp_path):
    proc, calls = run_with_stubs(tmp_path, fail_tests=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pytest_calls = [c for c in calls if c.startswith("python -m pytest")]
    assert pytest_calls and pytest_calls[0].split()[-1] == "tests" and "-m cuda" in pytest_calls[0]
    assert any(c.startswith("compute-sanitizer --tool memcheck") for c in calls)
    assert any("bench_rsvd_cuda.py" in c for c in calls) and any("bench_adapter_cuda.py" in c for c in calls)


def collect(marker: str):
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", marker,
                           "-p", "no:cacheprovider", os.path.join(ROOT, "tests")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return [line for line in proc.stdout.splitlines() if "::" in line]


def test_gpu_tests_are_collected_on_any_machine_and_all_marked():
    # The GPU tests exist (skipped) everywhere, so `-m cuda` finds them on the GPU machine
    # exactly as here; and what `-m "not cuda"` leaves contains no CUDA test or parameter.
    # (Without torch several modules skip as a whole, and no GPU test can run anyway.)
    pytest.importorskip("torch")
    gpu = collect("cuda")
    modules = {item.split("::")[0] for item in gpu}
    for module in ("linalg/test_rsvd_accuracy.py", "linalg/test_rsvd_api.py",
                   "linalg/test_rsvd_ops.py", "linalg/test_rsvd_many.py",
                   "adapters/test_adapter_ops.py", "adapters/test_adapter_layer.py",
                   "adapters/test_adapter_transformer.py", "spectral/test_spectral.py"):
        assert f"tests/{module}" in modules, module
    rest = collect("not cuda")
    assert len(rest) > 300
    unmarked = [i for i in rest if "cuda" in i.split("::", 1)[1].lower()]
    assert unmarked == [], unmarked


@pytest.mark.skipif(subprocess.run(["which", "make"], capture_output=True).returncode != 0,
                    reason="needs make")
@pytest.mark.parametrize("target, scripts", [
    ("bench", ["bench/bench_rsvd.py", "bench/bench_adapter.py"]),
    ("bench-hf", ["bench/bench_peft_init.py", "bench/bench_hf_finetune.py"]),
])
def test_make_bench_targets_run_their_benchmarks_then_regenerate_the_docs(target, scripts):
    proc = subprocess.run(["make", "-n", target, "VENV=/nonexistent-venv"], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "bench/" in line]
    assert [next(w for w in line.split() if w.startswith("bench/")) for line in lines] == \
        [*scripts, "bench/report.py"]
    assert "--write docs/benchmarks.md" in lines[-1]

