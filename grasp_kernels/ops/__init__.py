"""The fused GRASP ops, dispatched by backend.

Same signatures as the reference functions in :mod:`grasp_kernels.reference`, plus a keyword-only
``backend`` ("auto" | "reference" | "triton" | "cuda", see :mod:`grasp_kernels.backends`).
The triton and cuda backends run the ``torch.ops.grasp.*`` custom ops of
:mod:`grasp_kernels.ops.custom_ops` (float32 states, float32 or bfloat16 ``pred``, contiguous
tensors; anything else is rejected with an error naming the argument).

Noise seeds of the kernel backends (``state_step_`` and ``lifted_energy_state_step_``): the noise is
the explicit ``noise`` tensor if given; else it is drawn in-kernel (Philox) from ``seed`` if given;
else from a seed drawn from ``generator`` (one host sync if that generator lives on a GPU); else from
a seed drawn from torch's default CPU generator (so ``torch.manual_seed`` makes runs reproducible).
Pass a fresh seed every iteration. The reference backend instead seeds a fresh generator with
``seed``, or draws from ``generator``, so its noise differs from the kernels' (same distribution).
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from .._checks import as_bound
from ..backends import resolve_backend
from ..reference import (
    BoundArg,
    action_step_ref,
    fused_mlp_iteration_ref,
    lifted_energy_ref,
    lifted_energy_state_step_ref,
    state_step_ref,
)
from . import custom_ops
from .mlp_pack import PackedMLP, fused_mlp_unsupported_reason, pack_mlp

__all__ = [
    "lifted_energy",
    "lifted_energy_grads",
    "state_step_",
    "action_step_",
    "lifted_energy_state_step_",
    "fused_mlp_iteration_",
    "fused_mlp_backend",
    "pack_mlp",
    "PackedMLP",
    "fused_mlp_unsupported_reason",
]

_SEED_HIGH = 2**62


@torch.compiler.assume_constant_result
def _resolve(backend: str, device: torch.device) -> str:
    """:func:`resolve_backend`, a constant for torch.compile (it imports modules and reads the
    environment, which dynamo cannot trace; a compiled graph keeps the backend it was traced with)."""
    return resolve_backend(backend, device)


def _kernel_seed(
    seed: Optional[int], generator: Optional[torch.Generator], noise: Optional[torch.Tensor], noise_std: float
) -> int:
    """The Philox seed of a kernel call (see the module docstring); 0 when no noise is drawn."""
    if noise is not None or noise_std == 0:
        return 0 if seed is None else seed
    if seed is not None:
        return seed
    if generator is not None:
        return int(torch.randint(0, _SEED_HIGH, (1,), generator=generator, device=generator.device).item())
    return int(torch.randint(0, _SEED_HIGH, (1,)).item())


def _seeded_generator(
    seed: Optional[int], generator: Optional[torch.Generator], device: torch.device
) -> Optional[torch.Generator]:
    """The reference path's generator: a fresh one seeded with ``seed`` if given, else ``generator``."""
    if seed is not None:
        return torch.Generator(device=device).manual_seed(int(seed))
    return generator


def lifted_energy(pred: torch.Tensor, states: torch.Tensor, gamma: float, *, backend: str = "auto") -> torch.Tensor:
    """Per-plan lifted energy ``[B]`` of ``pred [B,T,D]`` against ``states [B,T+1,D]``.

    Differentiable: backward delivers the reshaped gradients of :func:`lifted_energy_ref`.
    """
    name = _resolve(backend, states.device)
    if name == "reference":
        return lifted_energy_ref(pred, states, gamma)
    return custom_ops.lifted_energy(pred, states, gamma, name)[0]


