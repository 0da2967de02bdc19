"""What every ``grasp`` custom op shares (grasp_kernels/ops/<op>/op.py with _validate.py, _dispatch.py):
argument validation once in the op body, for both kernel backends and before any launch (gamma, memory
overlap, tensors on the wrong device, dtype / layout / shape, seed, step); the launch protocol (each
op's ``launcher(backend)`` receives validated tensors and preallocated float32 outputs); and the device
guard (``on_device``, imported by each op.py) around every launch.
"""

from __future__ import annotations

import pytest
import torch

import _cuda_helpers as cu
from _cuda_helpers import ck  # noqa: F401  (fixture)
from _kernels import KERNEL_BACKENDS, OPS, make_inputs
from grasp_kernels.backends import backend_unavailable_reason
from grasp_kernels.ops import AdamHyper, NoiseCounters
from grasp_kernels.ops.table import op_entry

# the schemas' flat (step, lr, beta1, beta2, eps)
ADAM = (3, 0.1, 0.9, 0.999, 1e-8)
ADAM_ARGS = (2, 0.1, 0.9, 0.999, 1e-8)


def op_module(name: str):
    return op_entry(name).module("op")


def stub_launchers(monkeypatch, launch_for):
    """Every op's ``launcher`` returns ``launch_for(op)``; its backend check passes (no kernel runs)."""
    for name in OPS:
        module = op_module(name)
        monkeypatch.setattr(module, "launcher", lambda backend, name=name: launch_for(name))
        monkeypatch.setattr(module, "check_backend_runs", lambda backend, device: None)


def _triton_runs_on_cpu() -> bool:
    return backend_unavailable_reason("triton", torch.device("cpu")) is None


