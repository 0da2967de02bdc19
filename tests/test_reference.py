"""The reference functions against hand-derived formulas, finite differences and torch.optim.Adam."""

from __future__ import annotations

import pytest
import torch

from grasp_kernels.reference import (
    action_step_ref,
    gd_sync_ref,
    init_states_ref,
    lifted_energy_ref,
    rollout_ref,
    shooting_loss_ref,
    state_step_ref,
)

ADAM = dict(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def linear_model(dim: int, action_dim: int, seed: int = 0):
    """F(s, a) = s M + a N (a differentiable stand-in world model)."""
    g = gen(seed)
    m = torch.eye(dim, dtype=torch.float64) + 0.1 * torch.randn(dim, dim, generator=g, dtype=torch.float64)
    n = torch.randn(action_dim, dim, generator=g, dtype=torch.float64)
    return lambda s, a: s @ m.to(s.dtype) + a @ n.to(s.dtype)


@pytest.mark.parametrize("batch,horizon,dim", [(1, 1, 1), (2, 3, 4), (5, 7, 3), (3, 16, 129)])
@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0])
def test_lifted_energy_gradients_match_hand_derived(batch, horizon, dim, gamma):
    g = gen(batch * 100 + horizon)
    pred = torch.randn(batch, horizon, dim, generator=g, dtype=torch.float64, requires_grad=True)
    states = torch.randn(batch, horizon + 1, dim, generator=g, dtype=torch.float64, requires_grad=True)
    energy = lifted_energy_ref(pred, states, gamma)
    weights = torch.rand(batch, generator=g, dtype=torch.float64)
    (energy * weights).sum().backward()

    p, s = pred.detach(), states.detach()
    goal = s[:, -1:]
    expected_energy = ((p - s[:, 1:]) ** 2).sum((1, 2)) + gamma * ((p - goal) ** 2).sum((1, 2))
    w = weights.view(-1, 1, 1)
    expected_pred_grad = w * (2 * (p - s[:, 1:]) + 2 * gamma * (p - goal))
    expected_state_grad = torch.zeros_like(s)
    expected_state_grad[:, 1:-1] = w * (-2 * (p[:, :-1] - s[:, 1:-1]))

    torch.testing.assert_close(energy.detach(), expected_energy, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pred.grad, expected_pred_grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(states.grad, expected_state_grad, rtol=1e-12, atol=1e-12)
    assert torch.all(states.grad[:, 0] == 0) and torch.all(states.grad[:, -1] == 0)


def test_lifted_energy_gradients_match_finite_differences():
    """With s_0 and g held fixed, the reshaped gradients are the true gradients of E(pred, s_1..T-1)."""
    g = gen(7)
    batch, horizon, dim = 2, 5, 3
    fixed = torch.randn(batch, horizon + 1, dim, generator=g, dtype=torch.float64)
    pred = torch.randn(batch, horizon, dim, generator=g, dtype=torch.float64, requires_grad=True)
    inner = torch.randn(batch, horizon - 1, dim, generator=g, dtype=torch.float64, requires_grad=True)

    def energy(pred, inner):
        states = torch.cat([fixed[:, :1], inner, fixed[:, -1:]], dim=1)
        return lifted_energy_ref(pred, states, 0.7)

    assert torch.autograd.gradcheck(energy, (pred, inner), eps=1e-6, atol=1e-7)


def test_lifted_energy_promotes_bf16_pred_and_keeps_its_grad_dtype():
    g = gen(3)
    pred = torch.randn(2, 4, 5, generator=g).to(torch.bfloat16).requires_grad_(True)
    states = torch.randn(2, 5, 5, generator=g)
    energy = lifted_energy_ref(pred, states, 0.5)
    assert energy.dtype == torch.float32
    energy.sum().backward()
    assert pred.grad.dtype == torch.bfloat16
    expected = lifted_energy_ref(pred.detach().float(), states, 0.5)
    torch.testing.assert_close(energy.detach(), expected)


def _adam_reference_run(param0, grads, lr, beta1, beta2, eps):
    param = torch.nn.Parameter(param0.clone())
    opt = torch.optim.Adam([param], lr=lr, betas=(beta1, beta2), eps=eps, foreach=False)
    for grad in grads:
        param.grad = grad.clone()
        opt.step()
    return param.detach()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_state_step_matches_torch_adam_on_virtual_rows_only(dtype):
    g = gen(11)
    batch, horizon, dim = 3, 6, 4
    states = torch.randn(batch, horizon + 1, dim, generator=g, dtype=dtype)
    grads = [torch.randn(batch, horizon + 1, dim, generator=g, dtype=dtype) for _ in range(5)]
    expected = _adam_reference_run(states[:, 1:-1], [gr[:, 1:-1] for gr in grads], **ADAM)
    original = states.clone()
    exp_avg, exp_avg_sq = torch.zeros_like(states), torch.zeros_like(states)
    for step, grad in enumerate(grads, start=1):
        state_step_ref(states, grad, exp_avg, exp_avg_sq, step, noise_std=0.0, **ADAM)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(states[:, 1:-1], expected, rtol=tol, atol=tol)
    assert torch.equal(states[:, 0], original[:, 0]) and torch.equal(states[:, -1], original[:, -1])
    assert torch.all(exp_avg[:, 0] == 0) and torch.all(exp_avg_sq[:, -1] == 0)


def test_state_step_applies_given_noise_exactly():
    g = gen(5)
    states = torch.randn(2, 5, 3, generator=g)
    grad = torch.randn(2, 5, 3, generator=g)
    noise = torch.randn(2, 3, 3, generator=g)
    noisy, clean = states.clone(), states.clone()
    state_step_ref(noisy, grad, torch.zeros_like(states), torch.zeros_like(states), 1, noise_std=0.3, noise=noise, **ADAM)
    state_step_ref(clean, grad, torch.zeros_like(states), torch.zeros_like(states), 1, noise_std=0.0, **ADAM)
    assert torch.equal(noisy[:, 1:-1], clean[:, 1:-1].add(noise, alpha=0.3))
    assert torch.equal(noisy[:, 0], states[:, 0]) and torch.equal(noisy[:, -1], states[:, -1])


def test_state_step_drawn_noise_is_seeded_and_standard_normal():
    batch, horizon, dim = 4, 101, 50
    base = torch.zeros(batch, horizon + 1, dim)
    zero_grad = torch.zeros_like(base)

    def draw(seed):
        states = base.clone()
        state_step_ref(
            states, zero_grad, torch.zeros_like(base), torch.zeros_like(base), 1,
            noise_std=2.0, generator=gen(seed), **ADAM,
        )
        return states[:, 1:-1] / 2.0  # zero gradient: the Adam step moves nothing

    first, again, other = draw(1), draw(1), draw(2)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert abs(first.mean().item()) < 0.02 and abs(first.std().item() - 1.0) < 0.02
    assert abs(torch.corrcoef(torch.stack([first.flatten(), other.flatten()]))[0, 1].item()) < 0.02


@pytest.mark.parametrize("bounds", ["float", "tensor", "none"])
def test_action_step_matches_torch_adam_then_clamps(bounds):
    g = gen(13)
    actions = torch.rand(3, 8, 2, generator=g) * 2 - 1
    grads = [torch.randn(3, 8, 2, generator=g) * 3]
    low, high = {"float": (-0.5, 0.5), "tensor": (torch.tensor([-0.3, -1.0]), torch.tensor([0.2, 1.0])), "none": (None, None)}[bounds]
    exp_avg, exp_avg_sq = torch.zeros_like(actions), torch.zeros_like(actions)
    lr = 0.2
    # one step against torch.optim.Adam, then the clamp
    expected = _adam_reference_run(actions, grads[:1], lr, 0.9, 0.999, 1e-8)
    action_step_ref(actions, grads[0], exp_avg, exp_avg_sq, 1, lr, 0.9, 0.999, 1e-8, low, high)
    if bounds != "none":
        lo = torch.as_tensor(low).expand(2)
        hi = torch.as_tensor(high).expand(2)
        expected = torch.maximum(torch.minimum(expected, hi), lo)
        assert torch.all(actions >= lo) and torch.all(actions <= hi)
    torch.testing.assert_close(actions, expected, rtol=1e-6, atol=1e-6)


def test_action_step_several_steps_match_torch_adam_without_bounds():
    g = gen(17)
    actions = torch.randn(2, 5, 3, generator=g)
    grads = [torch.randn(2, 5, 3, generator=g) for _ in range(6)]
    expected = _adam_reference_run(actions, grads, 0.01, 0.8, 0.99, 1e-6)
    exp_avg, exp_avg_sq = torch.zeros_like(actions), torch.zeros_like(actions)
    for step, grad in enumerate(grads, start=1):
        action_step_ref(actions, grad, exp_avg, exp_avg_sq, step, 0.01, 0.8, 0.99, 1e-6, None, None)
    torch.testing.assert_close(actions, expected, rtol=1e-6, atol=1e-7)


def test_init_states_interpolates_and_fixes_endpoints():
    g = gen(19)
    s0, goal = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    states = init_states_ref(s0, goal, horizon=5, init_noise=0.0)
    t = torch.arange(6).view(1, -1, 1) / 5
    torch.testing.assert_close(states, s0.unsqueeze(1) * (1 - t) + goal.unsqueeze(1) * t)
    noisy = init_states_ref(s0, goal, horizon=5, init_noise=0.1, generator=gen(1))
    assert torch.equal(noisy[:, 0], s0) and torch.equal(noisy[:, -1], goal)
    assert 0.03 < (noisy - states)[:, 1:-1].std().item() < 0.3


def test_rollout_and_shooting_loss_follow_the_model():
    model = linear_model(3, 2)
    g = gen(23)
    s0, goal = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    actions = torch.randn(4, 6, 2, generator=g, dtype=torch.float64)
    rollout = rollout_ref(model, s0, actions)
    current = s0
    for t in range(6):
        current = model(current, actions[:, t])
        torch.testing.assert_close(rollout[:, t + 1], current)
    torch.testing.assert_close(shooting_loss_ref(model, s0, actions, goal), ((current - goal) ** 2).sum(1))


def test_gd_sync_lowers_the_shooting_loss():
    model = linear_model(3, 2, seed=1)
    g = gen(29)
    s0, goal = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    actions = torch.zeros(5, 8, 2, dtype=torch.float64)
    before = shooting_loss_ref(model, s0, actions, goal)
    gd_sync_ref(model, s0, goal, actions, steps=20, lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8, low=-1.0, high=1.0)
    after = shooting_loss_ref(model, s0, actions, goal)
    assert torch.all(after < before)
    assert actions.abs().max() <= 1.0


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: lifted_energy_ref(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), 1.0), "pred must have shape"),
        (lambda: lifted_energy_ref(torch.zeros(2, 3, 4), torch.zeros(2, 4), 1.0), "states must be 3-D"),
        (lambda: lifted_energy_ref(torch.zeros(2, 3, 4), torch.zeros(2, 4, 4, dtype=torch.int64), 1.0), "states must have dtype"),
        (lambda: lifted_energy_ref(torch.zeros(2, 3, 4), torch.zeros(2, 4, 4), -1.0), "gamma must be >= 0"),
        (lambda: lifted_energy_ref(torch.zeros(2, 3, 4), torch.zeros(2, 4, 4), float("nan")), "gamma must be finite"),
        (lambda: state_step_ref(*[torch.zeros(2, 4, 3)] * 3, torch.zeros(2, 4, 2), 1, 0.1, 0.9, 0.999, 1e-8, 0.0), "exp_avg_sq must have shape"),
        (lambda: state_step_ref(*[torch.zeros(2, 4, 3)] * 4, 0, 0.1, 0.9, 0.999, 1e-8, 0.0), "step must be an int >= 1"),
        (lambda: state_step_ref(*[torch.zeros(2, 4, 3)] * 4, 1, 0.1, 1.0, 0.999, 1e-8, 0.0), r"beta1 must be in \[0, 1\)"),
        (lambda: state_step_ref(*[torch.zeros(2, 4, 3)] * 4, 1, 0.1, 0.9, 0.999, 1e-8, 0.1, noise=torch.zeros(2, 3, 3)), "noise must have shape"),
        (lambda: action_step_ref(*[torch.zeros(2, 4, 3)] * 4, 1, 0.1, 0.9, 0.999, 1e-8, torch.zeros(2), None), "low must have shape"),
        (lambda: action_step_ref(*[torch.zeros(2, 4, 3)] * 3, torch.zeros(2, 4, 3, dtype=torch.float64), 1, 0.1, 0.9, 0.999, 1e-8, None, None), "exp_avg_sq must have dtype"),
    ],
)
def test_reference_rejects_bad_arguments(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
