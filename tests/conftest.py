"""Test setup: the Triton CPU interpreter without a GPU, and skips for GPU-only tests.

``TRITON_INTERPRET=1`` must be in the environment before any Triton kernel is defined (i.e. before
``grasp_kernels.ops._triton_common`` or an op's ``triton_kernel`` module is imported), so it is set here,
at conftest import time.

Layout: ``tests/ops/test_<op>.py`` holds one op's tests (its reference, Triton and CUDA backends);
helpers shared by several modules live in ``tests/_*.py`` (this directory is put on ``sys.path``).
A module that mixes CPU-interpreter Triton tests with gpu tests sets ``CPU_TRITON_REASON``; its
plain-PyTorch tests (the op's specification) are marked ``reference`` and run everywhere.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
for path in (TESTS, ROOT):  # the package, and the helpers tests/_*.py (also from tests/ops/)
    if path not in sys.path:
        sys.path.insert(0, path)

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "reference: a plain-PyTorch test (an op's specification) in a module with CPU_TRITON_REASON: runs on "
        "every machine, never skipped for Triton",
    )


def pytest_collection_modifyitems(config, items):
    """Without CUDA: skip the gpu-marked tests. With CUDA (no interpreter): skip the CPU tests of modules
    whose ``CPU_TRITON_REASON`` says Triton cannot run on CPU tensors (except those marked ``reference``);
    their gpu-marked tests still run."""
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (run with -m gpu on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            if not HAS_CUDA:
                item.add_marker(skip_gpu)
            continue
        reason = getattr(getattr(item, "module", None), "CPU_TRITON_REASON", None)
        if reason is not None and item.get_closest_marker("reference") is None:
            item.add_marker(pytest.mark.skip(reason=f"CPU test of the Triton kernels: {reason}"))


class DeviceGuardRecorder:
    """Stands in for ``on_device`` (imported by each ``grasp_kernels/ops/<op>/op.py``): remembers which
    devices are entered while a launcher runs."""

    def __init__(self):
        self.entered: list = []
        self.launched_inside: dict = {}

    def __call__(self, device):
        recorder = self

        class Guard:
            def __enter__(self):
                recorder.entered.append(torch.device(device))

            def __exit__(self, *exc):
                recorder.entered.pop()

        return Guard()

    def launcher(self, name):
        """A stub launcher that records the devices entered when it is called."""

        def launch(*args):
            self.launched_inside[name] = list(self.entered)

        return launch


@pytest.fixture
def device_guard_recorder() -> DeviceGuardRecorder:
    return DeviceGuardRecorder()
