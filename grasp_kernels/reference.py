"""Pure-PyTorch reference of one GRASP iteration: the specification every backend is checked against.

Plain, readable, any device, float64-capable (DESIGN.md section 1). Layout: ``states [B, T+1, D]``
(row 0 = s_0, row T = goal g, rows 1..T-1 the virtual states), ``actions [B, T, A]``,
world-model predictions ``pred [B, T, D]`` with ``pred[:, t] = F(sg(s_t), a_t)``.

The functions ``lifted_energy_ref``, ``state_step_ref`` and ``action_step_ref`` have the same
signatures as the fused ops ``grasp_kernels.ops.lifted_energy``, ``state_step_`` and
``action_step_``.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch

from ._checks import check_same_device, check_scalar, check_tensor

WorldModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BoundArg = Union[None, float, torch.Tensor]

__all__ = [
    "lifted_energy_ref",
    "state_step_ref",
    "action_step_ref",
    "adam_update_ref",
    "lifted_predictions_ref",
    "history_windows",
    "rollout_ref",
    "shooting_loss_ref",
    "init_states_ref",
    "gd_sync_ref",
    "check_world_model_output",
    "lifted_energy_state_step_ref",
    "fused_mlp_iteration_ref",
]


def lifted_energy_ref(
    pred: torch.Tensor, states: torch.Tensor, gamma: float, weights: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Per-plan lifted energy (paper Eq. 10) with the reshaped gradients of DESIGN.md.

    ``E_b = sum_t ||p_t - s_{t+1}||^2 + gamma * sum_t ||p_t - g||^2`` over ``t = 0..T-1``; with
    ``weights`` ``w`` both norms are weighted per component: ``||x||_w^2 = sum_d w_d x_d^2``.

    Autograd delivers ``dE/dp_t = 2 (p_t - s_{t+1}) + 2 gamma (p_t - g)`` to ``pred`` and
    ``dE/ds_{t+1} = -2 (p_t - s_{t+1})`` to the virtual rows ``1..T-1`` of ``states``; rows 0 and T
    receive zero gradient (s_0 and g are fixed).

    Args:
        pred: ``[B, T, D]`` world-model predictions (float32/float64, or bfloat16/float16).
        states: ``[B, T+1, D]`` states, float32 or float64.
        gamma: goal weight, >= 0.
        weights: optional non-negative per-component weights broadcastable to ``[B, T, D]``
            (typically ``[D]``, e.g. DINO-WM's ``alpha`` on the proprio components).

    Returns:
        ``[B]`` energy in ``states.dtype``.
    """
    check_tensor("states", states, ndim=3, dtypes=(torch.float32, torch.float64))
    batch, rows, dim = states.shape
    if rows < 2:
        raise ValueError(f"states must have T+1 >= 2 rows (s_0 and the goal), got shape {tuple(states.shape)}")
    check_tensor("pred", pred, shape=(batch, rows - 1, dim))
    check_same_device(pred=pred, states=states)
    gamma = check_scalar("gamma", gamma, minimum=0.0)

    pred = pred.to(states.dtype)
    goal = states[:, -1:].detach()
    next_states = torch.cat([states[:, 1:-1], goal], dim=1)  # the goal row is fixed: no gradient
    dynamics = (pred - next_states).square()
    goal_term = (pred - goal).square()
    if weights is not None:
        weights = weights.to(states.dtype)
        dynamics, goal_term = dynamics * weights, goal_term * weights
    return dynamics.sum(dim=(1, 2)) + gamma * goal_term.sum(dim=(1, 2))


