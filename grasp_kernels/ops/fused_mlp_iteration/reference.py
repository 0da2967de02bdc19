"""Specification of ``fused_mlp_iteration_``: exactly one GRASP planner iteration on the reference backend."""

from __future__ import annotations

from typing import Optional

import torch

from ..._checks import BoundArg
from ...lifted import WorldModel, lifted_iteration
from .._params import AdamHyper


def fused_mlp_iteration_ref(
    world_model: WorldModel,
    states: torch.Tensor,
    actions: torch.Tensor,
    gamma: float,
    state_exp_avg: torch.Tensor,
    state_exp_avg_sq: torch.Tensor,
    action_exp_avg: torch.Tensor,
    action_exp_avg_sq: torch.Tensor,
    step: int,
    state_adam: AdamHyper,
    action_adam: AdamHyper,
    noise_std: float,
    low: BoundArg,
    high: BoundArg,
    noise: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference of the fused MLP iteration: :func:`grasp_kernels.lifted.lifted_iteration` on the
    reference backend (``stop_gradient``, ``history = 1``, no state weights), in place.

    ``states [B, T+1, D]`` (rows 1..T-1), ``actions [B, T, A]`` and the four moments are updated in
    place; the model sees ``[B*T, D]`` states and ``[B*T, A]`` actions.

    Returns:
        ``(energy [B], grad_pred [B, T, D], action_grad [B, T, A])``, detached.
    """
    return lifted_iteration(
        world_model, states, actions, (state_exp_avg, state_exp_avg_sq), (action_exp_avg, action_exp_avg_sq),
        step=step, gamma=gamma, state_adam=state_adam, action_adam=action_adam, noise_std=noise_std, low=low,
        high=high, state_shape=(states.shape[-1],), noise=noise, generator=generator,
    )
