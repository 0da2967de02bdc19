"""The planning-quality helpers: budget scaling of GRASP settings, the Wilson interval, the sweep's pick,
and the ``train`` subcommand of the command line handing its options to the training parser."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from grasp_kernels import GraspConfig, PlanResult
from grasp_kernels.cli import main as cli_main
from grasp_kernels.models import MLPDynamics
from grasp_kernels.quality import Score, grasp_factory, pick_best, wilson_interval


@pytest.mark.parametrize("scale,expected", [(1.0, (300, 50, 50)), (0.25, (72, 12, 12)), (2.0, (600, 100, 100)),
                                            (1.27, (384, 64, 64)), (0.687, (204, 34, 34)), (0.0223, (6, 1, 1))])
def test_grasp_factory_scales_lifted_and_sync_budget_together(scale, expected):
    """The lifted iterations stay whole sync phases: a plan that ended with a sync phase still does (at 1.27 the
    old rounding, 381 iterations with a phase every 64, left 61 unsynced iterations at the end)."""
    model = MLPDynamics(4, 2, hidden=8, depth=1)
    config = GraspConfig(horizon=5, iters=300, sync_every=50, sync_steps=50)
    planner = grasp_factory(model, 2, config)(scale)
    got = (planner.config.iters, planner.config.sync_every, planner.config.sync_steps)
    assert got == expected
    assert planner.config.iters == 6 * planner.config.sync_every


def test_scaled_work_keeps_a_settings_trailing_iterations_in_proportion():
    from grasp_kernels.presets import scaled_work

    fields = dict(iters=320, sync_every=50, sync_steps=10, init_cem_steps=5)
    assert scaled_work(fields, 0.5) == dict(iters=160, sync_every=25, sync_steps=5, init_cem_steps=2)
    # a phase longer than the plan (no sync runs): plain scaling
    assert scaled_work(dict(iters=30, sync_every=50, sync_steps=10), 0.5)["iters"] == 15


def test_grasp_factory_keeps_sync_disabled():
    model = MLPDynamics(4, 2, hidden=8, depth=1)
    planner = grasp_factory(model, 2, GraspConfig(horizon=5, iters=40, sync_every=0, sync_steps=10))(0.5)
    assert planner.config.sync_every == 0 and planner.config.iters == 20


def test_wilson_interval_known_values():
    low, high = wilson_interval(21, 50)
    assert math.isclose(low, 29.37, abs_tol=0.01) and math.isclose(high, 55.77, abs_tol=0.01)  # statsmodels proportion_confint(21, 50, method="wilson")
    assert wilson_interval(0, 50)[0] == 0.0 and wilson_interval(50, 50)[1] == 100.0
    assert wilson_interval(0, 0) == (0.0, 100.0)


def test_pick_best_prefers_successes_then_error():
    scores = {
        "a": Score(3, 16, 0.5, 1.0, 10),
        "b": Score(4, 16, 0.9, 1.0, 10),
        "c": Score(4, 16, 0.7, 1.0, 10),
    }
    assert pick_best(scores) == "c"


def test_train_subcommand_forwards_its_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "--env" in capsys.readouterr().out


def test_train_subcommand_rejects_unknown_env(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "--env", "cartpole", "--seed", "0"])
    assert exit_info.value.code == 2
    assert "cartpole" in capsys.readouterr().err


def test_demo_rejects_unknown_options(capsys):
    with pytest.raises(SystemExit):
        cli_main(["demo", "--bogus"])
    assert "--bogus" in capsys.readouterr().err


def test_planner_settings_default_is_the_state_sweep_on_grasp_base():
    from grasp_kernels.presets import GRASP_SWEEP
    from grasp_kernels.quality import grasp_base, planner_settings

    model = MLPDynamics(4, 2, hidden=8, depth=1)
    grasp = planner_settings(model, 2, 20)["GRASP"]
    assert list(grasp) == list(GRASP_SWEEP)
    base = grasp_base(20)
    for name, changes in GRASP_SWEEP.items():
        assert grasp[name](1.0).config == base.replace(**changes)


def test_planner_settings_takes_the_pixel_base_and_sweep():
    """The pixel sweep: at least 6 GRASP settings on pixel_grasp_config; quick shrinks the given base's budget;
    the other families are the state settings."""
    from grasp_kernels.pixel_tasks import pixel_grasp_config
    from grasp_kernels.presets import PIXEL_GRASP_SWEEP
    from grasp_kernels.quality import planner_settings

    model = MLPDynamics(48, 2, hidden=8, depth=1)
    base = pixel_grasp_config(25)
    settings = planner_settings(model, 2, 25, base=base, grasp_sweep=PIXEL_GRASP_SWEEP)
    assert list(settings["GRASP"]) == list(PIXEL_GRASP_SWEEP) and len(PIXEL_GRASP_SWEEP) >= 6
    configs = {name: factory(1.0).config for name, factory in settings["GRASP"].items()}
    for name, changes in PIXEL_GRASP_SWEEP.items():
        assert configs[name] == base.replace(**changes)
        assert configs[name].particles == (2 if name.startswith("x2") else 8)
    assert configs["x8, lr_states 0.1 (paper)"].lr_states == 0.1 and configs["x8, goal weight 1.0 (paper)"].goal_weight == 1.0
    assert configs["x8, CEM sync"].sync == "cem" and configs["x8, goal weight annealed to 0.01"].goal_weight_final == 0.01
    assert {family: list(s) for family, s in settings.items() if family != "GRASP"} == {
        family: list(s) for family, s in planner_settings(model, 2, 25).items() if family != "GRASP"}
    quick = planner_settings(model, 2, 25, quick=True, base=base, grasp_sweep=PIXEL_GRASP_SWEEP)["GRASP"]["x8 particles"](1.0)
    assert quick.config.iters == 8 and quick.config.lr_states == base.lr_states


def test_planner_settings_rejects_a_base_of_another_horizon():
    from grasp_kernels.pixel_tasks import pixel_grasp_config
    from grasp_kernels.quality import planner_settings

    model = MLPDynamics(4, 2, hidden=8, depth=1)
    with pytest.raises(ValueError, match=r"base.horizon \(10\) differs from horizon \(25\)"):
        planner_settings(model, 2, 25, base=pixel_grasp_config(10))
    with pytest.raises(TypeError, match="base must be a GraspConfig"):
        planner_settings(model, 2, 25, base={"horizon": 25})


class StillPlanner:
    """Plans zero actions: gym-pusht's agent is sent to where it is, so nothing moves."""

    def __init__(self, horizon: int) -> None:
        self.config = GraspConfig(horizon=horizon, iters=0)
        self.action_dim = 2

    def plan(self, s0, goal, init_actions=None):
        actions = torch.zeros(s0.shape[0], self.config.horizon, 2)
        rollout = s0.unsqueeze(1).expand(-1, self.config.horizon + 1, -1).clone()
        return PlanResult(actions, rollout, rollout, (s0 - goal).norm(dim=1), torch.zeros(0, s0.shape[0]))


