"""pytest-benchmark suite of the fused GRASP ops: provider = reference | compile | triton | cuda.

Run: ``python -m pytest bench/bench_ops.py --benchmark-only`` (add ``--benchmark-json out.json`` to
keep the numbers; ``--benchmark-group-by=param:op,param:shape`` gives provider-vs-provider groups).
On a GPU the shapes go up to B*T*D = 1e8 and each timed call is synchronised; on the CPU the Triton
kernels run in the interpreter on small shapes only (a smoke run, not a measurement). The cases
(and the bytes behind the GB/s of the tables) are those of ``bench/op_speed.py``.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import op_speed  # noqa: E402  (sets TRITON_INTERPRET=1 without CUDA, before the kernels are defined)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SHAPES = [(64, 50, 320), (256, 50, 784), (1024, 50, 1952)] if DEVICE.type == "cuda" else op_speed.QUICK_SHAPES[:1]
PROVIDERS = ["reference", "compile", "triton", "triton 1-pass", "triton unfused", "cuda", "cuda 1-pass", "cuda unfused"]
_CASES: dict = {}


def _case(op, shape, provider):
    key = (op, shape)
    if key not in _CASES:
        compile_backend = "inductor" if DEVICE.type == "cuda" else "eager"
        _CASES.clear()  # keep one shape's tensors alive at a time
        _CASES[key] = op_speed.make_cases(
            op, *shape, DEVICE, torch.float32,
            lambda f: torch.compile(f, backend=compile_backend, dynamic=False),
        )
    fn = _CASES[key].get(provider)
    if fn is None:
        pytest.skip(f"provider {provider!r} not available for {op} on {DEVICE}")
    return fn


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("op", op_speed.OPS)
def test_op_speed(benchmark, op, shape, provider):
    fn = _case(op, shape, provider)
    B, T, D = shape
    benchmark.extra_info.update(op=op, shape=shape, provider=provider, device=str(DEVICE),
                                bytes=op_speed.op_bytes(op, B, T, D, 4))

    def timed():
        fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    timed()  # warm-up (compiles)
    benchmark.pedantic(timed, rounds=20 if DEVICE.type == "cuda" else 3, warmup_rounds=2 if DEVICE.type == "cuda" else 0)
