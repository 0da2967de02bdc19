"""History windows, structured states with weights, action blocks, the patch-token transformer.

Every check compares the planner or the reference against an independent construction on random
data: windows built frame by frame, predictions made one time step at a time, energies written out
by hand, gradients by autograd through that construction.
"""

from __future__ import annotations

import pytest
import torch

from grasp_kernels import GraspConfig, GraspPlanner
from grasp_kernels.actions import from_env_actions, to_env_actions
from grasp_kernels.models import MLPDynamics, PatchTransformerDynamics
from grasp_kernels.reference import history_windows, lifted_energy_ref, lifted_predictions_ref, rollout_ref

F64 = torch.float64


class WindowMLP(torch.nn.Module):
    """``F(s_{t-h+1..t}, a_t)`` on windows ``[N, h, D]``: an MLP on the flattened window, residual on s_t."""

    def __init__(self, dim: int, action_dim: int, history: int, declare: bool = True):
        super().__init__()
        self.inner = MLPDynamics(dim * history, action_dim, hidden=16, depth=1)
        self.dim = dim
        if declare:
            self.history = history

    def forward(self, windows, actions):
        flat = windows.reshape(windows.shape[0], -1)
        return windows[:, -1] + 0.3 * (self.inner(flat, actions)[:, -self.dim:] - flat[:, -self.dim:])


def _frames_by_hand(history_frames, states, horizon):
    """The frame list [older observed frames..., s_0, ..., s_{T-1}], one tensor per frame."""
    return [history_frames[:, j] for j in range(history_frames.shape[1])] + [states[:, t] for t in range(horizon)]


# ---- windows -------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch,horizon,history,dim", [(1, 1, 2, 3), (3, 7, 3, 5), (2, 4, 5, 1)])
def test_windows_are_a_view_equal_to_the_per_timestep_construction(batch, horizon, history, dim):
    g = torch.Generator().manual_seed(batch * 100 + horizon)
    frames = torch.randn(batch, history - 1 + horizon, dim, generator=g)
    windows = history_windows(frames, history)
    assert windows.shape == (batch, horizon, history, dim)
    for t in range(horizon):
        expected = torch.stack([frames[:, t + j] for j in range(history)], dim=1)
        assert torch.equal(windows[:, t], expected)
    assert windows.untyped_storage().data_ptr() == frames.untyped_storage().data_ptr()  # no copy
    frames[0, history - 1, 0] = 123.0  # s_0 sits in the newest slot of window 0 and older slots after
    assert windows[0, 0, history - 1, 0] == 123.0
    if horizon > 1:
        assert windows[0, 1, history - 2, 0] == 123.0


