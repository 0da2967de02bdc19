"""The GRASP planner on the reference backend: behaviour, batching over time, seeds, errors."""

from __future__ import annotations

import pytest
import torch

from grasp_kernels import GraspConfig, GraspPlanner, PlanResult
from grasp_kernels._problem import NonFiniteError
from grasp_kernels.envs import make_task
from grasp_kernels.models import MLPDynamics
from grasp_kernels.rollouts import rollout, shooting_loss

OPEN_FIELD = dict(lr_states=0.003, lr_actions=0.03, goal_weight=0.1, state_noise=0.0, init_noise=0.0)


class CountingModel(torch.nn.Module):
    """Wraps a world model and records the batch size of every call."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls: list[int] = []

    def forward(self, states, actions):
        self.calls.append(states.shape[0])
        return self.inner(states, actions)


def mlp(state_dim=3, action_dim=2, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return MLPDynamics(state_dim, action_dim, hidden=32, depth=2).to(dtype)


def test_energy_decreases_on_open_field():
    task = make_task("open")
    s0, goal = task.sample(6, seed=3)
    config = GraspConfig(horizon=40, iters=200, sync_every=0, **OPEN_FIELD)
    result = GraspPlanner(task.world_model, 2, config).plan(s0, goal)
    history = result.energy_history
    assert history.shape == (200, 6)
    assert torch.all(history[-10:].mean(0) < 0.5 * history[0])


def test_every_iteration_is_one_model_call_over_all_rows():
    model = CountingModel(mlp())
    batch, horizon, iters, particles = 3, 7, 5, 2
    config = GraspConfig(horizon=horizon, iters=iters, sync_every=0, particles=particles, backend="reference")
    g = torch.Generator().manual_seed(0)
    GraspPlanner(model, 2, config).plan(torch.randn(batch, 3, generator=g), torch.randn(batch, 3, generator=g))
    rows = batch * particles
    lifted_calls, rollout_calls = model.calls[:iters], model.calls[iters:]
    assert lifted_calls == [rows * horizon] * iters
    assert rollout_calls == [rows] * horizon  # the final rollout: the only sequential part


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_batched_iteration_equals_per_timestep_iteration(stop_gradient):
    config = GraspConfig(horizon=6, iters=3, sync_every=0, state_noise=0.0, stop_gradient=stop_gradient, backend="reference")
    planner = GraspPlanner(mlp(dtype=torch.float64), 2, config)
    g = torch.Generator().manual_seed(4)
    s0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    goal = torch.randn(4, 3, generator=g, dtype=torch.float64)
    init = torch.rand(4, 6, 2, generator=g, dtype=torch.float64) - 0.5
    batched, looped = planner.start(s0, goal, init), planner.start(s0, goal, init)
    for _ in range(3):
        e_batched = planner.iteration(batched)
        e_looped = planner.iteration(looped, per_timestep=True)
        torch.testing.assert_close(e_batched, e_looped, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(batched.states, looped.states, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(batched.actions, looped.actions, rtol=1e-12, atol=1e-12)


def test_stop_gradient_ablation_adds_the_state_input_gradient():
    """For F(s, a) = s + a (J_s = I), dropping the stop-gradient adds dE/dp_t to dE/ds_t."""
    model = lambda s, a: s + a  # noqa: E731
    g = torch.Generator().manual_seed(8)
    s0, goal = torch.randn(2, 2, generator=g, dtype=torch.float64), torch.randn(2, 2, generator=g, dtype=torch.float64)
    init = torch.rand(2, 5, 2, generator=g, dtype=torch.float64) * 0.2
    grads = {}
    for stop in (True, False):
        config = GraspConfig(horizon=5, iters=1, sync_every=0, state_noise=0.0, init_noise=0.1, lr_states=1e-3,
                             stop_gradient=stop, backend="reference", action_low=None, action_high=None)
        planner = GraspPlanner(model, 2, config)
        state = planner.start(s0, goal, init)
        before = state.states.clone()
        planner.iteration(state)
        # first Adam step: the update is -lr * sign(grad) (up to eps), so compare signs of the moments
        grads[stop] = (state.state_moments[0] / (1 - config.beta1), before)
    states = grads[True][1]
    assert torch.equal(states, grads[False][1])
    pred = states[:, :5] + init
    dpred = 2 * (pred - states[:, 1:]) + 2 * config.goal_weight * (pred - states[:, -1:])
    extra = torch.zeros_like(states)
    extra[:, 1:-1] = dpred[:, 1:]
    torch.testing.assert_close(grads[False][0], grads[True][0] + extra, rtol=1e-10, atol=1e-12)


def test_same_seed_same_plan_and_different_seed_different_plan():
    task = make_task("open")
    s0, goal = task.sample(3, seed=1)
    config = GraspConfig(horizon=20, iters=30, sync_every=10, sync_steps=3, **{**OPEN_FIELD, "state_noise": 0.01, "init_noise": 0.01})
    first = GraspPlanner(task.world_model, 2, config).plan(s0, goal)
    again = GraspPlanner(task.world_model, 2, config).plan(s0, goal)
    other = GraspPlanner(task.world_model, 2, config.replace(seed=1)).plan(s0, goal)
    assert torch.equal(first.actions, again.actions) and torch.equal(first.states, again.states)
    assert not torch.equal(first.actions, other.actions)


def test_sync_phases_lower_the_shooting_loss():
    task = make_task("open")
    s0, goal = task.sample(4, seed=2)
    config = GraspConfig(horizon=30, iters=20, sync_every=10, sync_steps=15, **OPEN_FIELD)
    planner = GraspPlanner(task.world_model, 2, config)
    state = planner.start(s0, goal)
    for _ in range(10):
        planner.iteration(state)
    assert state.sync_due
    before = shooting_loss(task.world_model, state.chains.s0, state.actions, state.chains.goal)
    planner.sync(state)
    after = shooting_loss(task.world_model, state.chains.s0, state.actions, state.chains.goal)
    assert torch.all(after < before)
    assert state.adam_step == 0 and all(torch.all(m == 0) for m in (*state.state_moments, *state.action_moments))


def test_result_shapes_rollout_and_best_particle():
    task = make_task("open")
    s0, goal = task.sample(3, seed=5)
    config = GraspConfig(horizon=12, iters=20, sync_every=10, sync_steps=2, particles=4, **{**OPEN_FIELD, "state_noise": 0.05})
    result = GraspPlanner(task.world_model, 2, config).plan(s0, goal)
    assert isinstance(result, PlanResult)
    assert result.actions.shape == (3, 12, 2)
    assert result.states.shape == result.rollout.shape == (3, 13, 2)
    assert result.energy_history.shape == (20, 3) and result.final_distance.shape == (3,)
    torch.testing.assert_close(result.rollout, rollout(task.world_model, s0, result.actions))
    torch.testing.assert_close(result.final_distance, (result.rollout[:, -1] - goal).norm(dim=1))
    assert torch.equal(result.states[:, 0], s0) and torch.equal(result.states[:, -1], goal)
    assert result.actions.abs().max() <= 1.0
    assert result.info["particle"].shape == (3,) and int(result.info["particle"].max()) < 4
    assert result.info["sync_loss"].shape == (2, 3)


def test_best_of_particles_is_no_worse_than_each_chain():
    task = make_task("open")
    s0, goal = task.sample(2, seed=6)
    base = GraspConfig(horizon=15, iters=20, sync_every=0, **{**OPEN_FIELD, "state_noise": 0.05, "init_noise": 0.05})
    planner = GraspPlanner(task.world_model, 2, base.replace(particles=3))
    state = planner.start(s0, goal)
    for _ in range(base.iters):
        planner.iteration(state)
    chains = (rollout(task.world_model, state.chains.s0, state.actions)[:, -1] - state.chains.goal).norm(dim=1)
    result = planner.finish(state)
    torch.testing.assert_close(result.final_distance, chains.view(2, 3).min(dim=1).values)


def test_single_plan_and_structured_states():
    model = lambda s, a: s + 0.1 * a.view(-1, 2, 1).expand_as(s)  # noqa: E731  states [N, 2, 3]
    config = GraspConfig(horizon=8, iters=10, sync_every=5, sync_steps=2)
    planner = GraspPlanner(model, 2, config, state_shape=(2, 3))
    s0, goal = torch.zeros(2, 3), torch.ones(2, 3) * 0.3
    single = planner.plan(s0, goal)
    assert single.actions.shape == (8, 2) and single.states.shape == (9, 2, 3) and single.final_distance.dim() == 0
    batched = planner.plan(s0.expand(4, 2, 3).contiguous(), goal.expand(4, 2, 3).contiguous())
    assert batched.states.shape == (4, 9, 2, 3) and batched.energy_history.shape == (10, 4)


def test_float64_plan_and_warm_start():
    model = mlp(dtype=torch.float64)
    g = torch.Generator().manual_seed(9)
    s0, goal = torch.randn(2, 3, generator=g, dtype=torch.float64), torch.randn(2, 3, generator=g, dtype=torch.float64)
    warm = torch.full((6, 2), 0.25, dtype=torch.float64)
    config = GraspConfig(horizon=6, iters=0, sync_every=0)
    result = GraspPlanner(model, 2, config).plan(s0, goal, init_actions=warm)
    assert result.actions.dtype == torch.float64
    assert torch.equal(result.actions, warm.expand(2, 6, 2))


# ---- bad input ---------------------------------------------------------------------------------


def _planner(**changes):
    config = GraspConfig(horizon=4, iters=3, sync_every=0).replace(**changes)
    return GraspPlanner(lambda s, a: s + a.sum(-1, keepdim=True), 2, config)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: GraspConfig(horizon=0), "horizon must be >= 1"),
        (lambda: GraspConfig(horizon=2.5), "horizon must be an int"),
        (lambda: GraspConfig(lr_states=0.0), "lr_states must be a finite positive"),
        (lambda: GraspConfig(beta2=1.0), r"beta2 must be in \[0, 1\)"),
        (lambda: GraspConfig(backend="opencl"), "backend must be one of"),
        (lambda: GraspConfig(action_low="x"), "action_low must be None, a float or a sequence"),
        (lambda: GraspConfig(particles=0), "particles must be >= 1"),
        (lambda: GraspConfig(stop_gradient="False"), "stop_gradient must be a bool"),
        (lambda: GraspPlanner(lambda s, a: s, 0), "action_dim must be an int >= 1"),
        (lambda: GraspPlanner(3, 2), "world_model must be callable"),
    ],
)
def test_config_and_constructor_errors(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.mark.parametrize(
    "args,match",
    [
        ((torch.zeros(2, 3), torch.zeros(2, 4)), r"goal must have the shape of s0"),
        ((torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64)), "goal must have dtype"),
        ((torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 3, dtype=torch.int64)), "s0 must have dtype"),
        ((torch.zeros(2, 3), torch.zeros(2, 3, device="meta")), "goal must be on device cpu"),
        ((torch.full((2, 3), float("nan")), torch.zeros(2, 3)), "s0 contains 6 NaN/Inf"),
        (([0.0, 1.0], torch.zeros(2)), "s0 must be a torch.Tensor"),
    ],
)
def test_plan_input_errors(args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _planner().plan(*args)


def test_bounds_of_the_wrong_length():
    with pytest.raises(ValueError, match=r"action_low must have one value per action dimension \(2\)"):
        _planner(action_low=[-1.0, -1.0, -1.0]).plan(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="action_low must be <= action_high"):
        _planner(action_low=1.0, action_high=-1.0).plan(torch.zeros(2, 3), torch.ones(2, 3))


def test_warm_start_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"init_actions must have shape \[2, 4, 2\]"):
        _planner().plan(torch.zeros(2, 3), torch.ones(2, 3), init_actions=torch.zeros(2, 5, 2))
    with pytest.raises(TypeError, match="init_actions must be a torch.Tensor"):
        _planner().plan(torch.zeros(3), torch.ones(3), init_actions=[[0.0, 0.0]] * 4)


def test_world_model_returning_the_wrong_shape():
    planner = GraspPlanner(lambda s, a: s[:, :2], 2, GraspConfig(horizon=4, iters=2, sync_every=0))
    with pytest.raises(ValueError, match=r"world_model returned shape \(8, 2\) .*expected \(8, 3\)"):
        planner.plan(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(TypeError, match="world_model must return a torch.Tensor"):
        GraspPlanner(lambda s, a: s.tolist(), 2, GraspConfig(horizon=4, iters=2)).plan(torch.zeros(2, 3), torch.ones(2, 3))


def test_world_model_turning_nan_mid_plan_names_the_iteration():
    calls = {"n": 0}

    def model(states, actions):
        calls["n"] += 1
        out = states + 0.1 * actions.sum(-1, keepdim=True)
        return out * float("nan") if calls["n"] == 8 else out

    config = GraspConfig(horizon=4, iters=30, sync_every=10, sync_steps=1)
    with pytest.raises(NonFiniteError, match="at iteration 7"):
        GraspPlanner(model, 2, config).plan(torch.zeros(2, 3), torch.ones(2, 3))
    assert calls["n"] == 10  # stopped at the first check after the NaN, not at the end


def test_triton_backend_plans_like_the_reference():
    """Same plan on the triton backend (fused energy + state step) as on the reference, without
    noise; the world model saves its state input for backward (the fused op updates the states in
    place before the action VJP)."""
    from grasp_kernels.backends import backend_unavailable_reason

    reason = backend_unavailable_reason("triton", torch.device("cpu"))
    if reason is not None:
        pytest.skip(reason)

    def model(states, actions):  # saves `states` for the backward of the product
        return states + states * (0.1 * actions.sum(-1, keepdim=True).tanh()) + 0.1 * actions.mean(-1, keepdim=True)

    g = torch.Generator().manual_seed(21)
    config = GraspConfig(horizon=7, iters=12, sync_every=6, sync_steps=2, state_noise=0.0, init_noise=0.05)
    for batch in (1, 3):  # B = 1: the model's state input is a view of the states, not a copy
        s0, goal = torch.randn(batch, 5, generator=g), torch.randn(batch, 5, generator=g)
        plans = {b: GraspPlanner(model, 2, config.replace(backend=b)).plan(s0, goal) for b in ("reference", "triton")}
        assert plans["triton"].info["backend"] == "triton"
        for field in ("actions", "states", "energy_history"):
            torch.testing.assert_close(getattr(plans["triton"], field), getattr(plans["reference"], field), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sync_every,expected", [(4, [0.2, 0.15, 0.1, 0.05, 0.2, 0.15, 0.1, 0.05]), (0, [0.2 * (1 - k / 8) for k in range(8)])])
def test_annealed_noise_decays_within_each_sync_phase(monkeypatch, sync_every, expected):
    import grasp_kernels.planner as planner_module

    seen = []
    real = planner_module.ops.state_step_

    def spy(*args, **kwargs):
        seen.append(args[6])  # noise_std, after states, grad, exp_avg, exp_avg_sq, step, adam
        return real(*args, **kwargs)

    monkeypatch.setattr(planner_module.ops, "state_step_", spy)
    config = GraspConfig(horizon=5, iters=8, sync_every=sync_every, sync_steps=1, state_noise=0.2, anneal_noise=True,
                         backend="reference")
    GraspPlanner(lambda s, a: s + 0.1 * a, 2, config).plan(torch.zeros(2, 2), torch.ones(2, 2))
    assert seen == pytest.approx(expected)
    seen.clear()
    GraspPlanner(lambda s, a: s + 0.1 * a, 2, config.replace(anneal_noise=False)).plan(torch.zeros(2, 2), torch.ones(2, 2))
    assert seen == pytest.approx([0.2] * 8)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_mixed_precision_runs_the_model_in_bf16_and_keeps_the_plan_in_fp32(backend):
    from grasp_kernels.backends import backend_unavailable_reason

    if backend_unavailable_reason(backend, torch.device("cpu")) is not None:
        pytest.skip(backend_unavailable_reason(backend, torch.device("cpu")))
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(7, 32), torch.nn.Tanh(), torch.nn.Linear(32, 5))

    def model(states, actions):  # not residual: under autocast its output is bfloat16
        return net(torch.cat([states, actions], dim=-1))

    matmul_dtypes = []
    hook = net[0].register_forward_hook(lambda mod, inp, out: matmul_dtypes.append(out.dtype))
    g = torch.Generator().manual_seed(5)
    s0, goal = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    config = GraspConfig(horizon=6, iters=12, sync_every=6, sync_steps=2, state_noise=0.0, backend=backend)
    full = GraspPlanner(model, 2, config).plan(s0, goal)
    matmul_dtypes.clear()
    half = GraspPlanner(model, 2, config.replace(model_dtype="bfloat16")).plan(s0, goal)
    hook.remove()
    assert matmul_dtypes and set(matmul_dtypes) == {torch.bfloat16}  # lifted, sync and final rollout calls
    for field in ("actions", "states", "rollout", "final_distance", "energy_history"):
        assert getattr(half, field).dtype == torch.float32, field
    rel = (half.energy_history - full.energy_history).norm() / full.energy_history.norm()
    assert 0 < rel < 3e-2  # bf16 matmuls: close to the float32 plan, not identical
    torch.testing.assert_close(half.rollout, rollout(lambda s, a: model(s, a).float(), s0, half.actions), rtol=3e-2, atol=3e-2)


def test_model_dtype_errors():
    with pytest.raises(ValueError, match="model_dtype must be one of"):
        GraspConfig(model_dtype="int8")
    with pytest.raises(ValueError, match="fused_mlp=True\\) cannot be used: .*float16"):
        GraspPlanner(mlp(), 2, GraspConfig(fused_mlp=True, model_dtype="float16"))


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_no_host_sync_inside_the_lifted_loop(monkeypatch, backend):
    """No tensor is read back to the host during lifted iterations (no .item(), no bool(tensor)):
    on a GPU each would be a device sync. The checks run per sync phase only."""
    from grasp_kernels.backends import backend_unavailable_reason

    if backend_unavailable_reason(backend, torch.device("cpu")) is not None:
        pytest.skip(backend_unavailable_reason(backend, torch.device("cpu")))
    config = GraspConfig(horizon=6, iters=4, sync_every=0, backend=backend, seed=3)
    planner = GraspPlanner(mlp(), 2, config)
    g = torch.Generator().manual_seed(0)
    state = planner.start(torch.randn(3, 3, generator=g), torch.randn(3, 3, generator=g))
    reads = []
    for name in ("__bool__", "item", "tolist", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    for _ in range(config.iters):
        planner.iteration(state)
    monkeypatch.undo()
    assert reads == []
