"""Baselines reach the goal on an easy task; ablations; their errors."""

from __future__ import annotations

import pytest
import torch

from grasp_kernels import GraspConfig, GraspPlanner
from grasp_kernels.baselines import (
    ABLATIONS,
    CEMConfig,
    CEMPlanner,
    GDConfig,
    GDPlanner,
    MPPIConfig,
    MPPIPlanner,
    ablation_config,
)
from grasp_kernels.envs import make_task
from grasp_kernels.rollouts import rollout


@pytest.fixture(scope="module")
def open_task():
    task = make_task("open")
    s0, goal = task.sample(6, seed=11)
    return task, s0, goal


@pytest.mark.parametrize(
    "make",
    [
        lambda m: GDPlanner(m, 2, GDConfig(horizon=20, iters=60, lr=0.1)),
        lambda m: CEMPlanner(m, 2, CEMConfig(horizon=20, samples=100, topk=10, iters=10)),
        # temperature 0.01: at the default 0.05 the worst of the 6 plans ends at ~0.10-0.12 for most seeds,
        # on the success radius (0.1); the test passed on the draws of one seed only
        lambda m: MPPIPlanner(m, 2, MPPIConfig(horizon=20, samples=100, iters=30, temperature=0.01)),
    ],
    ids=["gd", "cem", "mppi"],
)
def test_baselines_reach_the_goal_on_the_open_field(open_task, make):
    task, s0, goal = open_task
    result = make(task.world_model).plan(s0, goal)
    start_distance = (s0 - goal).norm(dim=1)
    assert result.actions.shape == (6, 20, 2) and result.rollout.shape == (6, 21, 2)
    assert result.actions.abs().max() <= 1.0
    torch.testing.assert_close(result.rollout, rollout(task.world_model, s0, result.actions))
    assert torch.all(result.final_distance < 0.1 * start_distance)
    assert result.success(task.success_radius).all()


def test_gd_history_is_the_shooting_loss_and_decreases(open_task):
    task, s0, goal = open_task
    result = GDPlanner(task.world_model, 2, GDConfig(horizon=20, iters=40, lr=0.1)).plan(s0, goal)
    assert result.energy_history.shape == (40, 6)
    assert torch.all(result.energy_history[-1] < result.energy_history[0])


def test_sampling_planners_are_seeded(open_task):
    task, s0, goal = open_task
    config = CEMConfig(horizon=10, samples=50, topk=5, iters=3)
    first = CEMPlanner(task.world_model, 2, config).plan(s0, goal)
    again = CEMPlanner(task.world_model, 2, config).plan(s0, goal)
    other = CEMPlanner(task.world_model, 2, CEMConfig(horizon=10, samples=50, topk=5, iters=3, seed=4)).plan(s0, goal)
    assert torch.equal(first.actions, again.actions) and not torch.equal(first.actions, other.actions)


SAMPLERS = [
    lambda m: CEMPlanner(m, 2, CEMConfig(horizon=8, samples=30, topk=4, iters=3, seed=5)),
    lambda m: MPPIPlanner(m, 2, MPPIConfig(horizon=8, samples=30, iters=3, seed=5)),
]


@pytest.mark.parametrize("make", SAMPLERS, ids=["cem", "mppi"])
def test_sampling_plans_are_shard_invariant(open_task, make):
    """Plan i alone with plan_offset=i is row i of the batch, bit for bit: its samples come from its own
    generator, and every other step (rollout, costs, the update) is row-wise."""
    task, s0, goal = open_task
    planner = make(task.world_model)
    batch = planner.plan(s0, goal)
    for i in (0, 3, 5):
        alone = planner.plan(s0[i : i + 1], goal[i : i + 1], plan_offset=i)
        assert torch.equal(alone.actions[0], batch.actions[i])
        assert torch.equal(alone.energy_history[:, 0], batch.energy_history[:, i])
    tail = planner.plan(s0[2:], goal[2:], plan_offset=2)
    assert torch.equal(tail.actions, batch.actions[2:])
    # the same problem at another index draws other samples
    shifted = planner.plan(s0[:1], goal[:1], plan_offset=1)
    assert not torch.equal(shifted.actions[0], batch.actions[0])


@pytest.mark.parametrize("make", [*SAMPLERS, lambda m: GDPlanner(m, 2, GDConfig(horizon=8, iters=2))], ids=["cem", "mppi", "gd"])
@pytest.mark.parametrize(
    "offset, kind, match",
    [(-1, ValueError, "plan_offset must be >= 0, got -1"), (1.5, TypeError, "plan_offset must be an int"),
     (True, TypeError, "plan_offset must be an int")],
)
def test_plan_offset_is_checked(open_task, make, offset, kind, match):
    task, s0, goal = open_task
    with pytest.raises(kind, match=match):
        make(task.world_model).plan(s0, goal, plan_offset=offset)


def test_single_plan_shapes(open_task):
    task, s0, goal = open_task
    result = MPPIPlanner(task.world_model, 2, MPPIConfig(horizon=8, samples=20, iters=2)).plan(s0[0], goal[0])
    assert result.actions.shape == (8, 2) and result.final_distance.dim() == 0


def test_ablations_change_only_their_field():
    base = GraspConfig()
    assert ablation_config(base, "grasp") == base
    assert ablation_config(base, "no_noise").state_noise == 0.0
    assert ablation_config(base, "no_stopgrad").stop_gradient is False
    assert ablation_config(base, "no_sync").sync_every == 0
    assert set(ABLATIONS) == {"grasp", "no_noise", "no_stopgrad", "no_sync"}
    with pytest.raises(ValueError, match="unknown ablation"):
        ablation_config(base, "no_goal")


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_every_ablation_plans(open_task, name):
    task, s0, goal = open_task
    config = ablation_config(GraspConfig(horizon=10, iters=10, sync_every=5, sync_steps=2), name)
    result = GraspPlanner(task.world_model, 2, config).plan(s0, goal)
    assert torch.isfinite(result.final_distance).all()


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: CEMConfig(topk=400), r"topk must be <= samples"),
        (lambda: CEMConfig(samples=0), "samples must be >= 1"),
        (lambda: MPPIConfig(temperature=0.0), "temperature must be a finite positive"),
        (lambda: GDConfig(lr=-1.0), "lr must be a finite positive"),
        (lambda: GDConfig(action_high=[1.0, "a"]), "action_high must be None, a float or a sequence"),
    ],
)
def test_baseline_config_errors(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()
