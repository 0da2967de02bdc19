"""The ``grasp`` torch custom ops, shared by the ``triton`` and ``cuda`` kernel backends.

Each op takes a ``backend`` string ("triton" | "cuda") and calls the launcher of the provider module
``grasp_kernels.ops.{backend}_kernels`` (imported lazily). Validation, output allocation, the fake
(meta) implementations and the autograd formula are written once here for both backends; the
provider modules only launch kernels on validated, contiguous tensors and preallocated outputs
(see the protocol in :mod:`grasp_kernels.ops.triton_kernels`).

Ops (``torch.ops.grasp.*``):

- ``lifted_energy(pred, states, gamma, backend) -> (energy [B], grad_pred [B,T,D] f32, grad_states
  [B,T+1,D] f32)``: differentiable in ``pred`` and ``states``; the gradients are computed in the
  forward pass and backward only scales them by the incoming gradient of ``energy``.
- ``state_step(states!, grad, exp_avg!, exp_avg_sq!, step, lr, beta1, beta2, eps, noise_std, noise?,
  seed, backend) -> ()``
- ``action_step(actions!, grad, exp_avg!, exp_avg_sq!, step, lr, beta1, beta2, eps, low, high,
  backend) -> ()``
- ``lifted_energy_state_step(pred, states!, gamma, exp_avg!, exp_avg_sq!, step, lr, beta1, beta2,
  eps, noise_std, noise?, seed, backend) -> (energy [B], grad_pred [B,T,D] f32)``
- ``fused_mlp_iteration(states, actions!, states_out!, params, depth, activation, gamma,
  state_exp_avg!, state_exp_avg_sq!, action_exp_avg!, action_exp_avg_sq!, step, lr_states, lr_actions,
  beta1, beta2, eps, noise_std, noise?, seed, low, high, backend) -> energy [B]``: one whole GRASP
  iteration for a packed MLPDynamics (:mod:`grasp_kernels.ops.fused_mlp`; triton backend only).

Checks (both backends, before any launch): dtypes, shapes, contiguity and one device; ``gamma``,
``lr``, ``eps``, ``noise_std`` finite and >= 0, betas in [0, 1); and no memory overlap between the
tensors an op updates in place (``states``/``actions``, ``exp_avg``, ``exp_avg_sq``) and each other or
the tensors it reads (``pred``, ``grad``, ``noise``, ``low``, ``high``): ValueError naming both.
``grad_pred``/``grad_states``/``energy`` are allocated here and cannot overlap anything.

They are ``torch.library.custom_op`` with an explicit ``register_fake`` (not ``triton_op``, which
breaks opcheck and compile under the Triton CPU interpreter), so they pass
``torch.library.opcheck`` and are opaque nodes under ``torch.compile``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional

import torch
from torch import Tensor

from .._checks import check_same_device, check_scalar, check_tensor
from ..backends import on_device

__all__ = [
    "KERNEL_BACKENDS",
    "provider",
    "lifted_energy",
    "state_step",
    "action_step",
    "lifted_energy_state_step",
    "fused_mlp_iteration",
]

KERNEL_BACKENDS = ("triton", "cuda")
SEED_LIMIT = 2**63


# ---------------------------------------------------------------------------------------------
# validation (one place for both backends; tensor checks also run on fake tensors)
# ---------------------------------------------------------------------------------------------


def provider(backend: str) -> ModuleType:
    """The launcher module ``grasp_kernels.ops.{backend}_kernels`` of a kernel backend."""
    if backend not in KERNEL_BACKENDS:
        raise ValueError(f"backend must be one of {KERNEL_BACKENDS} for the grasp custom ops, got {backend!r}")
    return importlib.import_module(f"grasp_kernels.ops.{backend}_kernels")


def _check_backend_runs(backend: str, device: torch.device) -> None:
    from ..backends import backend_unavailable_reason

    if backend not in KERNEL_BACKENDS:
        raise ValueError(f"backend must be one of {KERNEL_BACKENDS} for the grasp custom ops, got {backend!r}")
    reason = backend_unavailable_reason(backend, device)
    if reason is not None:
        raise RuntimeError(f"grasp custom op: backend {backend!r} cannot run: {reason}")


def _check_float32(name: str, tensor: object) -> None:
    if isinstance(tensor, Tensor) and tensor.dtype == torch.float64:
        raise TypeError(
            f"{name} is float64: the triton/cuda kernels take float32 {name} "
            "(use backend='reference' for float64)"
        )


def _check_states(name: str, states: object) -> tuple[int, int, int]:
    _check_float32(name, states)
    check_tensor(name, states, ndim=3, dtypes=(torch.float32,), contiguous=True)
    batch, rows, dim = states.shape  # type: ignore[union-attr]
    if rows < 2:
        raise ValueError(f"{name} must have T+1 >= 2 rows (s_0 and the goal), got shape {tuple(states.shape)}")
    return batch, rows, dim


def _check_like(param_name: str, param: Tensor, **tensors: Tensor) -> None:
    for name, tensor in tensors.items():
        _check_float32(name, tensor)
        check_tensor(name, tensor, shape=tuple(param.shape), dtypes=(torch.float32,), contiguous=True)
    check_same_device(**{param_name: param}, **tensors)


def _check_pred(pred: object, states: Tensor) -> None:
    batch, rows, dim = states.shape
    _check_float32("pred", pred)
    check_tensor("pred", pred, shape=(batch, rows - 1, dim), dtypes=(torch.float32, torch.bfloat16), contiguous=True)
    check_same_device(pred=pred, states=states)


def _check_noise(noise: Optional[Tensor], states: Tensor) -> None:
    if noise is None:
        return
    batch, rows, dim = states.shape
    _check_float32("noise", noise)
    check_tensor("noise", noise, shape=(batch, rows - 2, dim), dtypes=(torch.float32,), contiguous=True)
    check_same_device(states=states, noise=noise)


def _check_adam_scalars(step: int, lr: float, beta1: float, beta2: float, eps: float) -> None:
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be an int >= 1 (the 1-based Adam step), got {step!r}")
    check_scalar("lr", lr, minimum=0.0)
    check_scalar("eps", eps, minimum=0.0)
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        if check_scalar(name, beta, minimum=0.0) >= 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {beta}")


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")


def _byte_range(tensor: Tensor) -> Optional[tuple[int, int]]:
    """[first, last) byte addresses of a contiguous tensor's elements; None when it has none."""
    if tensor.numel() == 0:
        return None
    start = tensor.data_ptr()
    return start, start + tensor.numel() * tensor.element_size()