def adam_update_ref(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """One in-place Adam update, the formulas of ``torch.optim.Adam`` (no weight decay, no amsgrad).

    ``step`` is the 1-based count of this update (it sets the bias corrections).
    """
    bias_correction1 = 1.0 - beta1**step
    bias_correction2 = 1.0 - beta2**step
    exp_avg.lerp_(grad, 1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)


def _check_adam_args(
    param_name: str,
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    check_tensor(param_name, param, ndim=3, dtypes=(torch.float32, torch.float64))
    for name, tensor in (("grad", grad), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        check_tensor(name, tensor, shape=tuple(param.shape), dtypes=(param.dtype,))
    check_same_device(**{param_name: param}, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be an int >= 1 (the 1-based Adam step), got {step!r}")
    check_scalar("lr", lr, minimum=0.0)
    check_scalar("eps", eps, minimum=0.0)
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        value = check_scalar(name, beta, minimum=0.0)
        if value >= 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")


def state_step_ref(
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
) -> None:
    """In-place Adam step plus Langevin noise on the virtual-state rows ``1..T-1``.

    Rows 0 and T of ``states`` and of both moments are left untouched.

    Args:
        states: ``[B, T+1, D]`` float32/float64, updated in place.
        grad, exp_avg, exp_avg_sq: ``[B, T+1, D]``, same dtype; the moments are updated in place.
        step: 1-based Adam step count of this update.
        lr, beta1, beta2, eps: Adam constants.
        noise_std: sigma of the noise added after the Adam step (0 disables it).
        noise: optional ``[B, T-1, D]`` standard-normal noise; drawn with ``generator`` if None.
        generator: torch.Generator on ``states.device`` used to draw the noise.
    """
    _check_adam_args("states", states, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps)
    noise_std = check_scalar("noise_std", noise_std, minimum=0.0)
    batch, rows, dim = states.shape
    if noise is not None:
        check_tensor("noise", noise, shape=(batch, rows - 2, dim), dtypes=(states.dtype,), device=states.device)
    if rows <= 2:  # T = 1: no virtual states
        return
    inner = slice(1, rows - 1)
    param = states[:, inner]
    adam_update_ref(param, grad[:, inner], exp_avg[:, inner], exp_avg_sq[:, inner], step, lr, beta1, beta2, eps)
    if noise_std > 0.0:
        if noise is None:
            noise = torch.randn(param.shape, generator=generator, device=states.device, dtype=states.dtype)
        param.add_(noise, alpha=noise_std)


def action_step_ref(
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
) -> None:
    """In-place Adam step on the actions, then clamp to ``[low, high]``.

    Args:
        actions: ``[B, T, A]`` float32/float64, updated in place.
        grad, exp_avg, exp_avg_sq: ``[B, T, A]``, same dtype; moments updated in place.
        step: 1-based Adam step count of this update.
        low, high: None (unbounded), a float, or a tensor ``[A]`` of per-dimension bounds.
    """
    _check_adam_args("actions", actions, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps)
    adam_update_ref(actions, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps)
    clamp_actions_(actions, low, high)


def clamp_actions_(actions: torch.Tensor, low: BoundArg, high: BoundArg) -> torch.Tensor:
    """Clamp ``actions [..., A]`` in place to per-dimension bounds (None: unbounded)."""
    action_dim = actions.shape[-1]
    bounds = []
    for name, bound in (("low", low), ("high", high)):
        if isinstance(bound, torch.Tensor):
            check_tensor(name, bound, shape=(action_dim,), device=actions.device)
            bound = bound.to(actions.dtype)
        elif bound is not None:
            bound = check_scalar(name, bound)
        bounds.append(bound)
    low, high = bounds
    if low is None and high is None:
        return actions
    return actions.clamp_(min=low, max=high)


def check_world_model_output(out: object, expected_shape: tuple[int, ...], where: str) -> torch.Tensor:
    """The world model returned a floating tensor of the expected shape (no host sync)."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"world_model must return a torch.Tensor ({where}), got {type(out).__name__}")
    if tuple(out.shape) != tuple(expected_shape):
        raise ValueError(
            f"world_model returned shape {tuple(out.shape)} ({where}), expected {tuple(expected_shape)} "
            "(next states [N, *S] for states [N, *S] and actions [N, A])"
        )
    if not out.is_floating_point():
        raise TypeError(f"world_model must return a floating tensor ({where}), got {out.dtype}")
    return out


def history_windows(frames: torch.Tensor, history: int) -> torch.Tensor:
    """The sliding windows of ``history`` consecutive rows of ``frames``, as a strided VIEW (no copy).

    Args:
        frames: ``[B, R, D]`` with ``R >= history``.
        history: ``h >= 1``, frames per window.

    Returns:
        ``[B, R - h + 1, h, D]`` with ``out[b, t, j] = frames[b, t + j]`` (oldest frame first); it
        shares ``frames``' storage (``Tensor.unfold``), so writing ``frames`` changes the windows.
    """
    check_tensor("frames", frames, ndim=3)
    if isinstance(history, bool) or not isinstance(history, int) or history < 1:
        raise ValueError(f"history must be an int >= 1, got {history!r}")
    if frames.shape[1] < history:
        raise ValueError(f"frames must have at least history = {history} rows, got shape {tuple(frames.shape)}")
    return frames.unfold(1, history, 1).movedim(-1, 2)


def lifted_predictions_ref(
    world_model: WorldModel,
    states: torch.Tensor,
    actions: torch.Tensor,
    state_shape: tuple[int, ...],
    stop_gradient: bool = True,
    per_timestep: bool = False,
    history: int = 1,
) -> torch.Tensor:
    """``pred[:, t] = F(sg(s_t), a_t)`` for all ``t`` in ONE batched world-model call.

    With ``history = h > 1`` the model sees windows: ``pred[:, t] = F(sg(s_{t-h+1} .. s_t), a_t)``,
    and ``states`` is the frame sequence ``[B, h-1+T(+1), D]``: the ``h-1`` older observed frames,
    then ``s_0 .. s_{T-1}`` (a trailing goal row is ignored). The ``B*T`` windows are a strided view
    of it (:func:`history_windows`); flattening them to the model's ``[B*T, h, *S]`` batch is the
    only copy (none for ``B = 1``).

    Args:
        states: ``[B, T+1, D]`` or ``[B, T, D]`` (``h = 1``; rows ``0..T-1`` are the model's state
            inputs), or ``[B, h-1+T(+1), D]`` frames (``h > 1``).
        actions: ``[B, T, A]``.
        state_shape: ``S`` with ``prod(S) == D``: the world model sees ``[B*T, *S]`` (``h = 1``) or
            ``[B*T, h, *S]`` (``h > 1``).
        stop_gradient: detach the state input (GRASP). False keeps the state-input gradient (ablation).
        per_timestep: call the model once per time step on ``[B, *S]`` (``[B, h, *S]``) rows instead,
            as public GRASP ports do; same values, ``T`` times the launches (for tests and benchmarks).
        history: ``h``, frames per model input.

    Returns:
        ``[B, T, D]`` predictions.
    """
    batch, horizon, action_dim = actions.shape
    lead = history - 1
    inputs = states[:, : lead + horizon]
    if stop_gradient:
        inputs = inputs.detach()
    frame_shape = tuple(state_shape) if history == 1 else (history, *state_shape)
    if per_timestep:
        steps = []
        for t in range(horizon):
            window = inputs[:, t] if history == 1 else inputs[:, t : t + history]
            out = world_model(window.reshape(batch, *frame_shape), actions[:, t])
            out = check_world_model_output(out, (batch, *state_shape), f"time step {t}")
            steps.append(out.reshape(batch, -1))
        return torch.stack(steps, dim=1)
    windows = inputs if history == 1 else history_windows(inputs, history)
    out = world_model(windows.reshape(batch * horizon, *frame_shape), actions.reshape(batch * horizon, action_dim))
    out = check_world_model_output(out, (batch * horizon, *state_shape), "lifted step over B*T rows")
    return out.reshape(batch, horizon, -1)


def rollout_ref(world_model: WorldModel, s0: torch.Tensor, actions: torch.Tensor, history: int = 1) -> torch.Tensor:
    """Roll ``actions [B, T, A]`` out from ``s0``: returns ``[B, T+1, *S]`` (row 0 = the current state).

    ``s0`` is ``[B, *S]`` for ``history = 1``; for ``history = h > 1`` it carries the last ``h``
    frames ``[B, h, *S]`` (oldest first, ``s0[:, -1]`` the current one) and every step calls the
    model on the window of the last ``h`` frames ``[B, h, *S]``.
    The only sequential part of GRASP (used by the sync phase and for the result).
    """
    batch, horizon, _ = actions.shape
    if history == 1:
        current = s0
        trajectory = [s0]
        for t in range(horizon):
            current = check_world_model_output(world_model(current, actions[:, t]), tuple(s0.shape), f"rollout step {t}")
            trajectory.append(current)
        return torch.stack(trajectory, dim=1)
    if s0.dim() < 2 or s0.shape[1] != history:
        raise ValueError(f"s0 must carry the last history = {history} frames [B, {history}, *S], got shape {tuple(s0.shape)}")
    frame_shape = tuple(s0.shape[2:])
    frames = list(s0.unbind(1))
    for t in range(horizon):
        window = torch.stack(frames[-history:], dim=1)
        out = world_model(window, actions[:, t])
        frames.append(check_world_model_output(out, (batch, *frame_shape), f"rollout step {t}"))
    return torch.stack(frames[history - 1 :], dim=1)


def weighted_sq_norm(diff: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``sum_d w_d diff_d^2`` per row of ``diff [B, *S]`` (``weights`` broadcastable to ``S``): ``[B]``."""
    sq = diff.square()
    if weights is not None:
        sq = sq * weights.to(diff.dtype)
    return sq.reshape(diff.shape[0], -1).sum(dim=1)


def shooting_loss_ref(
    world_model: WorldModel,
    s0: torch.Tensor,
    actions: torch.Tensor,
    goal: torch.Tensor,
    history: int = 1,
    weights: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``||rollout(s0, actions)_T - goal||_w^2`` per plan: ``[B]`` (differentiable in ``actions``).

    ``s0`` as :func:`rollout_ref` (``[B, h, *S]`` for ``history = h > 1``); ``weights``: optional
    per-component weights broadcastable to ``S`` (plain squared norm without).
    """
    final = rollout_ref(world_model, s0, actions, history)[:, -1]
    return weighted_sq_norm(final - goal, weights)


def init_states_ref(
    s0: torch.Tensor,
    goal: torch.Tensor,
    horizon: int,
    init_noise: float,
    generator: Optional[torch.Generator] = None,
    guess: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Initial states ``[B, T+1, D]``: ``s_t = (t/T) g + (1 - t/T) s_0 + eps * xi`` on rows 1..T-1.

    With ``guess [B, T+1, D]`` (a warm start, e.g. the previous plan's states shifted), ``s_t =
    guess_t + eps * xi`` instead. Rows 0 and T are exactly ``s0`` and ``goal`` (``[B, D]`` each).
    """
    batch, dim = s0.shape
    if guess is not None:
        check_tensor("guess", guess, shape=(batch, horizon + 1, dim), dtypes=(s0.dtype,), device=s0.device)
        states = guess.clone()
    else:
        frac = torch.arange(horizon + 1, device=s0.device, dtype=s0.dtype).div_(horizon).view(1, -1, 1)
        states = s0.unsqueeze(1) + frac * (goal - s0).unsqueeze(1)
    if init_noise > 0 and horizon > 1:
        xi = torch.randn((batch, horizon - 1, dim), generator=generator, device=s0.device, dtype=s0.dtype)
        states[:, 1:-1].add_(xi, alpha=init_noise)
    states[:, 0] = s0
    states[:, -1] = goal
    return states


def gd_sync_ref(
    world_model: WorldModel,
    s0: torch.Tensor,
    goal: torch.Tensor,
    actions: torch.Tensor,
    steps: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    low: BoundArg,
    high: BoundArg,
    history: int = 1,
    weights: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The sync phase: ``steps`` Adam steps (fresh moments) on ``actions`` through the full rollout.

    ``history`` and ``weights`` as :func:`shooting_loss_ref` (``s0`` is ``[B, h, *S]`` for ``h > 1``).

    Minimises the shooting loss of every plan (plans are independent, so their sum is minimised),
    clamps to the bounds after each step and updates ``actions`` in place.

    Returns:
        ``[B]`` shooting loss of the actions before the last step (detached).
    """
    exp_avg = torch.zeros_like(actions)
    exp_avg_sq = torch.zeros_like(actions)
    loss = torch.zeros(actions.shape[0], device=actions.device, dtype=actions.dtype)
    for step in range(1, steps + 1):
        leaf = actions.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = shooting_loss_ref(world_model, s0, leaf, goal, history, weights)
            (grad,) = torch.autograd.grad(loss.sum(), leaf)
        with torch.no_grad():
            action_step_ref(actions, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, low, high)
    return loss.detach()


def lifted_energy_state_step_ref(
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
    generator: Optional[torch.Generator] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of the fused op ``lifted_energy_state_step_``: energy + state update in one call.

    Composes :func:`lifted_energy_ref` (on the states BEFORE the update, gradients by autograd) and
    :func:`state_step_ref` fed with the reshaped state gradient. ``states``, ``exp_avg`` and
    ``exp_avg_sq`` are updated in place on rows 1..T-1, exactly as ``state_step_ref`` does.

    Returns:
        ``(energy [B], grad_pred [B, T, D])``, both detached and in ``states.dtype``; ``grad_pred``
        is ``dE/dp`` (to be pulled back through the world model to the actions).
    """
    with torch.enable_grad():
        pred_leaf = pred.detach().to(states.dtype).requires_grad_(True)
        states_leaf = states.detach().clone().requires_grad_(True)
        energy = lifted_energy_ref(pred_leaf, states_leaf, gamma)
        grad_pred, grad_states = torch.autograd.grad(energy.sum(), (pred_leaf, states_leaf))
    with torch.no_grad():
        state_step_ref(states, grad_states, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, noise_std, noise, generator)
    return energy.detach(), grad_pred


def fused_mlp_iteration_ref(
    world_model: WorldModel,
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
    generator: Optional[torch.Generator] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference of the fused MLP iteration: exactly one GRASP planner iteration (``stop_gradient``,
    ``history = 1``, no state weights) on the reference backend, in place.

    Composes :func:`lifted_predictions_ref` (one model call over ``B*T`` rows, state input detached),
    :func:`lifted_energy_state_step_ref` (energy and reshaped gradients by autograd on the states
    BEFORE the update, then :func:`state_step_ref` on rows 1..T-1), the VJP of the predictions to the
    actions, and :func:`action_step_ref` (Adam then clamp). ``states`` (rows 1..T-1), ``actions`` and
    the four moments are updated in place; ``states`` must be ``[B, T+1, D]`` (the model sees ``[N, D]``).

    Returns:
        ``(energy [B], grad_pred [B, T, D], action_grad [B, T, A])``, detached.
    """
    batch, rows, dim = states.shape
    # the model's state input is a copy: the state step below updates ``states`` in place before the
    # action VJP runs, and a model may save its input for backward
    state_input = states[:, : rows - 1].detach().clone()
    action_leaf = actions.detach().requires_grad_(True)
    with torch.enable_grad():
        pred = lifted_predictions_ref(world_model, state_input, action_leaf, (dim,), True)
    energy, grad_pred = lifted_energy_state_step_ref(
        pred.detach(), states, gamma, state_exp_avg, state_exp_avg_sq, step, lr_states, beta1, beta2, eps,
        noise_std, noise, generator,
    )
    (action_grad,) = torch.autograd.grad(pred, action_leaf, grad_pred.to(pred.dtype))
    with torch.no_grad():
        action_step_ref(actions, action_grad.to(actions.dtype), action_exp_avg, action_exp_avg_sq, step, lr_actions,
                        beta1, beta2, eps, low, high)
    return energy, grad_pred, action_grad.detach()
