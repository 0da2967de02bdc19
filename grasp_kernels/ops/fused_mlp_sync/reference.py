"""Specification of ``fused_mlp_sync_step_``: exactly one step of the planner's sync phase."""

from __future__ import annotations

import torch

from ..._checks import BoundArg
from ...lifted import WorldModel
from ...sync import sync_step
from .._params import AdamHyper


def fused_mlp_sync_step_ref(
    world_model: WorldModel,
    s0: torch.Tensor,
    goal: torch.Tensor,
    actions: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    adam: AdamHyper,
    low: BoundArg,
    high: BoundArg,
) -> torch.Tensor:
    """Reference of the fused MLP sync step: one step of :func:`grasp_kernels.sync.gd_sync`
    (:func:`~grasp_kernels.sync.sync_step`, ``history = 1``, no state weights), in place.

    ``s0``, ``goal``: ``[B, D]``; ``actions``, ``exp_avg``, ``exp_avg_sq``: ``[B, T, A]``, updated in
    place (Adam step ``step``, then the clamp to ``[low, high]``).

    Returns:
        ``[B]`` shooting loss ``||rollout(s0, actions)_T - goal||^2`` of the actions before the step.
    """
    return sync_step(world_model, s0, goal, actions, exp_avg, exp_avg_sq, step, adam, low, high)
