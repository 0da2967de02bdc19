"""The GRASP variants of the authors' released solver: the CEM sync (``GraspConfig(sync="cem")``,
:func:`grasp_kernels.sync.cem_sync`) and goal-weight annealing (``GraspConfig(goal_weight_final=)``); and the
two tried beside them: chains initialised from a short CEM (``init_cem_steps``) and a goal
weight schedule across sync phases (``goal_weight_schedule="plan"``)."""

from __future__ import annotations

import pytest
import torch

from grasp_kernels import GraspConfig, GraspPlanner, backends
from grasp_kernels.rollouts import shooting_loss
from grasp_kernels.sync import cem_sync, cem_sync_variance
from grasp_kernels.models import MLPDynamics
from grasp_kernels.rollouts import rollout
from grasp_kernels.randomness import per_plan_normal, plan_generators

DTYPE = torch.float64


def mlp(state_dim: int = 3, action_dim: int = 2, seed: int = 0) -> MLPDynamics:
    torch.manual_seed(seed)
    return MLPDynamics(state_dim, action_dim, hidden=16, depth=2).to(DTYPE)


def problem(batch: int = 3, horizon: int = 4, dim: int = 3, action_dim: int = 2, seed: int = 1):
    """s0, goal [B, D], actions [B, T, A] and virtual states [B, T+1, D] off their straight line."""
    g = torch.Generator().manual_seed(seed)
    s0 = torch.randn(batch, dim, generator=g, dtype=DTYPE)
    goal = torch.randn(batch, dim, generator=g, dtype=DTYPE)
    actions = 0.3 * torch.randn(batch, horizon, action_dim, generator=g, dtype=DTYPE)
    frac = torch.arange(horizon + 1, dtype=DTYPE).div(horizon).view(1, -1, 1)
    states = s0.unsqueeze(1) + frac * (goal - s0).unsqueeze(1)
    states[:, 1:-1] += 0.2 * torch.randn(batch, horizon - 1, dim, generator=g, dtype=DTYPE)
    return s0, goal, actions, states


def reference_cem_sync(model, s0, goal, actions, states, steps, samples, elites, var_scale, var_min, low, high,
                       generators, initial_var=None):
    """The CEM sync written out with plain loops, one chain at a time (history 1, unweighted); ``initial_var``
    (a float) replaces the variance from the states."""
    batch, horizon, action_dim = actions.shape
    dim = s0.shape[1]
    out, losses = [], []
    for b in range(batch):
        if initial_var is not None:
            var = [initial_var] * horizon
        else:
            dev = []
            for t in range(1, horizon):
                line = [float(states[b, 0, d]) + t / horizon * (float(states[b, -1, d]) - float(states[b, 0, d]))
                        for d in range(dim)]
                dev.append(sum((float(states[b, t, d]) - line[d]) ** 2 for d in range(dim)) / dim)
            dev = [sum(dev) / len(dev)] + dev
            var = [var_scale * v + var_min for v in dev]
        mean = [[float(actions[b, t, a]) for a in range(action_dim)] for t in range(horizon)]

        @torch.no_grad()
        def cost(seq):
            state = s0[b : b + 1]
            for t in range(horizon):
                state = model(state, torch.tensor([seq[t]], dtype=DTYPE))
            return float(((state - goal[b : b + 1]) ** 2).sum())

        for _ in range(steps):
            xi = torch.randn((samples, horizon, action_dim), generator=generators[b], dtype=DTYPE)
            cands = []
            for n in range(samples):
                cand = [[min(max(mean[t][a] + var[t] ** 0.5 * float(xi[n, t, a]), low[a]), high[a])
                         for a in range(action_dim)] for t in range(horizon)]
                cands.append((cost(cand), n, cand))
            best = [c for _, _, c in sorted(cands)[:elites]]
            mean = [[sum(c[t][a] for c in best) / elites for a in range(action_dim)] for t in range(horizon)]
            var = [sum(sum((c[t][a] - mean[t][a]) ** 2 for c in best) / (elites - 1) for a in range(action_dim))
                   / action_dim + var_min for t in range(horizon)]
            mean = [[min(max(mean[t][a], low[a]), high[a]) for a in range(action_dim)] for t in range(horizon)]
        out.append(mean)
        losses.append(cost(mean))
    return torch.tensor(out, dtype=DTYPE), torch.tensor(losses, dtype=DTYPE)


