"""Receding-horizon MPC (grasp_kernels.mpc) in the real PointMaze simulator.

No trained world model is needed: the planners use a hand-written differentiable approximation of
PointMaze's point mass (one model step = 10 MuJoCo steps of 0.01 s; measured from rest, a unit force
adds about 2.4 to the velocity per model step and the speed saturates near 5). It ignores walls and
friction, so MPC has to correct real model error, which is the point of the loop.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium_robotics")

from grasp_kernels import GraspConfig, GraspPlanner, PlanResult  # noqa: E402
from grasp_kernels.baselines import CEMConfig, CEMPlanner, GDConfig, GDPlanner, MPPIConfig, MPPIPlanner  # noqa: E402
from grasp_kernels.envs.sim import SimBatch  # noqa: E402
from grasp_kernels.mpc import MPCConfig, MPCResult, run_mpc, shift_actions, shift_states  # noqa: E402

HORIZON = 8


class PointMassModel(torch.nn.Module):
    """``(x, y, vx, vy), (fx, fy) -> next state``: velocity gains ``2.4 * a`` (clamped to +-5), position
    integrates the mean velocity over the 0.1 s model step."""

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        position, velocity = states[:, :2], states[:, 2:]
        new_velocity = (velocity + 2.4 * actions).clamp(-5.0, 5.0)
        return torch.cat([position + 0.05 * (velocity + new_velocity), new_velocity], dim=1)


class RecordingPlanner:
    """Wraps a planner and records every ``init_actions`` it receives and every plan it returns."""

    def __init__(self, inner) -> None:
        self.inner, self.config, self.action_dim = inner, inner.config, inner.action_dim
        self.inits: list = []
        self.results: list[PlanResult] = []

    def plan(self, s0, goal, init_actions=None):
        self.inits.append(None if init_actions is None else init_actions.clone())
        result = self.inner.plan(s0, goal, init_actions=init_actions)
        self.results.append(result)
        return result


class RecordingStatesPlanner(RecordingPlanner):
    """A RecordingPlanner whose ``plan`` also takes ``init_states`` (as GraspPlanner's does)."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.init_states: list = []

    def plan(self, s0, goal, init_actions=None, init_states=None):
        self.init_states.append(None if init_states is None else init_states.clone())
        self.inits.append(None if init_actions is None else init_actions.clone())
        result = self.inner.plan(s0, goal, init_actions=init_actions, init_states=init_states)
        self.results.append(result)
        return result


class ZeroPlanner:
    """Always plans zero force: the ball stays where it is (the null hypothesis of the progress test)."""

    def __init__(self) -> None:
        self.config = GraspConfig(horizon=HORIZON, iters=0)
        self.action_dim = 2

    def plan(self, s0, goal, init_actions=None):
        actions = torch.zeros(s0.shape[0], HORIZON, 2)
        rollout = s0.unsqueeze(1).expand(-1, HORIZON + 1, -1).clone()
        return PlanResult(actions, rollout, rollout, (s0 - goal).norm(dim=1), torch.zeros(0, s0.shape[0]))


@pytest.fixture(scope="module")
def sims() -> SimBatch:
    batch = SimBatch("pointmaze-umaze", batch=2, seed=0)
    yield batch
    batch.close()


def corridor_task(sims: SimBatch) -> tuple[np.ndarray, np.ndarray]:
    """Two episodes, each two cells along a straight corridor of the U-maze, at rest."""
    env = sims.envs[0]
    starts = np.array([[*env.cell_center(1, 1), 0, 0], [*env.cell_center(3, 3), 0, 0]], dtype=np.float32)
    goals = np.array([[*env.cell_center(1, 3), 0, 0], [*env.cell_center(3, 1), 0, 0]], dtype=np.float32)
    return starts, goals


def grasp_planner() -> GraspPlanner:
    config = GraspConfig(horizon=HORIZON, iters=20, sync_every=10, sync_steps=5, backend="reference")
    # The goal is at rest, and GRASP's dense goal term weighs every virtual state's velocity against the
    # goal's zero velocity: with equal weights the plan creeps (speed costs as much as distance), so the
    # velocity components get a small weight.
    return GraspPlanner(PointMassModel(), 2, config, state_weights=torch.tensor([1.0, 1.0, 0.1, 0.1]))


def cem_planner() -> CEMPlanner:
    return CEMPlanner(PointMassModel(), 2, CEMConfig(horizon=HORIZON, samples=64, topk=8, iters=5))


def position_distance(states: np.ndarray, goals: np.ndarray) -> np.ndarray:
    return np.linalg.norm(states[:, :2].astype(np.float64) - goals[:, :2], axis=1)


@pytest.mark.parametrize("make_planner", [grasp_planner, cem_planner], ids=["grasp", "cem"])
@pytest.mark.parametrize("replan_every", [1, 3])
def test_end_to_end_reaches_goal(sims, make_planner, replan_every):
    starts, goals = corridor_task(sims)
    max_steps = 25
    result = run_mpc(make_planner(), sims, starts, goals, MPCConfig(max_steps=max_steps, replan_every=replan_every))

    assert isinstance(result, MPCResult) and isinstance(result.first_plan, PlanResult)
    assert result.success.shape == (2,) and result.success.dtype == np.bool_
    assert result.steps.shape == (2,) and np.issubdtype(result.steps.dtype, np.integer)
    assert result.executed.shape == (2, max_steps + 1, 4) and result.executed.dtype == np.float32
    assert result.actions.shape == (2, max_steps, 2)
    assert result.first_plan.actions.shape == (2, HORIZON, 2)
    assert result.first_plan.rollout.shape == (2, HORIZON + 1, 4)
    np.testing.assert_allclose(result.executed[:, 0], starts, atol=1e-6)
    # the first plan is made from the start as read back
    np.testing.assert_allclose(result.first_plan.rollout[:, 0].numpy(), starts, atol=1e-6)

    assert result.success.all(), f"steps {result.steps}, final {result.executed[:, -1]}"
    assert (result.steps >= 1).all() and (result.steps < max_steps).all()
    assert (position_distance(result.executed[:, -1], goals) < position_distance(starts, goals)).all()
    # the sticky criterion was met at the recorded step: within 0.45 at some simulator step of that model step,
    # so the model-step state before it was not yet within the radius
    before = result.executed[np.arange(2), result.steps - 1]
    assert (position_distance(before, goals) > 0.45).all()
    np.testing.assert_allclose(
        result.final_distance, np.linalg.norm(result.executed[:, -1].astype(np.float64) - goals, axis=1), rtol=1e-12
    )
    assert result.plans == -(-int(result.steps.max()) // replan_every)
    assert 0 < result.planning_time <= result.wall_time
    # executed actions are the planner's, within its bounds; NaN exactly where an episode did not step
    stepped = np.arange(max_steps)[None, :] < result.steps[:, None]
    assert np.isfinite(result.actions[stepped]).all() and np.isnan(result.actions[~stepped]).all()
    assert (np.abs(result.actions[stepped]) <= 1.0 + 1e-6).all()


@pytest.mark.parametrize(
    "planner",
    [
        GDPlanner(PointMassModel(), 2, GDConfig(horizon=HORIZON, iters=10, lr=0.2)),
        MPPIPlanner(PointMassModel(), 2, MPPIConfig(horizon=HORIZON, samples=32, iters=3)),
    ],
    ids=["gd", "mppi"],
)
def test_other_planners_run(sims, planner):
    """GD and MPPI through the same loop (float64 inputs, explicit device, progress bar): shapes and movement."""
    starts, goals = corridor_task(sims)
    result = run_mpc(
        planner, sims, starts.astype(np.float64), goals.astype(np.float64), MPCConfig(max_steps=4, replan_every=2),
        progress=True, device="cpu",
    )
    assert result.executed.shape == (2, 5, 4) and result.plans == 2
    assert result.first_plan.actions.shape == (2, HORIZON, 2) and result.first_plan.actions.dtype == torch.float32
    assert (position_distance(result.executed[:, -1], goals) < position_distance(starts, goals)).all()


def test_zero_planner_makes_no_progress(sims):
    """The null planner: the end-to-end progress checks above are not satisfied by doing nothing."""
    starts, goals = corridor_task(sims)
    result = run_mpc(ZeroPlanner(), sims, starts, goals, MPCConfig(max_steps=6, replan_every=2))
    assert not result.success.any()
    np.testing.assert_array_equal(result.steps, [6, 6])
    assert result.plans == 3
    np.testing.assert_allclose(result.executed, np.repeat(starts[:, None], 7, axis=1), atol=1e-6)


def test_shift_actions_is_exact():
    actions = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    shifted = shift_actions(actions, 2)
    expected = torch.cat([actions[:, 2:], actions[:, 4:5], actions[:, 4:5]], dim=1)
    assert torch.equal(shifted, expected)
    assert torch.equal(actions, torch.arange(30, dtype=torch.float32).reshape(2, 5, 3)), "input modified"
    same = shift_actions(actions, 0)
    assert torch.equal(same, actions) and same.data_ptr() != actions.data_ptr()
    assert torch.equal(shift_actions(actions, 5), actions[:, 4:5].expand(-1, 5, -1))
    with pytest.raises(ValueError, match="shift"):
        shift_actions(actions, 6)
    with pytest.raises(ValueError, match="shift"):
        shift_actions(actions, -1)


@pytest.mark.parametrize("warm_start", [True, False])
def test_warm_start_passes_the_shifted_plan(sims, warm_start):
    starts, goals = corridor_task(sims)
    planner = RecordingPlanner(grasp_planner())
    config = MPCConfig(max_steps=6, replan_every=2, warm_start=warm_start, stop_on_success=False)
    result = run_mpc(planner, sims, starts, goals, config)
    assert result.plans == len(planner.inits) == 3
    assert planner.inits[0] is None
    for previous, init in zip(planner.results, planner.inits[1:]):
        if warm_start:
            assert torch.equal(init, shift_actions(previous.actions, 2))
        else:
            assert init is None
    # the executed actions are the first replan_every rows of each plan
    executed = np.concatenate([r.actions[:, :2].numpy() for r in planner.results], axis=1)
    np.testing.assert_array_equal(result.actions, executed)


def test_shift_states_is_exact():
    states = torch.randn(2, 6, 2, 2)  # [B, T+1, *S] with a 2-D state
    shifted = shift_states(states, 2)
    assert torch.equal(shifted[:, :4], states[:, 2:])
    assert torch.equal(shifted[:, 4:], states[:, 5:6].expand(-1, 2, -1, -1))  # the goal row fills the tail
    assert torch.equal(shift_states(states, 5), states[:, 5:6].expand(-1, 6, -1, -1))
    with pytest.raises(ValueError, match="shift"):
        shift_states(states, 6)
    with pytest.raises(ValueError, match="states"):
        shift_states(states[:, :, 0, 0], 1)


@pytest.mark.parametrize("warm_start,warm_start_states", [(True, True), (True, False), (False, True)])
def test_warm_start_passes_the_shifted_states(sims, warm_start, warm_start_states):
    starts, goals = corridor_task(sims)
    planner = RecordingStatesPlanner(grasp_planner())
    config = MPCConfig(max_steps=6, replan_every=2, warm_start=warm_start,
                       warm_start_states=warm_start_states and warm_start, stop_on_success=False)
    run_mpc(planner, sims, starts, goals, config)
    assert len(planner.init_states) == 3 and planner.init_states[0] is None
    for previous, init in zip(planner.results, planner.init_states[1:]):
        if warm_start and warm_start_states:
            assert torch.equal(init, shift_states(previous.states, 2))
        else:
            assert init is None


def test_state_warm_start_skips_planners_without_init_states(sims):
    """GD (no init_states argument) with warm_start_states=True: plans from warm actions only; the
    flag needs warm_start."""
    starts, goals = corridor_task(sims)
    gd = GDPlanner(PointMassModel(), 2, GDConfig(horizon=HORIZON, iters=5))
    planner = RecordingPlanner(gd)
    run_mpc(planner, sims, starts, goals, MPCConfig(max_steps=4, replan_every=2, warm_start_states=True, stop_on_success=False))
    assert planner.inits[0] is None and torch.equal(planner.inits[1], shift_actions(planner.results[0].actions, 2))
    with pytest.raises(ValueError, match="warm_start_states=True needs warm_start=True"):
        MPCConfig(max_steps=3, warm_start=False, warm_start_states=True)


def test_state_warm_start_is_off_by_default(sims):
    assert MPCConfig(max_steps=1).warm_start_states is False
    starts, goals = corridor_task(sims)
    planner = RecordingStatesPlanner(grasp_planner())
    run_mpc(planner, sims, starts, goals, MPCConfig(max_steps=4, replan_every=2, stop_on_success=False))
    assert planner.init_states == [None, None] and planner.inits[1] is not None


def test_grasp_starts_from_the_given_states():
    """GraspPlanner.plan(init_states=...): rows 1..T-1 start at the guess (no iterations, no noise: the
    returned virtual states are the guess), rows 0 and T are s0 and the goal; bad guesses are rejected."""
    config = GraspConfig(horizon=5, iters=0, init_noise=0.0, sync_every=0, backend="reference")
    planner = GraspPlanner(PointMassModel(), 2, config)
    g = torch.Generator().manual_seed(3)
    s0, goal, guess = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g), torch.randn(3, 6, 4, generator=g)
    result = planner.plan(s0, goal, init_states=guess)
    assert torch.equal(result.states[:, 1:5], guess[:, 1:5])
    assert torch.equal(result.states[:, 0], s0) and torch.equal(result.states[:, 5], goal)
    single = planner.plan(s0[0], goal[0], init_states=guess[0])
    assert torch.equal(single.states[1:5], guess[0, 1:5])
    noisy = GraspPlanner(PointMassModel(), 2, config.replace(init_noise=0.1, particles=2)).plan(s0, goal, init_states=guess)
    assert not torch.equal(noisy.states[:, 1:5], guess[:, 1:5])
    assert (noisy.states[:, 1:5] - guess[:, 1:5]).abs().max() < 1.0  # the guess plus noise of std 0.1
    with pytest.raises(ValueError, match=r"init_states must have shape \[B, T\+1, \*S\] = \[3, 6, 4\]"):
        planner.plan(s0, goal, init_states=guess[:, :5])
    with pytest.raises(ValueError, match=r"init_states must have shape \[T\+1, \*S\] = \[6, 4\]"):
        planner.plan(s0[0], goal[0], init_states=guess[0, :5])
    ends_ignored = guess.clone()
    ends_ignored[:, [0, 5]] = float("nan")  # rows 0 and T are s0 and the goal whatever the guess holds
    assert torch.equal(planner.plan(s0, goal, init_states=ends_ignored).states, result.states)
    with pytest.raises(TypeError, match="init_states must have dtype"):
        planner.plan(s0, goal, init_states=guess.double())
    with pytest.raises(ValueError, match=r"init_states \(rows 1..T-1\) contains 48 NaN"):
        planner.plan(s0, goal, init_states=torch.full_like(guess, float("nan")))


def test_succeeded_episodes_stay_frozen(sims):
    """Episode 0 starts 0.6 short of its goal, moving towards it: success during model step 1. Episode 1
    is two cells away and keeps going."""
    starts, goals = corridor_task(sims)
    starts[0] = [goals[0, 0] - 0.6, goals[0, 1], 3.0, 0.0]
    max_steps = 8
    result = run_mpc(cem_planner(), sims, starts, goals, MPCConfig(max_steps=max_steps))
    assert result.steps[0] == 1 and result.success[0]
    np.testing.assert_array_equal(result.executed[0, 2:], np.repeat(result.executed[0, 1:2], max_steps - 1, axis=0))
    assert np.isnan(result.actions[0, 1:]).all() and np.isfinite(result.actions[0, 0]).all()
    # the simulator itself did not move after the success
    np.testing.assert_array_equal(sims.envs[0].state(), result.executed[0, 1])
    assert result.steps[1] > 1
    assert not np.allclose(result.executed[1, 2], result.executed[1, 1])

    # without stop_on_success the same episode keeps stepping (and its success stays recorded)
    unfrozen = run_mpc(cem_planner(), sims, starts, goals, MPCConfig(max_steps=max_steps, stop_on_success=False))
    assert unfrozen.steps[0] == 1 and unfrozen.success[0]
    assert np.isfinite(unfrozen.actions).all()
    assert not np.allclose(unfrozen.executed[0, 2], unfrozen.executed[0, 1])


def test_success_rule_replaces_the_simulators_criterion(sims):
    """A ``success_rule`` judges the states after the reset and after every model step, sticky: episode 0 starts
    at its goal (the simulator's own criterion holds there) but the rule first holds after model step 2 and
    never again; episode 1 never meets it."""
    starts, goals = corridor_task(sims)
    starts[0] = goals[0]
    calls: list[np.ndarray] = []

    def rule(states: np.ndarray, goal_states: np.ndarray) -> np.ndarray:
        calls.append(states.copy())
        np.testing.assert_array_equal(goal_states, goals)
        return np.array([len(calls) == 3, False])

    for stop in (True, False):
        calls.clear()
        result = run_mpc(cem_planner(), sims, starts, goals, MPCConfig(max_steps=5, stop_on_success=stop),
                         success_rule=rule)
        assert result.success.tolist() == [True, False]
        assert result.steps.tolist() == [2, 5]
        assert len(calls) == 6  # the reset and the 5 model steps
        np.testing.assert_array_equal(calls[2], result.executed[:, 2])
        # a frozen episode stops at its success; otherwise it keeps stepping, its success kept
        assert np.isnan(result.actions[0, 2:]).all() == stop

    plain = run_mpc(cem_planner(), sims, starts, goals, MPCConfig(max_steps=5))
    assert plain.success[0] and plain.steps[0] == 0  # the simulator's criterion: already at the goal


def test_all_starts_successful(sims):
    _, goals = corridor_task(sims)
    result = run_mpc(grasp_planner(), sims, goals.copy(), goals, MPCConfig(max_steps=5))
    assert result.success.all()
    np.testing.assert_array_equal(result.steps, [0, 0])
    np.testing.assert_allclose(result.executed, np.repeat(goals[:, None], 6, axis=1), atol=1e-6)
    assert np.isnan(result.actions).all()
    assert result.plans == 1 and result.first_plan.actions.shape == (2, HORIZON, 2)
    np.testing.assert_allclose(result.final_distance, 0.0, atol=1e-6)


def test_bad_inputs(sims):
    starts, goals = corridor_task(sims)
    planner = cem_planner()
    config = MPCConfig(max_steps=3)
    with pytest.raises(ValueError, match="starts"):
        run_mpc(planner, sims, starts[:1], goals, config)
    with pytest.raises(ValueError, match="starts"):
        run_mpc(planner, sims, starts[:, :2], goals, config)
    with pytest.raises(ValueError, match="goals"):
        run_mpc(planner, sims, starts, goals[:, :3], config)
    bad = starts.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="starts"):
        run_mpc(planner, sims, bad, goals, config)
    with pytest.raises(ValueError, match="replan_every"):
        MPCConfig(max_steps=3, replan_every=0)
    with pytest.raises(ValueError, match="replan_every"):
        run_mpc(planner, sims, starts, goals, MPCConfig(max_steps=3, replan_every=HORIZON + 1))
    with pytest.raises(ValueError, match="max_steps"):
        MPCConfig(max_steps=0)
    mutated = MPCConfig(max_steps=3)
    mutated.max_steps = 0  # run_mpc re-validates a config changed after construction
    with pytest.raises(ValueError, match="max_steps"):
        run_mpc(planner, sims, starts, goals, mutated)
    with pytest.raises(TypeError, match="warm_start"):
        MPCConfig(max_steps=3, warm_start=1)
    with pytest.raises(TypeError, match="warm_start_states"):
        MPCConfig(max_steps=3, warm_start_states=None)
    with pytest.raises(TypeError, match="config"):
        run_mpc(planner, sims, starts, goals, {"max_steps": 3})
    with pytest.raises(ValueError, match="action_dim"):
        run_mpc(CEMPlanner(PointMassModel(), 3, CEMConfig(horizon=HORIZON)), sims, starts, goals, config)
