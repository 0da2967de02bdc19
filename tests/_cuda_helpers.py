"""Test helpers of the CUDA kernel tests (gpu-marked): the ``ck`` fixture (the CUDA launches of every
op, plus ``philox_normal``), float64 references, seeded inputs, poisoned outputs.

Inputs are fresh random tensors (never zeros), outputs are poisoned with NaN before each call, and
errors are ``||out - ref|| / ||ref||`` against the float64 reference (< 1e-5; docs/design.md, section 4).
``GRASP_CUDA_TESTS_QUICK=1`` trims the shape grid (used for the compute-sanitizer runs).
Nothing touches CUDA at import time.
"""

from __future__ import annotations

import importlib
import itertools
import os
import shutil
import types
import zlib

import pytest
import torch

from grasp_kernels.ops import AdamHyper, NoiseCounters
from grasp_kernels.reference import lifted_energy_ref

QUICK = os.environ.get("GRASP_CUDA_TESTS_QUICK", "0") == "1"
BS = (1, 5)
TS = (1, 2, 7, 64)
DS = (1, 3, 129, 1000)
# Many more (plan, chunk) items than the persistent grids have blocks (at most 8 per SM, 1056 on an
# H100): every block loops, and shared memory / registers are reused across iterations.
LOOP_SHAPES = [(4096, 2, 3), (3000, 1, 4), (2048, 3, 8)]
SHAPES = list(itertools.product(BS, TS, DS)) + LOOP_SHAPES
if QUICK:
    SHAPES = [(1, 1, 1), (5, 2, 3), (1, 7, 129), (5, 64, 1000), (5, 7, 4)] + LOOP_SHAPES
