"""Helpers of the fused MLP op tests (tests/ops/test_fused_mlp_iteration.py, test_fused_mlp_sync.py): the fused
iteration's specification in the op's signature, a random MLPDynamics with non-identity normalisation, the
relative error, and a plan with and without the fused kernels.

The fused ops' specifications are the planner's own math: one iteration,
:func:`grasp_kernels.lifted.lifted_iteration` (:func:`fused_mlp_iteration_ref` below), and one sync step,
:func:`grasp_kernels.sync.sync_step` (the tests call it as it is). They live here, not in the package: the ops
sit below the planner's math, which runs on them."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from grasp_kernels import GraspConfig, GraspPlanner, PlanResult
from grasp_kernels.lifted import WorldModel, lifted_iteration
from grasp_kernels.rollouts import rollout
from grasp_kernels.models import MLPDynamics

DEVICE = torch.device("cpu")
ACTS = (nn.SiLU, nn.ReLU, nn.Tanh)


def fused_mlp_iteration_ref(
    world_model: WorldModel, states: torch.Tensor, actions: torch.Tensor, gamma: float, *moments: torch.Tensor,
    **scalars: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The specification of ``ops.fused_mlp_iteration_``, called as the op is:
    :func:`grasp_kernels.lifted.lifted_iteration` on the reference backend (``stop_gradient``, ``history = 1``,
    no state weights), in place.

    ``moments``: the op's four, ``state_exp_avg, state_exp_avg_sq [B, T+1, D], action_exp_avg,
    action_exp_avg_sq [B, T, A]``; ``scalars``: the op's other arguments by name (``step``, ``state_adam``,
    ``action_adam``, ``noise_std``, ``low``, ``high``, ``noise``, ``generator``). ``states [B, T+1, D]`` (rows
    1..T-1), ``actions [B, T, A]`` and the moments are updated in place (the op writes the new states to
    ``states_out`` instead).

    Returns:
        ``(energy [B], grad_pred [B, T, D], action_grad [B, T, A])``, detached.
    """
    state_moments, action_moments = moments[:2], moments[2:]
    return lifted_iteration(world_model, states, actions, state_moments, action_moments, gamma=gamma,
                            state_shape=(states.shape[-1],), **scalars)


def rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert torch.isfinite(out).all(), "non-finite values (a poisoned output was not written?)"
    denom = ref.norm().item()
    return out.norm().item() if denom == 0.0 else (out - ref).norm().item() / denom


def make_model(D, A, hidden, depth, act=nn.SiLU, seed=0, device=DEVICE, gain=2.0) -> MLPDynamics:
    """``gain`` scales the default initialisation of the layers: 2 takes the activations out of their
    linear range in one step; over tens of rollout steps (the sync step's adjoint) it makes SiLU and ReLU
    rollouts explode (states ~1e12 at T = 50), where 1 keeps them bounded (states ~10, gradients ~1)."""
    torch.manual_seed(seed)
    model = MLPDynamics(D, A, hidden=hidden, depth=depth, activation=act)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # non-identity normalisation and delta scale
        model.state_mean.copy_(torch.randn(D, generator=g) * 0.3)
        model.state_std.copy_(torch.rand(D, generator=g) + 0.5)
        model.action_mean.copy_(torch.randn(A, generator=g) * 0.2)
        model.action_std.copy_(torch.rand(A, generator=g) + 0.5)
        model.delta_scale.copy_(torch.rand(D, generator=g) + 0.5)
        for p in model.net.parameters():  # larger weights: the activations leave their linear range
            p.mul_(gain)
    return model.to(device)


def plan_pair(config: GraspConfig, model, batch=3, D=3, A=2, seed=5, reachable=False) -> dict[bool, PlanResult]:
    """The plan of ``config`` with ``fused_mlp`` False and True, from random ``s0``/``goal [batch, D]``
    (``reachable``: the goal is the model's rollout of random actions in ``[-0.8, 0.8]``)."""
    g = torch.Generator().manual_seed(seed)
    s0, goal = torch.randn(batch, D, generator=g), torch.randn(batch, D, generator=g)
    if reachable:
        with torch.no_grad():
            goal = rollout(model, s0, torch.rand(batch, config.horizon, A, generator=g) * 1.6 - 0.8)[:, -1]
    return {fused: GraspPlanner(model, A, config.replace(fused_mlp=fused)).plan(s0, goal) for fused in (False, True)}


def recorded_programs(monkeypatch, module) -> list[int]:
    """The program count of each wide launch of ``module`` (a fused kernel's triton_kernel module), as its
    scratch is allocated."""
    counts: list[int] = []
    allocate = module.wide_scratch

    def recording(n_programs: int, *args):
        counts.append(n_programs)
        return allocate(n_programs, *args)

    monkeypatch.setattr(module, "wide_scratch", recording)
    return counts
