"""Real simulators through their own packages: PointMaze (gymnasium-robotics, MuJoCo) and Push-T (gym-pusht,
pymunk), with action repeat and a planning state.

One model step is ``action_repeat`` simulator steps with the same action (DINO-WM's frame skip). Each
:class:`SimEnv` is one simulator; :class:`SimBatch` steps ``B`` of them in lock step for batched MPC.

Planning states (float32):

* PointMaze: ``(x, y, vx, vy)``, the environment's own observation. Actions: the force in ``[-1, 1]^2``.
  Success (the environment's criterion): ``||(x, y) - goal_xy|| <= 0.45``.
* Push-T: ``(agent_x, agent_y, block_x, block_y) / 100 px`` and ``(cos, sin)`` of the block angle (the angle
  wraps; its cosine and sine do not). Actions in ``[-1, 1]^2`` move the PD target ``action * 80 px`` from the
  agent. Success (the environment's criterion): the block covers more than 95 % of the goal pose's area.

Requires the ``envs`` extra: ``pip install -e ".[envs]"``.
"""

from __future__ import annotations

import importlib
import math
import os
import platform
import sys
from collections import deque
from typing import Optional, Sequence

import numpy as np

from .._checks import check_int

POINTMAZE_LAYOUTS = {"umaze": "UMaze", "medium": "Medium", "large": "Large"}
ENV_NAMES = tuple(f"pointmaze-{layout}" for layout in POINTMAZE_LAYOUTS) + ("pusht",)

POINTMAZE_SUCCESS_RADIUS = 0.45
PUSHT_POSITION_SCALE = 100.0
PUSHT_ACTION_SCALE = 80.0
# Open-loop goal region for Push-T: block within 20 px and pi/9 of the goal pose. DINO-WM's thresholds; its own
# eval_state puts the 20 px on the agent and the block together (one norm over both positions), stricter.
PUSHT_POSITION_TOLERANCE = 20.0
PUSHT_ANGLE_TOLERANCE = math.pi / 9


def default_mujoco_gl() -> None:
    """Make MuJoCo's offscreen renderer work headless: ``MUJOCO_GL=egl`` on Linux without a display.

    MuJoCo picks its OpenGL backend once, when ``mujoco`` is first imported, and its default (GLFW) needs a
    display; EGL renders without one (OSMesa does not work on these machines). A value the user set is kept,
    and nothing changes once ``mujoco`` is imported (too late) or off Linux (MuJoCo rejects ``egl`` there).
    """
    if (
        "MUJOCO_GL" not in os.environ
        and "mujoco" not in sys.modules
        and platform.system() == "Linux"
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
    ):
        os.environ["MUJOCO_GL"] = "egl"


def _require(module: str) -> object:
    # gymnasium_robotics imports mujoco: the GL backend has to be chosen before that (see default_mujoco_gl).
    default_mujoco_gl()
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"grasp_kernels.envs: the simulators need the 'envs' extra ({module} is missing): "
            f"pip install -e \".[envs]\""
        ) from error


# Simulator steps per model step when none is asked for. PointMaze: 10 MuJoCo steps of 0.01 s; Push-T: 2 control
# steps of 0.1 s (gym-pusht's 10 Hz), so one model step is 0.2 s.
DEFAULT_ACTION_REPEAT = {"pointmaze": 10, "pusht": 2}


def default_action_repeat(env_name: str) -> int:
    """Simulator steps per model step of ``env_name`` when none is given (the shipped models' time step)."""
    return DEFAULT_ACTION_REPEAT[check_env_name(env_name).split("-")[0]]


def resolve_action_repeat(env_name: str, action_repeat: Optional[int]) -> int:
    """``action_repeat`` checked (an int >= 1), or ``env_name``'s default for ``None``."""
    if action_repeat is None:
        return default_action_repeat(env_name)
    return check_int("action_repeat", action_repeat, minimum=1)


