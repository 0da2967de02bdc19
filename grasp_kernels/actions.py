"""Action blocks (frame skip): one world-model step consumes ``k`` consecutive environment actions.

The planner then plans ``A = k * A_env`` dimensional actions (``GraspPlanner(model, action_dim=k * A_env)``);
these helpers convert between a plan ``[..., T, k * A_env]`` and the environment actions
``[..., T * k, A_env]`` it stands for. The layout is step-major, as stable-worldmodel's
``action_block`` and DINO-WM's ``frameskip``: ``plan[..., t, j*A_env:(j+1)*A_env]`` is environment
action ``t*k + j``.
"""

from __future__ import annotations

import torch

__all__ = ["to_env_actions", "from_env_actions"]


def _check_block(action_block: int) -> int:
    if isinstance(action_block, bool) or not isinstance(action_block, int) or action_block < 1:
        raise ValueError(f"action_block must be an int >= 1, got {action_block!r}")
    return action_block


def to_env_actions(actions: torch.Tensor, action_block: int) -> torch.Tensor:
    """``[..., T, k * A_env]`` planned actions -> ``[..., T * k, A_env]`` environment actions (a view)."""
    k = _check_block(action_block)
    if not isinstance(actions, torch.Tensor) or actions.dim() < 2:
        raise ValueError(f"actions must be a tensor [..., T, k * A_env], got {getattr(actions, 'shape', type(actions))}")
    *lead, horizon, dim = actions.shape
    if dim % k:
        raise ValueError(f"actions' last dimension ({dim}) must be a multiple of action_block = {k}")
    return actions.reshape(*lead, horizon * k, dim // k)


def from_env_actions(env_actions: torch.Tensor, action_block: int) -> torch.Tensor:
    """``[..., T * k, A_env]`` environment actions -> ``[..., T, k * A_env]`` planner actions (a view);
    e.g. to warm-start a plan from environment actions."""
    k = _check_block(action_block)
    if not isinstance(env_actions, torch.Tensor) or env_actions.dim() < 2:
        raise ValueError(f"env_actions must be a tensor [..., T * k, A_env], got {getattr(env_actions, 'shape', type(env_actions))}")
    *lead, steps, dim = env_actions.shape
    if steps % k:
        raise ValueError(f"env_actions' time dimension ({steps}) must be a multiple of action_block = {k}")
    return env_actions.reshape(*lead, steps // k, k * dim)
