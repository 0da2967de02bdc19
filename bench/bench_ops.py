"""pytest-benchmark suite of the fused GRASP ops: one benchmark per op, shape and provider of the
registry in ``bench/_op_cases.py`` (the cases and bytes behind ``bench/op_speed.py``'s tables).

Run: ``python -m pytest bench/bench_ops.py --benchmark-only`` (add ``--benchmark-json out.json`` to
keep the numbers; ``--benchmark-group-by=param:op,param:shape`` gives provider-vs-provider groups).
On a GPU the shapes go up to B*T*D = 1e8 and each timed call is synchronised; on the CPU the Triton
kernels run in the interpreter on small shapes only (a smoke run, not a measurement). A provider whose
backend is not available here is skipped.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _op_cases import OPS, QUICK_SHAPES, compiler  # noqa: E402  (sets TRITON_INTERPRET=1 without CUDA first)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SHAPES = [(64, 50, 320), (256, 50, 784), (1024, 50, 1952)] if DEVICE.type == "cuda" else QUICK_SHAPES[:1]
COMPILE = compiler("inductor" if DEVICE.type == "cuda" else "eager")
_CASES: dict = {}


def _case(op, shape, provider):
    key = (op, shape)
    if key not in _CASES:
        _CASES.clear()  # keep one shape's tensors alive at a time
        _CASES[key] = OPS[op].cases(shape, DEVICE, torch.float32, COMPILE)
    fn = _CASES[key].get(provider)
    if fn is None:
        pytest.skip(f"provider {provider!r} not available for {op} on {DEVICE}")
    return fn


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("op,provider", [(op, p) for op, entry in OPS.items() for p in entry.providers()])
def test_op_speed(benchmark, op, shape, provider):
    fn = _case(op, shape, provider)
    benchmark.extra_info.update(op=op, shape=shape, provider=provider, device=str(DEVICE),
                                bytes=OPS[op].nbytes(*shape, 4))

    def timed():
        fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    timed()  # warm-up (compiles)
    benchmark.pedantic(timed, rounds=20 if DEVICE.type == "cuda" else 3, warmup_rounds=2 if DEVICE.type == "cuda" else 0)
