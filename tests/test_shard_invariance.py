"""Shard-invariant randomness: a plan's random numbers depend on the seed and its
own index in the global batch, never on how plans are batched or split.

- ``randomness.philox_normal`` is Triton's ``tl.randn`` stream (the kernels' noise specification);
- the state-step kernels draw element ``(b, t, d)`` at counter ``base + b * stride + t*D + d`` (``NoiseCounters``):
  a slice of a batch, or a chunk of rows, launched with its global counters draws exactly its share
  of the whole batch's noise; the reference op with a seed draws the same stream;
- ``GraspPlanner.plan(..., plan_offset=i)`` of one plan equals plan ``i`` of the batch, on the reference
  backend and on the Triton kernels (CPU interpreter here).
"""

from __future__ import annotations

import pytest
import torch

import grasp_kernels.ops as ops
from _kernels import kernel_backends
from grasp_kernels import GraspConfig, GraspPlanner
from grasp_kernels.models import MLPDynamics
from grasp_kernels.ops import AdamHyper, NoiseCounters
from grasp_kernels.randomness import noise_counters, per_plan_normal, philox_normal, plan_generators, plan_seed

KERNELS = kernel_backends()
ADAM = AdamHyper(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8)


def test_plan_seeds_differ_and_repeat():
    seeds = {plan_seed(7, i) for i in range(1000)} | {plan_seed(8, i) for i in range(1000)}
    assert len(seeds) == 2000 and all(0 <= s < 2**63 for s in seeds)
    assert plan_seed(7, 3) == plan_seed(7, 3) and plan_seed(7, 3, stream=1) != plan_seed(7, 3)
    a = per_plan_normal(plan_generators(5, 0, 6, torch.device("cpu")), (4, 3), torch.device("cpu"), torch.float64)
    b = per_plan_normal(plan_generators(5, 2, 3, torch.device("cpu")), (4, 3), torch.device("cpu"), torch.float64)
    assert torch.equal(a[2:5], b)  # a plan's draws depend on its index, not on its batch


def test_philox_normal_is_standard_normal_and_keyed_by_counter():
    z = philox_normal(123, torch.arange(200_000, dtype=torch.int64))
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01
    far = philox_normal(123, torch.arange(2**40, 2**40 + 1000, dtype=torch.int64))
    assert not torch.equal(far, z[:1000])
    assert torch.equal(philox_normal(123, torch.tensor([5, 2**40 + 3])), torch.stack([z[5], far[3]]))
    with pytest.raises(TypeError, match="counters must be int64"):
        philox_normal(1, torch.arange(3, dtype=torch.int32))


@pytest.mark.parametrize("seed,base", [(12345, 0), (2**40 + 7, 3), (7, 2**33 + 5)])
def test_philox_normal_is_tritons_randn(seed, base):
    triton = pytest.importorskip("triton")
    import triton.language as tl

    from grasp_kernels.backends import backend_unavailable_reason

    if backend_unavailable_reason("triton", torch.device("cpu")) is not None:
        pytest.skip("Triton kernels cannot run on CPU tensors here")

    @triton.jit
    def draw(out, seed, base, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        tl.store(out + offs, tl.randn(seed, base + offs.to(tl.int64)), mask=offs < n)

    out = torch.full((500,), float("nan"))
    draw[(1,)](out, seed, base, 500, BLOCK=512)
    expected = philox_normal(seed, base + torch.arange(500, dtype=torch.int64))
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-6)  # log/cos: last bits only


def _state_inputs(B, T, D, seed):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(B, T + 1, D, generator=g)
    grad = torch.randn(B, T + 1, D, generator=g)
    m = torch.randn(B, T + 1, D, generator=g) * 0.1
    v = torch.rand(B, T + 1, D, generator=g) * 0.1
    return states, grad, m, v


