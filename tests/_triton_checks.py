"""The Triton checks of each op against its reference (CPU: TRITON_INTERPRET=1 set by conftest; GPU:
the same checks with ``device=cuda``), shared by the op modules tests/ops/test_<op>.py and the tiling
tests of tests/ops/test_triton_tiling.py.

Fresh random inputs (never zeros), outputs poisoned with NaN before every launch, odd shapes
(docs/design.md, section 4), relative error ``||out - ref|| / ||ref|| < 1e-5`` in float32, gradients too.
"""

from __future__ import annotations

import itertools

import torch

import grasp_kernels.ops as ops
from _kernels import ADAM, DEVICE, TOL, adam_inputs, gen, poisoned, randn, rel, triton_launches
from grasp_kernels.ops import AdamHyper, NoiseCounters
from grasp_kernels.reference import (
    action_step_ref,
    lifted_energy_ref,
    lifted_energy_state_step_ref,
    state_step_ref,
)

B_VALUES, T_VALUES, D_VALUES = (1, 5), (1, 2, 7, 64), (1, 3, 129, 1000)
SHAPES = list(itertools.product(B_VALUES, T_VALUES, D_VALUES))

def check_lifted_energy(B, T, D, device=DEVICE, pred_dtype=torch.float32, gamma=0.7, seed=0):
    g = gen(seed + 1000 * T + D)
    pred = randn(B, T, D, g=g, device=device, dtype=pred_dtype)
    states = randn(B, T + 1, D, g=g, device=device)

    # launcher, poisoned outputs: every element (zeros of rows 0 and T included) must be written
    energy, grad_pred, grad_states = poisoned(B, device=device), poisoned(B, T, D, device=device), poisoned(
        B, T + 1, D, device=device
    )
    triton_launches().lifted_energy(pred, states, gamma, energy, grad_pred, grad_states)

    p_ref = pred.detach().float().requires_grad_(True)
    s_ref = states.clone().requires_grad_(True)
    e_ref = lifted_energy_ref(p_ref, s_ref, gamma)
    e_ref.sum().backward()
    assert rel(energy, e_ref) < TOL
    assert rel(grad_pred, p_ref.grad) < TOL
    assert rel(grad_states, s_ref.grad) < TOL
    assert (grad_states[:, 0] == 0).all() and (grad_states[:, T] == 0).all()

    # public op through autograd, with a random upstream gradient
    p_op = pred.clone().requires_grad_(True)
    s_op = states.clone().requires_grad_(True)
    e_op = ops.lifted_energy(p_op, s_op, gamma, backend="triton")
    upstream = randn(B, g=g, device=device)
    e_op.backward(upstream)
    p_ref2 = pred.clone().requires_grad_(True)
    s_ref2 = states.clone().requires_grad_(True)
    lifted_energy_ref(p_ref2, s_ref2, gamma).backward(upstream)
    assert e_op.dtype == torch.float32 and e_op.shape == (B,)
    assert rel(e_op, e_ref) < TOL
    assert p_op.grad.dtype == pred_dtype
    # bf16 gradients: both sides round a float32 value to bf16 (8-bit mantissa); values whose float32
    # results differ by an ulp may round apart, hence 1e-3 for bf16
    tol = TOL if pred_dtype == torch.float32 else 1e-3
    assert rel(p_op.grad, p_ref2.grad) < tol
    assert rel(s_op.grad, s_ref2.grad) < TOL


def check_state_step(B, T, D, device=DEVICE, step=3, beta1=0.9, noise_std=0.05, seed=0, eps=1e-8):
    g = gen(seed + 17 * T + D)
    states = randn(B, T + 1, D, g=g, device=device)
    grad, exp_avg, exp_avg_sq = adam_inputs((B, T + 1, D), g, device)
    noise = randn(B, T - 1, D, g=g, device=device)
    adam = AdamHyper(ADAM.lr, beta1, ADAM.beta2, eps)
    ref = [t.clone() for t in (states, exp_avg, exp_avg_sq)]
    state_step_ref(ref[0], grad, ref[1], ref[2], step, adam, noise_std=noise_std, noise=noise)
    out = [t.clone() for t in (states, exp_avg, exp_avg_sq)]
    ops.state_step_(out[0], grad, out[1], out[2], step, adam, noise_std=noise_std, noise=noise, backend="triton")
    for o, r, orig in zip(out, ref, (states, exp_avg, exp_avg_sq)):
        assert torch.equal(o[:, 0], orig[:, 0]) and torch.equal(o[:, T], orig[:, T]), "rows 0 / T changed"
        if T > 1:
            assert rel(o[:, 1:T], r[:, 1:T]) < 1e-6  # same noise: equal up to float rounding
            assert rel(o[:, 1:T] - orig[:, 1:T], r[:, 1:T] - orig[:, 1:T]) < 2e-5  # the update itself
        else:
            assert torch.equal(o, orig)


