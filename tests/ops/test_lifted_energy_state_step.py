"""``lifted_energy_state_step_`` (grasp_kernels/ops/lifted_energy_state_step): the lifted energy and the
state step in one pass. The Triton kernel (CPU interpreter; GPU with ``-m gpu``) and the CUDA kernel
(gpu) against ``lifted_energy_state_step_ref`` and against the unfused ops with the same seed.
"""

from __future__ import annotations

import pytest
import torch

import _cuda_helpers as cu
import grasp_kernels.ops as ops
from _cuda_helpers import ck  # noqa: F401  (fixture)
from _kernels import ADAM, DEVICE, TOL, adam_inputs, gen, randn, rel
from _triton_checks import SHAPES, check_fused, seeded_noise
from grasp_kernels.backends import backend_unavailable_reason
from grasp_kernels.ops import AdamHyper, NoiseCounters
from grasp_kernels.reference import state_step_ref

# CPU Triton tests: skipped by conftest where Triton cannot run on CPU tensors
CPU_TRITON_REASON = backend_unavailable_reason("triton", DEVICE)


# ----------------------------------------------------------------------------------------------
# triton (CPU interpreter)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("B,T,D", [s for s in SHAPES if s[0] == 5 or s[1] in (1, 64)])
def test_fused_matches_reference(B, T, D):
    check_fused(B, T, D)


def test_fused_bf16_and_public_api():
    from grasp_kernels.ops import _triton_common

    check_fused(5, 7, 129, pred_dtype=torch.bfloat16)
    g = gen(4)
    B, T, D = 5, 7, 3
    pred, states = randn(B, T, D, g=g), randn(B, T + 1, D, g=g)
    grad_zero = torch.zeros(B, T + 1, D)
    m, v = adam_inputs((B, T + 1, D), g)[1:]
    # fused == lifted_energy_grads + state_step_ with the same seed
    s1, m1, v1 = states.clone(), m.clone(), v.clone()
    energy, grad_pred = ops.lifted_energy_state_step_(pred, s1, 0.4, m1, v1, 3, ADAM, noise_std=0.05,
                                                      counters=NoiseCounters(77), backend="triton")
    s2, m2, v2 = states.clone(), m.clone(), v.clone()
    e2, gp2, gs2 = ops.lifted_energy_grads(pred, s2, 0.4, backend="triton")
    ops.state_step_(s2, gs2, m2, v2, 3, ADAM, noise_std=0.05, counters=NoiseCounters(77), backend="triton")
    assert grad_zero.abs().sum() == 0
    exact = _triton_common.INTERPRET  # compiled kernels may contract -2r into an FMA differently
    for a, b in ((energy, e2), (grad_pred, gp2), (s1, s2), (m1, m2), (v1, v2)):
        assert torch.equal(a, b) if exact else rel(a, b) < 1e-6
    # reference backend of the public fused op
    s3, m3, v3 = states.clone(), m.clone(), v.clone()
    noise = randn(B, T - 1, D, g=g)
    e3, gp3 = ops.lifted_energy_state_step_(pred, s3, 0.4, m3, v3, 3, ADAM, noise_std=0.05, noise=noise,
                                            backend="reference")
    s4, m4, v4 = states.clone(), m.clone(), v.clone()
    e4, gp4 = ops.lifted_energy_state_step_(pred, s4, 0.4, m4, v4, 3, ADAM, noise_std=0.05, noise=noise,
                                            backend="triton")
    assert rel(e4, e3) < TOL and rel(gp4, gp3) < TOL and rel(s4, s3) < 1e-6


def test_seeded_noise_same_in_fused_and_unfused():
    assert torch.equal(seeded_noise(5, 7, 129, seed=5), seeded_noise(5, 7, 129, seed=5, fused=True))