def test_the_pairs_protocol_judges_open_and_closed_loop():
    """The judges read the pairs' protocol. Goals with the block where it starts and the agent 30 px away: the
    region rule (block alone) holds, DINO-WM's (agent and block together) does not, and nothing moves."""
    pytest.importorskip("gym_pusht")
    from grasp_kernels.envs.sim import pusht_state
    from grasp_kernels.envs.tasks import PairSet
    from grasp_kernels.quality import closed_loop, executed_open_loop

    starts = np.stack([pusht_state((150 + 40 * i, 200), (300, 300 - 20 * i), 0.5 * i) for i in range(3)])
    goals = starts.copy()
    goals[:, 0] += 0.3  # the agent 30 px away
    region = PairSet("pusht", starts, goals, seed=0, action_repeat=2)
    dino_wm = dataclasses.replace(region, protocol="dino-wm")
    planner = StillPlanner(horizon=3)
    assert executed_open_loop("pusht", planner, region)[0].successes == 3
    assert executed_open_loop("pusht", planner, dino_wm)[0].successes == 0
    score, result = closed_loop("pusht", planner, dino_wm, max_steps=3, replan_every=3)
    assert score.successes == 0 and result.steps.tolist() == [3, 3, 3]
    # gym-pusht's own criterion (the block covers its goal pose), read after the first simulator step
    score, result = closed_loop("pusht", planner, region, max_steps=3, replan_every=3)
    assert score.successes == 3 and result.steps.tolist() == [1, 1, 1]
    # DINO-WM's rule holds at the reset when the agent is at its goal too: success after 0 model steps
    score, result = closed_loop("pusht", planner, dataclasses.replace(dino_wm, goals=starts.copy()), max_steps=3,
                                replan_every=3)
    assert score.successes == 3 and result.steps.tolist() == [0, 0, 0]
