"""Imported first by the speed benchmarks (and by their shared modules), before anything imports Triton
or grasp_kernels.

Puts the repository root on ``sys.path`` so that a script run from a checkout imports that checkout's
package, and without a CUDA device sets ``TRITON_INTERPRET=1``: Triton reads it when a kernel is
defined, so it must be set before the package's kernels are imported. The Triton providers then run in
the interpreter: a smoke test of the code path, never a speed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "bench")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
