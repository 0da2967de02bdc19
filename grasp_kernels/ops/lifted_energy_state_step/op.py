"""``lifted_energy_state_step_``: the lifted energy and the state step in one pass, as the custom op
``torch.ops.grasp.lifted_energy_state_step(pred, states!, gamma, exp_avg!, exp_avg_sq!, step, lr, beta1,
beta2, eps, noise_std, noise?, seed, noise_base, noise_stride, backend) -> (energy [B], grad_pred [B,T,D] f32)`` and
its public function (an :class:`~grasp_kernels.ops.AdamHyper` and a :class:`~grasp_kernels.ops.NoiseCounters`
everywhere but the schema). The reshaped state gradient never touches memory."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from ..._checks import check_scalar
from ...backends import on_device
from .._dispatch import kernel_counters, reference_noise, resolve
from .._params import AdamHyper, NoiseCounters
from .._validate import check_backend_runs, check_like, check_no_overlap, check_noise, check_params, check_pred
from .._validate import check_states, check_step
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
    check_step(step)
    adam = AdamHyper(lr, beta1, beta2, eps)
    noise_std = check_scalar("noise_std", noise_std, minimum=0.0)
    counters = NoiseCounters(seed, noise_base, noise_stride).for_states(states)
    check_backend_runs(backend, states.device)
    energy, grad_pred = energy_outputs(pred, states)
    with on_device(states.device):
        launcher(backend)(pred, states, gamma, energy, grad_pred, exp_avg, exp_avg_sq, step, adam, noise_std, noise,
                          counters)
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
    adam: AdamHyper,
    noise_std: float,
    noise: Optional[Tensor] = None,
    *,
    counters: NoiseCounters = NoiseCounters(),
    generator: Optional[torch.Generator] = None,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Fused planner step: the lifted energy's gradients then the state step, in one pass.

    Computes the energy and ``dE/dpred`` from the states BEFORE the update, applies the Adam + noise
    step to rows 1..T-1 of ``states [B,T+1,D]`` (and the moments) in place with the reshaped state
    gradient (1-based ``step``, constants ``adam``). Not differentiable (a planner step). Noise (``noise``,
    ``counters``, ``generator``) as :func:`state_step_`.

    Returns:
        ``(energy [B], grad_pred [B,T,D])``, detached, in ``states.dtype`` (float32 on the kernels).
    """
    check_params(adam, counters)
    name = resolve(backend, states.device)
    counters = counters.for_states(states)
    if name == "reference":
        noise = reference_noise(states, noise, noise_std, counters)
        return lifted_energy_state_step_ref(pred, states, gamma, exp_avg, exp_avg_sq, step, adam, noise_std, noise,
                                            generator)
    return torch.ops.grasp.lifted_energy_state_step(
        pred.detach(), states, gamma, exp_avg, exp_avg_sq, step, *adam.flat(), noise_std, noise,
        *kernel_counters(counters, generator, noise, noise_std).flat(), name,
    )
