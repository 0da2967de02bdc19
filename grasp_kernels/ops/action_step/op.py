"""``action_step_``: the in-place Adam + clamp step on the actions, as the custom op
``torch.ops.grasp.action_step(actions!, grad, exp_avg!, exp_avg_sq!, step, lr, beta1, beta2, eps, low,
high, backend) -> ()`` and its public function (``lr, beta1, beta2, eps``: an
:class:`~grasp_kernels.ops.AdamHyper` everywhere else)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..._checks import BoundArg, check_tensor
from ...backends import on_device
from .._dispatch import kernel_bounds, resolve
from .._params import AdamHyper
from .._validate import check_backend_runs, check_bounds, check_float32, check_like, check_no_overlap, check_params
from .._validate import check_step
from .reference import action_step_ref


def launcher(backend: str) -> Callable[..., None]:
    """The launch function of a kernel backend (imported on first use: Triton and the CUDA module are optional)."""
    if backend == "triton":
        from .triton_kernel import launch
    else:
        from .cuda_launch import launch
    return launch


def _check_tensors(actions: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, low: Tensor, high: Tensor) -> None:
    check_float32("actions", actions)
    check_tensor("actions", actions, ndim=3, dtypes=(torch.float32,), contiguous=True)
    check_like("actions", actions, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    check_bounds(actions, low, high)


@torch.library.custom_op("grasp::action_step", mutates_args=("actions", "exp_avg", "exp_avg_sq"))
def _action_step(
    actions: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    low: Tensor,
    high: Tensor,
    backend: str,
) -> None:
    _check_tensors(actions, grad, exp_avg, exp_avg_sq, low, high)
    check_no_overlap(
        dict(actions=actions, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq), dict(grad=grad, low=low, high=high)
    )
    check_step(step)
    adam = AdamHyper(lr, beta1, beta2, eps)
    check_backend_runs(backend, actions.device)
    with on_device(actions.device):
        launcher(backend)(actions, grad, exp_avg, exp_avg_sq, step, adam, low, high)


@_action_step.register_fake
def _action_step_fake(actions, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, low, high, backend):
    _check_tensors(actions, grad, exp_avg, exp_avg_sq, low, high)


def action_step_(
    actions: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: int,
    adam: AdamHyper,
    low: BoundArg,
    high: BoundArg,
    *,
    backend: str = "auto",
) -> None:
    """In-place Adam step (1-based ``step``, constants ``adam``) then clamp to ``[low, high]`` on
    ``actions [B,T,A]`` (moments ``[B,T,A]``).

    ``low``/``high``: None (unbounded), a float, or a tensor ``[A]``.
    """
    check_params(adam)
    name = resolve(backend, actions.device)
    if name == "reference":
        action_step_ref(actions, grad, exp_avg, exp_avg_sq, step, adam, low, high)
        return
    low, high = kernel_bounds(low, high, actions)
    torch.ops.grasp.action_step(actions, grad, exp_avg, exp_avg_sq, step, *adam.flat(), low, high, name)