# ----------------------------------------------------------------------------------------------
# GPU: triton (native) and cuda
# ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,D", [(1, 1, 1), (5, 7, 3), (5, 64, 1000), (64, 50, 129), (3, 200, 4096)])
def test_gpu_native_matches_reference(B, T, D):
    cuda = torch.device("cuda")
    check_fused(B, T, D, device=cuda)
    check_fused(B, T, D, device=cuda, pred_dtype=torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.parametrize("pred_dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("B,T,D", cu.SHAPES)
def test_cuda_lifted_energy_state_step(ck, B, T, D, pred_dtype):
    pred, states = cu.energy_inputs(B, T, D, pred_dtype, 2)
    _, _, m, v = cu.adam_inputs(B, T, D, 3)
    cu.poison_fixed_rows(m, v)
    noise = cu.randn((B, T - 1, D), cu.gen("fused-noise", B, T, D))
    gamma, step, noise_std = 0.5, 2, 0.01
    e_ref, gp_ref, gs_ref = cu.energy_ref(pred, states, gamma)
    refs = [x.double() for x in (states, m, v)]
    state_step_ref(refs[0], gs_ref, refs[1], refs[2], step, cu.ADAM, noise_std=noise_std, noise=noise.double())
    before = states.clone()
    energy, grad_pred = cu.poison((B,)), cu.poison((B, T, D))
    ck.lifted_energy_state_step(pred, states, gamma, energy, grad_pred, m, v, step, cu.ADAM, noise_std, noise,
                                NoiseCounters(0))
    assert cu.rel(energy, e_ref) < cu.TOL
    assert cu.rel(grad_pred, gp_ref) < cu.TOL
    if T > 1:
        assert cu.rel(states[:, 1:T], refs[0][:, 1:T]) < cu.TOL
        assert cu.rel(m[:, 1:T], refs[1][:, 1:T]) < cu.TOL
        assert cu.rel(v[:, 1:T], refs[2][:, 1:T]) < cu.TOL
    assert torch.equal(states[:, 0], before[:, 0]) and torch.equal(states[:, T], before[:, T])
    assert m[:, 0].isnan().all() and v[:, T].isnan().all()


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,D", [(5, 7, 3), (2, 64, 1000), (2, 33, 20000), (4096, 2, 3), (2048, 3, 8)])
def test_cuda_fused_matches_unfused_with_seed(ck, B, T, D):
    pred, states = cu.energy_inputs(B, T, D, torch.float32, 3)
    _, _, m, v = cu.adam_inputs(B, T, D, 4)
    s1, m1, v1 = states.clone(), m.clone(), v.clone()
    e1, gp1, gs1 = cu.poison((B,)), cu.poison((B, T, D)), cu.poison((B, T + 1, D))
    ck.lifted_energy(pred, s1, 1.0, e1, gp1, gs1)
    ck.state_step(s1, gs1, m1, v1, 4, AdamHyper(0.1), 0.02, None, NoiseCounters(42))
    e2, gp2 = cu.poison((B,)), cu.poison((B, T, D))
    ck.lifted_energy_state_step(pred, states, 1.0, e2, gp2, m, v, 4, AdamHyper(0.1), 0.02, None, NoiseCounters(42))
    assert torch.equal(e1, e2)
    assert torch.equal(gp1, gp2)
    for a, b in ((s1, states), (m1, m), (v1, v)):
        assert cu.rel(b, a) < 1e-6


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,D", [(1, 1, 1), (5, 7, 3), (5, 64, 1000), (2, 33, 20000)])
def test_cuda_matches_triton(ck, B, T, D):
    tk = cu.triton_provider()
    noise = cu.randn((B, T - 1, D), cu.gen("tri-noise", B, T, D))
    results = []
    pred, states0 = cu.energy_inputs(B, T, D, torch.float32, 10)
    for prov in (ck, tk):
        states = states0.clone()
        _, _, m, v = cu.adam_inputs(B, T, D, 11)
        e, gp = cu.poison((B,)), cu.poison((B, T, D))
        prov.lifted_energy_state_step(pred, states, 0.7, e, gp, m, v, 2, AdamHyper(0.1), 0.05, noise, NoiseCounters(0))
        results.append((e, gp, states, m, v))
    for a, b in zip(*results):
        assert cu.rel(a, b) < cu.TOL
