"""Pieces shared by the adapters: tensors from host containers, frame windows, shape checks."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch


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
            f"history mismatch: the planner's world model takes history = {history} frames but {name} carries "
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


def pad_warm_start(init: Optional[torch.Tensor], batch: int, horizon: int, action_dim: int, device: torch.device) -> Optional[torch.Tensor]:
    """A warm start ``[B, t, A]`` (``t <= T``) zero-padded (or cut) to ``[B, T, A]``, as the host planners do."""
    if init is None:
        return None
    init = as_tensor("init_action", init, device)
    if init.dim() != 3 or init.shape[0] != batch or init.shape[2] != action_dim:
        raise ValueError(f"init_action must have shape [{batch}, t <= {horizon}, {action_dim}], got {tuple(init.shape)}")
    if init.shape[1] >= horizon:
        return init[:, :horizon].contiguous()
    tail = torch.zeros(batch, horizon - init.shape[1], action_dim, device=device)
    return torch.cat([init, tail], dim=1)
