"""GraspConfig.stop_tolerance: a plan stops at the first sync phase at which no chain's mean energy over the
phase fell by more than the tolerance; what it returns is then the shorter plan's."""

from __future__ import annotations

import math

import pytest
import torch

from grasp_kernels import GraspConfig, GraspPlanner
from grasp_kernels.distributed import TimeShardedPlanner
from grasp_kernels.envs import make_task
from grasp_kernels.models import MLPDynamics
from grasp_kernels.plan_state import PlanState


def _problem(batch=3, seed=0):
    torch.manual_seed(seed)
    model = MLPDynamics(3, 2, hidden=16, depth=2)
    g = torch.Generator().manual_seed(seed + 1)
    return model, torch.randn(batch, 3, generator=g), torch.randn(batch, 3, generator=g)


def _config(**changes):
    fields = dict(horizon=5, iters=40, sync_every=8, sync_steps=3, particles=2, backend="reference", seed=4)
    return GraspConfig(**{**fields, **changes})


def test_a_tolerance_no_phase_beats_stops_after_the_second_phase_with_the_shorter_plans_result():
    model, s0, goal = _problem()
    stopped = GraspPlanner(model, 2, _config(stop_tolerance=1e9)).plan(s0, goal)
    short = GraspPlanner(model, 2, _config(iters=16)).plan(s0, goal)
    assert stopped.info["iterations"] == 16 and stopped.energy_history.shape == (16, 3)
    assert stopped.info["sync_loss"].shape == (2, 3)
    for name in ("actions", "states", "rollout", "final_distance", "energy_history"):
        torch.testing.assert_close(getattr(stopped, name), getattr(short, name), rtol=0, atol=0)


def test_zero_tolerance_runs_every_iteration():
    model, s0, goal = _problem()
    assert GraspPlanner(model, 2, _config()).plan(s0, goal).info["iterations"] == 40


def test_a_converging_plan_stops_at_a_phase_where_its_energy_flattened_and_ends_near_the_full_plan():
    task = make_task("open")
    s0, goal = task.sample(6, seed=3)
    config = GraspConfig(horizon=20, iters=400, sync_every=20, sync_steps=5, lr_states=0.003, lr_actions=0.03,
                         goal_weight=0.1, state_noise=0.0, init_noise=0.0)
    full = GraspPlanner(task.world_model, 2, config).plan(s0, goal)
    stopped = GraspPlanner(task.world_model, 2, config.replace(stop_tolerance=0.01)).plan(s0, goal)
    ran = stopped.info["iterations"]
    assert 40 <= ran < 400 and ran % 20 == 0
    windows = full.energy_history[:ran].reshape(ran // 20, 20, 6).mean(dim=1)
    assert bool(((windows[-2] - windows[-1]) / windows[-2] <= 0.01).all())  # flat where it stopped ...
    assert bool(((windows[:-1][-2] - windows[:-1][-1]) / windows[:-1][-2] > 0.01).any())  # ... not a phase before
    assert float(stopped.final_distance.max()) < 1.5 * float(full.final_distance.max()) + 0.02


def _state(energies, window):
    """A plan state at a sync phase after ``energies [iterations, chains]`` (a NaN-filled tail, as allocated)."""
    energies = torch.tensor(energies, dtype=torch.float64)
    state = PlanState.__new__(PlanState)
    state.energy_history = torch.cat([energies, torch.full((3, energies.shape[1]), float("nan"), dtype=torch.float64)])
    state.iteration, state.sync_every = energies.shape[0], window
    return state


@pytest.mark.parametrize("energies,window,tolerance,stalled", [
    ([[4.0], [2.0]], 2, 0.5, False),                      # one phase of iterations: nothing to compare
    ([[4.0], [2.0]], 1, 0.5, True),                       # 4 -> 2: a fall of 50 %, not more than 50 %
    ([[4.0], [2.0]], 1, 0.4, False),
    ([[2.0, 1.0], [2.0, 1.0], [1.0, 1.0], [1.0, 1.0]], 2, 0.1, False),   # chain 0 fell 50 %
    ([[2.0, 1.0], [2.0, 1.0], [1.9, 1.0], [1.9, 1.0]], 2, 0.1, True),    # every chain fell <= 10 %
    ([[1.0, 1.0], [1.0, 1.0], [1.5, 2.0], [1.5, 2.0]], 2, 0.0, True),    # rose: no fall
    ([[9.0], [3.0], [4.0], [2.0]], 2, 0.5, True),         # window means 6 -> 3
    ([[9.0], [3.0], [4.0], [2.0]], 2, 0.49, False),
])
def test_stalled_compares_each_chains_mean_energy_over_the_last_two_phases(energies, window, tolerance, stalled):
    assert _state(energies, window).stalled(tolerance) is stalled


@pytest.mark.parametrize("changes,error,match", [
    (dict(stop_tolerance=-0.1), ValueError, "stop_tolerance must be a finite non-negative"),
    (dict(stop_tolerance=math.nan), ValueError, "stop_tolerance must be a finite non-negative"),
    (dict(stop_tolerance="0.1"), TypeError, "stop_tolerance must be a float"),
    (dict(stop_tolerance=0.1, sync_every=0), ValueError, "stop_tolerance > 0 needs sync phases"),
    (dict(stop_tolerance=0.1, sync_steps=0), ValueError, "stop_tolerance > 0 needs sync phases"),
    (dict(stop_tolerance=0.1, cuda_graph=True), ValueError, "cuda_graph"),
])
def test_bad_tolerances_name_the_field(changes, error, match):
    with pytest.raises(error, match=match):
        _config(**changes)


def test_time_sharding_refuses_a_tolerance():
    model, _, _ = _problem()
    with pytest.raises(ValueError, match="stop_tolerance"):
        TimeShardedPlanner(model, 2, _config(stop_tolerance=0.1))
