"""Start/goal pairs and success criteria for the real tasks (PointMaze, Push-T).

Pairs are drawn from fixed seeds; the planning-quality benchmark tunes on one seed and evaluates on a
disjoint held-out seed. All arrays are planning states (see :mod:`grasp_kernels.envs.sim`).

Two protocols (:data:`PROTOCOLS`, ``make_pairs(protocol=...)``), recorded in each :class:`PairSet`:

- ``"region"`` (every environment): the goal region of :func:`reached`; Push-T pairs are the hardest of several
  exploratory pushes over the planning horizon; closed loop judges by the environment's own criterion.
- ``"dino-wm"`` (Push-T): DINO-WM's evaluation. The goal is the state an exploratory trajectory reaches
  :data:`DINO_WM_GOAL_SIM_STEPS` simulator steps (rounded to model steps) after its start (no selection: its
  ``goal_source="dset"`` with ``goal_H=5`` at frame skip 5), success is its ``eval_state`` rule (:func:`dino_wm_reached`: one 20 px norm over
  the agent's and the block's positions, and the block's angle within pi/9), open and closed loop alike; a
  closed-loop episode succeeds if it meets the rule after any model step (its MPC's "ever reached", checked
  here after every model step of ``action_repeat`` simulator steps).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from .._checks import check_int
from .sim import (
    POINTMAZE_SUCCESS_RADIUS,
    PUSHT_ANGLE_TOLERANCE,
    PUSHT_POSITION_SCALE,
    PUSHT_POSITION_TOLERANCE,
    PointMazeEnv,
    angle_difference,
    check_env_name,
    make_env,
    pusht_pose,
    resolve_action_repeat,
)
from .exploration import collect

# Pairs at least this many cells apart along the maze's shortest path ("across the maze").
MIN_CELLS = {"pointmaze-umaze": 4, "pointmaze-medium": 8, "pointmaze-large": 12}
# Keep the ball this far from a cell's centre at most, so it starts clear of the walls.
CELL_JITTER = 0.25
# Push-T goals: the block pose after an exploratory push; keep the pairs whose block moved the most.
PUSHT_CANDIDATES_PER_PAIR = 8
PROTOCOLS = ("region", "dino-wm")
# DINO-WM's Push-T goals lie goal_H = 5 model steps of frame skip 5 after the start; its MPC evaluation (as
# published by stable-worldmodel: eval_budget 50) runs 50 simulator steps
DINO_WM_GOAL_SIM_STEPS = 25
DINO_WM_BUDGET_SIM_STEPS = 50


@dataclasses.dataclass
class PairSet:
    """``starts [N, D]`` and ``goals [N, D]`` (float32) for one environment, at a time step of ``action_repeat``
    simulator steps per model step (the simulators that execute plans for these pairs step at it), judged by
    ``protocol``'s success rule (:data:`PROTOCOLS`; :func:`reached`)."""

    env_name: str
    starts: np.ndarray
    goals: np.ndarray
    seed: int
    action_repeat: int
    protocol: str = "region"

    def __post_init__(self) -> None:
        try:
            check_protocol(self.env_name, self.protocol)
        except ValueError as error:
            raise ValueError(f"PairSet.protocol: {error}") from None

    def __len__(self) -> int:
        return len(self.starts)


def pointmaze_pairs(env: PointMazeEnv, n: int, seed: int, min_cells: int) -> PairSet:
    """``n`` start/goal pairs whose cells are at least ``min_cells`` apart (shortest path), zero velocity."""
    rng = np.random.default_rng(seed)
    cells = env.free_cells()
    far = {c: [g for g, d in env.cell_distances(c).items() if d >= min_cells] for c in cells}
    sources = [c for c in cells if far[c]]
    if not sources:
        raise ValueError(f"{env.name}: no pair of cells is {min_cells} cells apart")
    starts, goals = np.zeros((n, 4), np.float32), np.zeros((n, 4), np.float32)
    for i in range(n):
        start_cell = sources[rng.integers(len(sources))]
        goal_cell = far[start_cell][rng.integers(len(far[start_cell]))]
        starts[i, :2] = env.cell_center(*start_cell) + rng.uniform(-CELL_JITTER, CELL_JITTER, 2) * env.scaling
        goals[i, :2] = env.cell_center(*goal_cell) + rng.uniform(-CELL_JITTER, CELL_JITTER, 2) * env.scaling
    return PairSet(env.name, starts, goals, seed, env.action_repeat)