def test_cem_sync_matches_a_plain_loop_reference():
    model = mlp()
    s0, goal, actions, states = problem()
    low, high = [-0.4, -0.5], [0.4, 0.3]
    settings = dict(steps=3, samples=9, elites=3, var_scale=2.0, var_min=0.01)
    expected, expected_loss = reference_cem_sync(
        model, s0, goal, actions, states, **settings, low=low, high=high,
        generators=plan_generators(5, 0, 3, torch.device("cpu")))
    with torch.no_grad():
        loss = cem_sync(model, s0, goal, actions, states, settings["steps"], settings["samples"], settings["elites"],
                        settings["var_scale"], settings["var_min"], torch.tensor(low, dtype=DTYPE),
                        torch.tensor(high, dtype=DTYPE), plan_generators(5, 0, 3, torch.device("cpu")))
    torch.testing.assert_close(actions, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-12, atol=1e-12)


def test_variance_comes_from_the_deviation_from_the_straight_line():
    s0, goal, _, states = problem(batch=2, horizon=4, dim=3)
    on_line = states.clone()
    frac = torch.arange(5, dtype=DTYPE).div(4).view(1, -1, 1)
    on_line[:] = s0.unsqueeze(1) + frac * (goal - s0).unsqueeze(1)
    torch.testing.assert_close(cem_sync_variance(on_line, 3.0, 0.01), torch.full((2, 4), 0.01, dtype=DTYPE))
    moved = on_line.clone()
    moved[:, 2] += 0.5  # every component of s_2: dev_2 = 0.25, dev_0 = mean(0, 0.25, 0) = 0.25 / 3
    expected = torch.tensor([0.25 / 3, 0.0, 0.25, 0.0], dtype=DTYPE) * 3.0 + 0.01
    torch.testing.assert_close(cem_sync_variance(moved, 3.0, 0.01), expected.expand(2, 4))
    single = torch.stack([s0, goal], dim=1)  # T = 1: no virtual state, the floor
    torch.testing.assert_close(cem_sync_variance(single, 3.0, 0.02), torch.full((2, 1), 0.02, dtype=DTYPE))


def test_one_step_with_every_sample_an_elite_refits_the_mean_of_the_clamped_candidates():
    model = mlp()
    s0, goal, actions, states = problem(batch=2)
    low, high = torch.tensor([-0.2, -0.2], dtype=DTYPE), torch.tensor([0.2, 0.2], dtype=DTYPE)
    xi = torch.stack([torch.randn((6, 4, 2), generator=g, dtype=DTYPE)
                      for g in plan_generators(7, 0, 2, torch.device("cpu"))])
    std = cem_sync_variance(states, 1.0, 0.05).sqrt().view(2, 1, 4, 1)
    expected = (actions.unsqueeze(1) + std * xi).clamp(min=low, max=high).mean(dim=1).clamp(min=low, max=high)
    cem_sync(model, s0, goal, actions, states, 1, 6, 6, 1.0, 0.05, low, high,
             plan_generators(7, 0, 2, torch.device("cpu")))
    torch.testing.assert_close(actions, expected, rtol=1e-12, atol=1e-12)


def test_candidates_and_result_respect_the_action_bounds():
    seen = []
    inner = mlp()

    def model(states, actions):
        seen.append(actions.detach().clone())
        return inner(states, actions)

    s0, goal, actions, states = problem()
    states[:, 1:-1] += 5.0  # far off the line: a wide search that the bounds must cut
    low, high = torch.tensor([-0.3, -0.1], dtype=DTYPE), torch.tensor([0.2, 0.4], dtype=DTYPE)
    cem_sync(model, s0, goal, actions, states, 2, 8, 3, 1.0, 0.01, low, high,
             plan_generators(0, 0, 3, torch.device("cpu")))
    every = torch.cat(seen)
    assert bool((every >= low).all() and (every <= high).all())
    assert bool((every == low).any() and (every == high).any())  # the clamp was exercised
    assert bool((actions >= low).all() and (actions <= high).all())


