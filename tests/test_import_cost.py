"""``import grasp_kernels`` loads no torch.compile machinery (torch._dynamo costs seconds); the ops stay
marked constant-result for torch.compile all the same."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from grasp_kernels.ops._dispatch import assume_constant_result, resolve

ROOT = Path(__file__).resolve().parent.parent


def test_import_loads_no_dynamo():
    code = "import grasp_kernels, sys; print('torch._dynamo' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_the_lazy_mark_is_what_torch_sets():
    """The lazy decorator sets the attribute torch's decorator sets; if torch changes how it marks a
    function, this fails (and the import-time shortcut must follow)."""

    def marked_by_torch() -> int:
        return 0

    torch.compiler.assume_constant_result(marked_by_torch)
    assert getattr(marked_by_torch, "_dynamo_marked_constant", False) is True
    assert getattr(resolve, "_dynamo_marked_constant", False) is True

    def marked_lazily() -> int:
        return 0

    assert assume_constant_result(marked_lazily) is marked_lazily
    assert marked_lazily._dynamo_marked_constant is True