def pusht_pairs(n: int, seed: int, horizon: int, action_repeat: Optional[int] = None) -> PairSet:
    """``n`` Push-T pairs: the goal is the state an exploratory pushing policy (``"mixed"``) reaches in
    ``horizon`` model steps of ``action_repeat`` simulator steps (so a plan of that horizon exists); of
    ``PUSHT_CANDIDATES_PER_PAIR * n`` such rollouts the ``n`` that moved and turned the block the most are kept
    (the hard, non-greedy pushes)."""
    action_repeat = resolve_action_repeat("pusht", action_repeat)
    states, _ = collect("pusht", n * PUSHT_CANDIDATES_PER_PAIR, horizon, seed, action_repeat=action_repeat)
    start_pose, goal_pose = pusht_pose(states[:, 0]), pusht_pose(states[:, -1])
    moved = np.linalg.norm(goal_pose[:, :2] - start_pose[:, :2], axis=1) / PUSHT_POSITION_TOLERANCE
    turned = angle_difference(goal_pose[:, 2], start_pose[:, 2]) / PUSHT_ANGLE_TOLERANCE
    keep = np.argsort(-(moved + turned), kind="stable")[:n]
    return PairSet("pusht", states[keep, 0].copy(), states[keep, -1].copy(), seed, action_repeat)


def dino_wm_goal_steps(action_repeat: int) -> int:
    """Model steps from a ``"dino-wm"`` start to its goal: :data:`DINO_WM_GOAL_SIM_STEPS` simulator steps rounded
    to whole model steps of ``action_repeat`` (at least one): 12 (24 simulator steps) at 2, 5 at 5."""
    return _model_steps(DINO_WM_GOAL_SIM_STEPS, action_repeat)


def _model_steps(sim_steps: int, action_repeat: int) -> int:
    """``sim_steps`` simulator steps rounded to whole model steps of ``action_repeat`` (at least one)."""
    return max(1, round(sim_steps / check_int("action_repeat", action_repeat, minimum=1)))


def dino_wm_budget_steps(action_repeat: int) -> int:
    """Model steps of a ``"dino-wm"`` closed-loop episode: :data:`DINO_WM_BUDGET_SIM_STEPS` simulator steps
    rounded to whole model steps of ``action_repeat`` (at least one): 25 at 2, 10 at 5."""
    return _model_steps(DINO_WM_BUDGET_SIM_STEPS, action_repeat)


def dino_wm_pairs(n: int, seed: int, action_repeat: Optional[int] = None) -> PairSet:
    """``n`` Push-T pairs of DINO-WM's evaluation: the start of an exploratory trajectory (``"mixed"``) and the
    state it reaches :func:`dino_wm_goal_steps` model steps later, every trajectory kept (easy and hard pushes
    alike, as goals drawn from a data set are). Protocol ``"dino-wm"``."""
    action_repeat = resolve_action_repeat("pusht", action_repeat)
    states, _ = collect("pusht", n, dino_wm_goal_steps(action_repeat), seed, action_repeat=action_repeat)
    return PairSet("pusht", states[:, 0].copy(), states[:, -1].copy(), seed, action_repeat, "dino-wm")


