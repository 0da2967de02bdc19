"""Specification of ``lifted_energy_state_step_``: the lifted energy then the state step, composed."""

from __future__ import annotations

from typing import Optional

import torch

from .._params import AdamHyper
from ..lifted_energy.reference import lifted_energy_ref
from ..state_step.reference import state_step_ref


def lifted_energy_state_step_ref(
    pred: torch.Tensor,
    states: torch.Tensor,
    gamma: float,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    adam: AdamHyper,
    noise_std: float,
    noise: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of the fused op ``lifted_energy_state_step_``: energy + state update in one call.

    Composes :func:`lifted_energy_ref` (on the states BEFORE the update, gradients by autograd) and
    :func:`state_step_ref` fed with the reshaped state gradient. ``states``, ``exp_avg`` and
    ``exp_avg_sq`` are updated in place on rows 1..T-1, exactly as ``state_step_ref`` does.

    Returns:
        ``(energy [B], grad_pred [B, T, D])``, both detached and in ``states.dtype``; ``grad_pred``
        is ``dE/dp`` (to be pulled back through the world model to the actions).
    """
    with torch.enable_grad():
        pred_leaf = pred.detach().to(states.dtype).requires_grad_(True)
        states_leaf = states.detach().clone().requires_grad_(True)
        energy = lifted_energy_ref(pred_leaf, states_leaf, gamma)
        grad_pred, grad_states = torch.autograd.grad(energy.sum(), (pred_leaf, states_leaf))
    with torch.no_grad():
        state_step_ref(states, grad_states, exp_avg, exp_avg_sq, step, adam, noise_std, noise, generator)
    return energy.detach(), grad_pred
