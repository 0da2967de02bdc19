"""The CUDA kernels (grasp_kernels.ops.cuda_kernels) against the reference, on a GPU.

Every test is marked ``gpu`` and skips cleanly without CUDA; nothing touches CUDA at import time.
Inputs are fresh random tensors (never zeros), outputs are poisoned with NaN before each call, and
errors are ``||out - ref|| / ||ref||`` against the float64 reference (< 1e-5; DESIGN.md section 4).
``GRASP_CUDA_TESTS_QUICK=1`` trims the shape grid (used for the compute-sanitizer runs).
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import zlib

import pytest
import torch

from grasp_kernels.reference import action_step_ref, lifted_energy_ref, state_step_ref

pytestmark = pytest.mark.gpu

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
ADAM = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)


@pytest.fixture(scope="module")
def ck():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from grasp_kernels.ops import cuda_kernels

    if not cuda_kernels.available():
        if shutil.which("nvcc") and os.environ.get("GRASP_KERNELS_BUILD_CUDA", "") != "0":
            pytest.fail("nvcc is present but grasp_kernels._cuda is not built (pip install -e . failed?)")
        pytest.skip("grasp_kernels._cuda is not built")
    return cuda_kernels


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


def test_loop_shapes_loop(ck):
    """LOOP_SHAPES really make every persistent grid loop on this device (grid <= 8 blocks per SM)."""
    sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    for B, _, _ in LOOP_SHAPES:
        if B <= 8 * sms:
            pytest.skip(f"{sms} SMs: B={B} plans fit in one pass of the grid")


# ------------------------------------------------------------------------------- lifted_energy_fwd


@pytest.mark.parametrize("pred_dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("B,T,D", SHAPES)
def test_lifted_energy_fwd(ck, B, T, D, pred_dtype):
    pred, states = energy_inputs(B, T, D, pred_dtype, 0)
    gamma = 0.37
    energy, grad_pred, grad_states = poison((B,)), poison((B, T, D)), poison((B, T + 1, D))
    ck.lifted_energy_fwd(pred, states, gamma, energy, grad_pred, grad_states)
    e_ref, gp_ref, gs_ref = energy_ref(pred, states, gamma)
    assert rel(energy, e_ref) < TOL
    assert rel(grad_pred, gp_ref) < TOL
    assert rel(grad_states, gs_ref) < TOL
    assert (grad_states[:, 0] == 0).all() and (grad_states[:, T] == 0).all()
    energy2 = poison((B,))
    ck.lifted_energy_fwd(pred, states, gamma, energy2, grad_pred, grad_states)
    assert torch.equal(energy, energy2), "energy is not deterministic"


@pytest.mark.parametrize("pred_dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("B,T,D", [(2, 64, 20000), (3, 9, 100003), (1, 2, 4 * 8192 + 4)])
def test_lifted_energy_multi_chunk(ck, B, T, D, pred_dtype):
    """Plans large enough to be split across blocks (workspace + fixed-order finalize)."""
    from grasp_kernels import _cuda

    assert _cuda.energy_workspace_numel(torch.cuda.current_device(), B, T, D) > 0
    pred, states = energy_inputs(B, T, D, pred_dtype, 1)
    energy, grad_pred, grad_states = poison((B,)), poison((B, T, D)), poison((B, T + 1, D))
    ck.lifted_energy_fwd(pred, states, 1.0, energy, grad_pred, grad_states)
    e_ref, gp_ref, gs_ref = energy_ref(pred, states, 1.0)
    assert rel(energy, e_ref) < TOL
    assert rel(grad_pred, gp_ref) < TOL
    assert rel(grad_states, gs_ref) < TOL
    for _ in range(3):
        again = poison((B,))
        ck.lifted_energy_fwd(pred, states, 1.0, again, grad_pred, grad_states)
        assert torch.equal(energy, again), "energy is not deterministic"


# ------------------------------------------------------------------------------- state_step


@pytest.mark.parametrize("B,T,D", SHAPES)
def test_state_step_noise_tensor(ck, B, T, D):
    states, grad, m, v = adam_inputs(B, T, D, 0)
    poison_fixed_rows(grad, m, v)
    noise = randn((B, T - 1, D), gen("noise", B, T, D))
    refs = [x.double() for x in (states, grad, m, v)]
    step, noise_std = 3, 0.05
    state_step_ref(*refs, step, **ADAM, noise_std=noise_std, noise=noise.double())
    before = states.clone()
    ck.state_step(states, grad, m, v, step, ADAM["lr"], ADAM["beta1"], ADAM["beta2"], ADAM["eps"], noise_std, noise, 0)
    inner = slice(1, T)
    assert rel(states[:, inner], refs[0][:, inner]) < TOL if T > 1 else True
    assert rel(m[:, inner], refs[2][:, inner]) < TOL if T > 1 else True
    assert rel(v[:, inner], refs[3][:, inner]) < TOL if T > 1 else True
    assert torch.equal(states[:, 0], before[:, 0]) and torch.equal(states[:, T], before[:, T])
    assert m[:, 0].isnan().all() and m[:, T].isnan().all() and v[:, 0].isnan().all() and v[:, T].isnan().all()


@pytest.mark.parametrize("B,T,D", [s for s in SHAPES if s[1] > 1])
def test_state_step_noise_is_used_exactly(ck, B, T, D):
    """lr = 0, states 0, noise_std = 1: the virtual rows become the given noise bit for bit."""
    states = torch.zeros(B, T + 1, D, device="cuda")
    _, grad, m, v = adam_inputs(B, T, D, 1)
    noise = randn((B, T - 1, D), gen("exact", B, T, D))
    ck.state_step(states, grad, m, v, 1, 0.0, 0.9, 0.999, 1e-8, 1.0, noise, 0)
    assert torch.equal(states[:, 1:T], noise)


def seeded_noise(ck, B, T, D, seed, fused=False):
    """The noise the kernels draw for ``seed`` (lr = 0, states 0, noise_std = 1)."""
    states = torch.zeros(B, T + 1, D, device="cuda")
    _, grad, m, v = adam_inputs(B, T, D, 2)
    if fused:
        pred = randn((B, T, D), gen("fused-pred", B, T, D))
        ck.lifted_energy_state_step(pred, states, 1.0, poison((B,)), poison((B, T, D)), m, v,
                                    1, 0.0, 0.9, 0.999, 1e-8, 1.0, None, seed)
    else:
        ck.state_step(states, grad, m, v, 1, 0.0, 0.9, 0.999, 1e-8, 1.0, None, seed)
    return states[:, 1:T].clone()


@pytest.mark.parametrize("B,T,D", [(1, 2, 1), (5, 7, 3), (5, 7, 4), (2, 64, 1000), (3, 5, 129), (4096, 2, 3),
                                   (2048, 3, 8)])
def test_seeded_noise_reproducible(ck, B, T, D):
    a = seeded_noise(ck, B, T, D, seed=1234)
    b = seeded_noise(ck, B, T, D, seed=1234)
    c = seeded_noise(ck, B, T, D, seed=1235)
    assert torch.equal(a, b), "same seed, different bits"
    assert not torch.equal(a, c), "different seeds, same noise"
    # the documented stream: element n of [B, T-1, D] is normal n of philox_normal(seed)
    assert torch.equal(a, ck.philox_normal((B, T - 1, D), 1234, "cuda"))
    # the fused op draws the same noise as state_step
    assert torch.equal(a, seeded_noise(ck, B, T, D, seed=1234, fused=True))


def test_seeded_noise_statistics(ck):
    x = seeded_noise(ck, 4, 65, 4096, seed=7).flatten().double()  # 1,048,576 normals
    n = x.numel()
    assert abs(x.mean().item()) < 5 / math.sqrt(n)
    assert abs(x.std().item() - 1.0) < 0.005
    assert abs(((x - x.mean()) ** 4).mean().item() / x.var().item() ** 2 - 3.0) < 0.05  # kurtosis
    assert abs((x.abs() > 3).double().mean().item() - 0.0026998) < 0.0006
    for lag in (1, 2, 3, 4, 4096):  # lanes of one Philox block, neighbouring blocks, neighbouring rows
        r = torch.corrcoef(torch.stack([x[:-lag], x[lag:]]))[0, 1].item()
        assert abs(r) < 5 / math.sqrt(n), (lag, r)
    y = seeded_noise(ck, 4, 65, 4096, seed=8).flatten().double()
    assert abs(torch.corrcoef(torch.stack([x, y]))[0, 1].item()) < 5 / math.sqrt(n)


def philox4x32_10(ctr, key):
    """Philox4x32-10 on Python ints (Random123's round function and key schedule)."""
    mask = 0xFFFFFFFF
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for r in range(10):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & mask, (k1 + 0xBB67AE85) & mask
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & mask, (p0 >> 32) ^ c3 ^ k1, p0 & mask
    return c0, c1, c2, c3


def test_builtin_philox_counter_layout(ck):
    """The in-tree generator's documented layout, on the device: normal n is lane n % 4 of Box-Muller
    over Philox4x32-10(counter = (0, 0, lo(n/4), hi(n/4)), key = (lo(seed), hi(seed))), i.e. curand's
    curand_init(seed, n/4, 0) + curand_normal4. (The block itself is checked bit for bit against the
    Random123 known-answer vectors by tests/test_cuda_build.py, on the CPU.)"""
    import numpy as np

    assert philox4x32_10((0, 0, 0, 0), (0, 0)) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)
    seed, n = 0x0123456789ABCDEF, 4096
    got = ck.philox_normal((n,), seed, "cuda", impl=1).cpu().double()
    words = np.array([philox4x32_10((0, 0, g & 0xFFFFFFFF, g >> 32), (seed & 0xFFFFFFFF, seed >> 32))
                      for g in range(n // 4)], dtype=np.uint64)
    x, y = words[:, 0::2], words[:, 1::2]  # Box-Muller inputs of lanes (0, 1) and (2, 3)
    # the uniforms as the device rounds them: uint32 -> float32, then u = x 2^-32 + 2^-33 in float32
    # (exact scaling, so FMA or not gives the same u; this matters for u near 1, where s ~ sqrt(1 - u))
    u = (x.astype(np.float32).astype(np.float64) * 2.0**-32 + 2.0**-33).astype(np.float32).astype(np.float64)
    k = float(np.float32(np.float32(2.3283064e-10) * np.float32(6.2831855)))
    v = y.astype(np.float32).astype(np.float64) * k + k / 2
    s = np.sqrt(-2.0 * np.log(u))
    expected = np.stack([np.sin(v) * s, np.cos(v) * s], axis=-1).reshape(n)  # lanes x0 y0 x1 y1
    torch.testing.assert_close(got, torch.from_numpy(expected), rtol=1e-4, atol=1e-4)


def test_rng_backends_agree(ck):
    from grasp_kernels import _cuda

    builtin = ck.philox_normal((1 << 16,), 99, "cuda", impl=1)
    default = ck.philox_normal((1 << 16,), 99, "cuda", impl=0)
    assert torch.isfinite(builtin).all()
    if _cuda.rng_backend() != "curand":
        assert torch.equal(builtin, default)
        pytest.skip("built without curand_kernel.h: nothing to compare the in-tree Philox with")
    curand = ck.philox_normal((1 << 16,), 99, "cuda", impl=2)
    assert torch.equal(curand, default)
    # same Philox counters and Box-Muller map: equal up to the last bits of logf/__sincosf
    torch.testing.assert_close(builtin, curand, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------- action_step


def bounds(A, g):
    low = -0.5 - torch.rand(A, device="cuda", generator=g)
    high = 0.5 + torch.rand(A, device="cuda", generator=g)
    low[::3] = float("-inf")
    high[1::4] = float("inf")
    return low, high


@pytest.mark.parametrize("B,T,A", SHAPES)
def test_action_step(ck, B, T, A):
    g = gen("action", B, T, A)
    actions, grad = randn((B, T, A), g), randn((B, T, A), g)
    m, v = randn((B, T, A), g, scale=0.1), randn((B, T, A), g, scale=0.1).square()
    low, high = bounds(A, g)
    refs = [x.double() for x in (actions, grad, m, v)]
    action_step_ref(*refs, 5, **ADAM, low=low.double(), high=high.double())
    ck.action_step(actions, grad, m, v, 5, ADAM["lr"], ADAM["beta1"], ADAM["beta2"], ADAM["eps"], low, high)
    assert rel(actions, refs[0]) < TOL
    assert rel(m, refs[2]) < TOL
    assert rel(v, refs[3]) < TOL
    assert (actions >= low).all() and (actions <= high).all()


@pytest.mark.parametrize("B,T,A", [(1024, 1024, 4), (1366, 1024, 3)], ids=["A4-vector", "A3-scalar"])
def test_action_step_grid_stride(ck, B, T, A):
    """N*A >= 4M elements: several grid-stride passes of the full grid, with the action index ``a``
    advanced incrementally across passes (stride % A != 0 for odd A)."""
    assert B * T * A >= 4 * 2**20
    g = gen("action-loop", B, T, A)
    actions, grad = randn((B, T, A), g), randn((B, T, A), g)
    m, v = randn((B, T, A), g, scale=0.1), randn((B, T, A), g, scale=0.1).square()
    low, high = bounds(A, g)
    refs = [x.double() for x in (actions, grad, m, v)]
    action_step_ref(*refs, 4, **ADAM, low=low.double(), high=high.double())
    ck.action_step(actions, grad, m, v, 4, ADAM["lr"], ADAM["beta1"], ADAM["beta2"], ADAM["eps"], low, high)
    assert rel(actions, refs[0]) < TOL
    assert rel(m, refs[2]) < TOL
    assert rel(v, refs[3]) < TOL
    assert (actions >= low).all() and (actions <= high).all()
    # elementwise, so the worst element too (a wrong `a` would clamp against the wrong bounds)
    assert (actions.double() - refs[0]).abs().max().item() < 1e-5


# ------------------------------------------------------------------------------- fused


@pytest.mark.parametrize("pred_dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("B,T,D", SHAPES)
def test_lifted_energy_state_step(ck, B, T, D, pred_dtype):
    pred, states = energy_inputs(B, T, D, pred_dtype, 2)
    _, _, m, v = adam_inputs(B, T, D, 3)
    poison_fixed_rows(m, v)
    noise = randn((B, T - 1, D), gen("fused-noise", B, T, D))
    gamma, step, noise_std = 0.5, 2, 0.01
    e_ref, gp_ref, gs_ref = energy_ref(pred, states, gamma)
    refs = [x.double() for x in (states, m, v)]
    state_step_ref(refs[0], gs_ref, refs[1], refs[2], step, **ADAM, noise_std=noise_std, noise=noise.double())
    before = states.clone()
    energy, grad_pred = poison((B,)), poison((B, T, D))
    ck.lifted_energy_state_step(pred, states, gamma, energy, grad_pred, m, v, step, ADAM["lr"], ADAM["beta1"],
                                ADAM["beta2"], ADAM["eps"], noise_std, noise, 0)
    assert rel(energy, e_ref) < TOL
    assert rel(grad_pred, gp_ref) < TOL
    if T > 1:
        assert rel(states[:, 1:T], refs[0][:, 1:T]) < TOL
        assert rel(m[:, 1:T], refs[1][:, 1:T]) < TOL
        assert rel(v[:, 1:T], refs[2][:, 1:T]) < TOL
    assert torch.equal(states[:, 0], before[:, 0]) and torch.equal(states[:, T], before[:, T])
    assert m[:, 0].isnan().all() and v[:, T].isnan().all()


@pytest.mark.parametrize("B,T,D", [(5, 7, 3), (2, 64, 1000), (2, 33, 20000), (4096, 2, 3), (2048, 3, 8)])
def test_fused_matches_unfused_with_seed(ck, B, T, D):
    pred, states = energy_inputs(B, T, D, torch.float32, 3)
    _, _, m, v = adam_inputs(B, T, D, 4)
    s1, m1, v1 = states.clone(), m.clone(), v.clone()
    e1, gp1, gs1 = poison((B,)), poison((B, T, D)), poison((B, T + 1, D))
    ck.lifted_energy_fwd(pred, s1, 1.0, e1, gp1, gs1)
    ck.state_step(s1, gs1, m1, v1, 4, 0.1, 0.9, 0.999, 1e-8, 0.02, None, 42)
    e2, gp2 = poison((B,)), poison((B, T, D))
    ck.lifted_energy_state_step(pred, states, 1.0, e2, gp2, m, v, 4, 0.1, 0.9, 0.999, 1e-8, 0.02, None, 42)
    assert torch.equal(e1, e2)
    assert torch.equal(gp1, gp2)
    for a, b in ((s1, states), (m1, m), (v1, v)):
        assert rel(b, a) < 1e-6


# ------------------------------------------------------------------------------- scalar fallback


def offset_tensor(values: torch.Tensor, offset: int = 1) -> torch.Tensor:
    """A contiguous copy of ``values`` whose data pointer is ``offset`` elements past an aligned one."""
    buf = torch.empty(values.numel() + offset, device=values.device, dtype=values.dtype)
    out = buf[offset:].view(values.shape)
    out.copy_(values)
    assert out.is_contiguous() and out.data_ptr() % 16 != 0
    return out


@pytest.mark.parametrize("pred_dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("B,T,D", [(2, 5, 4), (3, 7, 8), (1, 64, 1000), (2048, 3, 8)])
def test_unaligned_pointers_use_scalar_path(ck, B, T, D, pred_dtype):
    """D % 4 == 0 (vector-eligible) but misaligned pointers: the scalar fallback must give the same answers."""
    pred, states = energy_inputs(B, T, D, pred_dtype, 4)
    pred_u, states_u = offset_tensor(pred), offset_tensor(states)
    energy, grad_pred, grad_states = poison((B,)), offset_tensor(poison((B, T, D))), offset_tensor(poison((B, T + 1, D)))
    ck.lifted_energy_fwd(pred_u, states_u, 0.3, energy, grad_pred, grad_states)
    e_ref, gp_ref, gs_ref = energy_ref(pred, states, 0.3)
    assert rel(energy, e_ref) < TOL and rel(grad_pred, gp_ref) < TOL and rel(grad_states, gs_ref) < TOL

    s, g, m, v = (offset_tensor(x) for x in adam_inputs(B, T, D, 5))
    noise = offset_tensor(randn((B, T - 1, D), gen("u-noise", B, T, D)))
    refs = [x.double() for x in (s, g, m, v)]
    state_step_ref(*refs, 2, **ADAM, noise_std=0.1, noise=noise.double())
    ck.state_step(s, g, m, v, 2, ADAM["lr"], ADAM["beta1"], ADAM["beta2"], ADAM["eps"], 0.1, noise, 0)
    assert rel(s, refs[0]) < TOL and rel(m, refs[2]) < TOL and rel(v, refs[3]) < TOL

    # seeded noise is independent of the access path
    aligned = seeded_noise(ck, B, T, D, seed=5)
    zeros = offset_tensor(torch.zeros(B, T + 1, D, device="cuda"))
    _, g2, m2, v2 = (offset_tensor(x) for x in adam_inputs(B, T, D, 2))
    ck.state_step(zeros, g2, m2, v2, 1, 0.0, 0.9, 0.999, 1e-8, 1.0, None, 5)
    assert torch.equal(zeros[:, 1:T], aligned)

    a, ga = offset_tensor(randn((B, T, D), gen("ua", B, T, D))), offset_tensor(randn((B, T, D), gen("ug", B, T, D)))
    ma, va = offset_tensor(torch.zeros(B, T, D, device="cuda")), offset_tensor(torch.zeros(B, T, D, device="cuda"))
    low, high = bounds(D, gen("ub", D))
    low, high = offset_tensor(low), offset_tensor(high)
    refs = [x.double() for x in (a, ga, ma, va)]
    action_step_ref(*refs, 1, **ADAM, low=low.double(), high=high.double())
    ck.action_step(a, ga, ma, va, 1, ADAM["lr"], ADAM["beta1"], ADAM["beta2"], ADAM["eps"], low, high)
    assert rel(a, refs[0]) < TOL and rel(ma, refs[2]) < TOL and rel(va, refs[3]) < TOL

    _, _, m3, v3 = (offset_tensor(x) for x in adam_inputs(B, T, D, 6))
    states3 = offset_tensor(states)
    refs = [x.double() for x in (states3, m3, v3)]
    state_step_ref(refs[0], gs_ref, refs[1], refs[2], 1, **ADAM, noise_std=0.0)
    e3, gp3 = poison((B,)), offset_tensor(poison((B, T, D)))
    ck.lifted_energy_state_step(pred_u, states3, 0.3, e3, gp3, m3, v3, 1, ADAM["lr"], ADAM["beta1"], ADAM["beta2"],
                                ADAM["eps"], 0.0, None, 0)
    assert rel(e3, e_ref) < TOL and rel(gp3, gp_ref) < TOL
    assert rel(states3, refs[0]) < TOL and rel(m3, refs[1]) < TOL and rel(v3, refs[2]) < TOL


# ------------------------------------------------------------------------------- streams, checks


def test_runs_on_the_current_stream(ck):
    """The launch is ordered on the current (side) stream: it must see the copy queued there after a
    ~0.1 s sleep. A launch on any other stream would read the old states (or the NaN-poisoned outputs
    would not be written yet) and fail deterministically."""
    B, T, D = 3, 16, 256
    pred, states = energy_inputs(B, T, D, torch.float32, 5)
    _, new = energy_inputs(B, T, D, torch.float32, 55)
    assert not torch.equal(states, new)
    after = torch.zeros_like(new)  # the state step's parameter, filled from `new` on the side stream
    m, v = torch.zeros_like(new), torch.zeros_like(new)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        energy, grad_pred, grad_states = poison((B,)), poison((B, T, D)), poison((B, T + 1, D))
        torch.cuda._sleep(10**8)  # ~0.1 s of GPU spinning on the side stream only
        states.copy_(new)
        ck.lifted_energy_fwd(pred, states, 1.0, energy, grad_pred, grad_states)
        torch.cuda._sleep(10**8)
        after.copy_(new)
        ck.state_step(after, grad_states, m, v, 1, 0.1, 0.9, 0.999, 1e-8, 0.0, None, 0)
    torch.cuda.current_stream().wait_stream(side)
    side.synchronize()
    e_ref, gp_ref, gs_ref = energy_ref(pred, new, 1.0)
    assert rel(energy, e_ref) < TOL
    assert rel(grad_pred, gp_ref) < TOL
    assert rel(grad_states, gs_ref) < TOL
    refs = [x.double() for x in (new, grad_states, torch.zeros_like(new), torch.zeros_like(new))]
    state_step_ref(*refs, 1, 0.1, 0.9, 0.999, 1e-8, noise_std=0.0)
    assert rel(after, refs[0]) < TOL


def test_restores_the_current_device(ck):
    """A launch on another device's tensors leaves torch's current device where it was (the module's
    static runtime shares the per-thread driver context with torch)."""
    if torch.cuda.device_count() < 2:
        before = torch.cuda.current_device()
        pred, states = energy_inputs(2, 3, 4, torch.float32, 15)
        ck.lifted_energy_fwd(pred, states, 1.0, poison((2,)), poison((2, 3, 4)), poison((2, 4, 4)))
        assert torch.cuda.current_device() == before
        pytest.skip("one CUDA device: only the same-device path is checked")
    torch.cuda.set_device(0)
    try:
        with torch.cuda.device(1):
            pred, states = energy_inputs(2, 3, 4, torch.float32, 16)
            e = poison((2,))
            gp, gs = poison((2, 3, 4)), poison((2, 4, 4))
        ck.lifted_energy_fwd(pred, states, 1.0, e, gp, gs)
        assert torch.cuda.current_device() == 0
        x = torch.ones(4, device="cuda")  # allocates on the current device
        assert x.device == torch.device("cuda", 0)
        torch.cuda.synchronize(1)
        assert rel(e, energy_ref(pred, states, 1.0)[0]) < TOL
        a = torch.randn(2, 3, 4, device="cuda:1")
        ck.action_step(a, torch.randn_like(a), torch.zeros_like(a), torch.zeros_like(a), 1, 0.1, 0.9, 0.999, 1e-8,
                       torch.full((4,), -1.0, device="cuda:1"), torch.full((4,), 1.0, device="cuda:1"))
        assert torch.cuda.current_device() == 0
    finally:
        torch.cuda.set_device(0)


def test_launcher_checks(ck):
    B, T, D = 2, 3, 4
    pred, states = energy_inputs(B, T, D, torch.float32, 6)
    out = (poison((B,)), poison((B, T, D)), poison((B, T + 1, D)))
    with pytest.raises(TypeError):
        ck.lifted_energy_fwd(pred.double(), states, 1.0, *out)
    with pytest.raises(ValueError, match="contiguous"):
        ck.lifted_energy_fwd(pred.transpose(1, 2).contiguous().transpose(1, 2), states, 1.0, *out)
    with pytest.raises(ValueError, match="shape"):
        ck.lifted_energy_fwd(pred[:, :2], states, 1.0, *out)
    with pytest.raises(ValueError):
        ck.lifted_energy_fwd(pred.cpu(), states, 1.0, *out)
    s, g, m, v = adam_inputs(B, T, D, 7)
    with pytest.raises(ValueError, match="seed"):
        ck.state_step(s, g, m, v, 1, 0.1, 0.9, 0.999, 1e-8, 0.1, None, None)
    with pytest.raises(ValueError, match="step"):
        ck.state_step(s, g, m, v, 0, 0.1, 0.9, 0.999, 1e-8, 0.0, None, 0)
    for gamma in (float("nan"), float("inf"), -0.5):
        with pytest.raises(ValueError, match="gamma"):
            ck.lifted_energy_fwd(pred, states, gamma, *out)
        with pytest.raises(ValueError, match="gamma"):
            ck.lifted_energy_state_step(pred, s, gamma, out[0], out[1], m, v, 1, 0.1, 0.9, 0.999, 1e-8, 0.0, None, 0)


# ------------------------------------------------------------------------------- CUDA vs Triton


def triton_provider():
    try:
        from grasp_kernels.ops import triton_kernels
    except Exception as exc:  # triton missing or broken
        pytest.skip(f"Triton kernels unavailable: {exc}")
    return triton_kernels


@pytest.mark.parametrize("B,T,D", [(1, 1, 1), (5, 7, 3), (5, 64, 1000), (2, 33, 20000)])
def test_cuda_matches_triton(ck, B, T, D):
    tk = triton_provider()
    for dtype in (torch.float32, torch.bfloat16):
        pred, states = energy_inputs(B, T, D, dtype, 8)
        outs = []
        for prov in (ck, tk):
            o = (poison((B,)), poison((B, T, D)), poison((B, T + 1, D)))
            prov.lifted_energy_fwd(pred, states, 0.7, *o)
            outs.append(o)
        for a, b in zip(*outs):
            assert rel(a, b) < TOL

    noise = randn((B, T - 1, D), gen("tri-noise", B, T, D))
    results = []
    for prov in (ck, tk):
        s, g, m, v = adam_inputs(B, T, D, 9)
        prov.state_step(s, g, m, v, 3, 0.1, 0.9, 0.999, 1e-8, 0.05, noise, 0)
        results.append((s, m, v))
    for a, b in zip(*results):
        assert rel(a, b) < TOL

    results = []
    for prov in (ck, tk):
        g = gen("tri-act", B, T, D)
        a, ga = randn((B, T, D), g), randn((B, T, D), g)
        ma, va = randn((B, T, D), g, scale=0.1), randn((B, T, D), g, scale=0.1).square()
        low, high = bounds(D, g)
        prov.action_step(a, ga, ma, va, 2, 0.1, 0.9, 0.999, 1e-8, low, high)
        results.append((a, ma, va))
    for a, b in zip(*results):
        assert rel(a, b) < TOL

    results = []
    pred, states0 = energy_inputs(B, T, D, torch.float32, 10)
    for prov in (ck, tk):
        states = states0.clone()
        _, _, m, v = adam_inputs(B, T, D, 11)
        e, gp = poison((B,)), poison((B, T, D))
        prov.lifted_energy_state_step(pred, states, 0.7, e, gp, m, v, 2, 0.1, 0.9, 0.999, 1e-8, 0.05, noise, 0)
        results.append((e, gp, states, m, v))
    for a, b in zip(*results):
        assert rel(a, b) < TOL


# ------------------------------------------------------------------------------- through the custom ops


@pytest.mark.parametrize("B,T,D", [(1, 1, 1), (5, 7, 129), (2, 64, 1000)])
def test_custom_op_autograd_cuda_backend(ck, B, T, D):
    """energy.sum().backward() through torch.ops.grasp.lifted_energy with backend="cuda"."""
    custom_ops = pytest.importorskip("grasp_kernels.ops.custom_ops")
    pred, states = energy_inputs(B, T, D, torch.float32, 12)
    p = pred.clone().requires_grad_(True)
    s = states.clone().requires_grad_(True)
    energy = custom_ops.lifted_energy(p, s, 0.25, "cuda")[0]
    (energy * torch.arange(1, B + 1, device="cuda")).sum().backward()  # non-trivial incoming gradient
    p64 = pred.double().requires_grad_(True)
    s64 = states.double().requires_grad_(True)
    e64 = lifted_energy_ref(p64, s64, 0.25)
    (e64 * torch.arange(1, B + 1, device="cuda")).sum().backward()
    assert rel(energy.detach(), e64.detach()) < TOL
    assert rel(p.grad, p64.grad) < TOL
    assert rel(s.grad, s64.grad) < TOL


def test_custom_op_opcheck_cuda_backend(ck):
    custom_ops = pytest.importorskip("grasp_kernels.ops.custom_ops")
    del custom_ops  # registers torch.ops.grasp.*
    pred, states = energy_inputs(3, 5, 8, torch.float32, 13)
    torch.library.opcheck(torch.ops.grasp.lifted_energy.default, (pred, states, 0.5, "cuda"))
    s, g, m, v = adam_inputs(3, 5, 8, 14)
    torch.library.opcheck(torch.ops.grasp.state_step.default,
                          (s, g, m, v, 2, 0.1, 0.9, 0.999, 1e-8, 0.0, None, 0, "cuda"))