def check_protocol(env_name: str, protocol: str) -> str:
    """``protocol`` if ``env_name`` has it (:data:`PROTOCOLS`; ``"dino-wm"`` is Push-T's), else ``ValueError``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "dino-wm" and check_env_name(env_name) != "pusht":
        raise ValueError(f"protocol 'dino-wm' is Push-T's evaluation; {env_name!r} has 'region' only")
    return protocol


def make_pairs(
    env_name: str, n: int, seed: int, horizon: int = 25, action_repeat: Optional[int] = None, protocol: str = "region",
) -> PairSet:
    """Start/goal pairs for ``env_name`` at a time step of ``action_repeat`` simulator steps per model step
    (default the environment's), judged by ``protocol`` (:data:`PROTOCOLS`). ``horizon`` (model steps) only
    matters for Push-T's ``"region"`` pairs, whose goals are reached by an exploratory push of that many steps
    (``"dino-wm"`` goals lie a fixed simulated time away: :func:`dino_wm_pairs`); PointMaze's pairs do not
    depend on the time step."""
    key = check_env_name(env_name)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if check_protocol(key, protocol) == "dino-wm":
        return dino_wm_pairs(n, seed, action_repeat)
    if key == "pusht":
        return pusht_pairs(n, seed, horizon, action_repeat)
    env = make_env(key, action_repeat=resolve_action_repeat(key, action_repeat))
    try:
        return pointmaze_pairs(env, n, seed, MIN_CELLS[key])
    finally:
        env.close()


def reached(env_name: str, states: np.ndarray, goals: np.ndarray, protocol: str = "region") -> np.ndarray:
    """``[N]`` bool: ``states [N, D]`` meet ``protocol``'s success rule for ``goals [N, D]``. ``"region"``, the
    open-loop goal region: PointMaze, position within 0.45 of the goal (the environment's radius); Push-T, block
    within 20 px and pi/9 of the goal pose (DINO-WM's thresholds on the block alone). ``"dino-wm"``:
    :func:`dino_wm_reached`."""
    key = check_env_name(env_name)
    if check_protocol(key, protocol) == "dino-wm":
        return dino_wm_reached(states, goals)
    states, goals = np.asarray(states, np.float64), np.asarray(goals, np.float64)
    if key == "pusht":
        s, g = pusht_pose(states), pusht_pose(goals)
        close = np.linalg.norm(s[:, :2] - g[:, :2], axis=1) <= PUSHT_POSITION_TOLERANCE
        return close & (angle_difference(s[:, 2], g[:, 2]) <= PUSHT_ANGLE_TOLERANCE)
    return np.linalg.norm(states[:, :2] - goals[:, :2], axis=1) <= POINTMAZE_SUCCESS_RADIUS


def dino_wm_reached(states: np.ndarray, goals: np.ndarray) -> np.ndarray:
    """``[N]`` bool, DINO-WM's Push-T ``eval_state``: the Euclidean norm of the agent's and the block's position
    errors together (4 numbers, px) below 20 and the block's angle error below pi/9 (strict, as there)."""
    states, goals = np.asarray(states, np.float64), np.asarray(goals, np.float64)
    positions = (states[..., :4] - goals[..., :4]) * PUSHT_POSITION_SCALE
    s, g = pusht_pose(states), pusht_pose(goals)
    close = np.linalg.norm(positions, axis=-1) < PUSHT_POSITION_TOLERANCE
    return close & (angle_difference(s[..., 2], g[..., 2]) < PUSHT_ANGLE_TOLERANCE)


def goal_error(env_name: str, states: np.ndarray, goals: np.ndarray) -> np.ndarray:
    """``[N]`` the distance the task cares about: PointMaze position error (maze units); Push-T block
    position error (px)."""
    key = check_env_name(env_name)
    states, goals = np.asarray(states, np.float64), np.asarray(goals, np.float64)
    if key == "pusht":
        return np.linalg.norm(pusht_pose(states)[:, :2] - pusht_pose(goals)[:, :2], axis=1)
    return np.linalg.norm(states[:, :2] - goals[:, :2], axis=1)