TOL = 1e-5
ADAM = AdamHyper(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
SEED_MASK = (1 << 64) - 1


def find_nvcc():
    """The nvcc that setup.py would use ($CUDACXX, PATH, $CUDA_HOME/bin), or None."""
    candidates = [os.environ.get("CUDACXX"), shutil.which("nvcc")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", "nvcc"))
    return next((c for c in candidates if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)


def build_expected() -> bool:
    return find_nvcc() is not None and os.environ.get("GRASP_KERNELS_BUILD_CUDA", "").strip() != "0"


def cuda_module():
    """The compiled module ``grasp_kernels._cuda``: a failure where nvcc is present (a broken build must
    not hide behind a skip), a skip where it is not."""
    try:
        return importlib.import_module("grasp_kernels._cuda")
    except ImportError as exc:
        if build_expected():
            pytest.fail(
                f"nvcc is present ({find_nvcc()}) but grasp_kernels._cuda does not import ({exc}); "
                "the CUDA build failed or was skipped: run `pip install -e .` and read its output"
            )
        pytest.skip(f"grasp_kernels._cuda not built here ({exc})")


def philox_normal(shape: tuple, seed: int, device, impl: int = 0) -> torch.Tensor:
    """The in-kernel noise the state step draws for ``seed``, as a float32 tensor of ``shape``
    (``impl`` 0: the build's generator, 1: the in-tree Philox, 2: curand, if built with it), from the
    compiled module's ``philox_normal(index, stream, ptr, numel, seed, impl)``."""
    from grasp_kernels.backends import on_device
    from grasp_kernels.ops import _cuda_common

    mod = _cuda_common.module()
    device = torch.device(device)
    out = torch.empty(shape, device=device, dtype=torch.float32)
    if out.numel():
        index, stream = _cuda_common.launch_context(device)
        with on_device(torch.device("cuda", index)):
            mod.philox_normal(index, stream, out.data_ptr(), out.numel(), int(seed) & SEED_MASK, int(impl))
    return out


def cuda_launches() -> types.SimpleNamespace:
    """The CUDA launch of every op (``launcher("cuda")``) and :func:`philox_normal`."""
    from _kernels import launches

    ns = launches("cuda")
    ns.philox_normal = philox_normal
    return ns


@pytest.fixture(scope="module")
def ck():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from grasp_kernels.ops import _cuda_common

    if not _cuda_common.available():
        if shutil.which("nvcc") and os.environ.get("GRASP_KERNELS_BUILD_CUDA", "") != "0":
            pytest.fail("nvcc is present but grasp_kernels._cuda is not built (pip install -e . failed?)")
        pytest.skip("grasp_kernels._cuda is not built")
    return cuda_launches()


def triton_provider():
    try:
        from _kernels import launches

        return launches("triton")
    except Exception as exc:  # triton missing or broken
        pytest.skip(f"Triton kernels unavailable: {exc}")


def gen(*key) -> torch.Generator:
    # zlib.crc32, not hash(): str hashes change with PYTHONHASHSEED, so a failure would not reproduce
    return torch.Generator(device="cuda").manual_seed(zlib.crc32(repr(key).encode()))


def randn(shape, g, dtype=torch.float32, scale=1.0):
    return (torch.randn(shape, device="cuda", generator=g) * scale).to(dtype)


def poison(shape, dtype=torch.float32):
    return torch.full(shape, float("nan"), device="cuda", dtype=dtype)


def rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    assert torch.isfinite(out).all(), "non-finite values in the kernel output"
    den = ref.norm().item()
    num = (out - ref).norm().item()
    return num if den == 0.0 else num / den


def energy_ref(pred, states, gamma):
    """float64 reference energy and reshaped gradients."""
    p = pred.detach().double().requires_grad_(True)
    s = states.detach().double().requires_grad_(True)
    e = lifted_energy_ref(p, s, gamma)
    e.sum().backward()
    return e.detach(), p.grad, s.grad


def energy_inputs(B, T, D, dtype, key):
    g = gen("energy", B, T, D, str(dtype), key)
    states = randn((B, T + 1, D), g)
    pred = (states[:, 1:] + randn((B, T, D), g, scale=0.5)).to(dtype)
    return pred, states


def adam_inputs(B, T, D, key):
    g = gen("adam", B, T, D, key)
    states = randn((B, T + 1, D), g)
    grad = randn((B, T + 1, D), g)
    exp_avg = randn((B, T + 1, D), g, scale=0.1)
    exp_avg_sq = randn((B, T + 1, D), g, scale=0.1).square()
    return states, grad, exp_avg, exp_avg_sq


def poison_fixed_rows(*tensors):
    """NaN into rows 0 and T (the kernels must neither read them as gradients nor write them)."""
    for t in tensors:
        t[:, 0] = float("nan")
        t[:, -1] = float("nan")


def seeded_noise(ck, B, T, D, seed, fused=False):
    """The noise the kernels draw for ``seed`` (lr = 0, states 0, noise_std = 1)."""
    states = torch.zeros(B, T + 1, D, device="cuda")
    _, grad, m, v = adam_inputs(B, T, D, 2)
    if fused:
        pred = randn((B, T, D), gen("fused-pred", B, T, D))
        ck.lifted_energy_state_step(pred, states, 1.0, poison((B,)), poison((B, T, D)), m, v,
                                    1, AdamHyper(0.0), 1.0, None, NoiseCounters(seed))
    else:
        ck.state_step(states, grad, m, v, 1, AdamHyper(0.0), 1.0, None, NoiseCounters(seed))
    return states[:, 1:T].clone()


def bounds(A, g):
    low = -0.5 - torch.rand(A, device="cuda", generator=g)
    high = 0.5 + torch.rand(A, device="cuda", generator=g)
    low[::3] = float("-inf")
    high[1::4] = float("inf")
    return low, high


def offset_tensor(values: torch.Tensor, offset: int = 1) -> torch.Tensor:
    """A contiguous copy of ``values`` whose data pointer is ``offset`` elements past an aligned one."""
    buf = torch.empty(values.numel() + offset, device=values.device, dtype=values.dtype)
    out = buf[offset:].view(values.shape)
    out.copy_(values)
    assert out.is_contiguous() and out.data_ptr() % 16 != 0
    return out