@pytest.mark.parametrize("history", [1, 3])
def test_batched_lifted_predictions_equal_the_per_timestep_construction(history):
    batch, horizon, shape, action_dim = 3, 6, (2, 3), 2
    g = torch.Generator().manual_seed(history)
    model = PatchTransformerDynamics(2, 3, action_dim, history=history, width=16, heads=2).to(F64)
    older = torch.randn(batch, history - 1, 6, generator=g, dtype=F64)
    states = torch.randn(batch, horizon + 1, 6, generator=g, dtype=F64)
    actions = torch.randn(batch, horizon, action_dim, generator=g, dtype=F64)
    frames = torch.cat([older, states], dim=1) if history > 1 else states
    pred = lifted_predictions_ref(model, frames, actions, shape, history=history)
    looped = lifted_predictions_ref(model, frames, actions, shape, per_timestep=True, history=history)
    rows = _frames_by_hand(older, states, horizon)
    by_hand = []
    for t in range(horizon):
        window = torch.stack(rows[t : t + history], dim=1).reshape(batch, history, *shape)
        by_hand.append(model(window if history > 1 else window[:, 0], actions[:, t]).reshape(batch, -1))
    torch.testing.assert_close(pred, torch.stack(by_hand, dim=1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(looped, pred, rtol=1e-12, atol=1e-12)


def test_rollout_with_history_by_hand():
    batch, horizon, history, dim = 2, 5, 3, 4
    g = torch.Generator().manual_seed(1)
    model = WindowMLP(dim, 2, history).to(F64)
    s0 = torch.randn(batch, history, dim, generator=g, dtype=F64)
    actions = torch.randn(batch, horizon, 2, generator=g, dtype=F64)
    frames = list(s0.unbind(1))
    for t in range(horizon):
        frames.append(model(torch.stack(frames[t : t + history], 1), actions[:, t]))
    expected = torch.stack(frames[history - 1 :], dim=1)
    torch.testing.assert_close(rollout_ref(model, s0, actions, history), expected, rtol=0, atol=0)


# ---- gradients of one planner iteration against autograd on the spec ------------------------------


def _reference_grads(model, older, states, actions, gamma, shape, history, weights=None):
    """dE/ds and dE/da of the lifted energy, by autograd through a frame-by-frame construction."""
    batch, rows, dim = states.shape
    horizon = rows - 1
    states = states.clone().requires_grad_(True)
    actions = actions.clone().requires_grad_(True)
    frames = _frames_by_hand(older, states.detach(), horizon)  # stop-gradient on every state input
    preds = []
    for t in range(horizon):
        window = torch.stack(frames[t : t + history], dim=1).reshape(batch, history, *shape)
        preds.append(model(window if history > 1 else window[:, 0], actions[:, t]).reshape(batch, -1))
    pred = torch.stack(preds, dim=1)
    goal = states[:, -1:].detach()
    w = torch.ones(dim, dtype=states.dtype) if weights is None else weights.reshape(-1)
    energy = (w * (pred - torch.cat([states[:, 1:-1], goal], 1)) ** 2).sum((1, 2)) + gamma * (w * (pred - goal) ** 2).sum((1, 2))
    grad_states, grad_actions = torch.autograd.grad(energy.sum(), (states, actions))
    return energy.detach(), grad_states, grad_actions


@pytest.mark.parametrize("history,weighted", [(1, False), (3, False), (3, True), (1, True)])
def test_planner_gradients_match_the_reference(history, weighted):
    batch, horizon, shape, action_dim = 3, 5, (2, 3), 2
    g = torch.Generator().manual_seed(10 + history)
    model = PatchTransformerDynamics(2, 3, action_dim, history=history, width=16, heads=2).to(F64)
    weights = torch.rand(2, 1, generator=g, dtype=F64) + 0.5 if weighted else None  # per patch, broadcast over E
    config = GraspConfig(horizon=horizon, iters=1, sync_every=0, state_noise=0.0, init_noise=0.3, goal_weight=0.7,
                         history=history, backend="reference", action_low=None, action_high=None)
    planner = GraspPlanner(model, action_dim, config, state_shape=shape, state_weights=weights)
    s0 = torch.randn(batch, history, *shape, generator=g, dtype=F64) if history > 1 else torch.randn(batch, *shape, generator=g, dtype=F64)
    goal = torch.randn(batch, *shape, generator=g, dtype=F64)
    init = torch.randn(batch, horizon, action_dim, generator=g, dtype=F64)
    state = planner.start(s0, goal, init)
    before = state.states.clone()
    energy = planner.iteration(state)
    older = s0[:, :-1].reshape(batch, history - 1, -1) if history > 1 else s0.new_zeros(batch, 0, 6)
    w = None if weights is None else torch.broadcast_to(weights, shape)
    ref_energy, grad_states, grad_actions = _reference_grads(model, older, before, init, 0.7, shape, history, w)
    torch.testing.assert_close(energy, ref_energy, rtol=1e-12, atol=1e-12)
    # after one Adam step from zero moments, exp_avg = (1 - beta1) * grad
    scale = 1 - config.beta1
    torch.testing.assert_close(state.state_moments[0][:, 1:-1] / scale, grad_states[:, 1:-1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(state.action_moments[0] / scale, grad_actions, rtol=1e-10, atol=1e-12)
    assert torch.all(grad_states[:, [0, -1]] == 0)


def test_weighted_energy_matches_the_formula():
    g = torch.Generator().manual_seed(3)
    pred, states = torch.randn(2, 4, 5, generator=g, dtype=F64), torch.randn(2, 5, 5, generator=g, dtype=F64)
    w = torch.rand(5, generator=g, dtype=F64)
    expected = sum(
        (w * (pred[:, t] - (states[:, t + 1] if t < 3 else states[:, -1])) ** 2).sum(1) + 0.3 * (w * (pred[:, t] - states[:, -1]) ** 2).sum(1)
        for t in range(4)
    )
    torch.testing.assert_close(lifted_energy_ref(pred, states, 0.3, w), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lifted_energy_ref(pred, states, 0.3, torch.ones(5, dtype=F64)), lifted_energy_ref(pred, states, 0.3))


def test_history_plan_uses_windows_everywhere_and_one_lifted_call_per_iteration():
    batch, horizon, history, dim, iters = 2, 6, 3, 4, 4
    calls: list[tuple[int, ...]] = []
    inner = WindowMLP(dim, 2, history)

    def model(windows, actions):
        calls.append(tuple(windows.shape))
        return inner(windows, actions)

    config = GraspConfig(horizon=horizon, iters=iters, sync_every=2, sync_steps=1, history=history, lr_states=0.01)
    g = torch.Generator().manual_seed(2)
    s0, goal = torch.randn(batch, history, dim, generator=g), torch.randn(batch, dim, generator=g)
    result = GraspPlanner(model, 2, config).plan(s0, goal)
    assert calls[0] == (batch * horizon, history, dim)
    assert sum(shape[0] == batch * horizon for shape in calls) == iters  # lifted calls: one per iteration
    assert all(shape[1:] == (history, dim) for shape in calls)  # sync and final rollouts use windows too
    torch.testing.assert_close(result.rollout, rollout_ref(inner, s0, result.actions, history))
    assert torch.equal(result.states[:, 0], s0[:, -1]) and torch.equal(result.rollout[:, 0], s0[:, -1])
    torch.testing.assert_close(result.final_distance, (result.rollout[:, -1] - goal).norm(dim=1))


def test_history_one_is_the_plain_planner():
    model = MLPDynamics(3, 2, hidden=16)
    g = torch.Generator().manual_seed(5)
    s0, goal = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    config = GraspConfig(horizon=5, iters=6, sync_every=3, sync_steps=2, backend="reference")
    plain = GraspPlanner(model, 2, config).plan(s0, goal)
    explicit = GraspPlanner(model, 2, config.replace(history=1)).plan(s0, goal)
    assert torch.equal(plain.actions, explicit.actions) and torch.equal(plain.states, explicit.states)


def test_kernel_backend_with_history_and_weights_plans_like_the_reference():
    from grasp_kernels.backends import backend_unavailable_reason

    reason = backend_unavailable_reason("triton", torch.device("cpu"))
    if reason is not None:
        pytest.skip(reason)
    g = torch.Generator().manual_seed(7)
    model = PatchTransformerDynamics(3, 4, 2, history=3, width=16, heads=2)
    s0, goal = torch.randn(2, 3, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    weights = torch.tensor([1.0, 0.5, 2.0]).view(3, 1)
    config = GraspConfig(horizon=5, iters=6, sync_every=3, sync_steps=1, state_noise=0.0, history=3, lr_states=0.01)
    for w in (None, weights):
        plans = {b: GraspPlanner(model, 2, config.replace(backend=b), state_weights=w).plan(s0, goal) for b in ("reference", "triton")}
        assert plans["triton"].info["backend"] == "triton"
        for field in ("actions", "states", "energy_history"):
            torch.testing.assert_close(getattr(plans["triton"], field), getattr(plans["reference"], field), rtol=1e-4, atol=1e-5)


# ---- bad input -----------------------------------------------------------------------------------


def test_history_that_does_not_match_the_world_model():
    model = PatchTransformerDynamics(2, 3, 2, history=3)
    with pytest.raises(ValueError, match=r"history mismatch: the world model declares history = 3 .* GraspConfig\(history=3\)"):
        GraspPlanner(model, 2, GraspConfig(horizon=4))
    undeclared = WindowMLP(3, 2, history=2, declare=False)
    planner = GraspPlanner(undeclared, 2, GraspConfig(horizon=4, iters=1, sync_every=0, history=3))
    with pytest.raises(ValueError, match=r"s0 must carry the last history = 3 frames, \[B, 3, \*S\] = \[2, 3, 3\]"):
        planner.plan(torch.zeros(2, 2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"states must be \[N, history=3, P=2, E=3\] windows"):
        model(torch.zeros(4, 2, 2, 3), torch.zeros(4, 2))


def test_state_shape_and_weight_errors():
    model = PatchTransformerDynamics(2, 3, 2, history=3)
    planner = GraspPlanner(model, 2, GraspConfig(horizon=4, iters=1, history=3), state_shape=(2, 3))
    with pytest.raises(ValueError, match=r"goal must have shape \[B, \*\[2, 3\]\] or \[2, 3\]"):
        planner.plan(torch.zeros(2, 3, 2, 4), torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match=r"state_weights of shape \(4,\) is not broadcastable to the state shape \(2, 3\)"):
        GraspPlanner(model, 2, GraspConfig(horizon=4, history=3), state_shape=(2, 3), state_weights=torch.ones(4))
    with pytest.raises(ValueError, match="state_weights must be finite and >= 0"):
        GraspPlanner(model, 2, GraspConfig(horizon=4, history=3), state_weights=-torch.ones(3))
    with pytest.raises(ValueError, match="history must be >= 1"):
        GraspConfig(history=0)


# ---- action blocks and the model -----------------------------------------------------------------


def test_action_blocks_layout_and_round_trip():
    plan = torch.arange(2 * 3 * 6, dtype=torch.float32).view(2, 3, 6)  # T=3 steps of k=3 env actions of A_env=2
    env = to_env_actions(plan, 3)
    assert env.shape == (2, 9, 2)
    for t in range(3):
        for j in range(3):
            assert torch.equal(env[:, t * 3 + j], plan[:, t, 2 * j : 2 * j + 2])
    assert torch.equal(from_env_actions(env, 3), plan)
    with pytest.raises(ValueError, match="multiple of action_block = 4"):
        to_env_actions(plan, 4)
    with pytest.raises(ValueError, match="action_block must be an int >= 1"):
        from_env_actions(env, 0)


def test_patch_transformer_is_frame_causal_and_action_conditioned():
    torch.manual_seed(0)
    model = PatchTransformerDynamics(4, 6, 3, history=3, width=16, heads=2).to(F64)
    x, a = torch.randn(2, 3, 4, 6, dtype=F64), torch.randn(2, 3, dtype=F64)
    out = model(x, a)
    assert out.shape == (2, 4, 6)
    older = x.clone()
    older[:, 0] += 1.0
    assert not torch.allclose(model(older, a), out)  # the oldest frame matters
    assert not torch.allclose(model(x, a + 1.0), out)  # the action matters
    (grad,) = torch.autograd.grad(model(x, a.requires_grad_(True)).sum(), a)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