def _check_no_overlap(written: dict, read: dict) -> None:
    """The tensors a kernel writes (``written``: in-place outputs) must not share memory with each
    other or with the tensors it only reads (``read``): the kernels load and store in one pass, so an
    overlap would race. Compares the byte ranges of the (contiguous) tensors on one device: no device
    sync, a few pointer reads. Skipped for fake/meta tensors (no data). Raises ValueError naming both."""
    ranges = []
    for role, tensors in (("written", written), ("read", read)):
        for name, tensor in tensors.items():
            if tensor is None or tensor.device.type == "meta":
                continue
            try:
                span = _byte_range(tensor)
            except RuntimeError:  # a tensor without storage (fake / functional): nothing to compare
                continue
            if span is not None:
                ranges.append((name, role, tensor.device, span))
    for i, (name_a, role_a, dev_a, (lo_a, hi_a)) in enumerate(ranges):
        if role_a != "written":
            continue
        for j, (name_b, role_b, dev_b, (lo_b, hi_b)) in enumerate(ranges):
            if j == i or (role_b == "written" and j < i) or dev_a != dev_b:
                continue
            if lo_a < hi_b and lo_b < hi_a:
                if role_b == "written":
                    how = "both are updated in place"
                else:
                    how = f"{name_a} is updated in place while {name_b} is read"
                raise ValueError(
                    f"{name_a} and {name_b} overlap in memory ({how}): pass separate tensors, e.g. {name_b}.clone()"
                )


def _check_energy_args(pred: Tensor, states: Tensor) -> None:
    _check_states("states", states)
    _check_pred(pred, states)