@pytest.mark.parametrize("backend", ["reference"] + [p.values[0] for p in KERNELS if p.values[1] == "cpu"])
@pytest.mark.parametrize("B,T,D", [(5, 6, 3), (4, 9, 8)])
def test_state_step_slices_and_chunks_draw_their_share(backend, B, T, D):
    """A slice of plans [b0, b1) launched with counter base b0 * (T-1)*D, and a chunk of rows with the
    stride of the whole horizon, draw exactly their share of the whole batch's noise."""
    states, grad, m, v = _state_inputs(B, T, D, B * T + D)
    full = [x.clone() for x in (states, grad, m, v)]
    ops.state_step_(full[0], full[1], full[2], full[3], 2, ADAM, noise_std=0.5, counters=NoiseCounters(99), backend=backend)
    stride = (T - 1) * D
    b0, b1 = 1, B - 1
    part = [x[b0:b1].clone() for x in (states, grad, m, v)]
    ops.state_step_(part[0], part[1], part[2], part[3], 2, ADAM, noise_std=0.5,
                    counters=NoiseCounters(99, base=b0 * stride), backend=backend)
    assert torch.equal(part[0], full[0][b0:b1])
    # rows r0..r1 of every plan as a chunk [B, r1-r0+1, D] whose virtual rows are global rows r0+1..r1-1
    r0, r1 = 2, T - 1
    chunk = [x[:, r0:r1 + 1].clone() for x in (states, grad, m, v)]
    ops.state_step_(chunk[0], chunk[1], chunk[2], chunk[3], 2, ADAM, noise_std=0.5,
                    counters=NoiseCounters(99, base=r0 * D, stride=stride), backend=backend)
    assert torch.equal(chunk[0][:, 1:-1], full[0][:, r0 + 1:r1])
    # the reference with a seed draws the Triton kernels' stream (to the last bits of log/cos)
    again = [x.clone() for x in (states, grad, m, v)]
    ops.state_step_(again[0], again[1], again[2], again[3], 2, ADAM, noise_std=0.0, backend=backend)
    noise = philox_normal(99, noise_counters(0, B, T - 1, D, stride))
    torch.testing.assert_close(full[0][:, 1:-1], again[0][:, 1:-1] + 0.5 * noise, rtol=0, atol=5e-6)


@pytest.mark.parametrize("backend", [p.values[0] for p in KERNELS if p.values[1] == "cpu"] or ["triton"])
def test_fused_energy_state_step_slices_draw_their_share(backend):
    if not [p for p in KERNELS if p.values[0] == backend]:
        pytest.skip(f"{backend} kernels cannot run here")
    B, T, D = 4, 7, 5
    states, _, m, v = _state_inputs(B, T, D, 3)
    pred = torch.randn(B, T, D, generator=torch.Generator().manual_seed(4))
    full = [x.clone() for x in (states, m, v)]
    ops.lifted_energy_state_step_(pred, full[0], 0.3, full[1], full[2], 2, ADAM, noise_std=0.4,
                                  counters=NoiseCounters(5), backend=backend)
    part = [x[2:].clone() for x in (states, m, v)]
    ops.lifted_energy_state_step_(pred[2:], part[0], 0.3, part[1], part[2], 2, ADAM, noise_std=0.4,
                                  counters=NoiseCounters(5, base=2 * (T - 1) * D), backend=backend)
    assert torch.equal(part[0], full[0][2:])


def _planner(backend, particles=2, dtype=torch.float32):
    torch.manual_seed(0)
    model = MLPDynamics(3, 2, hidden=16, depth=2).to(dtype)
    config = GraspConfig(horizon=6, iters=12, sync_every=6, sync_steps=2, lr_states=0.05, lr_actions=0.1,
                         state_noise=0.2, init_noise=0.1, goal_weight=0.2, particles=particles, seed=11,
                         backend=backend)
    return GraspPlanner(model, 2, config)


