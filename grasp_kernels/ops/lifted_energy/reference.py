"""Specification of ``lifted_energy``: the lifted energy and its reshaped gradients, in plain PyTorch."""

from __future__ import annotations

from typing import Optional

import torch

from ..._checks import check_same_device, check_scalar, check_tensor


def lifted_energy_ref(
    pred: torch.Tensor, states: torch.Tensor, gamma: float, weights: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Per-plan lifted energy (paper Eq. 10) with the reshaped gradients (docs/design.md).

    ``E_b = sum_t ||p_t - s_{t+1}||^2 + gamma * sum_t ||p_t - g||^2`` over ``t = 0..T-1``; with
    ``weights`` ``w`` both norms are weighted per component: ``||x||_w^2 = sum_d w_d x_d^2``.

    Autograd delivers ``dE/dp_t = 2 (p_t - s_{t+1}) + 2 gamma (p_t - g)`` to ``pred`` and
    ``dE/ds_{t+1} = -2 (p_t - s_{t+1})`` to the virtual rows ``1..T-1`` of ``states``; rows 0 and T
    receive zero gradient (s_0 and g are fixed).

    Args:
        pred: ``[B, T, D]`` world-model predictions (float32/float64, or bfloat16/float16).
        states: ``[B, T+1, D]`` states, float32 or float64.
        gamma: goal weight, >= 0.
        weights: optional non-negative per-component weights broadcastable to ``[B, T, D]``
            (typically ``[D]``, e.g. DINO-WM's ``alpha`` on the proprio components).

    Returns:
        ``[B]`` energy in ``states.dtype``.
    """
    check_tensor("states", states, ndim=3, dtypes=(torch.float32, torch.float64))
    batch, rows, dim = states.shape
    if rows < 2:
        raise ValueError(f"states must have T+1 >= 2 rows (s_0 and the goal), got shape {tuple(states.shape)}")
    check_tensor("pred", pred, shape=(batch, rows - 1, dim))
    check_same_device(pred=pred, states=states)
    gamma = check_scalar("gamma", gamma, minimum=0.0)

    pred = pred.to(states.dtype)
    goal = states[:, -1:].detach()
    next_states = torch.cat([states[:, 1:-1], goal], dim=1)  # the goal row is fixed: no gradient
    dynamics = (pred - next_states).square()
    goal_term = (pred - goal).square()
    if weights is not None:
        weights = weights.to(states.dtype)
        dynamics, goal_term = dynamics * weights, goal_term * weights
    return dynamics.sum(dim=(1, 2)) + gamma * goal_term.sum(dim=(1, 2))
