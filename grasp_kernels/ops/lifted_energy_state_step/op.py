"""``lifted_energy_state_step_``: the lifted energy and the state step in one pass, as the custom op
``torch.ops.grasp.lifted_energy_state_step(pred, states!, gamma, exp_avg!, exp_avg_sq!, step, lr, beta1,
beta2, eps, noise_std, noise?, seed, noise_base, noise_stride, backend) -> (energy [B], grad_pred [B,T,D] f32)`` and its public
function. The reshaped state gradient never touches memory."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from ..._checks import check_scalar
from ...backends import on_device
from .._dispatch import kernel_seed, noise_counters, reference_noise, resolve
from .._validate import (
    check_adam_scalars,
    check_backend_runs,
    check_like,
    check_no_overlap,
    check_noise,
    check_pred,
    check_seed,
    check_states,
)
from ..lifted_energy.op import energy_outputs
from .reference import lifted_energy_state_step_ref


def launcher(backend: str) -> Callable[..., None]:
    """The launch function of a kernel backend (imported on first use: Triton and the CUDA module are optional)."""
    if backend == "triton":
        from .triton_kernel import launch
    else:
        from .cuda_launch import launch
    return launch


def _check_tensors(pred: Tensor, states: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, noise: Optional[Tensor]) -> None:
    check_states("states", states)
    check_pred(pred, states)
    check_like("states", states, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    check_noise(noise, states)


@torch.library.custom_op("grasp::lifted_energy_state_step", mutates_args=("states", "exp_avg", "exp_avg_sq"))
def _lifted_energy_state_step(
    pred: Tensor,
    states: Tensor,
    gamma: float,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    noise_std: float,
    noise: Optional[Tensor],
    seed: int,
    noise_base: int,
    noise_stride: int,
    backend: str,
) -> tuple[Tensor, Tensor]:
    _check_tensors(pred, states, exp_avg, exp_avg_sq, noise)
    check_no_overlap(dict(states=states, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq), dict(pred=pred, noise=noise))
    gamma = check_scalar("gamma", gamma, minimum=0.0)
    check_adam_scalars(step, lr, beta1, beta2, eps)
    noise_std = check_scalar("noise_std", noise_std, minimum=0.0)
    check_seed(seed)
    noise_base, noise_stride = noise_counters(states, noise_base, noise_stride)
    check_backend_runs(backend, states.device)
    energy, grad_pred = energy_outputs(pred, states)
    with on_device(states.device):
        launcher(backend)(
            pred, states, gamma, energy, grad_pred, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
            noise_std, noise, seed, noise_base, noise_stride,
        )
    return energy, grad_pred


@_lifted_energy_state_step.register_fake
def _lifted_energy_state_step_fake(
    pred, states, gamma, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, noise_std, noise, seed, noise_base, noise_stride,
    backend,
):
    _check_tensors(pred, states, exp_avg, exp_avg_sq, noise)
    check_scalar("gamma", gamma, minimum=0.0)
    return energy_outputs(pred, states)


def lifted_energy_state_step_(
    pred: Tensor,
    states: Tensor,
    gamma: float,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    noise_std: float,
    noise: Optional[Tensor] = None,
    *,
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    noise_base: int = 0,
    noise_stride: Optional[int] = None,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Fused planner step: the lifted energy's gradients then the state step, in one pass.

    Computes the energy and ``dE/dpred`` from the states BEFORE the update, applies the Adam + noise
    step to rows 1..T-1 of ``states [B,T+1,D]`` (and the moments) in place with the reshaped state
    gradient. Not differentiable (a planner step). Noise as :func:`state_step_`.

    Returns:
        ``(energy [B], grad_pred [B,T,D])``, detached, in ``states.dtype`` (float32 on the kernels).
    """
    name = resolve(backend, states.device)
    noise_base, noise_stride = noise_counters(states, noise_base, noise_stride)
    if name == "reference":
        noise = reference_noise(states, noise, noise_std, seed, noise_base, noise_stride)
        return lifted_energy_state_step_ref(
            pred, states, gamma, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, noise_std, noise, generator
        )
    return torch.ops.grasp.lifted_energy_state_step(
        pred.detach(), states, gamma, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, noise_std, noise,
        kernel_seed(seed, generator, noise, noise_std), noise_base, noise_stride, name,
    )
