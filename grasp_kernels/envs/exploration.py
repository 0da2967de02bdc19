"""Exploratory data collection in the real simulators, for training world models.

A world model is only as good as the states and actions it has seen. Planners push the model into
places a goal-directed policy rarely goes (against walls, around the T block from every side), so the
policies here aim at coverage rather than at any task:

* PointMaze: start uniformly anywhere in a free cell with a random velocity, then hold random actions
  for random durations (1-8 steps) with Gaussian jitter. Full force reaches the velocity clip (5 m/s)
  within two model steps, so the ball crosses cells and hits walls often.
* Push-T: start with the block uniformly in the central table area at a random angle and the agent
  anywhere that does not overlap it. Policy ``"mixed"``: mostly stage the agent on a random side of the block
  and push through a random point of it, sometimes act at random (about half the transitions move the
  block). ``"pushes"``: short staging and long steady pushes (about three quarters); ``"mixed+pushes"``
  alternates the two per trajectory.

Everything is deterministic given the seed. Requires the ``envs`` extra.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np

from .sim import (
    PUSHT_ACTION_SCALE,
    PUSHT_POSITION_SCALE,
    PointMazeEnv,
    PushTEnv,
    SimEnv,
    angle_difference,
    check_env_name,
    make_env,
    pusht_state,
)

# Keep start positions this far from a wall cell's edge (the ball's radius is 0.1) so that a start state
# never overlaps a wall, which MuJoCo would resolve with a violent push.
POINTMAZE_WALL_MARGIN = 0.15
POINTMAZE_MAX_SPEED = 5.0
POINTMAZE_BALL_RADIUS = 0.1
# Block start positions (px): the central table area, away from the walls at 5 and 506 px.
PUSHT_BLOCK_RANGE = (100.0, 412.0)
# The agent is a 15 px disc; its centre stays inside the walls (5 px lines of 2 px radius).
PUSHT_AGENT_RANGE = (25.0, 487.0)
PUSHT_AGENT_RADIUS = 15.0
# Block positions (px from the table's centre, either axis) beyond which pushes aim back at the middle.
PUSHT_RECENTRE_BEYOND = 170.0
# The T in block coordinates (px): (x_min, x_max, y_min, y_max) of its bar and of its stem.
PUSHT_T_RECTS = ((-60.0, 60.0, 0.0, 30.0), (-15.0, 15.0, 30.0, 120.0))
PUSHT_T_AREAS = np.array([(r[1] - r[0]) * (r[3] - r[2]) for r in PUSHT_T_RECTS])


def _check_count(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------- PointMaze


def _cell_box(env: PointMazeEnv, row: int, col: int) -> tuple[float, float, float, float]:
    """``(x_min, x_max, y_min, y_max)`` of the start region of a free cell: the whole cell, less a margin on
    each side that borders a wall (open sides reach the cell's edge so that junctions are covered too)."""
    center = env.cell_center(row, col)
    half = env.scaling / 2
    rows, cols = env.maze_map.shape

    def wall(r: int, c: int) -> bool:
        return not (0 <= r < rows and 0 <= c < cols) or env.maze_map[r, c] == 1

    # Rows grow downwards in the maze map while y grows upwards in the world.
    x_min = center[0] - half + (POINTMAZE_WALL_MARGIN if wall(row, col - 1) else 0.0)
    x_max = center[0] + half - (POINTMAZE_WALL_MARGIN if wall(row, col + 1) else 0.0)
    y_min = center[1] - half + (POINTMAZE_WALL_MARGIN if wall(row + 1, col) else 0.0)
    y_max = center[1] + half - (POINTMAZE_WALL_MARGIN if wall(row - 1, col) else 0.0)
    return x_min, x_max, y_min, y_max


def _pointmaze_starts(env: PointMazeEnv, n: int, rng: np.random.Generator, zero_velocity: bool) -> np.ndarray:
    """``[n, 4]`` start states: a uniformly chosen free cell, a uniform position in its start region."""
    cells = env.free_cells()
    boxes = np.array([_cell_box(env, r, c) for r, c in cells])
    # Corner regions between two wall-free sides can still touch a wall corner diagonally; a ball centre
    # within the margin of any wall cell is resampled.
    walls = np.argwhere(env.maze_map == 1)
    wall_centers = np.array([env.cell_center(int(r), int(c)) for r, c in walls])
    states = np.zeros((n, 4), dtype=np.float32)
    filled = 0
    while filled < n:
        k = n - filled
        chosen = boxes[rng.integers(0, len(boxes), size=k)]
        xy = np.stack([rng.uniform(chosen[:, 0], chosen[:, 1]), rng.uniform(chosen[:, 2], chosen[:, 3])], axis=-1)
        gap = np.abs(xy[:, None, :] - wall_centers[None]) - env.scaling / 2
        distance = np.linalg.norm(np.maximum(gap, 0.0), axis=-1).min(axis=1)
        xy = xy[distance >= POINTMAZE_WALL_MARGIN]
        states[filled : filled + len(xy), :2] = xy
        filled += len(xy)
    if not zero_velocity:
        states[:, 2:] = rng.uniform(-POINTMAZE_MAX_SPEED, POINTMAZE_MAX_SPEED, size=(n, 2))
    return states


def _random_action_segments(rng: np.random.Generator, length: int, jitter: float) -> np.ndarray:
    """``[length, 2]`` piecewise-constant uniform actions held for 1-8 steps, plus Gaussian jitter, clipped."""
    actions = np.empty((length, 2))
    t = 0
    while t < length:
        hold = int(rng.integers(1, 9))
        # A third of the segments at full force along a random direction: saturated pushes are what drive
        # the ball into walls at speed, and uniform sampling in the square rarely produces them.
        if rng.random() < 1 / 3:
            angle = rng.uniform(-math.pi, math.pi)
            value = np.array([math.cos(angle), math.sin(angle)]) * math.sqrt(2)
        else:
            value = rng.uniform(-1.0, 1.0, size=2)
        actions[t : t + hold] = value
        t += hold
    actions += jitter * rng.standard_normal(actions.shape)
    return np.clip(actions, -1.0, 1.0)


def _collect_pointmaze(
    env: PointMazeEnv, trajectories: int, length: int, rngs: Callable[[int], np.random.Generator], progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    # A fifth of the starts at rest, the planners' usual start condition.
    states = np.empty((trajectories, length + 1, 4), dtype=np.float32)
    actions = np.empty((trajectories, length, 2), dtype=np.float32)
    goal = np.zeros(4)
    for i in _progress(range(trajectories), progress, env.name):
        rng = rngs(i)
        start = _pointmaze_starts(env, 1, rng, zero_velocity=rng.random() < 0.2)[0]
        actions[i] = _random_action_segments(rng, length, jitter=float(rng.uniform(0.0, 0.3)))
        states[i, 0] = env.reset_to(start, goal)
        for t in range(length):
            states[i, t + 1] = env.step(actions[i, t])
    return states, actions


def pointmaze_wall_contact(env: PointMazeEnv, states: np.ndarray, slack: float = 0.02) -> np.ndarray:
    """``states [..., 4]`` -> ``[...]`` bool: the ball touches a wall cell (within ``slack`` of contact)."""
    walls = np.argwhere(env.maze_map == 1)
    wall_centers = np.array([env.cell_center(int(r), int(c)) for r, c in walls])
    xy = np.asarray(states, dtype=np.float64)[..., None, :2]
    gap = np.abs(xy - wall_centers) - env.scaling / 2
    distance = np.linalg.norm(np.maximum(gap, 0.0), axis=-1).min(axis=-1)
    return distance <= POINTMAZE_BALL_RADIUS + slack


# ------------------------------------------------------------------------------------------------ Push-T


def _rotation(angle: np.ndarray) -> np.ndarray:
    """``[...]`` angles -> ``[..., 2, 2]`` rotation matrices."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def pusht_block_distance(agent_xy: np.ndarray, block_xy: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Distance (px) from ``agent_xy [..., 2]`` to the T at ``block_xy [..., 2]``, ``angle [...]``; 0 inside."""
    # pymunk: world = position + R(angle) @ local, with the shapes' vertices in local coordinates.
    local = np.einsum("...ji,...j->...i", _rotation(np.asarray(angle)), np.asarray(agent_xy) - np.asarray(block_xy))
    best = None
    for x0, x1, y0, y1 in PUSHT_T_RECTS:
        dx = np.maximum(np.maximum(x0 - local[..., 0], local[..., 0] - x1), 0.0)
        dy = np.maximum(np.maximum(y0 - local[..., 1], local[..., 1] - y1), 0.0)
        d = np.hypot(dx, dy)
        best = d if best is None else np.minimum(best, d)
    return best


def _pusht_point_on_block(rng: np.random.Generator, block_xy: np.ndarray, angle: float) -> np.ndarray:
    """A uniform random point of the T's area, in world px."""
    x0, x1, y0, y1 = PUSHT_T_RECTS[int(rng.choice(2, p=PUSHT_T_AREAS / PUSHT_T_AREAS.sum()))]
    local = np.array([rng.uniform(x0, x1), rng.uniform(y0, y1)])
    return block_xy + _rotation(np.array(angle)) @ local


def _pusht_start(env: PushTEnv, rng: np.random.Generator, goal: np.ndarray) -> np.ndarray:
    """Reset ``env`` to a random start and return the state read back ``[6]``: block in the central area at a
    random angle, agent clear of it.

    The check is on the state read back, not on the one requested: gym-pusht places the block's origin and
    then rotates it about its centre of gravity, so the block lands up to ~90 px from the requested origin.
    """
    s = PUSHT_POSITION_SCALE
    lo, hi = PUSHT_BLOCK_RANGE
    while True:
        block = rng.uniform(lo, hi, size=2)
        angle = rng.uniform(-math.pi, math.pi)
        agent = rng.uniform(*PUSHT_AGENT_RANGE, size=2)
        back = env.reset_to(pusht_state(agent, block, angle), goal)
        landed = back[2:4] * s
        clear = pusht_block_distance(back[:2] * s, landed, np.arctan2(back[5], back[4])) > PUSHT_AGENT_RADIUS + 3.0
        if clear and np.all((landed >= lo) & (landed <= hi)):
            return back


def _pusht_recentred(direction: np.ndarray, block: np.ndarray) -> np.ndarray:
    """A unit push direction: ``direction``, turned back towards the middle for a block near the walls (stage on
    the outer side); otherwise random walks of the block pile up against the walls, where the kinematic agent
    can even force it through them, states no planner needs."""
    if np.any(np.abs(block - 256.0) > PUSHT_RECENTRE_BEYOND):
        direction = (block - 256.0) / np.linalg.norm(block - 256.0) + 0.5 * direction
    return direction / (np.linalg.norm(direction) + 1e-9)


# A segment of a Push-T policy: (jitter, steps), each step ("target", world xy px) to drive the PD target to,
# ("push", offset px) to drive it that far past the agent's position at that step (ends the segment once the
# agent has slid off the block), or ("action", a) a raw action.
Segment = tuple[float, list[tuple[str, np.ndarray]]]


def _mixed_segment(rng: np.random.Generator, state: np.ndarray) -> Segment:
    """``"mixed"``: mostly stage on a random side of a random point of the T and drive through that point, one
    segment in five held random actions."""
    s = PUSHT_POSITION_SCALE
    block, angle = state[2:4] * s, math.atan2(state[5], state[4])
    if rng.random() < 0.2:
        # Random segment: free motion, and the agent's behaviour away from the block.
        hold = int(rng.integers(1, 9))
        steps = [("action", rng.uniform(-1.0, 1.0, size=2))] * hold
    else:
        # Targets are read from the block's pose at the segment's start; the block moves during the push,
        # which is the point.
        contact = _pusht_point_on_block(rng, block, angle)
        direction = _pusht_recentred(rng.standard_normal(2), block)
        stage = contact + direction * rng.uniform(40.0, 90.0)
        through = contact - direction * rng.uniform(10.0, 60.0)
        steps = [("target", stage)] * int(rng.integers(1, 5)) + [("target", through)] * int(rng.integers(2, 9))
    return rng.uniform(0.0, 0.15), steps


def _pushes_segment(rng: np.random.Generator, state: np.ndarray) -> Segment:
    """``"pushes"``: the nearest of a few random points of the T (so the agent rarely crosses the table), staged
    on the agent's side for 1-2 steps, then a steady push through it in a slowly turning direction for 3-12
    steps; one segment in ten held random actions (free motion, pulling away from the block)."""
    s = PUSHT_POSITION_SCALE
    agent, block, angle = state[:2] * s, state[2:4] * s, math.atan2(state[5], state[4])
    jitter = rng.uniform(0.0, 0.1)
    if rng.random() < 0.1:
        return jitter, [("action", rng.uniform(-1.0, 1.0, size=2))] * int(rng.integers(1, 5))
    candidates = [_pusht_point_on_block(rng, block, angle) for _ in range(3)]
    contact = min(candidates, key=lambda point: float(np.linalg.norm(point - agent)))
    # Stage between the agent and the contact point and push on through it, so staging is short.
    direction = _pusht_recentred(agent - contact + 40.0 * rng.standard_normal(2), block)
    stage = np.clip(contact + direction * rng.uniform(18.0, 35.0), *PUSHT_AGENT_RANGE)
    steps = [("target", stage)] * int(rng.integers(1, 3))
    speed = rng.uniform(20.0, 60.0)
    turn = rng.uniform(-0.15, 0.15)
    c, si = math.cos(turn), math.sin(turn)
    for _ in range(int(rng.integers(3, 13))):
        steps.append(("push", -direction * speed))
        direction = np.array([c * direction[0] - si * direction[1], si * direction[0] + c * direction[1]])
    return jitter, steps


def _collect_pusht_segments(
    env: PushTEnv, trajectories: int, length: int, rngs: Callable[[int], np.random.Generator], progress: bool,
    segment: Callable[[np.random.Generator, np.ndarray], Segment],
) -> tuple[np.ndarray, np.ndarray]:
    """Trajectories of a segment policy (:data:`Segment`) from random starts, each a function of ``rngs(i)``."""
    states = np.empty((trajectories, length + 1, 6), dtype=np.float32)
    actions = np.empty((trajectories, length, 2), dtype=np.float32)
    goal = pusht_state((256.0, 256.0), (256.0, 256.0), math.pi / 4)
    s = PUSHT_POSITION_SCALE
    for i in _progress(range(trajectories), progress, env.name):
        rng = rngs(i)
        state = _pusht_start(env, rng, goal)
        states[i, 0] = state
        t = 0
        while t < length:
            jitter, steps = segment(rng, state)
            pushed = 0
            for kind, value in steps:
                if t >= length:
                    break
                agent = state[:2] * s
                if kind == "push":
                    # A push that slid off the block ends: driving on would cross the table without contact.
                    slid = pusht_block_distance(agent, state[2:4] * s, math.atan2(state[5], state[4]))
                    if pushed >= 2 and slid > PUSHT_AGENT_RADIUS + 10.0:
                        break
                    pushed += 1
                    kind, value = "target", agent + value
                action = (np.clip(value, *PUSHT_AGENT_RANGE) - agent) / PUSHT_ACTION_SCALE if kind == "target" else value
                action = np.clip(action + jitter * rng.standard_normal(2), -1.0, 1.0)
                actions[i, t] = action
                state = env.step(action)
                states[i, t + 1] = state
                t += 1
    return states, actions


def _collect_pusht(env, trajectories, length, rngs, progress):
    """``"mixed"`` (:func:`_mixed_segment`)."""
    return _collect_pusht_segments(env, trajectories, length, rngs, progress, _mixed_segment)


def _collect_pusht_pushes(env, trajectories, length, rngs, progress):
    """``"pushes"``, contact-heavy (:func:`_pushes_segment`)."""
    return _collect_pusht_segments(env, trajectories, length, rngs, progress, _pushes_segment)


def _collect_pusht_both(
    env: PushTEnv, trajectories: int, length: int, rngs: Callable[[int], np.random.Generator], progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Even trajectories from ``"mixed"``, odd ones from ``"pushes"`` (each still a function of ``(seed, i)``
    alone): the contact of the second with the free motion and staging of the first."""
    even = _collect_pusht(env, (trajectories + 1) // 2, length, lambda j: rngs(2 * j), progress)
    odd = _collect_pusht_pushes(env, trajectories // 2, length, lambda j: rngs(2 * j + 1), progress)
    states = np.empty((trajectories, *even[0].shape[1:]), dtype=np.float32)
    actions = np.empty((trajectories, *even[1].shape[1:]), dtype=np.float32)
    states[0::2], actions[0::2] = even
    states[1::2], actions[1::2] = odd
    return states, actions


# Exploration policies for Push-T training data, by name (PointMaze has one).
PUSHT_POLICIES = {"mixed": _collect_pusht, "pushes": _collect_pusht_pushes, "mixed+pushes": _collect_pusht_both}


# ----------------------------------------------------------------------------------------------- public


def _progress(iterable, enabled: bool, name: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=f"collect {name}", unit="traj", leave=False)


def check_policy(env_name: str, policy: str) -> str:
    """``policy`` if ``env_name`` has an exploration policy of that name (Push-T: :data:`PUSHT_POLICIES`;
    PointMaze: ``"mixed"`` only), else a ValueError naming the known ones."""
    known = sorted(PUSHT_POLICIES) if check_env_name(env_name) == "pusht" else ["mixed"]
    if policy not in known:
        raise ValueError(f"policy must be one of {known} for {env_name}, got {policy!r}")
    return policy


def collect(
    env_name: str,
    trajectories: int,
    length: int,
    seed: int,
    progress: bool = False,
    action_repeat: Optional[int] = None,
    policy: str = "mixed",
) -> tuple[np.ndarray, np.ndarray]:
    """Exploratory trajectories in the real simulator.

    Args:
        env_name: ``pointmaze-umaze|medium|large`` or ``pusht``.
        trajectories: ``N``, number of trajectories (>= 1).
        length: ``L``, model steps per trajectory (>= 1).
        seed: seeds the start states, the policy and the simulator; equal seeds give equal data.
        progress: show a tqdm bar.
        action_repeat: simulator steps per model step (the frame skip); ``None`` is the environment's default.
        policy: Push-T only, one of :data:`PUSHT_POLICIES`: ``"mixed"`` (stage-and-push with random segments,
            about half the transitions move the block; it also makes the task pairs), ``"pushes"``
            (contact-heavy: about three quarters) or ``"mixed+pushes"`` (alternate trajectories of the two).
            PointMaze has one policy and takes ``"mixed"``.

    Returns:
        ``states [N, L+1, D]`` float32 (planning states, ``states[:, t+1]`` after ``actions[:, t]``) and
        ``actions [N, L, A]`` float32 in ``[-1, 1]``.
    """
    name = check_env_name(env_name)
    trajectories = _check_count(trajectories, "trajectories")
    length = _check_count(length, "length")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    # One generator per trajectory: the first n trajectories do not depend on how many are collected.
    def rngs(i: int) -> np.random.Generator:
        return np.random.default_rng([int(seed), i, 0x6B5])

    policy = check_policy(name, policy)
    env = make_env(name, seed=int(seed), action_repeat=action_repeat)
    try:
        if isinstance(env, PointMazeEnv):
            return _collect_pointmaze(env, trajectories, length, rngs, progress)
        return PUSHT_POLICIES[policy](env, trajectories, length, rngs, progress)
    finally:
        env.close()


def random_start_states(env_name: str, n: int, seed: int) -> np.ndarray:
    """``[n, D]`` float32 valid start states, deterministic given ``seed``.

    PointMaze: at rest, uniformly anywhere in a free cell (clear of the walls). Push-T: the block in the
    central area at a random angle, the agent clear of it; these are states read back from the simulator,
    i.e. real block poses.
    """
    name = check_env_name(env_name)
    n = _check_count(n, "n")
    rng = np.random.default_rng([int(seed), 0x57A])
    env = make_env(name, seed=int(seed))
    try:
        if isinstance(env, PushTEnv):
            goal = pusht_state((256.0, 256.0), (256.0, 256.0), math.pi / 4)
            return np.stack([_pusht_start(env, rng, goal) for _ in range(n)]).astype(np.float32)
        return _pointmaze_starts(env, n, rng, zero_velocity=True)
    finally:
        env.close()


def contact_fraction(env_name: str, states: np.ndarray, env: Optional[SimEnv] = None) -> float:
    """How much of ``states [N, L+1, D]`` involves contact: PointMaze, the fraction of states touching a wall;
    Push-T, the fraction of transitions in which the block moved (more than 0.5 px or 0.5 degrees)."""
    name = check_env_name(env_name)
    states = np.asarray(states)
    if name == "pusht":
        moved = np.linalg.norm(np.diff(states[..., 2:4], axis=-2), axis=-1) * PUSHT_POSITION_SCALE > 0.5
        angle = np.arctan2(states[..., 5], states[..., 4])
        turned = angle_difference(angle[..., 1:], angle[..., :-1]) > math.radians(0.5)
        return float(np.mean(moved | turned))
    owned = env is None
    env = make_env(name) if owned else env
    try:
        return float(np.mean(pointmaze_wall_contact(env, states)))
    finally:
        if owned:
            env.close()