def lifted_energy_grads(
    pred: torch.Tensor, states: torch.Tensor, gamma: float, *, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Energy and reshaped gradients in one pass, without autograd (what a planner step needs).

    Returns ``(energy [B], grad_pred [B,T,D], grad_states [B,T+1,D])``, detached, in ``states.dtype``
    (float32 on the kernel backends even for bfloat16 ``pred``): the gradients of ``energy.sum()``,
    i.e. ``2 (p - s_next) + 2 gamma (p - g)`` and ``-2 (p_{t-1} - s_t)`` on rows 1..T-1, zero on rows
    0 and T. Saves the extra pass that autograd's backward spends scaling by the incoming gradient.
    """
    name = _resolve(backend, states.device)
    if name == "reference":
        with torch.enable_grad():
            pred_leaf = pred.detach().to(states.dtype).requires_grad_(True)
            states_leaf = states.detach().requires_grad_(True)
            energy = lifted_energy_ref(pred_leaf, states_leaf, gamma)
            grad_pred, grad_states = torch.autograd.grad(energy.sum(), (pred_leaf, states_leaf))
        return energy.detach(), grad_pred, grad_states
    return custom_ops.lifted_energy(pred.detach(), states.detach(), gamma, name)


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
    it in-kernel; the reference seeds a fresh generator); else from ``generator``; kernels with
    neither draw their seed from torch's default CPU generator (module docstring).
    """
    name = _resolve(backend, states.device)
    if name == "reference":
        if noise is None:
            generator = _seeded_generator(seed, generator, states.device)
        state_step_ref(states, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, noise_std, noise, generator)
        return
    custom_ops.state_step(
        states, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, noise_std, noise,
        _kernel_seed(seed, generator, noise, noise_std), name,
    )


def _kernel_bounds(low: BoundArg, high: BoundArg, actions: torch.Tensor) -> list[torch.Tensor]:
    """Bounds as float32 ``[A]`` tensors, +-inf where unbounded (the kernels' form).

    Bounds already in that form (float32, ``[A]``, contiguous, on the actions' device) are used as
    given, without a NaN check: that check would be a device sync on every step (planners validate
    their bounds once, before the loop, and pass them in this form)."""
    bounds = []
    action_dim = actions.shape[-1]
    for bound_name, bound, fill in (("low", low, float("-inf")), ("high", high, float("inf"))):
        if (
            isinstance(bound, torch.Tensor) and bound.dtype == torch.float32 and bound.shape == (action_dim,)
            and bound.device == actions.device and bound.is_contiguous()
        ):
            bounds.append(bound)
            continue
        tensor = as_bound(bound_name, bound, action_dim, actions.device, torch.float32)
        if tensor is None:
            tensor = torch.full((actions.shape[-1],), fill, device=actions.device, dtype=torch.float32)
        bounds.append(tensor.contiguous())
    return bounds


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
    name = _resolve(backend, actions.device)
    if name == "reference":
        action_step_ref(actions, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, low, high)
        return
    bounds = _kernel_bounds(low, high, actions)
    custom_ops.action_step(actions, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, *bounds, name)


def lifted_energy_state_step_(
    pred: torch.Tensor,
    states: torch.Tensor,
    gamma: float,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    noise_std: float,
    noise: Optional[torch.Tensor] = None,
    *,
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused planner step: :func:`lifted_energy_grads` then :func:`state_step_` in one pass.

    Computes the energy and ``dE/dpred`` from the states BEFORE the update, applies the Adam + noise
    step to rows 1..T-1 of ``states`` (and the moments) in place with the reshaped state gradient,
    which never touches memory. Not differentiable (a planner step). Noise as :func:`state_step_`.

    Returns:
        ``(energy [B], grad_pred [B,T,D])``, detached, in ``states.dtype`` (float32 on the kernels).
    """
    name = _resolve(backend, states.device)
    if name == "reference":
        if noise is None:
            generator = _seeded_generator(seed, generator, states.device)
        return lifted_energy_state_step_ref(
            pred, states, gamma, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, noise_std, noise, generator
        )
    return custom_ops.lifted_energy_state_step(
        pred.detach(), states, gamma, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, noise_std, noise,
        _kernel_seed(seed, generator, noise, noise_std), name,
    )


def fused_mlp_backend(backend: str, device: torch.device) -> str:
    """The backend the fused MLP iteration runs with: "triton" or "reference" (``backend`` as in
    :mod:`grasp_kernels.backends`; the cuda module has no fused MLP kernel, so "cuda" runs the Triton
    one where Triton can run, else the reference)."""
    from ..backends import backend_unavailable_reason

    name = _resolve(backend, device)
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
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One whole GRASP iteration for an MLPDynamics world model (``stop_gradient``, ``history = 1``).

    The lifted model call over ``B*T`` rows, the energy and its reshaped gradients, the VJP to the
    actions, Adam + noise on the virtual states and Adam + clamp on the actions: on the triton backend
    ONE kernel (:mod:`grasp_kernels.ops.fused_mlp`), on the reference backend
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
        noise_std, noise, seed, generator: Langevin noise as :func:`state_step_`.
        low, high: action bounds as :func:`action_step_`.

    Returns:
        ``(energy [B], states_out [B, T+1, D])``.
    """
    packed = model if isinstance(model, PackedMLP) else None
    module = packed.model if packed is not None else model
    name = fused_mlp_backend(backend, states.device)
    if states_out is None:
        states_out = torch.empty_like(states)
    if name == "reference":
        reason = fused_mlp_unsupported_reason(module)
        if reason is not None:
            raise ValueError(reason)
        if noise is None:
            generator = _seeded_generator(seed, generator, states.device)
        states_out.copy_(states)
        energy, _, _ = fused_mlp_iteration_ref(
            module, states_out, actions, gamma, state_exp_avg, state_exp_avg_sq, action_exp_avg, action_exp_avg_sq,
            step, lr_states, lr_actions, beta1, beta2, eps, noise_std, low, high, noise, generator,
        )
        return energy, states_out
    if packed is None:
        packed = pack_mlp(module, device=states.device)
    if packed.state_dim != states.shape[-1] or packed.action_dim != actions.shape[-1]:
        raise ValueError(
            f"the MLP maps D = {packed.state_dim}, A = {packed.action_dim}; got states of shape {tuple(states.shape)} "
            f"and actions of shape {tuple(actions.shape)}"
        )
    energy = custom_ops.fused_mlp_iteration(
        states.detach(), actions, states_out, list(packed.tensors), packed.depth, packed.activation, gamma,
        state_exp_avg, state_exp_avg_sq, action_exp_avg, action_exp_avg_sq, step, lr_states, lr_actions, beta1,
        beta2, eps, noise_std, noise, _kernel_seed(seed, generator, noise, noise_std), *_kernel_bounds(low, high, actions),
        name,
    )
    return energy, states_out
