"""``fused_mlp_iteration_``: one whole GRASP iteration for an MLPDynamics world model, as the custom op
``torch.ops.grasp.fused_mlp_iteration(states, actions!, states_out!, params, depth, activation, gamma,
state_exp_avg!, state_exp_avg_sq!, action_exp_avg!, action_exp_avg_sq!, step, lr_states, lr_actions,
beta1, beta2, eps, noise_std, noise?, seed, noise_base, noise_stride, low, high, backend) -> energy [B]``
(triton backend only) and its public function. ``params`` is the packed model of :mod:`.pack`; the
schema's flat scalars are two :class:`~grasp_kernels.ops.AdamHyper` (states, actions: one ``beta1``,
``beta2``, ``eps``) and a :class:`~grasp_kernels.ops.NoiseCounters` everywhere else.

Its specification is the planner's own iteration, :func:`grasp_kernels.lifted.lifted_iteration`
(``stop_gradient``, ``history = 1``, no state weights); the op has no reference backend of its own.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import Tensor

from ..._checks import BoundArg, check_same_device, check_scalar, check_tensor
from ...backends import backend_unavailable_reason, on_device
from .._dispatch import kernel_bounds, kernel_counters, resolve
from .._params import AdamHyper, NoiseCounters
from .._validate import check_backend_runs, check_bounds, check_float32, check_like, check_no_overlap, check_noise
from .._validate import check_params, check_states, check_step
from .pack import PackedMLP, check_packed_params, packed_for


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


def check_shared_moments(state_adam: AdamHyper, action_adam: AdamHyper) -> None:
    """The fused kernel updates the states and the actions with one ``beta1``, ``beta2`` and ``eps``: the two
    :class:`AdamHyper` may differ in their learning rates only (ValueError naming the field)."""
    check_params(state_adam)
    check_params(action_adam)
    for name in ("beta1", "beta2", "eps"):
        if getattr(state_adam, name) != getattr(action_adam, name):
            raise ValueError(f"state_adam.{name} and action_adam.{name} must be equal for the fused MLP iteration "
                             f"(one kernel updates both), got {getattr(state_adam, name)} and "
                             f"{getattr(action_adam, name)}")


def check_triton_only(op: str, backend: str) -> None:
    """A fused MLP custom op's backend: "triton" (ValueError naming the op otherwise)."""
    if backend != "triton":
        raise ValueError(f"grasp::{op} runs on the triton backend only, got {backend!r}")


def unsupported_backend(op: str, backend: str) -> ValueError:
    """The error of a fused MLP op asked to run where its Triton kernel cannot (it has no reference path)."""
    return ValueError(
        f"{op} runs on the triton backend only, got backend {backend!r}, which resolves to the reference backend "
        "here; on a CPU set TRITON_INTERPRET=1. Its specification is the planner's own math "
        "(grasp_kernels.lifted / grasp_kernels.sync), which GraspConfig(fused_mlp=True) falls back to with one warning"
    )


def launcher(backend: str) -> Callable[..., None]:
    """The launch function of a kernel backend: Triton only (imported on first use: Triton is optional)."""
    check_triton_only("fused_mlp_iteration", backend)
    from .triton_kernel import launch

    return launch


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
    noise_base: int,
    noise_stride: int,
    low: Tensor,
    high: Tensor,
    backend: str,
) -> Tensor:
    _check_tensors(states, actions, states_out, params, depth, activation, state_exp_avg, state_exp_avg_sq,
                          action_exp_avg, action_exp_avg_sq, noise, low, high)
    check_no_overlap(
        dict(states_out=states_out, actions=actions, state_exp_avg=state_exp_avg, state_exp_avg_sq=state_exp_avg_sq,
             action_exp_avg=action_exp_avg, action_exp_avg_sq=action_exp_avg_sq),
        dict(states=states, noise=noise, low=low, high=high, **{f"params[{i}]": p for i, p in enumerate(params)}),
    )
    gamma = check_scalar("gamma", gamma, minimum=0.0)
    check_step(step)
    state_adam = AdamHyper(lr_states, beta1, beta2, eps)
    action_adam = state_adam.with_lr(lr_actions)
    noise_std = check_scalar("noise_std", noise_std, minimum=0.0)
    counters = NoiseCounters(seed, noise_base, noise_stride).for_states(states)
    check_triton_only("fused_mlp_iteration", backend)
    check_backend_runs(backend, states.device)
    energy = torch.empty((states.shape[0],), device=states.device, dtype=torch.float32)
    with on_device(states.device):
        launcher(backend)(
            states, actions, states_out, energy, list(params), depth, activation, gamma, state_exp_avg,
            state_exp_avg_sq, action_exp_avg, action_exp_avg_sq, step, state_adam, action_adam, noise_std, noise,
            counters, low, high,
        )
    return energy


