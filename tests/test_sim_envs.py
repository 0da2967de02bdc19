"""The real simulators wrap and step through their own packages; pairs and success criteria."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics")
pytest.importorskip("gym_pusht")

from grasp_kernels.envs.sim import ENV_NAMES, SimBatch, check_env_name, make_env, pusht_pose, pusht_state  # noqa: E402
from grasp_kernels.envs.exploration import collect  # noqa: E402
from grasp_kernels.envs.tasks import (  # noqa: E402
    MIN_CELLS,
    PairSet,
    dino_wm_budget_steps,
    dino_wm_goal_steps,
    goal_error,
    make_pairs,
    reached,
)


@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_wraps_and_steps(name):
    env = make_env(name)
    try:
        pairs = make_pairs(name, 2, seed=3, horizon=5)
        state = env.reset_to(pairs.starts[0], pairs.goals[0])
        assert state.dtype == np.float32 and state.shape == (env.state_dim,)
        np.testing.assert_allclose(state[:2], pairs.starts[0, :2], atol=1e-5)
        moved = [env.step(np.array([0.7, -0.4])) for _ in range(4)]
        assert all(s.shape == (env.state_dim,) and np.isfinite(s).all() for s in moved)
        assert not np.allclose(moved[-1][:2], state[:2]), "the action moved nothing"
        assert isinstance(env.is_success(), bool)
    finally:
        env.close()


def test_pointmaze_action_repeat_moves_further():
    short, long_ = make_env("pointmaze-medium", action_repeat=2), make_env("pointmaze-medium", action_repeat=10)
    start = np.array([*short.cell_center(4, 4), 0.0, 0.0])  # a free cell of the Medium layout
    for env in (short, long_):
        env.reset_to(start, start + 5)
    a = short.step(np.array([1.0, 0.0]))
    b = long_.step(np.array([1.0, 0.0]))
    assert b[0] - start[0] > 2 * (a[0] - start[0]) > 0


def test_pointmaze_walls_stop_the_ball():
    env = make_env("pointmaze-medium")
    start = np.array([*env.cell_center(1, 1), 0.0, 0.0])  # (0, 1) above is a wall
    env.reset_to(start, start)
    for _ in range(20):
        state = env.step(np.array([0.0, 1.0]))
    assert state[1] < start[1] + 0.5 * env.scaling


def test_pointmaze_success_is_the_env_radius():
    env = make_env("pointmaze-umaze")
    start = np.array([*env.cell_center(1, 1), 0.0, 0.0], dtype=np.float32)
    env.reset_to(start, start + np.array([0.4, 0.0, 0.0, 0.0], dtype=np.float32))
    assert env.is_success()
    env.reset_to(start, start + np.array([0.5, 0.0, 0.0, 0.0], dtype=np.float32))
    assert not env.is_success()


def test_pusht_state_round_trip_and_goal_coverage():
    env = make_env("pusht")
    state = pusht_state((100.0, 120.0), (256.0, 256.0), math.pi / 4)
    read = env.reset_to(state, state)
    np.testing.assert_allclose(pusht_pose(read), pusht_pose(state), atol=1e-3)
    env.step(np.zeros(2))
    assert env.is_success(), "a block resting on its goal pose covers it"
    env.reset_to(state, pusht_state((100.0, 120.0), (356.0, 256.0), 0.0))
    env.step(np.zeros(2))
    assert not env.is_success()


def test_pusht_velocities_are_the_state_a_reset_drops():
    env = make_env("pusht")
    state = pusht_state((100.0, 120.0), (256.0, 256.0), 0.3)
    env.reset_to(state, state)
    np.testing.assert_array_equal(env.velocities(), np.zeros(5))  # a reset leaves both bodies at rest
    moving = np.array([40.0, -25.0, 3.0, 1.5, 0.2])
    env.set_velocities(moving)
    np.testing.assert_array_equal(env.velocities(), moving)
    # the block, pushed by nothing, slides on with its velocity for a step: the velocities change the future
    after = env.step(np.zeros(2))
    at_rest = env.reset_to(state, state)
    assert not np.allclose(after, env.step(np.zeros(2)))
    assert not np.allclose(after[2:4], at_rest[2:4])
    with pytest.raises(ValueError, match="velocities must be 5 finite numbers"):
        env.set_velocities(np.zeros(4))
    with pytest.raises(ValueError, match="velocities must be 5 finite numbers"):
        env.set_velocities(np.array([0.0, 0.0, np.nan, 0.0, 0.0]))


def test_restore_puts_the_simulator_exactly_in_a_recorded_state():
    # mid-push states, some in contact: reset_to lets the physics settle a step and moves bodies in contact;
    # restore keeps the recorded pose, with the velocities given (default at rest)
    states, _ = collect("pusht", trajectories=8, length=20, seed=7, policy="pushes")
    env = make_env("pusht")
    starts = states[:, 5::5].reshape(-1, 6)
    moved = [np.abs(env.reset_to(s, s)[:4] - s[:4]).max() for s in starts]
    assert max(moved) > 1e-3  # the settling step moved some (measured: most pushes are in contact)
    for s in starts:
        np.testing.assert_allclose(env.restore(s), s, atol=1e-6)
        np.testing.assert_array_equal(env.velocities(), np.zeros(5))
    env.restore(starts[0], np.array([1.0, 2.0, 3.0, 4.0, 0.5]))
    np.testing.assert_array_equal(env.velocities(), [1.0, 2.0, 3.0, 4.0, 0.5])
    maze = make_env("pointmaze-umaze")
    state = np.array([0.5, 0.5, 0.2, -0.1])
    np.testing.assert_allclose(maze.restore(state), state, atol=1e-6)
    with pytest.raises(ValueError, match="velocities must be None"):
        maze.restore(state, np.zeros(4))


def test_pairs_are_far_apart_and_reproducible():
    env = make_env("pointmaze-medium")
    pairs = make_pairs("pointmaze-medium", 12, seed=5)
    again = make_pairs("pointmaze-medium", 12, seed=5)
    other = make_pairs("pointmaze-medium", 12, seed=6)
    np.testing.assert_array_equal(pairs.starts, again.starts)
    assert not np.array_equal(pairs.starts, other.starts)
    for s, g in zip(pairs.starts, pairs.goals):
        cs = tuple(env._env.maze.cell_xy_to_rowcol(s[:2]))
        cg = tuple(env._env.maze.cell_xy_to_rowcol(g[:2]))
        assert env.cell_distances(cs)[cg] >= MIN_CELLS["pointmaze-medium"]
    assert np.all(pairs.starts[:, 2:] == 0) and np.all(pairs.goals[:, 2:] == 0)


def test_pusht_pairs_move_the_block():
    pairs = make_pairs("pusht", 3, seed=0, horizon=10)
    assert pairs.starts.shape == pairs.goals.shape == (3, 6)
    assert np.all(goal_error("pusht", pairs.starts, pairs.goals) > 0) or not np.all(reached("pusht", pairs.starts, pairs.goals))


def test_reached_criteria():
    goals = np.zeros((2, 4), np.float32)
    states = np.array([[0.44, 0, 3, 3], [0.46, 0, 0, 0]], np.float32)
    assert reached("pointmaze-large", states, goals).tolist() == [True, False]
    g = pusht_state((0, 0), (200, 200), 0.0)[None].repeat(3, 0)
    s = np.stack([
        pusht_state((300, 300), (215, 200), 0.3),   # within 20 px and pi/9: reached (agent ignored)
        pusht_state((0, 0), (225, 200), 0.0),       # 25 px off
        pusht_state((0, 0), (200, 200), 0.5),       # 0.5 rad > pi/9
    ])
    assert reached("pusht", s, g).tolist() == [True, False, False]
    np.testing.assert_allclose(goal_error("pusht", s, g), [15, 25, 0], atol=1e-3)


def test_dino_wm_rule_takes_agent_and_block_together():
    """DINO-WM's eval_state: one norm over the agent's and the block's position errors (px) below 20, the
    angle below pi/9, both strict."""
    g = pusht_state((100, 100), (200, 200), 0.0)[None].repeat(6, 0)
    s = np.stack([
        pusht_state((110, 100), (210, 200), 0.3),   # sqrt(10^2 + 10^2) = 14.1 px, 0.3 rad < pi/9: reached
        pusht_state((115, 100), (215, 200), 0.0),   # sqrt(2) * 15 = 21.2 px: not (each alone within 20)
        pusht_state((100, 100), (200, 219), 0.0),   # 19 px, block only
        pusht_state((120, 100), (200, 200), 0.0),   # exactly 20 px: not (strict)
        pusht_state((100, 100), (200, 200), 0.36),  # 0.36 rad > pi/9 = 0.349
        pusht_state((300, 300), (200, 200), 0.0),   # the agent far away: not (the region rule ignores it)
    ])
    assert reached("pusht", s, g, protocol="dino-wm").tolist() == [True, False, True, False, False, False]
    assert reached("pusht", s, g).tolist() == [True, True, True, True, False, True]


def test_dino_wm_pairs_are_exploration_25_steps_on():
    """Every trajectory of the exploration policy is kept, its goal the state 25 simulator steps (rounded to
    model steps) after its start."""
    assert [dino_wm_goal_steps(r) for r in (1, 2, 5, 30)] == [25, 12, 5, 1]
    assert [dino_wm_budget_steps(r) for r in (1, 2, 5)] == [50, 25, 10]
    pairs = make_pairs("pusht", 4, seed=7, horizon=99, protocol="dino-wm", action_repeat=5)
    states, _ = collect("pusht", 4, 5, 7, action_repeat=5)
    assert pairs.protocol == "dino-wm" and pairs.action_repeat == 5
    np.testing.assert_array_equal(pairs.starts, states[:, 0])
    np.testing.assert_array_equal(pairs.goals, states[:, -1])
    assert make_pairs("pusht", 2, seed=7, horizon=4).protocol == "region"
    with pytest.raises(ValueError, match="protocol 'dino-wm' is Push-T's"):
        make_pairs("pointmaze-umaze", 2, seed=0, protocol="dino-wm")
    with pytest.raises(ValueError, match="protocol must be one of"):
        make_pairs("pusht", 2, seed=0, protocol="dinowm")
    with pytest.raises(ValueError, match="protocol must be one of"):
        reached("pusht", pairs.starts, pairs.goals, protocol="any")
    with pytest.raises(ValueError, match="PairSet.protocol: protocol must be one of"):
        dataclasses.replace(pairs, protocol="DINO-WM")
    with pytest.raises(ValueError, match="PairSet.protocol: protocol 'dino-wm' is Push-T's"):
        PairSet("pointmaze-umaze", pairs.starts, pairs.goals, 0, 10, "dino-wm")


@pytest.mark.parametrize("bad, message", [("pointmaze-tiny", "unknown PointMaze layout"), ("cartpole", "unknown environment")])
def test_unknown_names_are_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        check_env_name(bad)
    with pytest.raises(ValueError, match=message):
        make_env(bad)
    with pytest.raises(ValueError, match=message):
        make_pairs(bad, 2, seed=0)


def test_bad_shapes_are_clear_errors():
    env = make_env("pointmaze-umaze")
    with pytest.raises(ValueError, match="shape"):
        env.reset_to(np.zeros(3), np.zeros(4))
    batch = SimBatch("pointmaze-umaze", 2)
    with pytest.raises(ValueError, match="states must have shape"):
        batch.reset_to(np.zeros((3, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="actions must have shape"):
        batch.step(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="batch"):
        SimBatch("pointmaze-umaze", 0)
