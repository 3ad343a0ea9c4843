# Two commands for a fresh machine:  `make demo`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
ACCURACY := tests/linalg/test_rsvd_accuracy.py

.PHONY: demo test setup test-kernels test-wheel test-numpy-only test-cuda-build bench bench-hf clean

$(PY):
	scripts/setup.sh $(VENV)

setup: $(PY)

## install (first time) and run the main job: `svdlora demo` (tables on stdout, PNGs in demo-out/)
demo: $(PY)
	$(VENV)/bin/svdlora demo --out demo-out

## install (first time) and run the whole test-suite
test: $(PY)
	scripts/run_tests.sh $(VENV) tests

## the float32 accuracy tests again on other BLAS kernels: MKL restricted to AVX2 (the compiled
## backend) and OpenBLAS on its generic Prescott kernels (the numpy backend)
test-kernels: $(PY)
	MKL_ENABLE_INSTRUCTIONS=AVX2 scripts/run_tests.sh $(VENV) $(ACCURACY) -k float32
	OPENBLAS_CORETYPE=Prescott scripts/run_tests.sh $(VENV) $(ACCURACY) -k float32

## the compiled wheel as users get it: built with .venv's torch, installed (not editable) into
## a fresh .venv-wheel with the torch it pins, the test-suite run from outside the source tree
test-wheel: $(PY)
	scripts/test_wheel.sh $(VENV) .venv-wheel

## without torch: the numpy backend from an editable install, then the numpy-only wheel
test-numpy-only:
	scripts/setup.sh .venv-numpy --no-torch
	scripts/run_tests.sh .venv-numpy tests
	scripts/test_wheel.sh .venv-numpy .venv-numpy-wheel

## the CUDA build lane: torch 2.14.1 (CUDA 13.0) in .venv-cuda, svdlora built with
## SVDLORA_CUDA=ON for sm_80/sm_90, then the CPU test-suite against that build (no GPU needed);
## last, the torch-2.13 wheel of `make test-wheel` next to this torch must fail clearly
test-cuda-build:
	TORCH_SPEC=torch==2.14.1 SVDLORA_CUDA=ON SVDLORA_CUDA_ARCHS="80;90" \
	  SKBUILD_BUILD_DIR=build/cuda scripts/setup.sh .venv-cuda
	.venv-cuda/bin/python -c "import svdlora, sys; info = svdlora.build_info(); \
	  sys.exit(0 if info['cuda'] else 'CUDA build expected: %s' % info)"
	scripts/run_tests.sh .venv-cuda tests -m "not heavy"
	if [ -d dist/.venv-wheel ]; then scripts/check_torch_mismatch.sh .venv-cuda dist/.venv-wheel; fi

## CPU benchmarks (rsvd against torch.svd_lowrank / scikit-learn, the adapter against its
## peers) into bench/results/cpu.json, then docs/benchmarks.md regenerated from it
bench: $(PY)
	$(PY) bench/bench_rsvd.py
	$(PY) bench/bench_adapter.py
	$(PY) bench/report.py --write docs/benchmarks.md

## Hugging Face benchmarks (about 25 minutes on 2 cores): PiSSA initialisation against PEFT's,
## and MiniLM fine-tuning with PEFT LoRA/PiSSA against svdlora keep/drop; then the docs' tables
bench-hf: $(PY)
	$(PY) bench/bench_peft_init.py
	$(PY) bench/bench_hf_finetune.py
	$(PY) bench/report.py --write docs/benchmarks.md

clean:
	rm -rf build dist .venv .venv-numpy .venv-numpy-wheel .venv-wheel .venv-cuda
