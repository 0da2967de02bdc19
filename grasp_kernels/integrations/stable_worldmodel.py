"""``GraspSolver``: GRASP behind stable-worldmodel's ``Solver`` protocol (``stable_worldmodel.solver``).

stable-worldmodel's evaluation loop (``WorldModelPolicy``) calls ``solver.configure(action_space=,
n_envs=, config=PlanConfig)`` once and ``solver(info_dict, init_action=None)`` (= ``solve``) at every
replanning step; ``solve`` returns a dict whose ``"actions"`` is ``[n_envs, horizon, action_dim]`` on
the CPU, with ``action_dim = env action dim * config.action_block`` (frame skip: see
:mod:`grasp_kernels.actions`). Their solvers score candidates with the world model's ``get_cost``;
GRASP needs the one-step dynamics instead, so ``GraspSolver`` takes

* ``world_model``: ``F(states, actions)`` on latent states, ``[N, *S]`` (or windows ``[N, h, *S]`` for
  ``GraspConfig(history=h)``), ``[N, A]`` -> ``[N, *S]``;
* ``encode``: ``info_dict -> (obs_frames [B, T_obs, *S], goal [B, *S])``, the latent observation
  history and goal (e.g. a JEPA encoder applied to ``info_dict["pixels"]`` and ``info_dict["goal"]``).
  Default: ``info_dict[obs_key]`` and the newest frame of ``info_dict[goal_key]`` as the states.

Action bounds: none by default. ``WorldModelPolicy`` inverse-transforms the solver's actions (its
``process["action"]``), so a solver plans in the normalised action space and their CEM/iCEM/MPPI/GD never
clip; the environment's ``Box`` bounds are in the raw space and are not used. Pass ``action_low=`` /
``action_high=`` (in the solver's action space: a float, ``A_env`` values tiled over ``action_block``, or
``action_dim`` values) to clamp. The adapter owns the bounds: a ``GraspConfig``'s are replaced.

This module does not import stable_worldmodel (the protocol is structural).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from .._checks import check_device
from .._problem import check_planner_args
from ..config import GraspConfig
from .._problem import check_model_history
from ..lifted import WorldModel
from ..result import PlanResult
from ._common import UNSET, as_tensor, explicit_bounds, plan_from_frames

Encoder = Callable[[dict], tuple[torch.Tensor, torch.Tensor]]

__all__ = ["GraspSolver"]


class GraspSolver:
    """A stable-worldmodel ``Solver`` that plans with GRASP.

    Args:
        world_model: latent dynamics (module docstring).
        encode: ``info_dict -> (obs_frames [B, T_obs, *S], goal [B, *S])``; None reads the keys below.
        config: GRASP hyper-parameters; ``horizon`` is taken from the ``PlanConfig`` at ``configure``.
        state_shape: ``S``, checked against what ``encode`` returns (a clear error on a mismatch).
        state_weights: per-component weights of the energy (``GraspPlanner``), broadcastable to ``S``.
        device: where the plan runs.
        obs_key, goal_key: ``info_dict`` keys read by the default encoder (``[B, T_obs, *S]`` each).
        action_low, action_high: action bounds in the solver's (normalised) action space: a float,
            ``A_env`` values (tiled over ``action_block``) or ``action_dim`` values; None or not passed:
            unbounded (module docstring); ``config``'s bounds are replaced.

    Example:
        >>> solver = GraspSolver(predictor, encode=lambda info: (enc(info["pixels"]), enc(info["goal"])[:, -1]),
        ...                      config=GraspConfig(iters=200, history=3))
        >>> policy = swm.policy.WorldModelPolicy(solver=solver, config=swm.PlanConfig(horizon=16, receding_horizon=4))
    """

    def __init__(
        self,
        world_model: WorldModel,
        encode: Optional[Encoder] = None,
        config: Optional[GraspConfig] = None,
        state_shape: Optional[Sequence[int]] = None,
        state_weights: Optional[torch.Tensor] = None,
        device: str | torch.device = "cpu",
        obs_key: str = "state",
        goal_key: str = "goal_state",
        action_low: Any = UNSET,
        action_high: Any = UNSET,
    ) -> None:
        check_planner_args(world_model, None)  # the action dimension is checked at configure()
        if encode is not None and not callable(encode):
            raise TypeError(f"encode must be callable info_dict -> (obs_frames, goal), got {type(encode).__name__}")
        self._bounds = explicit_bounds(action_low, action_high)
        self.grasp_config = config or GraspConfig()
        check_model_history(world_model, self.grasp_config.history)
        self.world_model = world_model
        self.encode = encode
        self.state_shape = None if state_shape is None else tuple(int(s) for s in state_shape)
        self.state_weights = state_weights
        self.device = check_device("device", device)
        self.obs_key, self.goal_key = obs_key, goal_key
        self._config: Any = None
        self._n_envs: Optional[int] = None
        self._env_action_dim: Optional[int] = None
        self._action_space: Any = None
        self.last_result: Optional[PlanResult] = None

    # ---- the Solver protocol -------------------------------------------------------------------

    def configure(self, *, action_space: Any, n_envs: int, config: Any) -> None:
        """Store the (batched) action space ``[n_envs, A_env]`` and the ``PlanConfig`` (``horizon``,
        ``action_block``)."""
        shape = getattr(action_space, "shape", None)
        if shape is None or len(shape) < 2:
            raise ValueError(f"action_space must be a batched space of shape (n_envs, A_env), got shape {shape}")
        for field in ("horizon", "action_block"):
            if not hasattr(config, field):
                raise TypeError(f"config must be a stable-worldmodel PlanConfig with .{field}, got {type(config).__name__}")
        self._action_space = action_space
        self._n_envs = int(n_envs)
        self._config = config
        self._env_action_dim = int(np.prod(shape[1:]))
        check_planner_args(self.world_model, self.action_dim)

    # before configure() these raise AttributeError, as their solvers do (so the runtime-checkable
    # Solver protocol matches a configured solver only)

    @property
    def n_envs(self) -> int:
        """Number of parallel environments."""
        return self._configured("n_envs")._n_envs  # type: ignore[return-value]

    @property
    def action_dim(self) -> int:
        """Flattened action dimension including the ``action_block`` grouping."""
        self._configured("action_dim")
        return self._env_action_dim * int(self._config.action_block)  # type: ignore[operator]

    @property
    def horizon(self) -> int:
        """Planning horizon in model steps."""
        return int(self._configured("horizon")._config.horizon)

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        """Forwards to :meth:`solve`, as their solvers do."""
        return self.solve(*args, **kwargs)

    def solve(self, info_dict: dict, init_action: Optional[torch.Tensor] = None) -> dict:
        """Plan for every environment of ``info_dict`` (tensors ``[n, T_obs, ...]``).

        Args:
            info_dict: the environment's info dict (as handed by ``WorldModelPolicy``).
            init_action: optional warm start ``[n, t <= horizon, action_dim]`` (zero-padded).

        Returns:
            ``{"actions": [n, horizon, action_dim] (CPU), "costs": list of n floats, the final squared
            (weighted) distance of each plan's rollout to the goal (as their CEM/iCEM/MPPI's per-env
            "costs"), "energy_history": [iters, n], "solve_time": seconds}``.
        """
        start = time.perf_counter()
        self._require()
        obs_frames, goal = self._encode(info_dict)
        result = plan_from_frames(
            self.world_model, self.action_dim, self._plan_config(), obs_frames, goal,
            state_shape=self.state_shape, state_weights=self.state_weights, init=init_action, init_name="init_action",
        )
        self.last_result = result
        return {
            "actions": result.actions.detach().cpu(),
            "costs": result.final_distance.square().detach().cpu().tolist(),
            "energy_history": result.energy_history.detach().cpu(),
            "solve_time": time.perf_counter() - start,
        }

    # ---- helpers ---------------------------------------------------------------------------------

    def _require(self) -> "GraspSolver":
        if self._config is None:
            raise RuntimeError("GraspSolver.configure(action_space=, n_envs=, config=) must be called before use")
        return self

    def _configured(self, name: str) -> "GraspSolver":
        if self._config is None:
            raise AttributeError(f"GraspSolver.{name} is known after configure(action_space=, n_envs=, config=)")
        return self

    def _encode(self, info_dict: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(info_dict, dict):
            raise TypeError(f"info_dict must be a dict, got {type(info_dict).__name__}")
        if self.encode is not None:
            out = self.encode(info_dict)
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError("encode must return a tuple (obs_frames [B, T_obs, *S], goal [B, *S])")
            obs, goal = out
        else:
            for key in (self.obs_key, self.goal_key):
                if key not in info_dict:
                    raise KeyError(f"info_dict has no key {key!r} (pass encode=, or obs_key=/goal_key=)")
            obs, goal = info_dict[self.obs_key], info_dict[self.goal_key]
            goal = goal[:, -1] if getattr(goal, "ndim", 0) == getattr(obs, "ndim", 0) else goal
        return as_tensor("obs_frames", obs, self.device), as_tensor("goal", goal, self.device)

    def _plan_config(self) -> GraspConfig:
        """The config for this plan: ``horizon`` from the ``PlanConfig``, the bounds the user chose
        (``A_env`` values tiled over ``action_block``), unbounded otherwise."""
        changes: dict[str, Any] = {"horizon": self.horizon}
        block = int(self._config.action_block)
        for name in ("action_low", "action_high"):
            value = self._bounds.get(name)
            if value is not None and block > 1 and not isinstance(value, (int, float)):
                values = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
                if values.ndim == 1 and values.shape[0] == self._env_action_dim:
                    value = np.tile(values, block).tolist()
            changes[name] = value
        return self.grasp_config.replace(**changes)
