"""The ``grasp`` custom ops: torch.library.opcheck, torch.compile, and the launcher protocol."""

from __future__ import annotations

import types

import pytest
import torch
from torch.library import opcheck

import grasp_kernels.ops as ops
from grasp_kernels.backends import backend_unavailable_reason
from grasp_kernels.ops import custom_ops
from grasp_kernels.reference import lifted_energy_ref


def kernel_backends() -> list:
    """(backend, device) pairs whose kernels can run here."""
    pairs = []
    for backend in custom_ops.KERNEL_BACKENDS:
        for device in ("cpu", "cuda"):
            if device == "cuda" and not torch.cuda.is_available():
                continue
            if backend_unavailable_reason(backend, torch.device(device)) is None:
                pairs.append(pytest.param(backend, device, id=f"{backend}-{device}"))
    return pairs or [pytest.param(None, None, marks=pytest.mark.skip(reason="no kernel backend runs here"))]


BACKENDS = kernel_backends()
ADAM = (3, 0.1, 0.9, 0.999, 1e-8)


def make_inputs(device, B=3, T=5, D=7, A=2, pred_dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rn(*shape):
        return torch.randn(shape, generator=g).to(device)

    return types.SimpleNamespace(
        pred=rn(B, T, D).to(pred_dtype),
        states=rn(B, T + 1, D),
        grad=rn(B, T + 1, D),
        exp_avg=rn(B, T + 1, D) * 0.1,
        exp_avg_sq=torch.rand(B, T + 1, D, generator=g).to(device) * 0.01,
        noise=rn(B, T - 1, D),
        actions=rn(B, T, A),
        grad_a=rn(B, T, A),
        exp_avg_a=rn(B, T, A) * 0.1,
        exp_avg_sq_a=torch.rand(B, T, A, generator=g).to(device) * 0.01,
        low=torch.tensor([-0.5, float("-inf")], device=device),
        high=torch.tensor([0.5, 0.3], device=device),
    )


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
            (x.states, x.grad, x.exp_avg, x.exp_avg_sq, *ADAM, noise_std, noise, 1234, backend))
    opcheck(torch.ops.grasp.lifted_energy_state_step.default,
            (x.pred, x.states, 0.5, x.exp_avg, x.exp_avg_sq, *ADAM, noise_std, noise, 1234, backend))


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
            ops.state_step_(states, grad_states, m, v, 2, 0.1, 0.9, 0.999, 1e-8, 0.05, seed=seed, backend=backend)
            ops.action_step_(actions, grad_a, ma, va, 2, 0.01, 0.9, 0.999, 1e-8, -1.0, 1.0, backend=backend)
        return energy.detach(), grad_pred

    def fused(pred, states, m, v, seed):
        return ops.lifted_energy_state_step_(pred, states, 0.5, m, v, 2, 0.1, 0.9, 0.999, 1e-8, 0.05, seed=seed,
                                             backend=backend)

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


def test_launcher_protocol_is_shared(monkeypatch):
    """Both backends go through the same validation/allocation: a stub 'cuda' provider receives
    contiguous, validated tensors and preallocated float32 outputs, exactly per the protocol."""
    calls = {}

    def record(name):
        def launcher(*args):
            calls[name] = args

        return launcher

    stub = types.SimpleNamespace(**{n: record(n) for n in (
        "lifted_energy_fwd", "state_step", "action_step", "lifted_energy_state_step")})
    monkeypatch.setattr(custom_ops, "provider", lambda backend: stub)
    monkeypatch.setattr(custom_ops, "_check_backend_runs", lambda backend, device: None)
    x = make_inputs("cpu", B=2, T=4, D=3, pred_dtype=torch.bfloat16)

    energy, grad_pred, grad_states = torch.ops.grasp.lifted_energy(x.pred, x.states, 0.5, "cuda")
    args = calls["lifted_energy_fwd"]
    assert args[0] is x.pred and args[1] is x.states and args[2] == 0.5
    assert args[3] is energy and energy.shape == (2,) and energy.dtype == torch.float32
    assert args[4] is grad_pred and grad_pred.shape == (2, 4, 3) and grad_pred.dtype == torch.float32
    assert args[5] is grad_states and grad_states.shape == (2, 5, 3) and grad_states.dtype == torch.float32

    torch.ops.grasp.state_step(x.states, x.grad, x.exp_avg, x.exp_avg_sq, *ADAM, 0.05, None, 7, "cuda")
    assert calls["state_step"][4:] == (*ADAM, 0.05, None, 7)
    torch.ops.grasp.action_step(x.actions, x.grad_a, x.exp_avg_a, x.exp_avg_sq_a, *ADAM, x.low, x.high, "cuda")
    assert calls["action_step"][-2] is x.low and calls["action_step"][-1] is x.high
    energy, grad_pred = torch.ops.grasp.lifted_energy_state_step(
        x.pred, x.states, 0.5, x.exp_avg, x.exp_avg_sq, *ADAM, 0.05, x.noise, 7, "cuda")
    args = calls["lifted_energy_state_step"]
    assert args[3] is energy and args[4] is grad_pred and args[13] is x.noise and args[14] == 7
    with pytest.raises(ValueError, match="states.*contiguous"):
        torch.ops.grasp.state_step(x.states.transpose(0, 1).contiguous().transpose(0, 1), x.grad, x.exp_avg,
                                   x.exp_avg_sq, *ADAM, 0.05, None, 7, "cuda")


def test_unavailable_backend_is_a_clear_error():
    if backend_unavailable_reason("cuda", torch.device("cpu")) is None:  # pragma: no cover
        pytest.skip("cuda backend runs on cpu tensors?")
    x = make_inputs("cpu")
    with pytest.raises(RuntimeError, match="backend 'cuda' cannot run"):
        torch.ops.grasp.lifted_energy(x.pred, x.states, 0.5, "cuda")
