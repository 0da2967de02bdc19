# Two commands for a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Each first runs `setup`, which installs torch only when it is missing, pinned to the CPU wheel
# (an unpinned torch would pull a CUDA build with GBs of packages onto a CPU machine).
PYTHON ?= python3
TORCH_PIN ?= torch==2.13.0
TRITON_PIN ?= triton==3.9.0
PYTEST_ARGS ?=

.PHONY: setup demo test bench clean

setup:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "$(TORCH_PIN)"
	@$(PYTHON) -c "import triton" 2>/dev/null || $(PYTHON) -m pip install -q "$(TRITON_PIN)"
	$(PYTHON) -m pip install -q -e ".[dev,demo]"

demo: setup
	$(PYTHON) -m grasp_kernels demo

test: setup
	$(PYTHON) -m pytest -q $(PYTEST_ARGS) tests

bench: setup
	$(PYTHON) bench/planner_speed.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .benchmarks out
