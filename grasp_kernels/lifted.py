"""The planner's math, written once: lifted predictions, one lifted iteration, the sequential rollout,
the shooting loss and the initial virtual states (the sync phases are :mod:`grasp_kernels.sync`).

Layout (docs/design.md): ``states [B, T+1, D]`` (row 0 = s_0, row T = goal g, rows 1..T-1 the
virtual states), ``actions [B, T, A]``, world-model predictions ``pred [B, T, D]`` with
``pred[:, t] = F(sg(s_t), a_t)``. The op specifications live beside their kernels
(``grasp_kernels/ops/*/reference.py``, gathered in :mod:`grasp_kernels.reference`).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional, Union

import torch

from . import ops
from ._checks import BoundArg, check_tensor

WorldModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# lifted_iteration(boundary=): (pred [B, T, D], energy [B], grad_pred [B, T, D]) -> None, in place
BoundaryHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]
_KERNEL_PRED_DTYPES = (torch.float32, torch.bfloat16)

__all__ = [
    "WorldModel",
    "call_world_model",
    "check_world_model_output",
    "history_windows",
    "lifted_predictions",
    "lifted_iteration",
    "rollout",
    "weighted_sq_norm",
    "shooting_loss",
    "init_states",
]


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


def call_world_model(
    world_model: WorldModel, states: torch.Tensor, actions: torch.Tensor, expected_shape: tuple[int, ...], where: str
) -> torch.Tensor:
    """``world_model(states, actions)``, checked: its output (:func:`check_world_model_output`) and,
    when the actions require grad under autograd, that the output depends on them.

    A shape error raised inside the model (e.g. an ``action_dim`` that is not the model's) is re-raised
    as a ValueError that names the shapes it was called with.
    """
    try:
        out = world_model(states, actions)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as error:
        raise ValueError(
            f"world_model failed ({where}) on states {tuple(states.shape)} and actions {tuple(actions.shape)}: "
            f"{error}. Check that action_dim ({actions.shape[-1]}) and the state shape match the model"
        ) from error
    out = check_world_model_output(out, expected_shape, where)
    if actions.requires_grad and torch.is_grad_enabled() and not out.requires_grad:
        raise ValueError(
            f"world_model returned a tensor without a gradient path to its action input ({where}): it is "
            "detached, or computed under torch.no_grad() or outside torch; gradient planners need "
            "d world_model / d actions"
        )
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


def lifted_predictions(
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
            out = call_world_model(
                world_model, window.reshape(batch, *frame_shape), actions[:, t], (batch, *state_shape), f"time step {t}"
            )
            steps.append(out.reshape(batch, -1))
        return torch.stack(steps, dim=1)
    windows = inputs if history == 1 else history_windows(inputs, history)
    out = call_world_model(
        world_model, windows.reshape(batch * horizon, *frame_shape), actions.reshape(batch * horizon, action_dim),
        (batch * horizon, *state_shape), "lifted step over B*T rows",
    )
    return out.reshape(batch, horizon, -1)


def lifted_iteration(
    world_model: WorldModel,
    states: torch.Tensor,
    actions: torch.Tensor,
    state_moments: tuple[torch.Tensor, torch.Tensor],
    action_moments: tuple[torch.Tensor, torch.Tensor],
    *,
    step: Union[int, torch.Tensor],
    gamma: float,
    state_adam: ops.AdamHyper,
    action_adam: ops.AdamHyper,
    noise_std: Union[float, torch.Tensor],
    low: BoundArg,
    high: BoundArg,
    state_shape: tuple[int, ...],
    backend: str = "reference",
    stop_gradient: bool = True,
    history: int = 1,
    frames: Optional[torch.Tensor] = None,
    sqrt_weights: Optional[torch.Tensor] = None,
    noise: Optional[torch.Tensor] = None,
    counters: ops.NoiseCounters = ops.NoiseCounters(),
    generator: Optional[torch.Generator] = None,
    per_timestep: bool = False,
    model_precision: Optional[contextlib.AbstractContextManager] = None,
    boundary: Optional[BoundaryHook] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One lifted GRASP iteration, in place: the planner's iteration, the fused-MLP kernel's
    specification and the benchmark's compiled iteration are this function.

    ONE world-model call over all ``B*T`` transitions (state input detached), the energy and its
    reshaped gradients, one VJP through the world model's action input (and its state input too for
    the ``stop_gradient=False`` ablation), then the Adam + noise state step on rows 1..T-1 and the Adam
    + clamp action step. On a kernel backend the energy and the state step are one fused op.

    Args:
        states: ``[B, T+1, D]`` virtual states (row 0 = s_0, row T = goal), updated in place.
        actions: ``[B, T, A]``, updated in place; ``state_moments`` ``[B, T+1, D]`` and
            ``action_moments`` ``[B, T, A]`` (exp_avg, exp_avg_sq) too.
        step: the 1-based Adam step of this iteration; ``gamma`` the goal weight; ``noise_std`` the
            Langevin sigma; ``low``/``high`` the action bounds (None, float or ``[A]``). On the reference
            backend ``step`` (0-d float64) and ``noise_std`` may be tensors, with an explicit ``noise``:
            then nothing here depends on a per-iteration host value (:mod:`grasp_kernels.compiled`).
        state_adam, action_adam: Adam's constants of the state and the action steps.
        state_shape: ``S`` (``prod(S) = D``), the world model's state shape.
        backend: a concrete backend ("reference" | "triton" | "cuda").
        history, frames: ``h`` and, for ``h > 1``, the frame buffer ``[B, h-1+T, D]`` whose first
            ``h-1`` rows are the older observed frames; rows ``s_0 .. s_{T-1}`` are copied behind them.
        sqrt_weights: ``sqrt(w)`` flattened to ``[D]`` for weighted states (the plain energy of scaled
            copies, on the unfused ops), or None.
        noise, counters, generator: the noise as :func:`grasp_kernels.ops.state_step_` takes it (``counters``:
            the iteration's Philox seed, the counter of the batch's first chain and the counters per chain,
            default ``(T-1)*D``; a time chunk passes the full horizon's).
        per_timestep: call the model once per time step instead (public ports' loop; tests, benchmarks).
        model_precision: a context manager around the world-model call (e.g. ``torch.autocast``).
        boundary: for a time chunk of a sharded plan (:mod:`grasp_kernels.distributed.time_sharding`),
            whose last transition leads to a neighbour's state and not to the goal row: called as
            ``boundary(pred, energy, grad_pred)`` (``pred [B, T, D]`` as the energy saw it, detached)
            after the energy and the state step and before the action VJP, it corrects the last
            transition's terms of ``energy [B]`` and ``grad_pred [B, T, D]`` in place. Stop-gradient
            and unweighted only (the state-input VJP and the weights would need the neighbour's row too).

    Returns:
        ``(energy [B], grad_pred [B, T, D], action_grad [B, T, A])``, detached.
    """
    horizon = actions.shape[1]
    weighted = sqrt_weights is not None
    if boundary is not None and (weighted or not stop_gradient):
        raise ValueError("lifted_iteration(boundary=...) needs stop_gradient=True and no sqrt_weights")
    fused = stop_gradient and backend != "reference" and not weighted
    state_input = states[:, :horizon].detach()
    if fused and frames is None:
        # the fused op updates the states in place before the action VJP runs: a world model that
        # saves its state input for backward must keep seeing the states it was called with
        # (with history windows the frame buffer below is that copy)
        state_input = state_input.clone()
    state_input.requires_grad_(not stop_gradient)
    action_leaf = actions.detach().requires_grad_(True)
    with torch.enable_grad(), model_precision or contextlib.nullcontext():
        model_input = state_input
        if frames is not None:
            lead = history - 1
            if stop_gradient:
                frames[:, lead:].copy_(state_input)
                model_input = frames
            else:  # the ablation: the gradient flows through the windows into the state rows
                model_input = torch.cat([frames[:, :lead], state_input], dim=1)
        pred = lifted_predictions(world_model, model_input, action_leaf, state_shape, stop_gradient, per_timestep, history)
    # kernels read float32 or bfloat16 predictions; other low precisions are widened first
    energy_pred = pred if pred.dtype in _KERNEL_PRED_DTYPES or backend == "reference" else pred.float()
    with torch.no_grad():
        if fused:
            energy, grad_pred = ops.lifted_energy_state_step_(
                energy_pred, states, gamma, *state_moments, step, state_adam, noise_std, noise, counters=counters,
                generator=generator, backend=backend,
            )
            if boundary is not None:
                boundary(energy_pred.detach(), energy, grad_pred)
            (action_grad,) = torch.autograd.grad(pred, action_leaf, grad_pred.to(pred.dtype))
        else:
            if weighted:  # ||x||_w^2 = ||sqrt(w) x||^2: the plain energy of scaled copies
                energy, grad_pred, state_grad = ops.lifted_energy_grads(
                    energy_pred.detach().to(states.dtype) * sqrt_weights, states * sqrt_weights, gamma, backend=backend
                )
                grad_pred.mul_(sqrt_weights)
                state_grad.mul_(sqrt_weights)
            else:
                energy, grad_pred, state_grad = ops.lifted_energy_grads(energy_pred, states, gamma, backend=backend)
                if boundary is not None:
                    boundary(energy_pred.detach(), energy, grad_pred)
            inputs = (action_leaf,) if stop_gradient else (action_leaf, state_input)
            grads = torch.autograd.grad(pred, inputs, grad_pred.to(pred.dtype))
            action_grad = grads[0]
            if not stop_gradient:  # the ablation: the world model's state-input gradient too
                state_grad[:, :horizon] += grads[1]
            ops.state_step_(states, state_grad, *state_moments, step, state_adam, noise_std, noise, generator,
                            counters=counters, backend=backend)
        ops.action_step_(  # autograd may hand back a strided view (e.g. through torch.cat)
            actions, action_grad.contiguous(), *action_moments, step, action_adam, low, high, backend=backend,
        )
    return energy, grad_pred, action_grad.detach()


def rollout(world_model: WorldModel, s0: torch.Tensor, actions: torch.Tensor, history: int = 1) -> torch.Tensor:
    """Roll ``actions [B, T, A]`` out from ``s0``: returns ``[B, T+1, *S]`` (row 0 = the current state).

    ``s0`` is ``[B, *S]`` for ``history = 1``; for ``history = h > 1`` it carries the last ``h``
    frames ``[B, h, *S]`` (oldest first, ``s0[:, -1]`` the current one) and every step calls the
    model on the window of the last ``h`` frames ``[B, h, *S]``.
    The only sequential part of GRASP (used by the sync phase and for the result).
    """
    check_tensor("actions", actions, ndim=3)
    check_tensor("s0", s0, device=actions.device)
    batch, horizon, _ = actions.shape
    if s0.dim() == 0 or s0.shape[0] != batch:
        raise ValueError(f"s0 must be [B, *S] with B = {batch} (the batch of actions), got shape {tuple(s0.shape)}")
    if history == 1:
        current = s0
        trajectory = [s0]
        for t in range(horizon):
            current = call_world_model(world_model, current, actions[:, t], tuple(s0.shape), f"rollout step {t}")
            trajectory.append(current)
        return torch.stack(trajectory, dim=1)
    if s0.dim() < 2 or s0.shape[1] != history:
        raise ValueError(f"s0 must carry the last history = {history} frames [B, {history}, *S], got shape {tuple(s0.shape)}")
    frame_shape = tuple(s0.shape[2:])
    frames = list(s0.unbind(1))
    for t in range(horizon):
        window = torch.stack(frames[-history:], dim=1)
        frames.append(call_world_model(world_model, window, actions[:, t], (batch, *frame_shape), f"rollout step {t}"))
    return torch.stack(frames[history - 1 :], dim=1)


def weighted_sq_norm(diff: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``sum_d w_d diff_d^2`` per row of ``diff [B, *S]`` (``weights`` broadcastable to ``S``): ``[B]``."""
    sq = diff.square()
    if weights is not None:
        sq = sq * weights.to(diff.dtype)
    return sq.reshape(diff.shape[0], -1).sum(dim=1)


def shooting_loss(
    world_model: WorldModel,
    s0: torch.Tensor,
    actions: torch.Tensor,
    goal: torch.Tensor,
    history: int = 1,
    weights: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``||rollout(s0, actions)_T - goal||_w^2`` per plan: ``[B]`` (differentiable in ``actions``).

    ``s0`` as :func:`rollout` (``[B, h, *S]`` for ``history = h > 1``); ``weights``: optional
    per-component weights broadcastable to ``S`` (plain squared norm without).
    """
    final = rollout(world_model, s0, actions, history)[:, -1]
    return weighted_sq_norm(final - goal, weights)


def init_states(
    s0: torch.Tensor,
    goal: torch.Tensor,
    horizon: int,
    init_noise: float,
    generator: Optional[torch.Generator] = None,
    guess: Optional[torch.Tensor] = None,
    noise: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Initial states ``[B, T+1, D]``: ``s_t = (t/T) g + (1 - t/T) s_0 + eps * xi`` on rows 1..T-1.

    With ``guess [B, T+1, D]`` (a warm start, e.g. the previous plan's states shifted), ``s_t =
    guess_t + eps * xi`` instead. Rows 0 and T are exactly ``s0`` and ``goal`` (``[B, D]`` each).
    ``xi``: ``noise [B, T-1, D]`` if given (the planner's per-chain draws), else drawn from ``generator``.
    """
    batch, dim = s0.shape
    if guess is not None:
        check_tensor("guess", guess, shape=(batch, horizon + 1, dim), dtypes=(s0.dtype,), device=s0.device)
        states = guess.clone()
    else:
        frac = torch.arange(horizon + 1, device=s0.device, dtype=s0.dtype).div_(horizon).view(1, -1, 1)
        states = s0.unsqueeze(1) + frac * (goal - s0).unsqueeze(1)
    if init_noise > 0 and horizon > 1:
        if noise is None:
            noise = torch.randn((batch, horizon - 1, dim), generator=generator, device=s0.device, dtype=s0.dtype)
        else:
            check_tensor("noise", noise, shape=(batch, horizon - 1, dim), dtypes=(s0.dtype,), device=s0.device)
        states[:, 1:-1].add_(noise, alpha=init_noise)
    states[:, 0] = s0
    states[:, -1] = goal
    return states
