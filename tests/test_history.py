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
from grasp_kernels.lifted import history_windows, lifted_predictions
from grasp_kernels.rollouts import rollout
from grasp_kernels.reference import lifted_energy_ref

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
    pred = lifted_predictions(model, frames, actions, shape, history=history)
    looped = lifted_predictions(model, frames, actions, shape, per_timestep=True, history=history)
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
    torch.testing.assert_close(rollout(model, s0, actions, history), expected, rtol=0, atol=0)


# ---- gradients of one planner iteration against autograd on the spec ------------------------------


def _reference_grads(model, older, states, actions, gamma, shape, history, weights=None, stop_gradient=True):
    """dE/ds and dE/da of the lifted energy, by autograd through a frame-by-frame construction
    (``stop_gradient=False``: the state inputs of every window position stay differentiable)."""
    batch, rows, dim = states.shape
    horizon = rows - 1
    states = states.clone().requires_grad_(True)
    actions = actions.clone().requires_grad_(True)
    frames = _frames_by_hand(older, states.detach() if stop_gradient else states, horizon)
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


@pytest.mark.parametrize("history,weighted", [(3, False), (3, True), (1, False)])
def test_stop_gradient_off_ablation_matches_autograd_through_every_window_position(history, weighted):
    """``stop_gradient=False``: the state gradient includes the world model's input gradient at all
    ``h`` positions of every window a state sits in (autograd through the frame-by-frame construction)."""
    batch, horizon, shape, action_dim = 2, 5, (2, 3), 2
    g = torch.Generator().manual_seed(20 + history)
    model = PatchTransformerDynamics(2, 3, action_dim, history=history, width=16, heads=2).to(F64)
    weights = torch.rand(2, 1, generator=g, dtype=F64) + 0.5 if weighted else None
    config = GraspConfig(horizon=horizon, iters=1, sync_every=0, state_noise=0.0, init_noise=0.3, goal_weight=0.7,
                         history=history, backend="reference", action_low=None, action_high=None, stop_gradient=False)
    planner = GraspPlanner(model, action_dim, config, state_shape=shape, state_weights=weights)
    s0 = torch.randn(batch, history, *shape, generator=g, dtype=F64) if history > 1 else torch.randn(batch, *shape, generator=g, dtype=F64)
    goal = torch.randn(batch, *shape, generator=g, dtype=F64)
    init = torch.randn(batch, horizon, action_dim, generator=g, dtype=F64)
    state = planner.start(s0, goal, init)
    before = state.states.clone()
    energy = planner.iteration(state)
    older = s0[:, :-1].reshape(batch, history - 1, -1) if history > 1 else s0.new_zeros(batch, 0, 6)
    w = None if weights is None else torch.broadcast_to(weights, shape)
    ref_energy, grad_states, grad_actions = _reference_grads(model, older, before, init, 0.7, shape, history, w, stop_gradient=False)
    _, grad_detached, _ = _reference_grads(model, older, before, init, 0.7, shape, history, w)
    assert (grad_states[:, 1:-1] - grad_detached[:, 1:-1]).abs().max() > 1e-6  # the model's input gradient matters
    torch.testing.assert_close(energy, ref_energy, rtol=1e-12, atol=1e-12)
    scale = 1 - config.beta1
    torch.testing.assert_close(state.state_moments[0][:, 1:-1] / scale, grad_states[:, 1:-1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(state.action_moments[0] / scale, grad_actions, rtol=1e-10, atol=1e-12)
    if history > 1:
        # s_1 sits in positions h-1 (window 1), h-2 (window 2), ...: the gradient through a single
        # position (the newest) is not the whole gradient
        newest_only = _reference_grads_newest_position_only(model, older, before, init, 0.7, shape, history, w)
        assert (grad_states[:, 1:-1] - newest_only[:, 1:-1]).abs().max() > 1e-6


def _reference_grads_newest_position_only(model, older, states, actions, gamma, shape, history, weights):
    """dE/ds when only the newest position of each window is differentiable (the older positions
    detached): what a gradient that missed the older window positions would be."""
    batch, rows, dim = states.shape
    horizon = rows - 1
    states = states.clone().requires_grad_(True)
    frames_live = _frames_by_hand(older, states, horizon)
    frames_dead = _frames_by_hand(older, states.detach(), horizon)
    preds = []
    for t in range(horizon):
        window = torch.stack(frames_dead[t : t + history - 1] + [frames_live[t + history - 1]], dim=1)
        preds.append(model(window.reshape(batch, history, *shape), actions[:, t]).reshape(batch, -1))
    pred = torch.stack(preds, dim=1)
    goal = states[:, -1:].detach()
    w = torch.ones(dim, dtype=states.dtype) if weights is None else weights.reshape(-1)
    energy = (w * (pred - torch.cat([states[:, 1:-1], goal], 1)) ** 2).sum((1, 2)) + gamma * (w * (pred - goal) ** 2).sum((1, 2))
    (grad_states,) = torch.autograd.grad(energy.sum(), states)
    return grad_states


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
    torch.testing.assert_close(result.rollout, rollout(inner, s0, result.actions, history))
    assert torch.equal(result.states[:, 0], s0[:, -1]) and torch.equal(result.rollout[:, 0], s0[:, -1])
    torch.testing.assert_close(result.final_distance, (result.rollout[:, -1] - goal).norm(dim=1))


class NewestFrameOnly(torch.nn.Module):
    """A window model ``[N, h, D]`` that reads only the newest frame through a plain ``F(s, a)``."""

    def __init__(self, inner, history):
        super().__init__()
        self.inner, self.history = inner, history

    def forward(self, windows, actions):
        assert windows.shape[1] == self.history
        return self.inner(windows[:, -1], actions)


@pytest.mark.parametrize("particles", [1, 3])
def test_history_one_plans_like_the_window_path_with_a_newest_frame_model(particles):
    """``history = 1`` (plain ``F(s, a)`` on ``[N, D]``) against an independent construction: the
    ``history = 2`` path (frame buffer, strided windows, windowed sync and rollout) with a model that
    reads only the newest frame and an arbitrary older observed frame. Same noise, same steps."""
    model = MLPDynamics(3, 2, hidden=16).to(F64)
    g = torch.Generator().manual_seed(5)
    s0, goal = torch.randn(2, 3, generator=g, dtype=F64), torch.randn(2, 3, generator=g, dtype=F64)
    older = torch.randn(2, 1, 3, generator=g, dtype=F64)
    config = GraspConfig(horizon=5, iters=6, sync_every=3, sync_steps=2, backend="reference", state_noise=0.05,
                         particles=particles)
    plain = GraspPlanner(model, 2, config).plan(s0, goal)
    windowed = GraspPlanner(NewestFrameOnly(model, 2), 2, config.replace(history=2)).plan(torch.cat([older, s0.unsqueeze(1)], 1), goal)
    for field in ("actions", "states", "rollout", "final_distance", "energy_history"):
        torch.testing.assert_close(getattr(windowed, field), getattr(plain, field), rtol=1e-12, atol=1e-12)
    assert torch.equal(windowed.info["particle"], plain.info["particle"])


def test_particles_with_history_repeat_the_observed_frames_per_chain():
    batch, horizon, history, dim, particles = 2, 4, 3, 4, 3
    g = torch.Generator().manual_seed(8)
    model = WindowMLP(dim, 2, history).to(F64)
    s0, goal = torch.randn(batch, history, dim, generator=g, dtype=F64), torch.randn(batch, dim, generator=g, dtype=F64)
    config = GraspConfig(horizon=horizon, iters=4, sync_every=2, sync_steps=1, history=history, particles=particles,
                         backend="reference", lr_states=0.01)
    planner = GraspPlanner(model, 2, config)
    state = planner.start(s0, goal)
    for b in range(batch):
        for k in range(particles):
            row = b * particles + k
            assert torch.equal(state.chains.history_frames[row], s0[b, :-1])
            assert torch.equal(state.frames[row, : history - 1], s0[b, :-1])
            assert torch.equal(state.chains.s0[row], s0[b, -1]) and torch.equal(state.states[row, 0], s0[b, -1])
    result = planner.plan(s0, goal)
    assert result.actions.shape == (batch, horizon, 2)
    assert torch.all((0 <= result.info["particle"]) & (result.info["particle"] < particles))
    torch.testing.assert_close(result.rollout, rollout(model, s0, result.actions, history), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(result.final_distance, (result.rollout[:, -1] - goal).norm(dim=1), rtol=1e-12, atol=1e-12)


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
    with pytest.raises(ValueError, match="state_weights must be > 0"):
        GraspPlanner(model, 2, GraspConfig(horizon=4, history=3), state_weights=-torch.ones(3))
    with pytest.raises(ValueError, match="state_weights must be finite"):
        GraspPlanner(model, 2, GraspConfig(horizon=4, history=3), state_weights=torch.tensor([1.0, float("nan"), 1.0]))
    with pytest.raises(ValueError, match="history must be >= 1"):
        GraspConfig(history=0)


def test_zero_state_weights_are_rejected():
    """A zero weight would leave that component unconstrained: Adam never moves it, the Langevin noise
    random-walks it and the world model is fed the drifting value."""
    model = PatchTransformerDynamics(2, 3, 2, history=3)
    weights = torch.ones(2, 3)
    weights[1, 2] = 0.0
    with pytest.raises(ValueError, match=r"state_weights must be > 0 .*unconstrained by the dynamics.*small positive weight"):
        GraspPlanner(model, 2, GraspConfig(horizon=4, history=3), state_shape=(2, 3), state_weights=weights)
    GraspPlanner(model, 2, GraspConfig(horizon=4, history=3), state_shape=(2, 3), state_weights=weights.clamp(min=1e-3))


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
    """The mask is frame-causal: a token's encoder output depends on its own and older frames only
    (perturbing a later frame, or the action, which enters the newest frame, leaves earlier frames'
    outputs unchanged). The prediction reads the newest frame's outputs, which see every frame."""
    torch.manual_seed(0)
    p, e = 4, 6
    model = PatchTransformerDynamics(p, e, 3, history=3, width=16, heads=2, depth=2).to(F64)
    captured = []
    model.encoder.register_forward_hook(lambda module, inputs, output: captured.append(output.detach()))

    def encoder_out(x, a):
        captured.clear()
        out = model(x, a)
        return out, captured[-1].view(x.shape[0], 3, p, -1)

    x, a = torch.randn(2, 3, p, e, dtype=F64), torch.randn(2, 3, dtype=F64)
    out, enc = encoder_out(x, a)
    assert out.shape == (2, p, e)
    for frame in range(3):
        moved = x.clone()
        moved[:, frame] += 1.0
        out_moved, enc_moved = encoder_out(moved, a)
        torch.testing.assert_close(enc_moved[:, :frame], enc[:, :frame], rtol=0, atol=0)  # earlier frames: unchanged
        assert (enc_moved[:, frame:] - enc[:, frame:]).abs().amax(dim=(0, 2, 3)).min() > 1e-6  # this and later: changed
        assert not torch.allclose(out_moved, out)  # every frame reaches the prediction
    out_a, enc_a = encoder_out(x, a + 1.0)
    torch.testing.assert_close(enc_a[:, :2], enc[:, :2], rtol=0, atol=0)  # the action enters the newest frame only
    assert not torch.allclose(out_a, out)
    a_req = a.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x, a_req).sum(), a_req)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
