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


# ------------------------------------------------------------------------------- argument checks (shared layer)


def _custom_ops():
    return custom_ops


def _triton_runs_on_cpu() -> bool:
    return backend_unavailable_reason("triton", torch.device("cpu")) is None


def _state_args(B=2, T=4, D=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(B, T + 1, D, generator=g)
    grad = torch.randn(B, T + 1, D, generator=g)
    return states, grad, torch.zeros_like(states), torch.zeros_like(states), torch.randn(B, T - 1, D, generator=g)


ADAM_ARGS = (2, 0.1, 0.9, 0.999, 1e-8)


@pytest.mark.parametrize("gamma", [float("nan"), float("inf"), float("-inf"), -0.1])
def test_custom_ops_validate_gamma(gamma):
    """The shared custom ops reject a non-finite or negative gamma (both backends, before any launch)."""
    ops = _custom_ops()
    states, _, m, v, _ = _state_args()
    pred = torch.randn(2, 4, 3)
    for backend in ops.KERNEL_BACKENDS:
        with pytest.raises(ValueError, match="gamma"):
            ops.lifted_energy(pred, states, gamma, backend)
        with pytest.raises(ValueError, match="gamma"):
            torch.ops.grasp.lifted_energy(pred, states, gamma, backend)
        with pytest.raises(ValueError, match="gamma"):
            ops.lifted_energy_state_step(pred, states, gamma, m, v, *ADAM_ARGS, 0.0, None, 0, backend)
        with pytest.raises(ValueError, match="gamma"):
            torch.ops.grasp.lifted_energy_state_step(pred, states, gamma, m, v, *ADAM_ARGS, 0.0, None, 0, backend)


def test_custom_ops_reject_overlapping_tensors():
    """In-place tensors must not share memory with each other or with what the op reads: ValueError
    naming both arguments (checked in the shared layer, before the backend is even looked up)."""
    ops = _custom_ops()
    B, T, D = 2, 4, 3
    states, grad, m, v, noise = _state_args(B, T, D)
    for backend in ops.KERNEL_BACKENDS:
        with pytest.raises(ValueError, match="states and grad overlap"):
            ops.state_step(states, states, m, v, *ADAM_ARGS, 0.0, None, 0, backend)
        with pytest.raises(ValueError, match="exp_avg and exp_avg_sq overlap"):
            ops.state_step(states, grad, m, m, *ADAM_ARGS, 0.0, None, 0, backend)
        with pytest.raises(ValueError, match="states and exp_avg overlap"):
            ops.state_step(states, grad, states, v, *ADAM_ARGS, 0.0, None, 0, backend)
        # partial overlap: noise is a view into the tail of the states' storage
        flat = torch.randn(B * (T + 1) * D)
        s_view = flat.view(B, T + 1, D)
        n_view = flat[-B * (T - 1) * D:].view(B, T - 1, D)
        with pytest.raises(ValueError, match="states and noise overlap"):
            ops.state_step(s_view, grad, m, v, *ADAM_ARGS, 0.1, n_view, 0, backend)
        # fused: pred aliasing the first rows of the states
        p_view = flat[: B * T * D].view(B, T, D)
        with pytest.raises(ValueError, match="states and pred overlap"):
            ops.lifted_energy_state_step(p_view, s_view, 0.5, m, v, *ADAM_ARGS, 0.0, None, 0, backend)
        with pytest.raises(ValueError, match="exp_avg_sq and noise overlap"):
            ops.lifted_energy_state_step(torch.randn(B, T, D), states, 0.5, m, v, *ADAM_ARGS, 0.1,
                                         v.view(-1)[: noise.numel()].view_as(noise), 0, backend)
        actions = torch.randn(B, T, 2)
        am, av = torch.zeros_like(actions), torch.zeros_like(actions)
        low, high = torch.full((2,), -1.0), torch.full((2,), 1.0)
        with pytest.raises(ValueError, match="actions and grad overlap"):
            ops.action_step(actions, actions, am, av, *ADAM_ARGS, low, high, backend)
        with pytest.raises(ValueError, match="exp_avg and low overlap"):
            ops.action_step(actions, torch.randn_like(actions), am, av, *ADAM_ARGS, am.view(-1)[:2], high, backend)


@pytest.mark.skipif(not _triton_runs_on_cpu(), reason="the Triton backend does not run on CPU here")
def test_custom_ops_accept_disjoint_views_of_one_buffer():
    """Adjacent, non-overlapping views of one allocation are fine (ranges are compared, not storages);
    the result equals the one from separate tensors."""
    ops = _custom_ops()
    B, T, D = 2, 4, 3
    states, grad, m, v, noise = _state_args(B, T, D, seed=1)
    n = states.numel()
    buf = torch.empty(3 * n + noise.numel())
    s2, m2, v2 = (buf[i * n:(i + 1) * n].view_as(states) for i in range(3))
    n2 = buf[3 * n:].view_as(noise)
    s2.copy_(states), m2.copy_(m), v2.copy_(v), n2.copy_(noise)
    ops.state_step(states, grad, m, v, *ADAM_ARGS, 0.1, noise, 0, "triton")
    ops.state_step(s2, grad, m2, v2, *ADAM_ARGS, 0.1, n2, 0, "triton")
    for a, b in ((states, s2), (m, m2), (v, v2)):
        assert torch.equal(a, b)



def test_every_launch_runs_inside_its_tensors_device(monkeypatch, device_guard_recorder):
    """Triton and the CUDA module launch on torch's current device: every custom op enters the tensors'
    device (backends.on_device) around its launcher call."""
    guard = device_guard_recorder
    stub = types.SimpleNamespace(**{n: guard.launcher(n) for n in (
        "lifted_energy_fwd", "state_step", "action_step", "lifted_energy_state_step")})
    monkeypatch.setattr(custom_ops, "provider", lambda backend: stub)
    monkeypatch.setattr(custom_ops, "_check_backend_runs", lambda backend, device: None)
    monkeypatch.setattr(custom_ops, "on_device", guard)
    x = make_inputs("cpu", B=2, T=4, D=3)
    torch.ops.grasp.lifted_energy(x.pred, x.states, 0.5, "cuda")
    torch.ops.grasp.state_step(x.states, x.grad, x.exp_avg, x.exp_avg_sq, *ADAM, 0.05, None, 7, "cuda")
    torch.ops.grasp.action_step(x.actions, x.grad_a, x.exp_avg_a, x.exp_avg_sq_a, *ADAM, x.low, x.high, "cuda")
    torch.ops.grasp.lifted_energy_state_step(x.pred, x.states, 0.5, x.exp_avg, x.exp_avg_sq, *ADAM, 0.05, None, 7,
                                             "cuda")
    assert guard.launched_inside == {name: [torch.device("cpu")] for name in (
        "lifted_energy_fwd", "state_step", "action_step", "lifted_energy_state_step")}


def test_device_guard_switches_only_to_another_cuda_device(monkeypatch):
    import contextlib

    from grasp_kernels.backends import on_device

    assert isinstance(on_device(torch.device("cpu")), contextlib.nullcontext)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert isinstance(on_device(torch.device("cuda", 0)), contextlib.nullcontext)
    guard = on_device(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
