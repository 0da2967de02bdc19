"""The compiled CUDA module's runtime behaviour, shared by every op's CUDA launch (gpu-marked): persistent
grids that loop, the Philox noise generator (the documented counter layout; curand and the in-tree
generator agree), the scalar fallback for unaligned pointers, launches on the current stream, and the
current device restored after a launch on another. Per-op CUDA results are in tests/ops/test_<op>.py;
build and binding checks (CPU) in tests/test_cuda_build.py.
"""

from __future__ import annotations

import pytest
import torch

from _cuda_helpers import (  # noqa: F401  (ck: fixture)
    ADAM,
    LOOP_SHAPES,
    TOL,
    adam_inputs,
    bounds,
    ck,
    energy_inputs,
    energy_ref,
    gen,
    offset_tensor,
    poison,
    randn,
    rel,
    seeded_noise,
)
from grasp_kernels.ops import AdamHyper, NoiseCounters
from grasp_kernels.reference import action_step_ref, state_step_ref

pytestmark = pytest.mark.gpu

def test_loop_shapes_loop(ck):
    """LOOP_SHAPES really make every persistent grid loop on this device (grid <= 8 blocks per SM)."""
    sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    for B, _, _ in LOOP_SHAPES:
        if B <= 8 * sms:
            pytest.skip(f"{sms} SMs: B={B} plans fit in one pass of the grid")


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


# ------------------------------------------------------------------------------- scalar fallback


@pytest.mark.parametrize("pred_dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("B,T,D", [(2, 5, 4), (3, 7, 8), (1, 64, 1000), (2048, 3, 8)])
def test_unaligned_pointers_use_scalar_path(ck, B, T, D, pred_dtype):
    """D % 4 == 0 (vector-eligible) but misaligned pointers: the scalar fallback must give the same answers."""
    pred, states = energy_inputs(B, T, D, pred_dtype, 4)
    pred_u, states_u = offset_tensor(pred), offset_tensor(states)
    energy, grad_pred, grad_states = poison((B,)), offset_tensor(poison((B, T, D))), offset_tensor(poison((B, T + 1, D)))
    ck.lifted_energy(pred_u, states_u, 0.3, energy, grad_pred, grad_states)
    e_ref, gp_ref, gs_ref = energy_ref(pred, states, 0.3)
    assert rel(energy, e_ref) < TOL and rel(grad_pred, gp_ref) < TOL and rel(grad_states, gs_ref) < TOL

    s, g, m, v = (offset_tensor(x) for x in adam_inputs(B, T, D, 5))
    noise = offset_tensor(randn((B, T - 1, D), gen("u-noise", B, T, D)))
    refs = [x.double() for x in (s, g, m, v)]
    state_step_ref(*refs, 2, ADAM, noise_std=0.1, noise=noise.double())
    ck.state_step(s, g, m, v, 2, ADAM, 0.1, noise, NoiseCounters(0))
    assert rel(s, refs[0]) < TOL and rel(m, refs[2]) < TOL and rel(v, refs[3]) < TOL

    # seeded noise is independent of the access path
    aligned = seeded_noise(ck, B, T, D, seed=5)
    zeros = offset_tensor(torch.zeros(B, T + 1, D, device="cuda"))
    _, g2, m2, v2 = (offset_tensor(x) for x in adam_inputs(B, T, D, 2))
    ck.state_step(zeros, g2, m2, v2, 1, AdamHyper(0.0), 1.0, None, NoiseCounters(5))
    assert torch.equal(zeros[:, 1:T], aligned)

    a, ga = offset_tensor(randn((B, T, D), gen("ua", B, T, D))), offset_tensor(randn((B, T, D), gen("ug", B, T, D)))
    ma, va = offset_tensor(torch.zeros(B, T, D, device="cuda")), offset_tensor(torch.zeros(B, T, D, device="cuda"))
    low, high = bounds(D, gen("ub", D))
    low, high = offset_tensor(low), offset_tensor(high)
    refs = [x.double() for x in (a, ga, ma, va)]
    action_step_ref(*refs, 1, ADAM, low=low.double(), high=high.double())
    ck.action_step(a, ga, ma, va, 1, ADAM, low, high)
    assert rel(a, refs[0]) < TOL and rel(ma, refs[2]) < TOL and rel(va, refs[3]) < TOL

    _, _, m3, v3 = (offset_tensor(x) for x in adam_inputs(B, T, D, 6))
    states3 = offset_tensor(states)
    refs = [x.double() for x in (states3, m3, v3)]
    state_step_ref(refs[0], gs_ref, refs[1], refs[2], 1, ADAM, noise_std=0.0)
    e3, gp3 = poison((B,)), offset_tensor(poison((B, T, D)))
    ck.lifted_energy_state_step(pred_u, states3, 0.3, e3, gp3, m3, v3, 1, ADAM, 0.0, None, NoiseCounters(0))
    assert rel(e3, e_ref) < TOL and rel(gp3, gp_ref) < TOL
    assert rel(states3, refs[0]) < TOL and rel(m3, refs[1]) < TOL and rel(v3, refs[2]) < TOL


# ------------------------------------------------------------------------------- streams, devices


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
        ck.lifted_energy(pred, states, 1.0, energy, grad_pred, grad_states)
        torch.cuda._sleep(10**8)
        after.copy_(new)
        ck.state_step(after, grad_states, m, v, 1, AdamHyper(0.1), 0.0, None, NoiseCounters(0))
    torch.cuda.current_stream().wait_stream(side)
    side.synchronize()
    e_ref, gp_ref, gs_ref = energy_ref(pred, new, 1.0)
    assert rel(energy, e_ref) < TOL
    assert rel(grad_pred, gp_ref) < TOL
    assert rel(grad_states, gs_ref) < TOL
    refs = [x.double() for x in (new, grad_states, torch.zeros_like(new), torch.zeros_like(new))]
    state_step_ref(*refs, 1, AdamHyper(0.1), noise_std=0.0)
    assert rel(after, refs[0]) < TOL


def test_restores_the_current_device(ck):
    """A launch on another device's tensors leaves torch's current device where it was (the module's
    static runtime shares the per-thread driver context with torch)."""
    if torch.cuda.device_count() < 2:
        before = torch.cuda.current_device()
        pred, states = energy_inputs(2, 3, 4, torch.float32, 15)
        ck.lifted_energy(pred, states, 1.0, poison((2,)), poison((2, 3, 4)), poison((2, 4, 4)))
        assert torch.cuda.current_device() == before
        pytest.skip("one CUDA device: only the same-device path is checked")
    torch.cuda.set_device(0)
    try:
        with torch.cuda.device(1):
            pred, states = energy_inputs(2, 3, 4, torch.float32, 16)
            e = poison((2,))
            gp, gs = poison((2, 3, 4)), poison((2, 4, 4))
        ck.lifted_energy(pred, states, 1.0, e, gp, gs)
        assert torch.cuda.current_device() == 0
        x = torch.ones(4, device="cuda")  # allocates on the current device
        assert x.device == torch.device("cuda", 0)
        torch.cuda.synchronize(1)
        assert rel(e, energy_ref(pred, states, 1.0)[0]) < TOL
        a = torch.randn(2, 3, 4, device="cuda:1")
        ck.action_step(a, torch.randn_like(a), torch.zeros_like(a), torch.zeros_like(a), 1, AdamHyper(0.1),
                       torch.full((4,), -1.0, device="cuda:1"), torch.full((4,), 1.0, device="cuda:1"))
        assert torch.cuda.current_device() == 0
    finally:
        torch.cuda.set_device(0)
