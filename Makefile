# Two commands for a fresh machine:  `make demo`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test setup test-numpy-only bench clean

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

## CPU benchmarks against torch.svd_lowrank / scikit-learn (writes bench/results/cpu.json)
bench: $(PY)
	$(PY) bench/bench_rsvd.py

clean:
	rm -rf build .venv .venv-numpy