def test_cem_sync_lowers_the_shooting_loss_over_its_phase():
    model = mlp(seed=3)
    s0, goal, actions, states = problem(batch=4, horizon=6, seed=2)
    before = shooting_loss(model, s0, actions, goal).detach()
    after = cem_sync(model, s0, goal, actions, states, 10, 64, 10, 1.0, 0.01, None, None,
                     plan_generators(0, 0, 4, torch.device("cpu")))
    assert bool((after < before).all()), (before, after)
    torch.testing.assert_close(after, shooting_loss(model, s0, actions, goal).detach())


def _cem_config(**changes) -> GraspConfig:
    base = dict(horizon=6, iters=12, sync_every=4, sync_steps=3, sync="cem", cem_sync_samples=8, cem_sync_elites=3,
                particles=2, backend="reference", state_noise=0.01, lr_states=0.05, lr_actions=0.05)
    return GraspConfig(**{**base, **changes})


def test_planner_cem_sync_is_shard_invariant():
    model = mlp()
    g = torch.Generator().manual_seed(4)
    s0, goal = torch.randn(3, 3, generator=g, dtype=DTYPE), torch.randn(3, 3, generator=g, dtype=DTYPE)
    planner = GraspPlanner(model, 2, _cem_config())
    batch = planner.plan(s0, goal)
    for i in range(3):
        alone = planner.plan(s0[i : i + 1], goal[i : i + 1], plan_offset=i)
        # same random numbers, hence the same elites; only the BLAS's batch-size-dependent rounding of
        # the world model's matmuls may differ (as tests/test_shard_invariance.py allows)
        torch.testing.assert_close(alone.actions[0], batch.actions[i], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(alone.info["sync_loss"][:, 0], batch.info["sync_loss"][:, i], rtol=1e-10, atol=1e-12)
    shifted = planner.plan(s0[:1], goal[:1], plan_offset=1)  # another plan's random numbers
    assert not torch.allclose(shifted.actions[0], batch.actions[0])


def test_planner_cem_sync_records_the_loss_of_the_synced_actions_and_lowers_it():
    model = mlp(seed=3)
    g = torch.Generator().manual_seed(2)
    s0, goal = torch.randn(2, 3, generator=g, dtype=DTYPE), torch.randn(2, 3, generator=g, dtype=DTYPE)
    config = _cem_config(iters=4, sync_every=4, cem_sync_samples=32, cem_sync_elites=6, sync_steps=6, particles=1)
    planner = GraspPlanner(model, 2, config)
    state = planner.start(s0, goal)
    for _ in range(4):
        planner.iteration(state)
    before = shooting_loss(model, state.chains.s0, state.actions, state.chains.goal).detach()
    loss = planner.sync(state)
    torch.testing.assert_close(loss, shooting_loss(model, state.chains.s0, state.actions, state.chains.goal).detach())
    assert bool((loss < before).all())
    torch.testing.assert_close(state.sync_losses[0], loss)
    assert state.syncs == 1 and state.adam_step == 0


def test_planner_cem_sync_with_history_windows():
    class Windowed(torch.nn.Module):
        history = 2

        def __init__(self):
            super().__init__()
            self.inner = mlp()

        def forward(self, windows, actions):  # [N, 2, D], [N, A]
            return self.inner(windows[:, -1], actions) + 0.1 * (windows[:, -1] - windows[:, 0])

    g = torch.Generator().manual_seed(0)
    s0, goal = torch.randn(2, 2, 3, generator=g, dtype=DTYPE), torch.randn(2, 3, generator=g, dtype=DTYPE)
    result = GraspPlanner(Windowed(), 2, _cem_config(history=2)).plan(s0, goal)
    assert result.actions.shape == (2, 6, 2)
    assert result.info["sync_loss"].shape == (3, 2) and bool(torch.isfinite(result.info["sync_loss"]).all())


def _spy_gamma_and_sigma(monkeypatch) -> tuple[list[float], list[float]]:
    """Lists that record, per lifted iteration, the gamma the energy op and the noise std the state step get."""
    import grasp_kernels.lifted as lifted_module

    gammas, sigmas = [], []
    real_energy, real_step = lifted_module.ops.lifted_energy_grads, lifted_module.ops.state_step_

    def energy_spy(pred, states, gamma, **kwargs):
        gammas.append(gamma)
        return real_energy(pred, states, gamma, **kwargs)

    def step_spy(*args, **kwargs):
        sigmas.append(args[6])  # noise_std (after states, grad, exp_avg, exp_avg_sq, step, adam)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(lifted_module.ops, "lifted_energy_grads", energy_spy)
    monkeypatch.setattr(lifted_module.ops, "state_step_", step_spy)
    return gammas, sigmas


@pytest.mark.parametrize("sync_every,expected", [(4, [1.0, 0.8, 0.6, 0.4, 1.0, 0.8, 0.6, 0.4]),
                                                 (0, [1.0 - 0.8 * k / 8 for k in range(8)])])
def test_goal_weight_anneals_within_each_sync_phase_on_the_noise_schedule(monkeypatch, sync_every, expected):
    gammas, sigmas = _spy_gamma_and_sigma(monkeypatch)
    config = GraspConfig(horizon=5, iters=8, sync_every=sync_every, sync_steps=1, goal_weight=1.0,
                         goal_weight_final=0.2, state_noise=0.5, anneal_noise=True, backend="reference")
    GraspPlanner(lambda s, a: s + 0.1 * a, 2, config).plan(torch.zeros(2, 2), torch.ones(2, 2))
    assert gammas == pytest.approx(expected)
    # the one schedule: gamma and sigma are at the same fraction of their decay every iteration
    assert [(1.0 - g) / 0.8 for g in gammas] == pytest.approx([1.0 - s / 0.5 for s in sigmas])
    gammas.clear()
    GraspPlanner(lambda s, a: s + 0.1 * a, 2, config.replace(goal_weight_final=None)).plan(
        torch.zeros(2, 2), torch.ones(2, 2))
    assert gammas == pytest.approx([1.0] * 8)


def test_goal_weight_schedule_across_phases_decays_over_the_whole_plan(monkeypatch):
    gammas, sigmas = _spy_gamma_and_sigma(monkeypatch)
    config = GraspConfig(horizon=5, iters=8, sync_every=4, sync_steps=1, goal_weight=1.0, goal_weight_final=0.2,
                         goal_weight_schedule="plan", state_noise=0.5, anneal_noise=True, backend="reference")
    GraspPlanner(lambda s, a: s + 0.1 * a, 2, config).plan(torch.zeros(2, 2), torch.ones(2, 2))
    assert gammas == pytest.approx([1.0 - 0.8 * k / 8 for k in range(8)])  # no restart at the phase boundary
    assert sigmas == pytest.approx([0.5, 0.375, 0.25, 0.125] * 2)  # the noise keeps its per-phase schedule


def _init_problem(batch: int = 3, seed: int = 6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, generator=g, dtype=DTYPE), torch.randn(batch, 3, generator=g, dtype=DTYPE)


@pytest.mark.parametrize("init_noise", [0.0, 0.05])
def test_cem_initialisation_matches_the_reference_and_starts_the_states_on_its_rollout(init_noise):
    model = mlp(seed=2)
    s0, goal = _init_problem()
    config = GraspConfig(horizon=5, iters=0, init_cem_steps=3, init_cem_var=0.6, cem_sync_samples=9,
                         cem_sync_elites=3, cem_sync_var_min=0.02, init_noise=init_noise, action_low=[-0.5, -0.7],
                         action_high=[0.6, 0.4], seed=11, backend="reference")
    state = GraspPlanner(model, 2, config).start(s0, goal, init_actions=torch.full((3, 5, 2), 0.1, dtype=DTYPE))
    generators = plan_generators(11, 0, 3, torch.device("cpu"))
    noise = per_plan_normal(generators, (4, 3), torch.device("cpu"), DTYPE) if init_noise else 0.0
    expected, _ = reference_cem_sync(
        model, s0, goal, torch.full((3, 5, 2), 0.1, dtype=DTYPE), None, 3, 9, 3, None, 0.02, [-0.5, -0.7], [0.6, 0.4],
        generators, initial_var=0.6)
    torch.testing.assert_close(state.actions, expected, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        path = rollout(model, s0, expected)
    torch.testing.assert_close(state.states[:, 1:-1], path[:, 1:-1] + init_noise * noise, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state.states[:, 0], s0)
    torch.testing.assert_close(state.states[:, -1], goal)


def test_cem_initialised_chains_differ_and_plans_are_shard_invariant():
    model = mlp(seed=2)
    s0, goal = _init_problem()
    config = GraspConfig(horizon=5, iters=6, sync_every=3, sync_steps=2, particles=3, init_cem_steps=2,
                         cem_sync_samples=8, cem_sync_elites=3, backend="reference")
    planner = GraspPlanner(model, 2, config)
    chains = planner.start(s0, goal).actions.view(3, 3, 5, 2)
    assert not torch.allclose(chains[:, 0], chains[:, 1]) and not torch.allclose(chains[:, 1], chains[:, 2])
    batch = planner.plan(s0, goal)
    for i in range(3):
        alone = planner.plan(s0[i : i + 1], goal[i : i + 1], plan_offset=i)
        torch.testing.assert_close(alone.actions[0], batch.actions[i], rtol=1e-10, atol=1e-12)


def test_cem_initialisation_lowers_the_shooting_loss_of_the_initial_actions():
    model = mlp(seed=3)
    s0, goal = _init_problem(batch=4, seed=2)
    config = GraspConfig(horizon=6, iters=0, init_cem_steps=5, cem_sync_samples=64, init_noise=0.0,
                         backend="reference")
    state = GraspPlanner(model, 2, config).start(s0, goal)
    plain = GraspPlanner(model, 2, config.replace(init_cem_steps=0)).start(s0, goal)
    with torch.no_grad():
        before = shooting_loss(model, s0, plain.actions, goal)
        after = shooting_loss(model, s0, state.actions, goal)
    assert bool((after < before).all()), (before, after)


@pytest.mark.parametrize(
    "changes,kind,match",
    [
        (dict(sync="adam"), ValueError, r"sync must be one of \('gd', 'cem'\), got 'adam'"),
        (dict(cem_sync_samples=1), ValueError, "cem_sync_samples must be >= 2"),
        (dict(cem_sync_samples=8.0), TypeError, "cem_sync_samples must be an int"),
        (dict(cem_sync_elites=1), ValueError, "cem_sync_elites must be >= 2"),
        (dict(cem_sync_elites=65), ValueError, "cem_sync_elites must be <= cem_sync_samples = 64, got 65"),
        (dict(cem_sync_var_scale=-1.0), ValueError, "cem_sync_var_scale must be a finite non-negative"),
        (dict(cem_sync_var_min=0.0), ValueError, "cem_sync_var_min must be a finite positive"),
        (dict(cem_sync_var_min="0.1"), TypeError, "cem_sync_var_min must be a float"),
        (dict(goal_weight_final=-0.5), ValueError, "goal_weight_final must be a finite non-negative"),
        (dict(goal_weight_final=float("nan")), ValueError, "goal_weight_final must be a finite"),
        (dict(goal_weight_final=True), TypeError, "goal_weight_final must be a float"),
        (dict(goal_weight_schedule="sync"), ValueError, r"goal_weight_schedule must be one of \('phase', 'plan'\)"),
        (dict(init_cem_steps=-1), ValueError, "init_cem_steps must be >= 0"),
        (dict(init_cem_var=0.0), ValueError, "init_cem_var must be a finite positive"),
    ],
)
def test_bad_config_values_name_the_field(changes, kind, match):
    with pytest.raises(kind, match=match):
        GraspConfig(**changes)


def test_fast_paths_warn_or_refuse():
    model = mlp()
    backends._warned.clear()
    with pytest.warns(backends.BackendFallbackWarning, match="sync='cem' runs eagerly"):
        GraspPlanner(model, 2, _cem_config(compile=True))
    with pytest.warns(backends.BackendFallbackWarning, match="goal_weight_final set"):
        GraspPlanner(model, 2, GraspConfig(compile=True, goal_weight_final=0.0))
    with pytest.warns(backends.BackendFallbackWarning, match="the CEM sync runs on the plain path"):
        GraspPlanner(mlp().float(), 2, _cem_config(fused_mlp=True))
    backends._warned.clear()
    from grasp_kernels.distributed.time_sharding import TimeShardedPlanner

    with pytest.raises(ValueError, match="does not support config sync='cem'"):
        TimeShardedPlanner(model, 2, _cem_config(particles=1))