@pytest.mark.parametrize("backend", ["reference"] + [p.values[0] for p in KERNELS if p.values[1] == "cpu"])
def test_a_plan_alone_equals_its_row_of_the_batch(backend):
    """Noise on (initial and per iteration), two chains per plan, sync phases: plan i alone with
    plan_offset = i gives plan i of the batch. The random numbers are bitwise the same (the initial
    states are compared exactly); the plans agree to the last bits only, because a world-model call on
    1 row and on 8 rows may block its matmul differently (seen: 1e-16 in float64), and 300 Adam steps
    carry that along. float64 on the reference keeps the tolerance tight."""
    dtype = torch.float64 if backend == "reference" else torch.float32
    planner = _planner(backend, dtype=dtype)
    g = torch.Generator().manual_seed(2)
    s0, goal = torch.randn(4, 3, generator=g, dtype=dtype), torch.randn(4, 3, generator=g, dtype=dtype) * 2
    batch = planner.plan(s0, goal)
    whole = planner.start(s0, goal)
    for i in (0, 3):  # two chains per plan: rows 2i, 2i+1 of the flat chain batch
        assert torch.equal(planner.start(s0[i:i + 1], goal[i:i + 1], plan_offset=i).states, whole.states[2 * i:2 * i + 2])
    tight = dict(rtol=1e-10, atol=1e-12) if backend == "reference" else dict(rtol=1e-4, atol=1e-5)
    for i in (0, 3):
        alone = planner.plan(s0[i:i + 1], goal[i:i + 1], plan_offset=i)
        torch.testing.assert_close(alone.actions[0], batch.actions[i], **tight)
        torch.testing.assert_close(alone.states[0], batch.states[i], **tight)
        torch.testing.assert_close(alone.energy_history[:, 0], batch.energy_history[:, i], **tight)
    pair = planner.plan(s0[1:3], goal[1:3], plan_offset=1)
    torch.testing.assert_close(pair.actions, batch.actions[1:3], **tight)
    shifted = planner.plan(s0[1:2], goal[1:2], plan_offset=0)  # another index: other random numbers
    assert not torch.allclose(shifted.actions[0], batch.actions[1])


def test_plan_offset_is_checked():
    planner = _planner("reference", particles=1)
    with pytest.raises(ValueError, match="plan_offset must be >= 0"):
        planner.plan(torch.zeros(1, 3), torch.ones(1, 3), plan_offset=-1)
    with pytest.raises(TypeError, match="plan_offset must be an int"):
        planner.plan(torch.zeros(1, 3), torch.ones(1, 3), plan_offset=1.5)


def test_noise_counters_are_checked():
    """Counters that would overlap between plans (correlated noise) or pass 2**63 are errors, and bad
    states are reported as states before any counter arithmetic."""
    states, grad, m, v = _state_inputs(3, 5, 2, 0)
    step = dict(noise_std=0.1, backend="reference")
    with pytest.raises(ValueError, match="NoiseCounters.stride must be >= 8"):
        ops.state_step_(states, grad, m, v, 1, ADAM, counters=NoiseCounters(1, stride=4), **step)
    with pytest.raises(ValueError, match="NoiseCounters.stride must be >= 8"):
        ops.lifted_energy_state_step_(torch.zeros(3, 5, 2), states, 0.1, m, v, 1, ADAM,
                                      counters=NoiseCounters(1, stride=0), **step)
    with pytest.raises(ValueError, match="below 2\\*\\*63"):
        ops.state_step_(states, grad, m, v, 1, ADAM, counters=NoiseCounters(1, base=2**63 - 10), **step)
    with pytest.raises(ValueError, match="NoiseCounters.base must be >= 0"):
        NoiseCounters(1, base=-1)
    with pytest.raises(TypeError, match="NoiseCounters.stride must be an int"):
        NoiseCounters(1, stride=2.0)
    with pytest.raises(ValueError, match="states must be 3-D"):
        ops.state_step_(states[0], grad[0], m[0], v[0], 1, ADAM, counters=NoiseCounters(1), **step)
    one = [x[:1].clone() for x in (states, grad, m, v)]
    ops.state_step_(*one, 1, ADAM, counters=NoiseCounters(1, stride=0), **step)  # one plan: any stride (its own rows)
