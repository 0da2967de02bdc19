"""The planner's math (grasp_kernels/lifted.py): initial states, rollout, shooting loss and the GD sync."""

from __future__ import annotations

import torch

from grasp_kernels.lifted import init_states
from grasp_kernels.rollouts import rollout, shooting_loss
from grasp_kernels.ops import AdamHyper
from grasp_kernels.sync import gd_sync


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def linear_model(dim: int, action_dim: int, seed: int = 0):
    """F(s, a) = s M + a N (a differentiable stand-in world model)."""
    g = gen(seed)
    m = torch.eye(dim, dtype=torch.float64) + 0.1 * torch.randn(dim, dim, generator=g, dtype=torch.float64)
    n = torch.randn(action_dim, dim, generator=g, dtype=torch.float64)
    return lambda s, a: s @ m.to(s.dtype) + a @ n.to(s.dtype)


def test_init_states_interpolates_and_fixes_endpoints():
    g = gen(19)
    s0, goal = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    states = init_states(s0, goal, horizon=5, init_noise=0.0)
    t = torch.arange(6).view(1, -1, 1) / 5
    torch.testing.assert_close(states, s0.unsqueeze(1) * (1 - t) + goal.unsqueeze(1) * t)
    noisy = init_states(s0, goal, horizon=5, init_noise=0.1, generator=gen(1))
    assert torch.equal(noisy[:, 0], s0) and torch.equal(noisy[:, -1], goal)
    assert 0.03 < (noisy - states)[:, 1:-1].std().item() < 0.3


def test_rollout_and_shooting_loss_follow_the_model():
    model = linear_model(3, 2)
    g = gen(23)
    s0, goal = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    actions = torch.randn(4, 6, 2, generator=g, dtype=torch.float64)
    rolled = rollout(model, s0, actions)
    current = s0
    for t in range(6):
        current = model(current, actions[:, t])
        torch.testing.assert_close(rolled[:, t + 1], current)
    torch.testing.assert_close(shooting_loss(model, s0, actions, goal), ((current - goal) ** 2).sum(1))


def test_gd_sync_lowers_the_shooting_loss():
    model = linear_model(3, 2, seed=1)
    g = gen(29)
    s0, goal = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    actions = torch.zeros(5, 8, 2, dtype=torch.float64)
    before = shooting_loss(model, s0, actions, goal)
    gd_sync(model, s0, goal, actions, steps=20, adam=AdamHyper(0.05, 0.9, 0.999, 1e-8), low=-1.0, high=1.0)
    after = shooting_loss(model, s0, actions, goal)
    assert torch.all(after < before)
    assert actions.abs().max() <= 1.0
