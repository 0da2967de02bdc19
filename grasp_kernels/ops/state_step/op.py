"""``state_step_``: the in-place Adam + Langevin-noise step on the virtual states, as the custom op
``torch.ops.grasp.state_step(states!, grad, exp_avg!, exp_avg_sq!, step, lr, beta1, beta2, eps,
noise_std, noise?, seed, noise_base, noise_stride, backend) -> ()`` and its public function (the
schema's flat scalars are an :class:`~grasp_kernels.ops.AdamHyper` and a
:class:`~grasp_kernels.ops.NoiseCounters` everywhere else)."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from ..._checks import check_scalar
from ...backends import on_device
from .._dispatch import kernel_counters, reference_noise, resolve
from .._params import AdamHyper, NoiseCounters
from .._validate import check_backend_runs, check_like, check_no_overlap, check_noise, check_params, check_states
from .._validate import check_step
from .reference import state_step_ref


def launcher(backend: str) -> Callable[..., None]:
    """The launch function of a kernel backend (imported on first use: Triton and the CUDA module are optional)."""
    if backend == "triton":
        from .triton_kernel import launch
    else:
        from .cuda_launch import launch
    return launch


def _check_tensors(states: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, noise: Optional[Tensor]) -> None:
    check_states("states", states)
    check_like("states", states, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    check_noise(noise, states)


@torch.library.custom_op("grasp::state_step", mutates_args=("states", "exp_avg", "exp_avg_sq"))
def _state_step(
    states: Tensor,
    grad: Tensor,
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
) -> None:
    _check_tensors(states, grad, exp_avg, exp_avg_sq, noise)
    check_no_overlap(dict(states=states, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq), dict(grad=grad, noise=noise))
    check_step(step)
    adam = AdamHyper(lr, beta1, beta2, eps)
    noise_std = check_scalar("noise_std", noise_std, minimum=0.0)
    counters = NoiseCounters(seed, noise_base, noise_stride).for_states(states)
    check_backend_runs(backend, states.device)
    with on_device(states.device):
        launcher(backend)(states, grad, exp_avg, exp_avg_sq, step, adam, noise_std, noise, counters)


@_state_step.register_fake
def _state_step_fake(states, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, noise_std, noise, seed, noise_base,
                     noise_stride, backend):
    _check_tensors(states, grad, exp_avg, exp_avg_sq, noise)


def state_step_(
    states: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: int,
    adam: AdamHyper,
    noise_std: float,
    noise: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
    *,
    counters: NoiseCounters = NoiseCounters(),
    backend: str = "auto",
) -> None:
    """In-place Adam + Langevin-noise step on the virtual rows of ``states [B,T+1,D]``.

    ``grad``, ``exp_avg``, ``exp_avg_sq``: ``[B,T+1,D]`` (the moments are updated in place); rows 0 and
    T are left untouched. ``step``: the 1-based Adam step; ``adam``: Adam's constants. Noise: the explicit
    ``noise [B,T-1,D]`` if given; else drawn in-kernel at ``counters`` (Philox key ``counters.seed`` at
    counters ``counters.base + b * counters.stride + (t-1)*D + d``, the stride defaulting to ``(T-1)*D``:
    a plan's global position, :mod:`grasp_kernels.randomness`) if its seed is set; else from
    ``generator``; kernels with neither draw their seed from torch's default CPU generator
    (:mod:`.._dispatch`).
    """
    check_params(adam, counters)
    name = resolve(backend, states.device)
    counters = counters.for_states(states)
    if name == "reference":
        noise = reference_noise(states, noise, noise_std, counters)
        state_step_ref(states, grad, exp_avg, exp_avg_sq, step, adam, noise_std, noise, generator)
        return
    torch.ops.grasp.state_step(
        states, grad, exp_avg, exp_avg_sq, step, *adam.flat(), noise_std, noise,
        *kernel_counters(counters, generator, noise, noise_std).flat(), name,
    )
