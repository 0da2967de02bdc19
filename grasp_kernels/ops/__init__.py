"""The fused GRASP ops, dispatched by backend.

Same signatures as the reference functions in :mod:`grasp_kernels.reference`, plus a keyword-only
``backend`` ("auto" | "reference" | "triton" | "cuda", see :mod:`grasp_kernels.backends`).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..backends import resolve_backend
from ..reference import BoundArg, action_step_ref, lifted_energy_ref, state_step_ref

__all__ = ["lifted_energy", "state_step_", "action_step_"]


def lifted_energy(pred: torch.Tensor, states: torch.Tensor, gamma: float, *, backend: str = "auto") -> torch.Tensor:
    """Per-plan lifted energy ``[B]`` of ``pred [B,T,D]`` against ``states [B,T+1,D]``.

    Differentiable: backward delivers the reshaped gradients of :func:`lifted_energy_ref`.
    """
    name = resolve_backend(backend, states.device)
    if name == "reference":
        return lifted_energy_ref(pred, states, gamma)
    raise NotImplementedError(f"backend {name!r} has no lifted_energy kernel yet")


def state_step_(
    states: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    noise_std: float,
    noise: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
    *,
    seed: Optional[int] = None,
    backend: str = "auto",
) -> None:
    """In-place Adam + Langevin-noise step on the virtual rows of ``states [B,T+1,D]``.

    Noise: the explicit ``noise [B,T-1,D]`` if given; else drawn from ``seed`` if given (kernels draw
    it in-kernel; the reference seeds a fresh generator); else from ``generator``.
    """
    name = resolve_backend(backend, states.device)
    if name == "reference":
        if noise is None and seed is not None:
            generator = torch.Generator(device=states.device).manual_seed(int(seed))
        state_step_ref(states, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, noise_std, noise, generator)
        return
    raise NotImplementedError(f"backend {name!r} has no state_step_ kernel yet")


def action_step_(
    actions: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    low: BoundArg,
    high: BoundArg,
    *,
    backend: str = "auto",
) -> None:
    """In-place Adam step then clamp to ``[low, high]`` on ``actions [B,T,A]``."""
    name = resolve_backend(backend, actions.device)
    if name == "reference":
        action_step_ref(actions, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, low, high)
        return
    raise NotImplementedError(f"backend {name!r} has no action_step_ kernel yet")