def seeded_noise(B, T, D, seed, fused=False):
    """The noise the kernels draw for a seed, recovered exactly (states 0, lr 0)."""
    states = torch.zeros(B, T + 1, D)
    zeros = torch.zeros(B, T + 1, D)
    ones = torch.ones(B, T + 1, D)
    if fused:
        pred = randn(B, T, D, g=gen(1))
        ops.lifted_energy_state_step_(pred, states, 0.5, zeros.clone(), ones.clone(), 1, AdamHyper(0.0), 1.0,
                                      counters=NoiseCounters(seed), backend="triton")
    else:
        ops.state_step_(states, zeros, zeros.clone(), ones.clone(), 1, AdamHyper(0.0), 1.0,
                        counters=NoiseCounters(seed), backend="triton")
    assert (states[:, 0] == 0).all() and (states[:, T] == 0).all()
    return states[:, 1:T]


def check_action_step(B, T, A, device=DEVICE, step=4, seed=0):
    g = gen(seed + 31 * T + A)
    actions = randn(B, T, A, g=g, device=device)
    grad, exp_avg, exp_avg_sq = adam_inputs((B, T, A), g, device)
    low = -torch.rand(A, generator=g).to(device) - 0.2
    high = torch.rand(A, generator=g).to(device) + 0.2
    low[::2] = float("-inf")  # unbounded on some dimensions
    high[1::3] = float("inf")
    ref = [t.clone() for t in (actions, exp_avg, exp_avg_sq)]
    action_step_ref(ref[0], grad, ref[1], ref[2], step, ADAM, low=low, high=high)
    out = [t.clone() for t in (actions, exp_avg, exp_avg_sq)]
    ops.action_step_(out[0], grad, out[1], out[2], step, ADAM, low=low, high=high, backend="triton")
    for o, r in zip(out, ref):
        assert rel(o, r) < TOL
    assert ((out[0] >= low) & (out[0] <= high)).all()


def check_fused(B, T, D, device=DEVICE, pred_dtype=torch.float32, noise_std=0.05, seed=0):
    g = gen(seed + 7 * T + D)
    pred = randn(B, T, D, g=g, device=device, dtype=pred_dtype)
    states = randn(B, T + 1, D, g=g, device=device)
    _, exp_avg, exp_avg_sq = adam_inputs((B, T + 1, D), g, device)
    noise = randn(B, T - 1, D, g=g, device=device)
    ref = [t.clone() for t in (states, exp_avg, exp_avg_sq)]
    e_ref, gp_ref = lifted_energy_state_step_ref(pred, ref[0], 0.4, ref[1], ref[2], 3, ADAM, noise_std=noise_std,
                                                 noise=noise)
    out = [t.clone() for t in (states, exp_avg, exp_avg_sq)]
    energy, grad_pred = poisoned(B, device=device), poisoned(B, T, D, device=device)
    triton_launches().lifted_energy_state_step(pred, out[0], 0.4, energy, grad_pred, out[1], out[2], 3, ADAM,
                                               noise_std, noise, NoiseCounters(0))
    assert rel(energy, e_ref) < TOL
    assert rel(grad_pred, gp_ref) < TOL
    for o, r, orig in zip(out, ref, (states, exp_avg, exp_avg_sq)):
        assert torch.equal(o[:, 0], orig[:, 0]) and torch.equal(o[:, T], orig[:, T]), "rows 0 / T changed"
        assert rel(o, r) < 1e-6
        if T > 1:
            assert rel(o[:, 1:T] - orig[:, 1:T], r[:, 1:T] - orig[:, 1:T]) < 2e-5