def _check_state_step_args(states: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, noise: Optional[Tensor]) -> None:
    _check_states("states", states)
    _check_like("states", states, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    _check_noise(noise, states)


def _check_action_step_args(
    actions: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, low: Tensor, high: Tensor
) -> None:
    _check_float32("actions", actions)
    check_tensor("actions", actions, ndim=3, dtypes=(torch.float32,), contiguous=True)
    _check_like("actions", actions, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    action_dim = actions.shape[-1]
    for name, bound in (("low", low), ("high", high)):
        _check_float32(name, bound)
        check_tensor(name, bound, shape=(action_dim,), dtypes=(torch.float32,), contiguous=True)
    check_same_device(actions=actions, low=low, high=high)


def _check_fused_args(
    pred: Tensor, states: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, noise: Optional[Tensor]
) -> None:
    _check_states("states", states)
    _check_pred(pred, states)
    _check_like("states", states, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    _check_noise(noise, states)


# ---------------------------------------------------------------------------------------------
# grasp::lifted_energy
# ---------------------------------------------------------------------------------------------


def _energy_outputs(pred: Tensor, states: Tensor) -> tuple[Tensor, Tensor]:
    batch = states.shape[0]
    energy = torch.empty((batch,), device=states.device, dtype=torch.float32)
    grad_pred = torch.empty(pred.shape, device=states.device, dtype=torch.float32)
    return energy, grad_pred


@torch.library.custom_op("grasp::lifted_energy", mutates_args=())
def _lifted_energy(pred: Tensor, states: Tensor, gamma: float, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    _check_energy_args(pred, states)
    gamma = check_scalar("gamma", gamma, minimum=0.0)
    _check_backend_runs(backend, states.device)
    energy, grad_pred = _energy_outputs(pred, states)
    grad_states = torch.empty_like(states)
    with on_device(states.device):
        provider(backend).lifted_energy_fwd(pred, states, gamma, energy, grad_pred, grad_states)
    return energy, grad_pred, grad_states


@_lifted_energy.register_fake
def _lifted_energy_fake(pred: Tensor, states: Tensor, gamma: float, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    _check_energy_args(pred, states)
    check_scalar("gamma", gamma, minimum=0.0)
    energy, grad_pred = _energy_outputs(pred, states)
    return energy, grad_pred, torch.empty_like(states)


def _lifted_energy_setup_context(ctx, inputs, output) -> None:
    pred = inputs[0]
    _, grad_pred, grad_states = output
    ctx.pred_dtype = pred.dtype
    ctx.save_for_backward(grad_pred, grad_states)
    ctx.mark_non_differentiable(grad_pred, grad_states)


def _lifted_energy_backward(ctx, grad_energy: Tensor, _grad_pred: Optional[Tensor], _grad_states: Optional[Tensor]):
    grad_pred, grad_states = ctx.saved_tensors
    scale = grad_energy.to(torch.float32).view(-1, 1, 1)
    d_pred = d_states = None
    if ctx.needs_input_grad[0]:
        d_pred = (grad_pred * scale).to(ctx.pred_dtype)
    if ctx.needs_input_grad[1]:
        d_states = grad_states * scale
    return d_pred, d_states, None, None


_lifted_energy.register_autograd(_lifted_energy_backward, setup_context=_lifted_energy_setup_context)


def lifted_energy(pred: Tensor, states: Tensor, gamma: float, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(energy [B], grad_pred, grad_states)``; differentiable in pred and states through ``energy``."""
    return torch.ops.grasp.lifted_energy(pred, states, check_scalar("gamma", gamma, minimum=0.0), backend)


# ---------------------------------------------------------------------------------------------
# grasp::state_step
# ---------------------------------------------------------------------------------------------


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
    backend: str,
) -> None:
    _check_state_step_args(states, grad, exp_avg, exp_avg_sq, noise)
    _check_no_overlap(dict(states=states, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq), dict(grad=grad, noise=noise))
    _check_adam_scalars(step, lr, beta1, beta2, eps)
    noise_std = check_scalar("noise_std", noise_std, minimum=0.0)
    _check_seed(seed)
    _check_backend_runs(backend, states.device)
    with on_device(states.device):
        provider(backend).state_step(
            states, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, noise_std, noise, seed
        )


@_state_step.register_fake
def _state_step_fake(states, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, noise_std, noise, seed, backend):
    _check_state_step_args(states, grad, exp_avg, exp_avg_sq, noise)


def state_step(
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
    backend: str,
) -> None:
    _check_adam_scalars(step, lr, beta1, beta2, eps)
    torch.ops.grasp.state_step(
        states, grad, exp_avg, exp_avg_sq, step, float(lr), float(beta1), float(beta2), float(eps),
        check_scalar("noise_std", noise_std, minimum=0.0), noise, seed, backend,
    )


# ---------------------------------------------------------------------------------------------
# grasp::action_step
# ---------------------------------------------------------------------------------------------


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
    _check_action_step_args(actions, grad, exp_avg, exp_avg_sq, low, high)
    _check_no_overlap(
        dict(actions=actions, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq), dict(grad=grad, low=low, high=high)
    )
    _check_adam_scalars(step, lr, beta1, beta2, eps)
    _check_backend_runs(backend, actions.device)
    with on_device(actions.device):
        provider(backend).action_step(actions, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, low, high)


@_action_step.register_fake
def _action_step_fake(actions, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, low, high, backend):
    _check_action_step_args(actions, grad, exp_avg, exp_avg_sq, low, high)


def action_step(
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
    _check_adam_scalars(step, lr, beta1, beta2, eps)
    torch.ops.grasp.action_step(
        actions, grad, exp_avg, exp_avg_sq, step, float(lr), float(beta1), float(beta2), float(eps), low, high, backend
    )


# ---------------------------------------------------------------------------------------------
# grasp::lifted_energy_state_step
# ---------------------------------------------------------------------------------------------


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
    backend: str,
) -> tuple[Tensor, Tensor]:
    _check_fused_args(pred, states, exp_avg, exp_avg_sq, noise)
    _check_no_overlap(dict(states=states, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq), dict(pred=pred, noise=noise))
    gamma = check_scalar("gamma", gamma, minimum=0.0)
    _check_adam_scalars(step, lr, beta1, beta2, eps)
    noise_std = check_scalar("noise_std", noise_std, minimum=0.0)
    _check_seed(seed)
    _check_backend_runs(backend, states.device)
    energy, grad_pred = _energy_outputs(pred, states)
    with on_device(states.device):
        provider(backend).lifted_energy_state_step(
            pred, states, gamma, energy, grad_pred, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
            noise_std, noise, seed,
        )
    return energy, grad_pred


@_lifted_energy_state_step.register_fake
def _lifted_energy_state_step_fake(
    pred, states, gamma, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, noise_std, noise, seed, backend
):
    _check_fused_args(pred, states, exp_avg, exp_avg_sq, noise)
    check_scalar("gamma", gamma, minimum=0.0)
    return _energy_outputs(pred, states)


def lifted_energy_state_step(
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
    backend: str,
) -> tuple[Tensor, Tensor]:
    _check_adam_scalars(step, lr, beta1, beta2, eps)
    return torch.ops.grasp.lifted_energy_state_step(
        pred, states, check_scalar("gamma", gamma, minimum=0.0), exp_avg, exp_avg_sq, step, float(lr), float(beta1),
        float(beta2), float(eps), check_scalar("noise_std", noise_std, minimum=0.0), noise, seed, backend,
    )


# ---------------------------------------------------------------------------------------------
# grasp::fused_mlp_iteration
# ---------------------------------------------------------------------------------------------


def _check_mlp_params(params: list, depth: int, activation: int, dim: int, action_dim: int, device) -> None:
    from .mlp_pack import ACTIVATION_NAMES, MAX_DEPTH

    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must be an int in 1..{MAX_DEPTH}, got {depth!r}")
    if activation not in ACTIVATION_NAMES:
        raise ValueError(f"activation must be one of {sorted(ACTIVATION_NAMES)} ({ACTIVATION_NAMES}), got {activation!r}")
    if len(params) != 5 + 2 * (depth + 1):
        raise ValueError(f"params must hold {5 + 2 * (depth + 1)} tensors for depth {depth}, got {len(params)}")
    hidden = params[6].shape[0] if params[6].dim() == 1 else -1
    if hidden < 1:
        raise ValueError(f"params[6] (b1) must be a non-empty 1-D tensor, got shape {tuple(params[6].shape)}")
    names = ["state_mean", "state_std", "action_mean", "action_std", "delta_scale"]
    shapes = [(dim,), (dim,), (action_dim,), (action_dim,), (dim,)]
    names += ["W1^T", "b1"]
    shapes += [(dim + action_dim, hidden), (hidden,)]
    for layer in range(2, depth + 1):
        names += [f"W{layer}^T", f"b{layer}"]
        shapes += [(hidden, hidden), (hidden,)]
    names += ["Wout^T", "bout"]
    shapes += [(hidden, dim), (dim,)]
    matmul_dtype = params[5].dtype
    for name, tensor, shape in zip(names, params, shapes):
        matrix = len(shape) == 2
        dtypes = (matmul_dtype,) if matrix else (torch.float32,)
        if matrix and matmul_dtype not in (torch.float32, torch.bfloat16):
            raise TypeError(f"params {name} must be float32 or bfloat16, got {matmul_dtype}")
        check_tensor(f"params {name}", tensor, shape=shape, dtypes=dtypes, contiguous=True)
        check_same_device(states=torch.empty(0, device=device), **{f"params {name}": tensor})


def _check_fused_mlp_args(
    states, actions, states_out, params, depth, activation, s_avg, s_avg_sq, a_avg, a_avg_sq, noise, low, high
) -> None:
    batch, rows, dim = _check_states("states", states)
    _check_like("states", states, states_out=states_out, state_exp_avg=s_avg, state_exp_avg_sq=s_avg_sq)
    _check_float32("actions", actions)
    check_tensor("actions", actions, shape=(batch, rows - 1, None), dtypes=(torch.float32,), contiguous=True)
    _check_like("actions", actions, action_exp_avg=a_avg, action_exp_avg_sq=a_avg_sq)
    for name, bound in (("low", low), ("high", high)):
        _check_float32(name, bound)
        check_tensor(name, bound, shape=(actions.shape[-1],), dtypes=(torch.float32,), contiguous=True)
    check_same_device(actions=actions, low=low, high=high)
    check_same_device(states=states, actions=actions)
    _check_noise(noise, states)
    _check_mlp_params(list(params), depth, activation, dim, actions.shape[-1], states.device)


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
) -> Tensor:
    _check_fused_mlp_args(states, actions, states_out, params, depth, activation, state_exp_avg, state_exp_avg_sq,
                          action_exp_avg, action_exp_avg_sq, noise, low, high)
    _check_no_overlap(
        dict(states_out=states_out, actions=actions, state_exp_avg=state_exp_avg, state_exp_avg_sq=state_exp_avg_sq,
             action_exp_avg=action_exp_avg, action_exp_avg_sq=action_exp_avg_sq),
        dict(states=states, noise=noise, low=low, high=high, **{f"params[{i}]": p for i, p in enumerate(params)}),
    )
    gamma = check_scalar("gamma", gamma, minimum=0.0)
    _check_adam_scalars(step, lr_states, beta1, beta2, eps)
    check_scalar("lr_actions", lr_actions, minimum=0.0)
    noise_std = check_scalar("noise_std", noise_std, minimum=0.0)
    _check_seed(seed)
    if backend != "triton":
        raise ValueError(f"grasp::fused_mlp_iteration runs on the triton backend only, got {backend!r}")
    _check_backend_runs(backend, states.device)
    energy = torch.empty((states.shape[0],), device=states.device, dtype=torch.float32)
    fused_mlp = importlib.import_module("grasp_kernels.ops.fused_mlp")
    with on_device(states.device):
        fused_mlp.fused_mlp_iteration(
            states, actions, states_out, energy, list(params), depth, activation, gamma, state_exp_avg,
            state_exp_avg_sq, action_exp_avg, action_exp_avg_sq, step, lr_states, lr_actions, beta1, beta2, eps,
            noise_std, noise, seed, low, high,
        )
    return energy


@_fused_mlp_iteration.register_fake
def _fused_mlp_iteration_fake(
    states, actions, states_out, params, depth, activation, gamma, state_exp_avg, state_exp_avg_sq, action_exp_avg,
    action_exp_avg_sq, step, lr_states, lr_actions, beta1, beta2, eps, noise_std, noise, seed, low, high, backend,
):
    _check_fused_mlp_args(states, actions, states_out, params, depth, activation, state_exp_avg, state_exp_avg_sq,
                          action_exp_avg, action_exp_avg_sq, noise, low, high)
    return torch.empty((states.shape[0],), device=states.device, dtype=torch.float32)


def fused_mlp_iteration(
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
) -> Tensor:
    _check_adam_scalars(step, lr_states, beta1, beta2, eps)
    return torch.ops.grasp.fused_mlp_iteration(
        states, actions, states_out, list(params), depth, activation, check_scalar("gamma", gamma, minimum=0.0),
        state_exp_avg, state_exp_avg_sq, action_exp_avg, action_exp_avg_sq, step, float(lr_states),
        float(check_scalar("lr_actions", lr_actions, minimum=0.0)), float(beta1), float(beta2), float(eps),
        check_scalar("noise_std", noise_std, minimum=0.0), noise, seed, low, high, backend,
    )