def _state_args(B=2, T=4, D=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(B, T + 1, D, generator=g)
    grad = torch.randn(B, T + 1, D, generator=g)
    return states, grad, torch.zeros_like(states), torch.zeros_like(states), torch.randn(B, T - 1, D, generator=g)


# ------------------------------------------------------------------------------- launch protocol


def test_launcher_protocol_is_shared(monkeypatch):
    """Both backends go through the same validation/allocation: a stub 'cuda' launcher receives
    contiguous, validated tensors and preallocated float32 outputs, exactly per the protocol."""
    calls = {}

    def record(name):
        def launch(*args):
            calls[name] = args

        return launch

    stub_launchers(monkeypatch, record)
    x = make_inputs("cpu", B=2, T=4, D=3, pred_dtype=torch.bfloat16)

    energy, grad_pred, grad_states = torch.ops.grasp.lifted_energy(x.pred, x.states, 0.5, "cuda")
    args = calls["lifted_energy"]
    assert args[0] is x.pred and args[1] is x.states and args[2] == 0.5
    assert args[3] is energy and energy.shape == (2,) and energy.dtype == torch.float32
    assert args[4] is grad_pred and grad_pred.shape == (2, 4, 3) and grad_pred.dtype == torch.float32
    assert args[5] is grad_states and grad_states.shape == (2, 5, 3) and grad_states.dtype == torch.float32

    torch.ops.grasp.state_step(x.states, x.grad, x.exp_avg, x.exp_avg_sq, *ADAM, 0.05, None, 7, 12, 30, "cuda")
    # the schema's flat scalars reach the launcher as their objects: AdamHyper, NoiseCounters(seed, base, stride)
    assert calls["state_step"][4:] == (ADAM[0], AdamHyper(*ADAM[1:]), 0.05, None, NoiseCounters(7, 12, 30))
    torch.ops.grasp.action_step(x.actions, x.grad_a, x.exp_avg_a, x.exp_avg_sq_a, *ADAM, x.low, x.high, "cuda")
    assert calls["action_step"][4:6] == (ADAM[0], AdamHyper(*ADAM[1:]))
    assert calls["action_step"][-2] is x.low and calls["action_step"][-1] is x.high
    energy, grad_pred = torch.ops.grasp.lifted_energy_state_step(
        x.pred, x.states, 0.5, x.exp_avg, x.exp_avg_sq, *ADAM, 0.05, x.noise, 7, 0, 9, "cuda")
    args = calls["lifted_energy_state_step"]
    assert args[3] is energy and args[4] is grad_pred and args[10] is x.noise and args[11] == NoiseCounters(7, 0, 9)
    with pytest.raises(ValueError, match="states.*contiguous"):
        torch.ops.grasp.state_step(x.states.transpose(0, 1).contiguous().transpose(0, 1), x.grad, x.exp_avg,
                                   x.exp_avg_sq, *ADAM, 0.05, None, 7, 0, 9, "cuda")


def test_unavailable_backend_is_a_clear_error():
    if backend_unavailable_reason("cuda", torch.device("cpu")) is None:  # pragma: no cover
        pytest.skip("cuda backend runs on cpu tensors?")
    x = make_inputs("cpu")
    with pytest.raises(RuntimeError, match="backend 'cuda' cannot run"):
        torch.ops.grasp.lifted_energy(x.pred, x.states, 0.5, "cuda")


# ------------------------------------------------------------------------------- device guard


def test_every_launch_runs_inside_its_tensors_device(monkeypatch, device_guard_recorder):
    """Triton and the CUDA module launch on torch's current device: every custom op enters the tensors'
    device (backends.on_device) around its launcher call."""
    guard = device_guard_recorder
    stub_launchers(monkeypatch, guard.launcher)
    for name in OPS:
        monkeypatch.setattr(op_module(name), "on_device", guard)
    x = make_inputs("cpu", B=2, T=4, D=3)
    torch.ops.grasp.lifted_energy(x.pred, x.states, 0.5, "cuda")
    torch.ops.grasp.state_step(x.states, x.grad, x.exp_avg, x.exp_avg_sq, *ADAM, 0.05, None, 7, 0, 9, "cuda")
    torch.ops.grasp.action_step(x.actions, x.grad_a, x.exp_avg_a, x.exp_avg_sq_a, *ADAM, x.low, x.high, "cuda")
    torch.ops.grasp.lifted_energy_state_step(x.pred, x.states, 0.5, x.exp_avg, x.exp_avg_sq, *ADAM, 0.05, None, 7,
                                             0, 9, "cuda")
    assert guard.launched_inside == {name: [torch.device("cpu")] for name in OPS}


def test_device_guard_switches_only_to_another_cuda_device(monkeypatch):
    import contextlib

    from grasp_kernels.backends import on_device

    assert isinstance(on_device(torch.device("cpu")), contextlib.nullcontext)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert isinstance(on_device(torch.device("cuda", 0)), contextlib.nullcontext)
    guard = on_device(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1


# ------------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("gamma", [float("nan"), float("inf"), float("-inf"), -0.1, -1.0])
def test_ops_validate_gamma(backend, gamma):
    """The ops reject a non-finite or negative gamma (both backends, before anything touches a device:
    reachable without a GPU), through the public functions and through torch.ops."""
    import grasp_kernels.ops as ops

    states, _, m, v, _ = _state_args()
    pred = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="gamma"):
        ops.lifted_energy(pred, states, gamma, backend=backend)
    with pytest.raises(ValueError, match="gamma"):
        torch.ops.grasp.lifted_energy(pred, states, gamma, backend)
    with pytest.raises(ValueError, match="gamma"):
        ops.lifted_energy_state_step_(pred, states, gamma, m, v, ADAM_ARGS[0], AdamHyper(*ADAM_ARGS[1:]), 0.0, None,
                                      counters=NoiseCounters(0), backend=backend)
    with pytest.raises(ValueError, match="gamma"):
        torch.ops.grasp.lifted_energy_state_step(pred, states, gamma, m, v, *ADAM_ARGS, 0.0, None, 0, 0, 0, backend)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_ops_reject_a_gamma_that_is_not_a_float(backend):
    """gamma=None is rejected before any launch (the op schema's float argument: RuntimeError naming gamma)."""
    states, _, m, _, _ = _state_args()
    pred = torch.randn(2, 4, 3)
    with pytest.raises(RuntimeError, match="gamma"):
        torch.ops.grasp.lifted_energy(pred, states, None, backend)
    with pytest.raises(RuntimeError, match="gamma"):
        torch.ops.grasp.lifted_energy_state_step(pred, states, None, m, m.clone(), *ADAM_ARGS, 0.0, None, 0, 0, 0, backend)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_ops_reject_overlapping_tensors(backend):
    """In-place tensors must not share memory with each other or with what the op reads: ValueError
    naming both arguments (checked in the op body, before the backend is even looked up)."""
    B, T, D = 2, 4, 3
    states, grad, m, v, noise = _state_args(B, T, D)
    state_step, fused, action_step = (torch.ops.grasp.state_step, torch.ops.grasp.lifted_energy_state_step,
                                      torch.ops.grasp.action_step)
    with pytest.raises(ValueError, match="states and grad overlap"):
        state_step(states, states, m, v, *ADAM_ARGS, 0.0, None, 0, 0, 0, backend)
    with pytest.raises(ValueError, match="exp_avg and exp_avg_sq overlap"):
        state_step(states, grad, m, m, *ADAM_ARGS, 0.0, None, 0, 0, 0, backend)
    with pytest.raises(ValueError, match="states and exp_avg overlap"):
        state_step(states, grad, states, v, *ADAM_ARGS, 0.0, None, 0, 0, 0, backend)
    # partial overlap: noise is a view into the tail of the states' storage
    flat = torch.randn(B * (T + 1) * D)
    s_view = flat.view(B, T + 1, D)
    n_view = flat[-B * (T - 1) * D:].view(B, T - 1, D)
    with pytest.raises(ValueError, match="states and noise overlap"):
        state_step(s_view, grad, m, v, *ADAM_ARGS, 0.1, n_view, 0, 0, 0, backend)
    # fused: pred aliasing the first rows of the states
    p_view = flat[: B * T * D].view(B, T, D)
    with pytest.raises(ValueError, match="states and pred overlap"):
        fused(p_view, s_view, 0.5, m, v, *ADAM_ARGS, 0.0, None, 0, 0, 0, backend)
    with pytest.raises(ValueError, match="exp_avg_sq and noise overlap"):
        fused(torch.randn(B, T, D), states, 0.5, m, v, *ADAM_ARGS, 0.1, v.view(-1)[: noise.numel()].view_as(noise), 0,
              0, 0, backend)
    actions = torch.randn(B, T, 2)
    am, av = torch.zeros_like(actions), torch.zeros_like(actions)
    low, high = torch.full((2,), -1.0), torch.full((2,), 1.0)
    with pytest.raises(ValueError, match="actions and grad overlap"):
        action_step(actions, actions, am, av, *ADAM_ARGS, low, high, backend)
    with pytest.raises(ValueError, match="exp_avg and low overlap"):
        action_step(actions, torch.randn_like(actions), am, av, *ADAM_ARGS, am.view(-1)[:2], high, backend)


@pytest.mark.skipif(not _triton_runs_on_cpu(), reason="the Triton backend does not run on CPU here")
def test_ops_accept_disjoint_views_of_one_buffer():
    """Adjacent, non-overlapping views of one allocation are fine (ranges are compared, not storages);
    the result equals the one from separate tensors."""
    B, T, D = 2, 4, 3
    states, grad, m, v, noise = _state_args(B, T, D, seed=1)
    n = states.numel()
    buf = torch.empty(3 * n + noise.numel())
    s2, m2, v2 = (buf[i * n:(i + 1) * n].view_as(states) for i in range(3))
    n2 = buf[3 * n:].view_as(noise)
    s2.copy_(states), m2.copy_(m), v2.copy_(v), n2.copy_(noise)
    torch.ops.grasp.state_step(states, grad, m, v, *ADAM_ARGS, 0.1, noise, 0, 0, 12, "triton")
    torch.ops.grasp.state_step(s2, grad, m2, v2, *ADAM_ARGS, 0.1, n2, 0, 0, 12, "triton")
    for a, b in ((states, s2), (m, m2), (v, v2)):
        assert torch.equal(a, b)


def test_cuda_backend_rejects_cpu_tensors():
    """The cuda backend on CPU tensors: a clear error from the op (formerly the CUDA launchers' own
    check, a ValueError "needs CUDA tensors"; now the op's backend check, a RuntimeError)."""
    cu.cuda_module()
    states = torch.randn(2, 4, 3)
    pred = torch.randn(2, 3, 3)
    with pytest.raises(RuntimeError, match="cuda backend needs a CUDA device"):
        torch.ops.grasp.lifted_energy(pred, states, 1.0, "cuda")
    with pytest.raises(RuntimeError, match="cuda backend needs a CUDA device"):
        torch.ops.grasp.state_step(states, states.clone(), states.clone(), states.clone(), 1, 0.1, 0.9, 0.999, 1e-8,
                                   0.0, None, 0, 0, 6, "cuda")
    actions = torch.randn(2, 3, 2)
    with pytest.raises(RuntimeError, match="cuda backend needs a CUDA device"):
        torch.ops.grasp.action_step(actions, actions.clone(), actions.clone(), actions.clone(), 1, 0.1, 0.9, 0.999,
                                    1e-8, torch.zeros(2), torch.ones(2), "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_op_checks_on_cuda_tensors(request, backend):
    """dtype, layout, shape, device, seed, step and gamma checks of the ops on CUDA tensors (formerly the
    CUDA launchers' test_launcher_checks; now in the op body, for both kernel backends)."""
    if backend == "cuda":
        request.getfixturevalue("ck")
    B, T, D = 2, 3, 4
    pred, states = cu.energy_inputs(B, T, D, torch.float32, 6)
    energy = torch.ops.grasp.lifted_energy
    with pytest.raises(TypeError):
        energy(pred.double(), states, 1.0, backend)
    with pytest.raises(ValueError, match="contiguous"):
        energy(pred.transpose(1, 2).contiguous().transpose(1, 2), states, 1.0, backend)
    with pytest.raises(ValueError, match="shape"):
        energy(pred[:, :2], states, 1.0, backend)
    with pytest.raises(ValueError):
        energy(pred.cpu(), states, 1.0, backend)
    s, g, m, v = cu.adam_inputs(B, T, D, 7)
    with pytest.raises(RuntimeError, match="seed"):  # the schema's int seed (was ValueError in the launcher)
        torch.ops.grasp.state_step(s, g, m, v, 1, 0.1, 0.9, 0.999, 1e-8, 0.1, None, None, 0, 0, backend)
    with pytest.raises(ValueError, match="step"):
        torch.ops.grasp.state_step(s, g, m, v, 0, 0.1, 0.9, 0.999, 1e-8, 0.0, None, 0, 0, 0, backend)
    for gamma in (float("nan"), float("inf"), -0.5):
        with pytest.raises(ValueError, match="gamma"):
            energy(pred, states, gamma, backend)
        with pytest.raises(ValueError, match="gamma"):
            torch.ops.grasp.lifted_energy_state_step(pred, s, gamma, m, v, 1, 0.1, 0.9, 0.999, 1e-8, 0.0, None, 0, 0, 0,
                                                     backend)
