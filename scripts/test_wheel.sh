#!/usr/bin/env bash
# Build svdlora's wheel with the build environment BUILD_VENV (with torch: the compiled core,
# pinned to that torch; without: the numpy-only wheel), install it -- not editable -- into the
# fresh environment TEST_VENV, letting pip resolve its dependencies (so the torch pin is what
# selects the torch there), and run the test-suite against the installed wheel from outside
# the source tree.
#   scripts/test_wheel.sh BUILD_VENV TEST_VENV
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_VENV=$1
TEST_VENV=$2
dist=dist/$(basename "$TEST_VENV")
rm -rf "$dist" "$TEST_VENV"
if ! "$BUILD_VENV/bin/python" -c "import torch" 2>/dev/null; then
  # keep the torch-less configuration out of the build tree of the torch build
  export SKBUILD_BUILD_DIR=${SKBUILD_BUILD_DIR:-build/no-torch-wheel}
fi
"$BUILD_VENV/bin/python" -m pip wheel -q --no-build-isolation --no-deps . -w "$dist"
wheel=$(ls "$dist"/svdlora-*.whl)
echo "built $wheel"
if "$BUILD_VENV/bin/python" -c "import torch" 2>/dev/null; then
  extras="test,test-adapters,demo"
else
  extras="test"
fi
python3 -m venv "$TEST_VENV"
"$TEST_VENV/bin/python" -m pip install -q --upgrade pip
"$TEST_VENV/bin/python" -m pip install -q "$wheel[$extras]"
"$TEST_VENV/bin/python" -m pip check
"$TEST_VENV/bin/python" -c "import svdlora, json; print(json.dumps(svdlora.build_info()))"
# the heavy tests exercise pure-Python code that this lane does not change (make test runs them)
scripts/run_tests.sh --outside-tree "$TEST_VENV" "$PWD/tests" -m "not heavy"
