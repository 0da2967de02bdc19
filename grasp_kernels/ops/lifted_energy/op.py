"""``lifted_energy``: the per-plan lifted energy and its reshaped gradients, as the custom op
``torch.ops.grasp.lifted_energy`` and its public functions.

``lifted_energy(pred, states, gamma, backend) -> (energy [B], grad_pred [B,T,D] f32, grad_states
[B,T+1,D] f32)``: differentiable in ``pred`` and ``states``; the gradients are computed in the forward
pass and backward only scales them by the incoming gradient of ``energy``. A ``torch.library.custom_op``
with an explicit ``register_fake`` (not ``triton_op``, which breaks opcheck and compile under the Triton
CPU interpreter), so it passes ``torch.library.opcheck`` and is an opaque node under ``torch.compile``.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from ..._checks import check_scalar
from ...backends import on_device
from .._dispatch import resolve
from .._validate import check_backend_runs, check_pred, check_states
from .reference import lifted_energy_ref


def launcher(backend: str) -> Callable[..., None]:
    """The launch function of a kernel backend (imported on first use: Triton and the CUDA module are optional)."""
    if backend == "triton":
        from .triton_kernel import launch
    else:
        from .cuda_launch import launch
    return launch


def _check_args(pred: Tensor, states: Tensor, gamma: float) -> float:
    check_states("states", states)
    check_pred(pred, states)
    return check_scalar("gamma", gamma, minimum=0.0)


def energy_outputs(pred: Tensor, states: Tensor) -> tuple[Tensor, Tensor]:
    """``energy [B]`` and ``grad_pred [B,T,D]``, float32 (also the fused energy + state step's outputs)."""
    energy = torch.empty((states.shape[0],), device=states.device, dtype=torch.float32)
    grad_pred = torch.empty(pred.shape, device=states.device, dtype=torch.float32)
    return energy, grad_pred


@torch.library.custom_op("grasp::lifted_energy", mutates_args=())
def _lifted_energy(pred: Tensor, states: Tensor, gamma: float, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    gamma = _check_args(pred, states, gamma)
    check_backend_runs(backend, states.device)
    energy, grad_pred = energy_outputs(pred, states)
    grad_states = torch.empty_like(states)
    with on_device(states.device):
        launcher(backend)(pred, states, gamma, energy, grad_pred, grad_states)
    return energy, grad_pred, grad_states


@_lifted_energy.register_fake
def _lifted_energy_fake(pred: Tensor, states: Tensor, gamma: float, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    _check_args(pred, states, gamma)
    energy, grad_pred = energy_outputs(pred, states)
    return energy, grad_pred, torch.empty_like(states)


def _setup_context(ctx, inputs, output) -> None:
    pred = inputs[0]
    _, grad_pred, grad_states = output
    ctx.pred_dtype = pred.dtype
    ctx.save_for_backward(grad_pred, grad_states)
    ctx.mark_non_differentiable(grad_pred, grad_states)


def _backward(ctx, grad_energy: Tensor, _grad_pred: Optional[Tensor], _grad_states: Optional[Tensor]):
    grad_pred, grad_states = ctx.saved_tensors
    scale = grad_energy.to(torch.float32).view(-1, 1, 1)
    d_pred = d_states = None
    if ctx.needs_input_grad[0]:
        d_pred = (grad_pred * scale).to(ctx.pred_dtype)
    if ctx.needs_input_grad[1]:
        d_states = grad_states * scale
    return d_pred, d_states, None, None


_lifted_energy.register_autograd(_backward, setup_context=_setup_context)


def lifted_energy(pred: Tensor, states: Tensor, gamma: float, *, backend: str = "auto") -> Tensor:
    """Per-plan lifted energy ``[B]`` of ``pred [B,T,D]`` against ``states [B,T+1,D]``.

    Differentiable: backward delivers the reshaped gradients of :func:`lifted_energy_ref`.
    """
    name = resolve(backend, states.device)
    if name == "reference":
        return lifted_energy_ref(pred, states, gamma)
    return torch.ops.grasp.lifted_energy(pred, states, gamma, name)[0]


def lifted_energy_grads(
    pred: Tensor, states: Tensor, gamma: float, *, backend: str = "auto"
) -> tuple[Tensor, Tensor, Tensor]:
    """Energy and reshaped gradients in one pass, without autograd (what a planner step needs).

    Returns ``(energy [B], grad_pred [B,T,D], grad_states [B,T+1,D])``, detached, in ``states.dtype``
    (float32 on the kernel backends even for bfloat16 ``pred``): the gradients of ``energy.sum()``,
    i.e. ``2 (p - s_next) + 2 gamma (p - g)`` and ``-2 (p_{t-1} - s_t)`` on rows 1..T-1, zero on rows
    0 and T. Saves the extra pass that autograd's backward spends scaling by the incoming gradient.
    """
    name = resolve(backend, states.device)
    if name == "reference":
        with torch.enable_grad():
            pred_leaf = pred.detach().to(states.dtype).requires_grad_(True)
            states_leaf = states.detach().requires_grad_(True)
            energy = lifted_energy_ref(pred_leaf, states_leaf, gamma)
            grad_pred, grad_states = torch.autograd.grad(energy.sum(), (pred_leaf, states_leaf))
        return energy.detach(), grad_pred, grad_states
    return torch.ops.grasp.lifted_energy(pred.detach(), states.detach(), gamma, name)
