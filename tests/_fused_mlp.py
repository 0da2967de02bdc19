"""Helpers of the fused MLP op tests (tests/ops/test_fused_mlp_iteration.py, test_fused_mlp_sync.py): a
random MLPDynamics with non-identity normalisation, the relative error, and a plan with and without the
fused kernels."""

from __future__ import annotations

import torch
from torch import nn

from grasp_kernels import GraspConfig, GraspPlanner, PlanResult
from grasp_kernels.lifted import rollout
from grasp_kernels.models import MLPDynamics

DEVICE = torch.device("cpu")
ACTS = (nn.SiLU, nn.ReLU, nn.Tanh)


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
