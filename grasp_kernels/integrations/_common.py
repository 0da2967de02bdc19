"""Pieces shared by the adapters: tensors from host containers, frame windows, shape checks, action
bounds and the common plan flow (check -> latest frames -> warm start -> ``GraspPlanner.plan``)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..config import GraspConfig
from ..planner import GraspPlanner
from ..lifted import WorldModel
from ..result import PlanResult


class _Unset:
    """The default of an adapter's ``action_low`` / ``action_high``: "not passed" (None means unbounded)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def as_tensor(name: str, value: Any, device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A floating tensor from a tensor or numpy array (the host libraries hand out both)."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")
    return value.detach().to(device=device, dtype=dtype)


def latest_frames(name: str, frames: torch.Tensor, history: int) -> torch.Tensor:
    """The planner's start from observed frames ``[B, T_obs, *S]``: ``[B, *S]`` (the newest frame)
    for ``history = 1``, else the newest ``h`` frames ``[B, h, *S]``; a clear error if ``T_obs < h``."""
    if frames.dim() < 2:
        raise ValueError(f"{name} must be observed frames [B, T_obs, *S], got shape {tuple(frames.shape)}")
    if frames.shape[1] < history:
        raise ValueError(
            f"history mismatch: the planner's world model takes history = {history} frames but {name} carry "
            f"only {frames.shape[1]} (shape {tuple(frames.shape)})"
        )
    return frames[:, -1] if history == 1 else frames[:, -history:]


def encoder_state_check(obs_frames: torch.Tensor, goal: torch.Tensor, state_shape: Optional[Sequence[int]]) -> tuple[int, ...]:
    """The state shape ``S`` shared by the encoded observation frames ``[B, T, *S]`` and goal ``[B, *S]``,
    checked against the planner's ``state_shape`` when given (ValueError naming both otherwise)."""
    shape = tuple(goal.shape[1:])
    if tuple(obs_frames.shape[2:]) != shape or obs_frames.shape[0] != goal.shape[0]:
        raise ValueError(
            f"state shape mismatch: the encoder returned observation frames of shape {tuple(obs_frames.shape)} "
            f"([B, T, *S]) and goal states of shape {tuple(goal.shape)} ([B, *S])"
        )
    if state_shape is not None and shape != tuple(int(s) for s in state_shape):
        raise ValueError(
            f"state shape mismatch: the encoder returned states of shape {list(shape)} but the planner "
            f"was built for state_shape {list(state_shape)}"
        )
    return shape


def pad_warm_start(
    name: str,
    init: Optional[Any],
    batch: int,
    horizon: int,
    action_dim: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> Optional[torch.Tensor]:
    """A warm start ``[B, t, A]`` (``t <= T``) zero-padded (or cut) to ``[B, T, A]``, as the host planners do.
    ``name`` is the host API's argument name (used in the error message)."""
    if init is None:
        return None
    init = as_tensor(name, init, device, dtype)
    if init.dim() != 3 or init.shape[0] != batch or init.shape[2] != action_dim:
        raise ValueError(f"{name} must have shape [{batch}, t <= {horizon}, {action_dim}], got {tuple(init.shape)}")
    if init.shape[1] >= horizon:
        return init[:, :horizon].contiguous()
    tail = torch.zeros(batch, horizon - init.shape[1], action_dim, device=device, dtype=dtype)
    return torch.cat([init, tail], dim=1)


def explicit_bounds(action_low: Any = UNSET, action_high: Any = UNSET) -> dict[str, Any]:
    """The action bounds passed to an adapter, per side (None = unbounded). A side missing from the
    returned dict was not passed: the adapter uses its own default (unbounded, or a host spec's bound).

    The adapters own the bounds: the ``action_low`` / ``action_high`` of a ``GraspConfig`` handed to
    them are replaced. GRASP's default bounds (+-1) assume normalised actions; the host planners'
    actions may be normalised differently (stable-worldmodel's policy inverse-transforms them, DINO-WM
    z-scores them) and their own solvers never clip."""
    return {
        name: value for name, value in (("action_low", action_low), ("action_high", action_high)) if value is not UNSET
    }


def plan_from_frames(
    world_model: WorldModel,
    action_dim: int,
    config: GraspConfig,
    obs_frames: torch.Tensor,
    goal: torch.Tensor,
    *,
    state_shape: Optional[Sequence[int]] = None,
    state_weights: Optional[torch.Tensor] = None,
    init: Optional[Any] = None,
    init_name: str = "init_action",
    frames_name: str = "the encoded observations",
) -> PlanResult:
    """The adapters' common flow once the observations are encoded: check the encoded frames
    ``[B, T_obs, *S]`` against the goal ``[B, *S]`` (and ``state_shape``), take the newest
    ``config.history`` frames, zero-pad the warm start ``init`` ``[B, t <= T, A]`` (named ``init_name``
    in errors), then plan with a :class:`GraspPlanner`."""
    encoder_state_check(obs_frames, goal, state_shape)
    s0 = latest_frames(frames_name, obs_frames, config.history)
    warm = pad_warm_start(init_name, init, goal.shape[0], config.horizon, action_dim, goal.device, goal.dtype)
    planner = GraspPlanner(world_model, action_dim, config, state_shape=tuple(goal.shape[1:]), state_weights=state_weights)
    return planner.plan(s0, goal, init_actions=warm)
