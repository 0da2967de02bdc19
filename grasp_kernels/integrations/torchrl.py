"""``GraspMPCPlanner``: GRASP as a TorchRL MPC planner (``torchrl.modules.planners.MPCPlannerBase``).

Usable where TorchRL's ``CEMPlanner`` is: built on a batch-unlocked (model-based) environment, called
on a TensorDict of observations, it writes the first planned action under ``action_key``
(``env.rollout(n, planner)`` works). TorchRL's planners maximise a reward; GRASP reaches a goal, so the
TensorDict must also carry the goal state under ``goal_key`` (or pass a fixed ``goal``).

The one-step dynamics ``F(s, a)`` is the environment's world model: for a ``ModelBasedEnvBase``,
``env.world_model`` is called on ``TensorDict({state_key: s, action_key: a})`` and ``state_key`` read
back (differentiable in ``a``); any other environment is stepped with ``env.step`` and
``("next", state_key)`` is read (it must be differentiable for GRASP's action gradients).

States keep their dtype (float64 runs on the reference backend). One state per step: TorchRL's
TensorDict carries the current observation only, so ``config.history`` must be 1.

Action bounds: ``action_low=`` / ``action_high=`` when passed (None = unbounded) win (a ``GraspConfig``'s
bounds are replaced); otherwise the bounds of ``env.action_spec`` where it is
bounded (one row of a batched spec, whose rows must agree), else unbounded.

Importing this module imports torchrl and tensordict.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.modules.planners import MPCPlannerBase

from ..config import GraspConfig
from ..planner import GraspPlanner
from ..result import PlanResult
from ._common import UNSET, explicit_bounds

__all__ = ["GraspMPCPlanner"]


class GraspMPCPlanner(MPCPlannerBase):
    """MPC with GRASP on a TorchRL environment.

    Args:
        env: a batch-unlocked ``EnvBase`` (typically a ``ModelBasedEnvBase``), as for ``CEMPlanner``.
        planning_horizon: ``T``.
        optim_steps: GRASP iterations (overrides ``config.iters``; None keeps it).
        config: GRASP hyper-parameters (``horizon`` is set to ``planning_horizon``; ``history`` must be 1).
        state_key: observation key of the state ``s`` (None: the only observation key other than
            ``goal_key``).
        goal_key: key of the goal state in the input TensorDict.
        goal: a fixed goal ``[*S]`` used when the TensorDict has no ``goal_key``.
        action_key: where the action is written (as ``CEMPlanner``).
        warm_start: start each plan from the previous plan shifted by one step (same batch shape).
        state_weights: per-component energy weights, broadcastable to ``S`` (``GraspPlanner``).
        action_low, action_high: action bounds that win over ``env.action_spec``'s (None = unbounded);
            not passed: the spec's bounds where finite (module docstring).

    Example:
        >>> planner = GraspMPCPlanner(env, planning_horizon=20, optim_steps=100, goal_key="goal")
        >>> env.rollout(50, planner)          # where CEMPlanner(env, 20, 100, 64, 8) would go
    """

    def __init__(
        self,
        env,
        planning_horizon: int,
        optim_steps: Optional[int] = None,
        config: Optional[GraspConfig] = None,
        state_key: Optional[str] = None,
        goal_key: str = "goal",
        goal: Optional[torch.Tensor] = None,
        action_key: str = "action",
        warm_start: bool = True,
        state_weights: Optional[torch.Tensor] = None,
        action_low: Any = UNSET,
        action_high: Any = UNSET,
    ) -> None:
        super().__init__(env=env, action_key=action_key)
        chosen = explicit_bounds(action_low, action_high)
        config = (config or GraspConfig()).replace(horizon=planning_horizon)
        if config.history != 1:
            raise ValueError(
                f"GraspMPCPlanner plans from one state per step (history = 1): TorchRL's tensordict carries the "
                f"current observation only, got config.history = {config.history}"
            )
        if optim_steps is not None:
            config = config.replace(iters=optim_steps)
        space = getattr(self.action_spec, "space", None)
        bounds = {}
        for name, attribute in (("action_low", "low"), ("action_high", "high")):
            bounds[name] = chosen[name] if name in chosen else self._spec_bound(name, getattr(space, attribute, None))
        config = config.replace(**bounds)
        if state_key is None:
            keys = [k for k in env.observation_spec.keys(True, True) if k != goal_key]
            if len(keys) != 1:
                raise ValueError(f"state_key is ambiguous among the observation keys {keys}; pass state_key=")
            state_key = keys[0]
        self.state_key, self.goal_key, self.planner_action_key = state_key, goal_key, action_key
        self.goal = goal
        self.warm_start = warm_start
        self.planning_horizon = planning_horizon
        self.action_dim = int(self.action_spec.shape[-1])
        self.grasp = GraspPlanner(self._dynamics, self.action_dim, config, state_weights=state_weights)
        self._last_actions: Optional[torch.Tensor] = None
        self.last_result: Optional[PlanResult] = None

    def _spec_bound(self, name: str, bound: Optional[torch.Tensor]) -> Optional[list[float]]:
        """One action's bound ``[A]`` from the spec's ``[*batch, A]`` bound (None where unbounded); a
        ValueError if the batch entries disagree (pass ``action_low=`` / ``action_high=``)."""
        if bound is None or not bool(torch.isfinite(bound).all()):
            return None
        rows = bound.reshape(-1, int(self.action_spec.shape[-1]))
        if not bool((rows == rows[:1]).all()):
            raise ValueError(
                f"env.action_spec has different bounds across its batch entries {tuple(self.action_spec.shape[:-1])}; "
                f"GRASP takes one bound per action dimension: pass {name}="
            )
        return rows[0].tolist()

    def _dynamics(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``F(s, a)`` through the environment's world model: ``[N, *S]``, ``[N, A]`` -> ``[N, *S]``."""
        td = TensorDict({self.state_key: states, self.planner_action_key: actions}, batch_size=[states.shape[0]],
                        device=states.device)
        world_model = getattr(self.env, "world_model", None)
        if world_model is not None:
            return world_model(td).get(self.state_key)
        return self.env.step(td).get(("next", self.state_key))

    def planning(self, tensordict: TensorDictBase) -> torch.Tensor:
        """Plan from ``tensordict[state_key]`` to the goal; returns the first action ``[*batch, A]``."""
        batch_shape = tuple(tensordict.batch_size)
        s0 = tensordict.get(self.state_key)
        goal = tensordict.get(self.goal_key, None)
        if goal is None:
            if self.goal is None:
                raise KeyError(f"the tensordict has no goal under {self.goal_key!r} and no fixed goal= was given")
            goal = self.goal.to(s0).expand_as(s0)
        if goal.shape != s0.shape:
            raise ValueError(
                f"state shape mismatch: goal {self.goal_key!r} has shape {tuple(goal.shape)} but state "
                f"{self.state_key!r} has shape {tuple(s0.shape)}"
            )
        state_shape = tuple(s0.shape[len(batch_shape):])
        s0 = s0.detach().reshape(-1, *state_shape)  # its dtype is kept (float64: the reference backend)
        goal = goal.detach().reshape(-1, *state_shape).to(dtype=s0.dtype)
        init = None
        if self.warm_start and self._last_actions is not None and self._last_actions.shape[0] == s0.shape[0]:
            init = torch.cat([self._last_actions[:, 1:], self._last_actions[:, -1:]], dim=1)
        self.grasp.state_shape = state_shape
        result = self.grasp.plan(s0, goal, init_actions=init)
        self.last_result = result
        self._last_actions = result.actions.detach()
        return result.actions[:, 0].detach().reshape(*batch_shape, *self.action_spec.shape[-1:]).to(self.action_spec.dtype)

    def reset_plan(self) -> None:
        """Forget the warm start (call at episode boundaries)."""
        self._last_actions = None
