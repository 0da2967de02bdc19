"""``fused_mlp_iteration_``: one whole GRASP iteration for an MLPDynamics world model, as the custom op
``torch.ops.grasp.fused_mlp_iteration(states, actions!, states_out!, params, depth, activation, gamma,
state_exp_avg!, state_exp_avg_sq!, action_exp_avg!, action_exp_avg_sq!, step, lr_states, lr_actions,
beta1, beta2, eps, noise_std, noise?, seed, low, high, backend, noise_base, noise_stride) -> energy [B]`` (triton backend only)
and its public function. ``params`` is the packed model of :mod:`.pack`."""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from ..._checks import BoundArg, check_same_device, check_scalar, check_tensor
from ...backends import backend_unavailable_reason, on_device
from .._dispatch import kernel_bounds, kernel_seed, noise_counters, reference_noise, resolve
from .._validate import (
    check_adam_scalars,
    check_backend_runs,
    check_bounds,
    check_float32,
    check_like,
    check_no_overlap,
    check_noise,
    check_seed,
    check_states,
)
from .pack import PackedMLP, check_packed_params, check_supported, packed_for


def _check_tensors(
    states, actions, states_out, params, depth, activation, s_avg, s_avg_sq, a_avg, a_avg_sq, noise, low, high
) -> None:
    batch, rows, dim = check_states("states", states)
    check_like("states", states, states_out=states_out, state_exp_avg=s_avg, state_exp_avg_sq=s_avg_sq)
    check_float32("actions", actions)
    check_tensor("actions", actions, shape=(batch, rows - 1, None), dtypes=(torch.float32,), contiguous=True)
    check_like("actions", actions, action_exp_avg=a_avg, action_exp_avg_sq=a_avg_sq)
    check_bounds(actions, low, high)
    check_same_device(states=states, actions=actions)
    check_noise(noise, states)
    check_packed_params(list(params), depth, activation, dim, actions.shape[-1], states.device)


@torch.library.custom_op(
    "grasp::fused_mlp_iteration",
    mutates_args=("actions", "states_out", "state_exp_avg", "state_exp_avg_sq", "action_exp_avg", "action_exp_avg_sq"),
)
def _fused_mlp_iteration(
    states: Tensor,
    actions: Tensor,
    states_out: Tensor,
    params: list[Tensor],
    depth: int,
    activation: int,
    gamma: float,
    state_exp_avg: Tensor,
    state_exp_avg_sq: Tensor,
    action_exp_avg: Tensor,
    action_exp_avg_sq: Tensor,
    step: int,
    lr_states: float,
    lr_actions: float,
    beta1: float,
    beta2: float,
    eps: float,
    noise_std: float,
    noise: Optional[Tensor],
    seed: int,
    low: Tensor,
    high: Tensor,
    backend: str,
    noise_base: int,
    noise_stride: int,
) -> Tensor:
    _check_tensors(states, actions, states_out, params, depth, activation, state_exp_avg, state_exp_avg_sq,
                          action_exp_avg, action_exp_avg_sq, noise, low, high)
    check_no_overlap(
        dict(states_out=states_out, actions=actions, state_exp_avg=state_exp_avg, state_exp_avg_sq=state_exp_avg_sq,
             action_exp_avg=action_exp_avg, action_exp_avg_sq=action_exp_avg_sq),
        dict(states=states, noise=noise, low=low, high=high, **{f"params[{i}]": p for i, p in enumerate(params)}),
    )
    gamma = check_scalar("gamma", gamma, minimum=0.0)
    check_adam_scalars(step, lr_states, beta1, beta2, eps)
    check_scalar("lr_actions", lr_actions, minimum=0.0)
    noise_std = check_scalar("noise_std", noise_std, minimum=0.0)
    check_seed(seed)
    noise_base, noise_stride = noise_counters(states, noise_base, noise_stride)
    if backend != "triton":
        raise ValueError(f"grasp::fused_mlp_iteration runs on the triton backend only, got {backend!r}")
    check_backend_runs(backend, states.device)
    energy = torch.empty((states.shape[0],), device=states.device, dtype=torch.float32)
    from .triton_kernel import launch  # Triton is optional: imported on first use

    with on_device(states.device):
        launch(
            states, actions, states_out, energy, list(params), depth, activation, gamma, state_exp_avg,
            state_exp_avg_sq, action_exp_avg, action_exp_avg_sq, step, lr_states, lr_actions, beta1, beta2, eps,
            noise_std, noise, seed, low, high, noise_base, noise_stride,
        )
    return energy