def check_env_name(name: str) -> str:
    """Normalise and validate an environment name (``pointmaze-umaze|medium|large`` or ``pusht``)."""
    if not isinstance(name, str):
        raise TypeError(f"env name must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    if key.startswith("pointmaze-"):
        layout = key.split("-", 1)[1]
        if layout not in POINTMAZE_LAYOUTS:
            raise ValueError(
                f"unknown PointMaze layout {layout!r} in env name {name!r}; expected one of {sorted(POINTMAZE_LAYOUTS)}"
            )
    elif key != "pusht":
        raise ValueError(f"unknown environment {name!r}; expected one of {list(ENV_NAMES)}")
    return key


class SimEnv:
    """One simulator behind a planning-state interface.

    Attributes:
        name: environment name (one of :data:`ENV_NAMES`).
        state_dim: ``D`` of the planning state.
        action_dim: ``A``.
        action_repeat: simulator steps per model step.
    """

    name: str
    state_dim: int
    action_dim: int = 2
    action_repeat: int

    def reset_to(self, state: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Put the simulator in planning state ``state [D]`` with goal ``goal [D]``; returns the state read back."""
        raise NotImplementedError

    def step(self, action: np.ndarray) -> np.ndarray:
        """Apply ``action [A]`` for ``action_repeat`` simulator steps; returns the new planning state ``[D]``."""
        raise NotImplementedError

    def is_success(self) -> bool:
        """The environment's own success criterion for the goal given to :meth:`reset_to`."""
        raise NotImplementedError

    def restore(self, state: np.ndarray, velocities: Optional[np.ndarray] = None) -> np.ndarray:
        """Put the simulator exactly in the recorded state ``state [D]`` (for replaying recorded data; the goal is
        ``state``). Where the planning state is the simulator's whole state this is :meth:`reset_to`;
        ``velocities`` is for simulators with state the planning state leaves out."""
        if velocities is not None:
            raise ValueError(f"{self.name}'s planning state is its whole state: velocities must be None")
        return self.reset_to(state, state)

    def close(self) -> None:
        """Release the simulator."""


class PointMazeEnv(SimEnv):
    """PointMaze through ``gymnasium_robotics`` (``PointMaze_<Layout>-v3``), action repeat ``action_repeat``."""

    state_dim = 4

    def __init__(self, layout: str = "medium", action_repeat: int = DEFAULT_ACTION_REPEAT["pointmaze"], seed: int = 0) -> None:
        gym = _require("gymnasium")
        robotics = _require("gymnasium_robotics")
        gym.register_envs(robotics)
        layout = check_env_name(f"pointmaze-{layout}").split("-", 1)[1]
        self.name = f"pointmaze-{layout}"
        self.layout = layout
        self.action_repeat = check_int("action_repeat", action_repeat, minimum=1)
        # The unwrapped environment: no time limit, no goal resampling on success (continuing task, fixed goal).
        self._env = gym.make(
            f"PointMaze_{POINTMAZE_LAYOUTS[layout]}-v3", continuing_task=True, reset_target=False,
            disable_env_checker=True,
        ).unwrapped
        self._env.reset(seed=seed)
        self.maze_map = np.array(self._env.maze.maze_map, dtype=np.int64)
        self.scaling = float(self._env.maze.maze_size_scaling)
        self._success = False

    def cell_center(self, row: int, col: int) -> np.ndarray:
        """World ``(x, y)`` of the centre of maze cell ``(row, col)``."""
        return np.asarray(self._env.maze.cell_rowcol_to_xy(np.array([row, col])), dtype=np.float64)

    def free_cells(self) -> list[tuple[int, int]]:
        """``(row, col)`` of every cell that is not a wall."""
        return [tuple(int(v) for v in rc) for rc in np.argwhere(self.maze_map != 1)]

    def cell_distances(self, source: tuple[int, int]) -> dict[tuple[int, int], int]:
        """Shortest-path distance in cells (4-neighbour moves through free cells) from ``source``."""
        rows, cols = self.maze_map.shape
        distance = {source: 0}
        queue = deque([source])
        while queue:
            r, c = queue.popleft()
            for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if 0 <= nr < rows and 0 <= nc < cols and self.maze_map[nr, nc] != 1 and (nr, nc) not in distance:
                    distance[(nr, nc)] = distance[(r, c)] + 1
                    queue.append((nr, nc))
        return distance

    def wall_rectangles(self) -> list[tuple[float, float, float, float]]:
        """``(x_min, y_min, width, height)`` of every wall cell, for plots."""
        half = self.scaling / 2
        return [
            (*(self.cell_center(r, c) - half), self.scaling, self.scaling) for r, c in np.argwhere(self.maze_map == 1)
        ]

    def reset_to(self, state: np.ndarray, goal: np.ndarray) -> np.ndarray:
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        goal = np.asarray(goal, dtype=np.float64).reshape(-1)
        if state.shape != (4,) or goal.shape != (4,):
            raise ValueError(f"PointMaze state and goal must have shape (4,), got {state.shape} and {goal.shape}")
        self._env.goal = goal[:2].copy()
        self._env.update_target_site_pos()
        self._env.point_env.set_state(state[:2].copy(), state[2:].copy())
        self._success = self._reached()
        return self.state()

    def state(self) -> np.ndarray:
        """The current planning state ``(x, y, vx, vy)``."""
        data = self._env.point_env.data
        return np.concatenate([data.qpos, data.qvel]).astype(np.float32)

    def _reached(self) -> bool:
        return bool(np.linalg.norm(self._env.point_env.data.qpos[:2] - self._env.goal) <= POINTMAZE_SUCCESS_RADIUS)

    def step(self, action: np.ndarray) -> np.ndarray:
        action = np.asarray(action, dtype=np.float64).reshape(2)
        for _ in range(self.action_repeat):
            _, _, _, _, info = self._env.step(action)
            self._success = self._success or bool(info["success"])
        return self.state()

    def is_success(self) -> bool:
        """Whether the ball has been within 0.45 of the goal at any simulator step since :meth:`reset_to`."""
        return self._success

    def close(self) -> None:
        self._env.close()


def pusht_state(agent_xy: Sequence[float], block_xy: Sequence[float], angle: float) -> np.ndarray:
    """Push-T planning state from simulator coordinates (pixels, radians)."""
    s = PUSHT_POSITION_SCALE
    return np.array(
        [agent_xy[0] / s, agent_xy[1] / s, block_xy[0] / s, block_xy[1] / s, math.cos(angle), math.sin(angle)],
        dtype=np.float32,
    )


def pusht_pose(state: np.ndarray) -> np.ndarray:
    """``[..., 6]`` planning states -> ``[..., 3]`` block poses ``(x_px, y_px, angle)``."""
    state = np.asarray(state, dtype=np.float64)
    return np.stack(
        [state[..., 2] * PUSHT_POSITION_SCALE, state[..., 3] * PUSHT_POSITION_SCALE,
         np.arctan2(state[..., 5], state[..., 4])],
        axis=-1,
    )


def angle_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|a - b|`` wrapped to ``[0, pi]``."""
    return np.abs((np.asarray(a) - np.asarray(b) + np.pi) % (2 * np.pi) - np.pi)


class PushTEnv(SimEnv):
    """Push-T through ``gym_pusht`` (``gym_pusht/PushT-v0``, state observations), action repeat ``action_repeat``."""

    name = "pusht"
    state_dim = 6

    def __init__(self, action_repeat: int = DEFAULT_ACTION_REPEAT["pusht"], seed: int = 0) -> None:
        gym = _require("gymnasium")
        _require("gym_pusht")
        self.action_repeat = check_int("action_repeat", action_repeat, minimum=1)
        self._env = gym.make("gym_pusht/PushT-v0", obs_type="state", disable_env_checker=True).unwrapped
        self._env.reset(seed=seed)
        self._goal_pose = np.array([256.0, 256.0, math.pi / 4])
        self._success = False

    def reset_to(self, state: np.ndarray, goal: np.ndarray) -> np.ndarray:
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        goal = np.asarray(goal, dtype=np.float64).reshape(-1)
        if state.shape != (6,) or goal.shape != (6,):
            raise ValueError(f"Push-T state and goal must have shape (6,), got {state.shape} and {goal.shape}")
        s = PUSHT_POSITION_SCALE
        angle = math.atan2(state[5], state[4])
        self._env.reset(options={"reset_to_state": [state[0] * s, state[1] * s, state[2] * s, state[3] * s, angle]})
        # gym-pusht sets the block's position before its angle (kept for its legacy data), which turns the
        # block about its centre of gravity and moves it; set the angle first so the state reads back exactly.
        self._place_block(state)
        self._env.space.step(self._env.dt)
        self._goal_pose = pusht_pose(goal)
        self._env.goal_pose = self._goal_pose.copy()
        self._success = False
        return self.state()

    def state(self) -> np.ndarray:
        """The current planning state."""
        env = self._env
        return pusht_state(env.agent.position, env.block.position, env.block.angle)

    def velocities(self) -> np.ndarray:
        """The simulator state the planning state leaves out: ``[5]`` the agent's and the block's velocity
        (px/s) and the block's angular velocity (rad/s)."""
        env = self._env
        return np.array([*env.agent.velocity, *env.block.velocity, env.block.angular_velocity], dtype=np.float64)

    def _place_block(self, state: np.ndarray) -> None:
        """Set the block's pose from a planning state ``[6]``: its angle before its position (setting the angle
        turns the block about its centre of gravity), no physics step."""
        s = PUSHT_POSITION_SCALE
        self._env.block.angle = math.atan2(state[5], state[4])
        self._env.block.position = (state[2] * s, state[3] * s)

    def restore(self, state: np.ndarray, velocities: Optional[np.ndarray] = None) -> np.ndarray:
        """Put the simulator exactly in ``state [6]`` with :meth:`velocities` ``velocities [5]`` (default at rest).

        :meth:`reset_to` lets the physics settle a step, which pushes bodies in contact apart; here the pose is
        set again after that step, so the next step starts from the recorded pose. What no reset restores is
        the contact solver's cached impulses."""
        self.reset_to(state, state)
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        self._place_block(state)
        self._env.agent.position = (state[0] * PUSHT_POSITION_SCALE, state[1] * PUSHT_POSITION_SCALE)
        self.set_velocities(np.zeros(5) if velocities is None else velocities)
        return self.state()

    def set_velocities(self, velocities: np.ndarray) -> None:
        """Set :meth:`velocities` (``[5]``), e.g. after :meth:`reset_to`, which leaves both bodies at rest."""
        v = np.asarray(velocities, dtype=np.float64).reshape(-1)
        if v.shape != (5,) or not np.all(np.isfinite(v)):
            raise ValueError(f"velocities must be 5 finite numbers, got {np.asarray(velocities).shape} {v}")
        self._env.agent.velocity = (float(v[0]), float(v[1]))
        self._env.block.velocity = (float(v[2]), float(v[3]))
        self._env.block.angular_velocity = float(v[4])

    def step(self, action: np.ndarray) -> np.ndarray:
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        target = np.clip(np.array(self._env.agent.position) + PUSHT_ACTION_SCALE * action, 0.0, 512.0)
        for _ in range(self.action_repeat):
            _, _, _, _, info = self._env.step(target)
            self._success = self._success or bool(info["is_success"])
        return self.state()

    def is_success(self) -> bool:
        """Whether the block has covered more than 95 % of the goal pose at a step since :meth:`reset_to`."""
        return self._success

    def close(self) -> None:
        self._env.close()


def make_env(name: str, seed: int = 0, action_repeat: Optional[int] = None) -> SimEnv:
    """One simulator by name: ``pointmaze-umaze``, ``pointmaze-medium``, ``pointmaze-large`` or ``pusht``."""
    key = check_env_name(name)
    kwargs = {} if action_repeat is None else {"action_repeat": action_repeat}
    if key == "pusht":
        return PushTEnv(seed=seed, **kwargs)
    return PointMazeEnv(key.split("-", 1)[1], seed=seed, **kwargs)


class SimBatch:
    """``B`` simulators of one environment stepped in lock step (for batched MPC)."""

    def __init__(self, name: str, batch: int, seed: int = 0, action_repeat: Optional[int] = None) -> None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an int >= 1, got {batch!r}")
        self.envs = [make_env(name, seed=seed + i, action_repeat=action_repeat) for i in range(batch)]
        self.name = self.envs[0].name
        self.state_dim = self.envs[0].state_dim
        self.action_dim = self.envs[0].action_dim

    def __len__(self) -> int:
        return len(self.envs)

    def reset_to(self, states: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """``states, goals [B, D]`` -> states read back ``[B, D]``."""
        self._check(states, "states")
        self._check(goals, "goals")
        return np.stack([env.reset_to(s, g) for env, s, g in zip(self.envs, states, goals)])

    def step(self, actions: np.ndarray, active: Optional[np.ndarray] = None) -> np.ndarray:
        """``actions [B, A]`` -> ``[B, D]``; simulators with ``active[b] = False`` are left as they are."""
        actions = np.asarray(actions)
        if actions.shape != (len(self), self.action_dim):
            raise ValueError(f"actions must have shape {(len(self), self.action_dim)}, got {actions.shape}")
        return np.stack(
            [env.step(a) if active is None or active[i] else env.state() for i, (env, a) in enumerate(zip(self.envs, actions))]
        )

    def success(self) -> np.ndarray:
        """``[B]`` bool, each simulator's own success criterion."""
        return np.array([env.is_success() for env in self.envs])

    def _check(self, array: np.ndarray, name: str) -> None:
        shape = np.shape(array)
        if shape != (len(self), self.state_dim):
            raise ValueError(f"{name} must have shape {(len(self), self.state_dim)}, got {shape}")

    def close(self) -> None:
        for env in self.envs:
            env.close()
