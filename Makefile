# Two commands for a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Each first runs `setup`, which installs torch only when it is missing, pinned to the CPU wheel
# (an unpinned torch would pull a CUDA build with GBs of packages onto a CPU machine).
PYTHON ?= python3
TORCH_PIN ?= torch==2.13.0
# This workplace's pip finds the CPU wheel of the pin locally. Elsewhere (PyPI's Linux torch is the CUDA
# build), point pip at the CPU index: make test TORCH_INSTALL_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_INSTALL_ARGS ?=
TRITON_PIN ?= triton==3.9.0
# The suite runs on two worker processes (pytest-xdist, from the dev extra): 14 minutes in one process on a
# 2-core machine. PYTEST_ARGS="-n 0" runs it in one process.
PYTEST_ARGS ?= -n 2
# The host libraries of grasp_kernels.integrations, installed with --no-deps so that pip never pulls
# or replaces torch (their torch-free dependencies are listed explicitly; a few MB, a few seconds).
# stable-worldmodel's top-level import also wants lancedb/pyarrow/torchvision, which are not installed:
# the tests load its solver subpackage alone. Best effort: a failed install only makes those tests skip.
INTEGRATION_PINS ?= stable-worldmodel==0.1.1 torchrl==0.14.1 tensordict==0.14.3 hoptorch==0.1.4 pyvers==0.2.3 \
	gymnasium==1.4.0 farama-notifications==0.0.6 loguru==0.7.3 einops==0.8.2

.PHONY: setup integrations demo test bench lowering-triton36 clean

setup:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q $(TORCH_INSTALL_ARGS) "$(TORCH_PIN)"
	@$(PYTHON) -c "import triton" 2>/dev/null || $(PYTHON) -m pip install -q "$(TRITON_PIN)"
	$(PYTHON) -m pip install -q -e ".[dev,demo,envs]"
	@$(MAKE) --no-print-directory integrations

integrations:
	@$(PYTHON) -c "import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, ('stable_worldmodel', 'torchrl', 'tensordict', 'gymnasium', 'loguru', 'einops'))))" 2>/dev/null \
	  || $(PYTHON) -m pip install -q --no-deps $(INTEGRATION_PINS) \
	  || echo "grasp_kernels: integration packages not installed; their tests will skip"

demo: setup
	$(PYTHON) -m grasp_kernels demo --pixels
	$(PYTHON) -m grasp_kernels demo

test: setup
	$(PYTHON) -m pytest -q $(PYTEST_ARGS) tests

bench: setup
	$(PYTHON) bench/planner_speed.py

# The lowering check (tests/test_lowering.py) under the lent GPU machines' Triton 3.6.0 (ptxas 12.8), whose
# register allocation differs from 3.9's: an extra check in its own environment, not part of `make test`.
VENV_TRITON36 ?= build/venv-triton36
lowering-triton36:
	@test -x $(VENV_TRITON36)/bin/python || { $(PYTHON) -m venv $(VENV_TRITON36) && \
	  $(VENV_TRITON36)/bin/pip install -q $(TORCH_INSTALL_ARGS) "$(TORCH_PIN)" triton==3.6.0 numpy pytest tqdm safetensors; }
	PYTHONPATH=$(CURDIR) $(VENV_TRITON36)/bin/python -m pytest -q -s tests/test_lowering.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .benchmarks out
