"""Every ``grasp`` custom op under ``torch.library.opcheck`` (schema, fake tensors, autograd registration)
for each kernel backend that runs here, and under ``torch.compile`` (the ops stay opaque nodes). The
fused MLP op's opcheck is in tests/ops/test_fused_mlp_iteration.py (it needs a packed model).
"""

from __future__ import annotations

import pytest
import torch
from torch.library import opcheck

import _cuda_helpers as cu
from _cuda_helpers import ck  # noqa: F401  (fixture)
import grasp_kernels.ops as ops
from _kernels import kernel_backends, make_inputs
from grasp_kernels.reference import lifted_energy_ref

BACKENDS = kernel_backends()
ADAM = (3, 0.1, 0.9, 0.999, 1e-8)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("pred_dtype", [torch.float32, torch.bfloat16])
def test_opcheck_lifted_energy(backend, device, pred_dtype):
    x = make_inputs(device, pred_dtype=pred_dtype)
    pred, states = x.pred.requires_grad_(True), x.states.requires_grad_(True)
    opcheck(torch.ops.grasp.lifted_energy.default, (pred, states, 0.5, backend))


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("noise_kind", ["tensor", "seed", "none"])
def test_opcheck_state_step_and_fused(backend, device, noise_kind):
    x = make_inputs(device)
    noise = x.noise if noise_kind == "tensor" else None
    noise_std = 0.0 if noise_kind == "none" else 0.05
    opcheck(torch.ops.grasp.state_step.default,
            (x.states, x.grad, x.exp_avg, x.exp_avg_sq, *ADAM, noise_std, noise, 1234, 40, 30, backend))
    opcheck(torch.ops.grasp.lifted_energy_state_step.default,
            (x.pred, x.states, 0.5, x.exp_avg, x.exp_avg_sq, *ADAM, noise_std, noise, 1234, 40, 30, backend))


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_opcheck_action_step(backend, device):
    x = make_inputs(device)
    opcheck(torch.ops.grasp.action_step.default,
            (x.actions, x.grad_a, x.exp_avg_a, x.exp_avg_sq_a, *ADAM, x.low, x.high, backend))


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_torch_compile_smoke(backend, device):
    """One planner-like step under torch.compile matches eager; the custom ops stay opaque nodes."""
    torch._dynamo.reset()

    def step(pred, states, actions, m, v, ma, va, grad_a, seed):
        energy = ops.lifted_energy(pred, states, 0.5, backend=backend)
        grad_pred, grad_states = torch.autograd.grad(energy.sum(), (pred, states))
        with torch.no_grad():
            ops.state_step_(states, grad_states, m, v, 2, ops.AdamHyper(0.1), 0.05, counters=ops.NoiseCounters(seed),
                            backend=backend)
            ops.action_step_(actions, grad_a, ma, va, 2, ops.AdamHyper(0.01), -1.0, 1.0, backend=backend)
        return energy.detach(), grad_pred

    def fused(pred, states, m, v, seed):  # the parameter objects built inside the graph (fullgraph)
        return ops.lifted_energy_state_step_(pred, states, 0.5, m, v, 2, ops.AdamHyper(0.1), 0.05,
                                             counters=ops.NoiseCounters(seed), backend=backend)

    compiled_step = torch.compile(step, backend="aot_eager")
    compiled_fused = torch.compile(fused, backend="aot_eager", fullgraph=True)
    results = []
    for fn in (step, compiled_step):
        x = make_inputs(device)
        pred, states = x.pred.requires_grad_(True), x.states.requires_grad_(True)
        out = fn(pred, states, x.actions, x.exp_avg, x.exp_avg_sq, x.exp_avg_a, x.exp_avg_sq_a, x.grad_a, 42)
        results.append((*out, states.detach().clone(), x.actions, x.exp_avg, x.exp_avg_sq))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    results = []
    for fn in (fused, compiled_fused):
        x = make_inputs(device)
        out = fn(x.pred, x.states, x.exp_avg, x.exp_avg_sq, 42)
        results.append((*out, x.states, x.exp_avg, x.exp_avg_sq))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.gpu  # inductor's C++ compile takes ~20 s on a 2-core CPU; the aot_eager smoke test runs there
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_torch_compile_inductor_fullgraph(backend, device):
    """The inductor backend compiles a graph around the opaque op (energy + grads, fullgraph)."""
    torch._dynamo.reset()

    def f(pred, states):
        energy, grad_pred, grad_states = torch.ops.grasp.lifted_energy(pred, states, 0.5, backend)
        return energy * 2.0, grad_pred.sum(), grad_states.abs().max()

    x = make_inputs(device)
    expected = f(x.pred, x.states)
    got = torch.compile(f, fullgraph=True)(x.pred, x.states)
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(got[0], 2.0 * lifted_energy_ref(x.pred, x.states, 0.5), rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_custom_op_opcheck_gpu(request, backend):
    """opcheck of lifted_energy and state_step on CUDA tensors, each kernel backend."""
    if backend == "cuda":
        request.getfixturevalue("ck")
    pred, states = cu.energy_inputs(3, 5, 8, torch.float32, 13)
    torch.library.opcheck(torch.ops.grasp.lifted_energy.default, (pred, states, 0.5, backend))
    s, g, m, v = cu.adam_inputs(3, 5, 8, 14)
    torch.library.opcheck(torch.ops.grasp.state_step.default,
                          (s, g, m, v, 2, 0.1, 0.9, 0.999, 1e-8, 0.0, None, 0, 0, 24, backend))