@_fused_mlp_iteration.register_fake
def _fused_mlp_iteration_fake(
    states, actions, states_out, params, depth, activation, gamma, state_exp_avg, state_exp_avg_sq, action_exp_avg,
    action_exp_avg_sq, step, lr_states, lr_actions, beta1, beta2, eps, noise_std, noise, seed, low, high, backend,
    noise_base, noise_stride,
):
    _check_tensors(states, actions, states_out, params, depth, activation, state_exp_avg, state_exp_avg_sq,
                          action_exp_avg, action_exp_avg_sq, noise, low, high)
    return torch.empty((states.shape[0],), device=states.device, dtype=torch.float32)


def fused_mlp_backend(backend: str, device: torch.device) -> str:
    """The backend the fused MLP iteration runs with: "triton" or "reference" (``backend`` as in
    :mod:`grasp_kernels.backends`; the cuda module has no fused MLP kernel, so "cuda" runs the Triton
    one where Triton can run, else the reference)."""
    name = resolve(backend, device)
    if name == "cuda":
        name = "triton" if backend_unavailable_reason("triton", device) is None else "reference"
    return name


def fused_mlp_iteration_(
    model: Union[torch.nn.Module, PackedMLP],
    states: torch.Tensor,
    actions: torch.Tensor,
    gamma: float,
    state_exp_avg: torch.Tensor,
    state_exp_avg_sq: torch.Tensor,
    action_exp_avg: torch.Tensor,
    action_exp_avg_sq: torch.Tensor,
    step: int,
    lr_states: float,
    lr_actions: float,
    beta1: float,
    beta2: float,
    eps: float,
    noise_std: float,
    low: BoundArg,
    high: BoundArg,
    noise: Optional[torch.Tensor] = None,
    *,
    states_out: Optional[torch.Tensor] = None,
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    noise_base: int = 0,
    noise_stride: Optional[int] = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One whole GRASP iteration for an MLPDynamics world model (``stop_gradient``, ``history = 1``).

    The lifted model call over ``B*T`` rows, the energy and its reshaped gradients, the VJP to the
    actions, Adam + noise on the virtual states and Adam + clamp on the actions: on the triton backend
    ONE kernel (:mod:`.triton_kernel`), on the reference backend
    :func:`~grasp_kernels.reference.fused_mlp_iteration_ref`.

    Double buffering: ``states`` is only read; the new states (every row: s_0 and the goal copied)
    are written to ``states_out`` (allocated if None; must not overlap ``states``) and returned.
    ``actions`` and the four moments are updated in place.

    Args:
        model: an :class:`~grasp_kernels.models.MLPDynamics` (packed on every call) or a
            :class:`PackedMLP` from :func:`pack_mlp` (pack once per plan; bfloat16 matrix inputs via
            ``pack_mlp(model, torch.bfloat16)``).
        states: ``[B, T+1, D]`` float32 (triton) or float32/float64 (reference).
        actions: ``[B, T, A]``; state moments ``[B, T+1, D]``, action moments ``[B, T, A]``.
        step, lr_states, lr_actions, beta1, beta2, eps: Adam (one step count for both).
        noise_std, noise, seed, generator, noise_base, noise_stride: Langevin noise as :func:`state_step_`.
        low, high: action bounds as :func:`action_step_`.

    Returns:
        ``(energy [B], states_out [B, T+1, D])``.
    """
    module = model.model if isinstance(model, PackedMLP) else model
    name = fused_mlp_backend(backend, states.device)
    if states_out is None:
        states_out = torch.empty_like(states)
    noise_base, noise_stride = noise_counters(states, noise_base, noise_stride)
    if name == "reference":
        check_supported(module)
        noise = reference_noise(states, noise, noise_std, seed, noise_base, noise_stride)
        states_out.copy_(states)
        from .reference import fused_mlp_iteration_ref  # its spec is the planner's iteration, which runs on the ops

        energy, _, _ = fused_mlp_iteration_ref(
            module, states_out, actions, gamma, state_exp_avg, state_exp_avg_sq, action_exp_avg, action_exp_avg_sq,
            step, lr_states, lr_actions, beta1, beta2, eps, noise_std, low, high, noise, generator,
        )
        return energy, states_out
    packed = packed_for(model, states, actions)
    energy = torch.ops.grasp.fused_mlp_iteration(
        states.detach(), actions, states_out, list(packed.tensors), packed.depth, packed.activation, gamma,
        state_exp_avg, state_exp_avg_sq, action_exp_avg, action_exp_avg_sq, step, lr_states, lr_actions, beta1,
        beta2, eps, noise_std, noise, kernel_seed(seed, generator, noise, noise_std), *kernel_bounds(low, high, actions),
        name, noise_base, noise_stride,
    )
    return energy, states_out
