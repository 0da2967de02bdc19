"""Pieces shared by the baseline planners."""

from __future__ import annotations

from typing import Optional

import torch

from ..config import _check_bound, _check_float, _check_int
from ..lifted import WorldModel
from ..rollouts import rollout
from ..memory import check_max_transitions


def validate_fields(config: object, ints: tuple[str, ...] = (), positive: tuple[str, ...] = (), minimum: int = 1) -> None:
    """Range checks of a baseline config (``seed`` may be 0; other ints >= ``minimum``)."""
    for name in ints:
        _check_int(name, getattr(config, name), minimum=0 if name == "seed" else minimum)
    for name in positive:
        _check_float(name, getattr(config, name), positive=True)
    for name in ("action_low", "action_high"):
        _check_bound(name, getattr(config, name))
    check_max_transitions(getattr(config, "max_transitions", None))


def check_config(config: object, expected: type) -> object:
    """``config`` is an instance of the planner's config class (a GraspConfig has other fields)."""
    if not isinstance(config, expected):
        raise TypeError(f"config must be a {expected.__name__}, got {type(config).__name__}")
    return config


def terminal_cost(
    world_model: WorldModel, s0: torch.Tensor, goal: torch.Tensor, actions: torch.Tensor, max_rows: Optional[int] = None
) -> torch.Tensor:
    """``||rollout(s0, a)_T - g||^2`` for ``actions [B, N, T, A]`` from ``s0 [B, *S]``: ``[B, N]``.

    All ``B*N`` candidate sequences are rolled out as one batch, or ``max_rows`` at a time.
    """
    batch, samples, horizon, action_dim = actions.shape
    starts = s0.repeat_interleave(samples, dim=0)
    final = rollout(world_model, starts, actions.reshape(batch * samples, horizon, action_dim), max_rows=max_rows)[:, -1]
    goals = goal.repeat_interleave(samples, dim=0)
    return (final - goals).reshape(batch, samples, -1).square().sum(-1)
