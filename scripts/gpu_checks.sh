#!/usr/bin/env bash
# Everything that needs a GPU, in one go (meant for the device machine; results land in $OUT):
#   build with CUDA, the CUDA tests, compute-sanitizer memcheck over them, the GPU benchmarks.
# (No racecheck: svdlora has no hand-written kernels; everything is cuBLAS/cuSOLVER/ATen.)
#   scripts/gpu_checks.sh [--quick]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/svdlora-gpu}
mkdir -p "$OUT"
export SVDLORA_CUDA=ON SVDLORA_CUDA_ARCHS=${SVDLORA_CUDA_ARCHS:-90}
pip install -q --no-build-isolation -e . > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
python -c "import svdlora, json; print(json.dumps(svdlora.build_info()))" | tee "$OUT/build_info.json"
python -m pytest -q -m cuda tests 2>&1 | tail -40 | tee "$OUT/cuda_tests.txt"
compute-sanitizer --tool memcheck --error-exitcode 9 python -m pytest -q -x \
  tests/test_rsvd_cuda.py tests/test_adapter_cuda.py -k "not graph" 2>&1 | tail -25 | tee "$OUT/memcheck.txt"
python bench/bench_rsvd_cuda.py ${1:-} 2>&1 | tee "$OUT/bench_rsvd_cuda.txt"
python bench/bench_adapter_cuda.py ${1:-} 2>&1 | tee "$OUT/bench_adapter_cuda.txt"
cp bench/results/*.json "$OUT/" 2>/dev/null || true
