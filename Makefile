# Two commands for a fresh machine:  `make demo`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test setup test-numpy-only test-cuda-build bench clean

$(PY):
	scripts/setup.sh $(VENV)

setup: $(PY)

## install (first time) and run the main job: `svdlora demo` (tables on stdout, PNGs in demo-out/)
demo: $(PY)
	$(VENV)/bin/svdlora demo --out demo-out

## install (first time) and run the whole test-suite
test: $(PY)
	scripts/run_tests.sh $(VENV) tests

## a second environment without torch: numpy backend only
test-numpy-only:
	scripts/setup.sh .venv-numpy --no-torch
	scripts/run_tests.sh .venv-numpy tests

## the CUDA build lane: torch 2.14.1 (CUDA 13.0) in .venv-cuda, svdlora built with
## SVDLORA_CUDA=ON for sm_80/sm_90, then the CPU test-suite against that build (no GPU needed)
test-cuda-build:
	TORCH_SPEC=torch==2.14.1 SVDLORA_CUDA=ON SVDLORA_CUDA_ARCHS="80;90" \
	  SKBUILD_BUILD_DIR=build/cuda scripts/setup.sh .venv-cuda
	.venv-cuda/bin/python -c "import svdlora, sys; info = svdlora.build_info(); \
	  sys.exit(0 if info['cuda'] else 'CUDA build expected: %s' % info)"
	scripts/run_tests.sh .venv-cuda tests

## CPU benchmarks against torch.svd_lowrank / scikit-learn (writes bench/results/cpu.json)
bench: $(PY)
	$(PY) bench/bench_rsvd.py

clean:
	rm -rf build .venv .venv-numpy .venv-cuda
