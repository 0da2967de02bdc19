"""``fused_mlp_sync_step_``: one sync-phase step for an MLPDynamics world model, as the custom op
``torch.ops.grasp.fused_mlp_sync_step(s0, goal, actions!, exp_avg!, exp_avg_sq!, workspace!, params,
depth, activation, step, lr, beta1, beta2, eps, low, high, backend) -> loss [B]`` (triton backend only)
and its public function. ``params`` is the packed model of :mod:`..fused_mlp_iteration.pack`; ``lr, beta1,
beta2, eps`` an :class:`~grasp_kernels.ops.AdamHyper` everywhere but the schema.

Its specification is one step of the planner's GD sync, :func:`grasp_kernels.sync.sync_step` (``history =
1``, no state weights); the op has no reference backend of its own.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import Tensor

from ..._checks import BoundArg, check_same_device, check_tensor
from ...backends import on_device
from .._dispatch import kernel_bounds
from .._params import AdamHyper
from .._validate import check_backend_runs, check_bounds, check_float32, check_like, check_no_overlap, check_params
from .._validate import check_step
from ..fused_mlp_iteration.op import check_triton_only, fused_mlp_backend, unsupported_backend
from ..fused_mlp_iteration.pack import PackedMLP, check_packed_params, packed_for


def _check_tensors(s0, goal, actions, exp_avg, exp_avg_sq, workspace, params, depth, activation, low, high) -> None:
    check_float32("s0", s0)
    check_tensor("s0", s0, ndim=2, dtypes=(torch.float32,), contiguous=True)
    batch, dim = s0.shape
    check_like("s0", s0, goal=goal)
    check_float32("actions", actions)
    check_tensor("actions", actions, shape=(batch, None, None), dtypes=(torch.float32,), contiguous=True)
    if actions.shape[1] < 1:
        raise ValueError(f"actions must have T >= 1 time steps, got shape {tuple(actions.shape)}")
    check_like("actions", actions, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    check_float32("workspace", workspace)
    check_tensor("workspace", workspace, shape=(batch, actions.shape[1] + 1, dim), dtypes=(torch.float32,),
                 contiguous=True)
    check_same_device(s0=s0, actions=actions, workspace=workspace)
    check_bounds(actions, low, high)
    check_packed_params(list(params), depth, activation, dim, actions.shape[-1], s0.device)


def launcher(backend: str) -> Callable[..., None]:
    """The launch function of a kernel backend: Triton only (imported on first use: Triton is optional)."""
    check_triton_only("fused_mlp_sync_step", backend)
    from .triton_kernel import launch

    return launch


@torch.library.custom_op("grasp::fused_mlp_sync_step", mutates_args=("actions", "exp_avg", "exp_avg_sq", "workspace"))
def _fused_mlp_sync_step(
    s0: Tensor,
    goal: Tensor,
    actions: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    workspace: Tensor,
    params: list[Tensor],
    depth: int,
    activation: int,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    low: Tensor,
    high: Tensor,
    backend: str,
) -> Tensor:
    _check_tensors(s0, goal, actions, exp_avg, exp_avg_sq, workspace, params, depth, activation, low, high)
    check_no_overlap(
        dict(actions=actions, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, workspace=workspace),
        dict(s0=s0, goal=goal, low=low, high=high, **{f"params[{i}]": p for i, p in enumerate(params)}),
    )
    check_step(step)
    adam = AdamHyper(lr, beta1, beta2, eps)
    check_triton_only("fused_mlp_sync_step", backend)
    check_backend_runs(backend, s0.device)
    loss = torch.empty((s0.shape[0],), device=s0.device, dtype=torch.float32)
    with on_device(s0.device):
        launcher(backend)(s0, goal, actions, exp_avg, exp_avg_sq, workspace, loss, list(params), depth, activation,
                          step, adam, low, high)
    return loss


@_fused_mlp_sync_step.register_fake
def _fused_mlp_sync_step_fake(
    s0, goal, actions, exp_avg, exp_avg_sq, workspace, params, depth, activation, step, lr, beta1, beta2, eps, low, high,
    backend,
):
    _check_tensors(s0, goal, actions, exp_avg, exp_avg_sq, workspace, params, depth, activation, low, high)
    return torch.empty((s0.shape[0],), device=s0.device, dtype=torch.float32)


def fused_mlp_sync_step_(
    model: Union[torch.nn.Module, PackedMLP],
    s0: torch.Tensor,
    goal: torch.Tensor,
    actions: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    adam: AdamHyper,
    low: BoundArg,
    high: BoundArg,
    *,
    workspace: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """One step of the sync phase for an MLPDynamics world model (``history = 1``, no state weights) in ONE
    Triton kernel (:mod:`.triton_kernel`): the shooting loss ``||rollout(s0, actions)_T - goal||^2`` and its
    gradient through the whole ``T``-step rollout, then Adam (step ``step``, constants ``adam``) and the
    clamp on the actions. Its specification is :func:`grasp_kernels.sync.sync_step`, one step of
    :func:`grasp_kernels.sync.gd_sync`, whose phase is ``steps`` calls with ``step = 1..steps`` on moments
    that start at zero; ValueError where the Triton kernel cannot run.

    Args:
        model: an :class:`~grasp_kernels.models.MLPDynamics` (packed on every call) or a
            :class:`PackedMLP` from :func:`pack_mlp` (bfloat16 matrix inputs via
            ``pack_mlp(model, torch.bfloat16)``).
        s0, goal: ``[B, D]`` float32; only read.
        actions: ``[B, T, A]``, ``T >= 1``; ``exp_avg``, ``exp_avg_sq``: its Adam moments ``[B, T, A]``.
            All three are updated in place.
        step, adam: the 1-based Adam step and Adam's constants.
        low, high: action bounds as :func:`action_step_` (None, a float or ``[A]``).
        workspace: ``[B, T+1, D]`` float32 for the rolled-out states (allocated if None; on return it holds
            the rollout of the actions before the step).
        backend: "auto" | "triton" | "cuda" ("cuda" runs the Triton kernel).

    Returns:
        ``[B]`` shooting loss of the actions BEFORE this step (the value ``gd_sync`` reports).
    """
    check_params(adam)
    name = fused_mlp_backend(backend, s0.device)
    if name == "reference":
        raise unsupported_backend("fused_mlp_sync_step_", backend)
    packed = packed_for(model, s0, actions)
    if workspace is None:
        workspace = torch.empty((s0.shape[0], actions.shape[1] + 1, s0.shape[-1]), device=s0.device,
                                dtype=torch.float32)
    return torch.ops.grasp.fused_mlp_sync_step(
        s0, goal, actions, exp_avg, exp_avg_sq, workspace, list(packed.tensors), packed.depth, packed.activation, step,
        *adam.flat(), *kernel_bounds(low, high, actions), name,
    )
