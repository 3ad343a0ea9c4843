#!/usr/bin/env bash
# Everything that needs a GPU, in one go (for the device machine; full logs and results land
# in $OUT): build with CUDA, every `cuda`-marked test, compute-sanitizer memcheck over the CUDA
# rsvd and adapter tests, then both GPU benchmarks.  Stops at the first failure with a
# non-zero exit status.  (No racecheck: svdlora has no hand-written kernels; everything is
# cuBLAS/cuSOLVER/ATen.)
#   scripts/gpu_checks.sh [--quick]      --quick: fewer benchmark shapes and repeats
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=()
if [ "${1:-}" = "--quick" ]; then
  QUICK=(--quick)
elif [ -n "${1:-}" ]; then
  echo "usage: scripts/gpu_checks.sh [--quick]" >&2
  exit 2
fi
OUT=${OUT:-/tmp/svdlora-gpu}
mkdir -p "$OUT"
export SVDLORA_CUDA=ON SVDLORA_CUDA_ARCHS=${SVDLORA_CUDA_ARCHS:-90}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
step() { echo "=== $1 ($(date +%T)) ===" | tee -a "$OUT/steps.log"; }

step "build (sm_$SVDLORA_CUDA_ARCHS)"
python -m pip install --no-build-isolation -e . > "$OUT/build.log" 2>&1 \
  || { tail -n 60 "$OUT/build.log"; exit 1; }
python -c "import svdlora, json, sys; info = svdlora.build_info(); print(json.dumps(info)); \
sys.exit(0 if info['cuda'] and info['cuda_available'] else 'no usable CUDA build/GPU')" \
  | tee "$OUT/build_info.json"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

step "pytest -m cuda (every GPU test)"
python -m pytest -m cuda -rA tests 2>&1 | tee "$OUT/cuda_tests.log"

step "compute-sanitizer memcheck (rsvd and adapter GPU tests, no graph capture)"
compute-sanitizer --tool memcheck --error-exitcode 9 --log-file "$OUT/memcheck_sanitizer.log" \
  python -m pytest -q -x -m cuda -k "not graph" tests/linalg/test_rsvd_api.py \
  tests/linalg/test_rsvd_accuracy.py tests/adapters/test_adapter_ops.py \
  2>&1 | tee "$OUT/memcheck.log"

step "benchmarks"
python bench/bench_rsvd_cuda.py "${QUICK[@]}" 2>&1 | tee "$OUT/bench_rsvd_cuda.log"
python bench/bench_adapter_cuda.py "${QUICK[@]}" 2>&1 | tee "$OUT/bench_adapter_cuda.log"
cp bench/results/*.json "$OUT/"
step "done"