@_fused_mlp_iteration.register_fake
def _fused_mlp_iteration_fake(
    states, actions, states_out, params, depth, activation, gamma, state_exp_avg, state_exp_avg_sq, action_exp_avg,
    action_exp_avg_sq, step, lr_states, lr_actions, beta1, beta2, eps, noise_std, noise, seed, noise_base, noise_stride,
    low, high, backend,
):
    _check_tensors(states, actions, states_out, params, depth, activation, state_exp_avg, state_exp_avg_sq,
                          action_exp_avg, action_exp_avg_sq, noise, low, high)
    return torch.empty((states.shape[0],), device=states.device, dtype=torch.float32)


def fused_mlp_backend(backend: str, device: torch.device) -> str:
    """The backend the fused MLP ops run with: "triton", or "reference" where their Triton kernels cannot
    run (``backend`` as in :mod:`grasp_kernels.backends`; the cuda module has no fused MLP kernel, so
    "cuda" runs the Triton one where Triton can run). The ops refuse "reference": they have no reference
    path (the planner runs its normal iteration instead)."""
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
    state_adam: AdamHyper,
    action_adam: AdamHyper,
    noise_std: float,
    low: BoundArg,
    high: BoundArg,
    noise: Optional[torch.Tensor] = None,
    *,
    states_out: Optional[torch.Tensor] = None,
    counters: NoiseCounters = NoiseCounters(),
    generator: Optional[torch.Generator] = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One whole GRASP iteration for an MLPDynamics world model (``stop_gradient``, ``history = 1``) in ONE
    Triton kernel (:mod:`.triton_kernel`): the lifted model call over ``B*T`` rows, the energy and its
    reshaped gradients, the VJP to the actions, Adam + noise on the virtual states and Adam + clamp on the
    actions. Its specification is :func:`grasp_kernels.lifted.lifted_iteration` (on the reference backend,
    with the states copied to ``states_out`` first); ValueError where the Triton kernel cannot run.

    Double buffering: ``states`` is only read; the new states (every row: s_0 and the goal copied)
    are written to ``states_out`` (allocated if None; must not overlap ``states``) and returned.
    ``actions`` and the four moments are updated in place.

    Args:
        model: an :class:`~grasp_kernels.models.MLPDynamics` (packed on every call) or a
            :class:`PackedMLP` from :func:`pack_mlp` (pack once per plan; bfloat16 matrix inputs via
            ``pack_mlp(model, torch.bfloat16)``).
        states: ``[B, T+1, D]`` float32.
        actions: ``[B, T, A]``; state moments ``[B, T+1, D]``, action moments ``[B, T, A]``.
        step: the 1-based Adam step (one count for both).
        state_adam, action_adam: Adam's constants of the states and the actions; they may differ in their
            learning rates only (one kernel applies one ``beta1``, ``beta2``, ``eps``).
        noise_std, noise, counters, generator: Langevin noise as :func:`state_step_`.
        low, high: action bounds as :func:`action_step_`.

    Returns:
        ``(energy [B], states_out [B, T+1, D])``.
    """
    check_shared_moments(state_adam, action_adam)
    check_params(state_adam, counters)
    name = fused_mlp_backend(backend, states.device)
    if name == "reference":
        raise unsupported_backend("fused_mlp_iteration_", backend)
    if states_out is None:
        states_out = torch.empty_like(states)
    counters = kernel_counters(counters.for_states(states), generator, noise, noise_std)
    packed = packed_for(model, states, actions)
    energy = torch.ops.grasp.fused_mlp_iteration(
        states.detach(), actions, states_out, list(packed.tensors), packed.depth, packed.activation, gamma,
        state_exp_avg, state_exp_avg_sq, action_exp_avg, action_exp_avg_sq, step, state_adam.lr, action_adam.lr,
        state_adam.beta1, state_adam.beta2, state_adam.eps, noise_std, noise, *counters.flat(),
        *kernel_bounds(low, high, actions), name,
    )
    return energy, states_out
