"""Specification of ``action_step_``: Adam then a clamp to the action bounds, in plain PyTorch."""

from __future__ import annotations

from typing import Union

import torch

from ..._checks import BoundArg, as_bounds
from .._adam import adam_update_ref, check_adam_args
from .._params import AdamHyper


def action_step_ref(
    actions: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: Union[int, torch.Tensor],
    adam: AdamHyper,
    low: BoundArg,
    high: BoundArg,
) -> None:
    """In-place Adam step on the actions, then clamp to ``[low, high]``.

    Args:
        actions: ``[B, T, A]`` float32/float64, updated in place.
        grad, exp_avg, exp_avg_sq: ``[B, T, A]``, same dtype; moments updated in place.
        step: 1-based Adam step count of this update (a 0-d float64 tensor under ``torch.compile``).
        adam: Adam's constants.
        low, high: None (unbounded), a float, or a tensor ``[A]`` of per-dimension bounds.
    """
    check_adam_args("actions", actions, grad, exp_avg, exp_avg_sq, step, adam)
    adam_update_ref(actions, grad, exp_avg, exp_avg_sq, step, adam)
    clamp_actions_(actions, low, high)


def clamp_actions_(actions: torch.Tensor, low: BoundArg, high: BoundArg) -> torch.Tensor:
    """Clamp ``actions [..., A]`` in place to per-dimension bounds (None: unbounded).

    ``low``/``high``: None, a float, a sequence of floats or a tensor ``[A]``, in any mix. Bounds
    already in the planners' form (tensors ``[A]`` of the actions' dtype and device, checked once
    before the loop) are used as given; any other form is converted and checked ``low <= high``.
    """
    action_dim = actions.shape[-1]
    if not all(_ready(bound, actions) for bound in (low, high)):
        low, high = as_bounds(low, high, action_dim, actions.device, actions.dtype)
    if low is None and high is None:
        return actions
    return actions.clamp_(min=low, max=high)


def _ready(bound: BoundArg, actions: torch.Tensor) -> bool:
    """None, or a tensor ``[A]`` of the actions' dtype and device: no conversion (and no device sync)."""
    return bound is None or (
        isinstance(bound, torch.Tensor) and bound.shape == actions.shape[-1:] and bound.dtype == actions.dtype
        and bound.device == actions.device
    )
