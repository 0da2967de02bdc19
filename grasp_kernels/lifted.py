"""The planner's lifted math, written once: lifted predictions, one lifted iteration (chunked in bounded
memory) and the initial virtual states (the sequential rollouts and the shooting loss are
:mod:`grasp_kernels.rollouts`, the sync phases :mod:`grasp_kernels.sync`).

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
from .memory import Chunk, transition_chunks

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
    "chunked_vjp",
    "StateUpdateOutOfMemory",
    "init_states",
]


class StateUpdateOutOfMemory(RuntimeError):
    """Out of memory after a lifted iteration began to update its tensors in place: unlike an out-of-memory
    error in the chunk loop (a ``torch.OutOfMemoryError``, raised with every tensor as it was), the
    iteration cannot be retried."""


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
    max_transitions: Optional[int] = None,
    last_next: Optional[torch.Tensor] = None,
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
        max_transitions: evaluate the world model and its VJP over chunks of at most this many transitions
            (:func:`grasp_kernels.memory.transition_chunks`: whole chains, or time windows of one chain),
            one at a time, so that only one chunk's activations are alive; None: one call over all
            ``B*T``. Each chunk's ``dE/dp`` comes from the chunk's own rows (:func:`chunked_vjp`), then its
            VJP; the energy, the state gradient and both Adam steps run once on the full tensors after the loop
            (the same noise, counters and moments as unchunked). Equal to the unchunked iteration bitwise
            on the reference backend for a world model whose rows do not depend on the batch, to rounding
            otherwise. ``per_timestep`` ignores it. A ``torch.OutOfMemoryError`` of the chunk loop leaves
            every tensor as it was (the caller may retry with smaller chunks); out of memory during the
            in-place updates raises :class:`StateUpdateOutOfMemory`.
        last_next: with ``boundary`` and ``max_transitions``: ``[B, D]``, the state the last transition
            leads to (the neighbour's row), for the chunks' ``dE/dp`` (the hook still corrects the energy).

    Returns:
        ``(energy [B], grad_pred [B, T, D], action_grad [B, T, A])``, detached.
    """
    horizon = actions.shape[1]
    weighted = sqrt_weights is not None
    if boundary is not None and (weighted or not stop_gradient):
        raise ValueError("lifted_iteration(boundary=...) needs stop_gradient=True and no sqrt_weights")
    fused = stop_gradient and backend != "reference" and not weighted
    if boundary is not None and max_transitions is not None and last_next is None:
        raise ValueError("lifted_iteration(boundary=..., max_transitions=...) needs last_next, the state the "
                         "last transition leads to")
    chunks = transition_chunks(actions.shape[0], horizon, max_transitions)
    if len(chunks) > 1 and not per_timestep:
        pred, action_grad, input_grad = chunked_vjp(
            world_model, states, actions, chunks, gamma, backend, state_shape, stop_gradient, history, frames,
            sqrt_weights, model_precision, last_next,
        )
        energy_pred = _energy_pred(pred, backend)
        with torch.no_grad(), _updating():
            if fused:
                energy, grad_pred = ops.lifted_energy_state_step_(
                    energy_pred, states, gamma, *state_moments, step, state_adam, noise_std, noise, counters=counters,
                    generator=generator, backend=backend,
                )
                if boundary is not None:
                    boundary(energy_pred, energy, grad_pred)
            else:
                energy, grad_pred, state_grad = _energy_grads(energy_pred, states, gamma, backend, sqrt_weights)
                if boundary is not None:
                    boundary(energy_pred, energy, grad_pred)
                if input_grad is not None:  # the ablation: the world model's state-input gradient too
                    state_grad[:, :horizon] += input_grad
                ops.state_step_(states, state_grad, *state_moments, step, state_adam, noise_std, noise, generator,
                                counters=counters, backend=backend)
            ops.action_step_(actions, action_grad, *action_moments, step, action_adam, low, high, backend=backend)
        return energy, grad_pred, action_grad
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
    energy_pred = _energy_pred(pred, backend)
    with torch.no_grad():
        if fused:
            with _updating():  # the fused op updates the states before the VJP
                energy, grad_pred = ops.lifted_energy_state_step_(
                    energy_pred, states, gamma, *state_moments, step, state_adam, noise_std, noise, counters=counters,
                    generator=generator, backend=backend,
                )
                if boundary is not None:
                    boundary(energy_pred.detach(), energy, grad_pred)
                (action_grad,) = torch.autograd.grad(pred, action_leaf, grad_pred.to(pred.dtype))
        else:
            energy, grad_pred, state_grad = _energy_grads(energy_pred, states, gamma, backend, sqrt_weights)
            if boundary is not None:
                boundary(energy_pred.detach(), energy, grad_pred)
            inputs = (action_leaf,) if stop_gradient else (action_leaf, state_input)
            grads = torch.autograd.grad(pred, inputs, grad_pred.to(pred.dtype))
            action_grad = grads[0]
            if not stop_gradient:  # the ablation: the world model's state-input gradient too
                state_grad[:, :horizon] += grads[1]
            with _updating():
                ops.state_step_(states, state_grad, *state_moments, step, state_adam, noise_std, noise, generator,
                                counters=counters, backend=backend)
        with _updating():
            ops.action_step_(  # autograd may hand back a strided view (e.g. through torch.cat)
                actions, action_grad.contiguous(), *action_moments, step, action_adam, low, high, backend=backend,
            )
    return energy, grad_pred, action_grad.detach()


def _energy_pred(pred: torch.Tensor, backend: str) -> torch.Tensor:
    """The predictions the energy op reads: kernels read float32 or bfloat16, other low precisions are
    widened first (the reference reads any)."""
    return pred if pred.dtype in _KERNEL_PRED_DTYPES or backend == "reference" else pred.float()


def _energy_grads(
    energy_pred: torch.Tensor, states: torch.Tensor, gamma: float, backend: str, sqrt_weights: Optional[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(energy [B], dE/dpred [B, T, D], dE/dstates [B, T+1, D])`` on the unfused energy op; with
    ``sqrt_weights`` (``||x||_w^2 = ||sqrt(w) x||^2``) the plain energy of scaled copies, the gradients
    scaled back."""
    if sqrt_weights is None:
        return ops.lifted_energy_grads(energy_pred, states, gamma, backend=backend)
    energy, grad_pred, state_grad = ops.lifted_energy_grads(
        energy_pred.detach().to(states.dtype) * sqrt_weights, states * sqrt_weights, gamma, backend=backend
    )
    grad_pred.mul_(sqrt_weights)
    state_grad.mul_(sqrt_weights)
    return energy, grad_pred, state_grad


@contextlib.contextmanager
def _updating():
    """Around in-place updates of a plan's tensors: out of memory there cannot be retried."""
    try:
        yield
    except torch.OutOfMemoryError as error:
        raise StateUpdateOutOfMemory(
            f"out of memory while a lifted iteration updated the plan's tensors in place (they are partly "
            f"updated, the iteration cannot be retried): {error}. Bound the model's memory with "
            "GraspConfig(max_transitions=...) or GraspConfig(memory_budget=...)"
        ) from error


def _chunk_grad_pred(
    energy_pred: torch.Tensor, states: torch.Tensor, chunk: Chunk, gamma: float, backend: str,
    sqrt_weights: Optional[torch.Tensor], last_next: Optional[torch.Tensor],
) -> torch.Tensor:
    """``dE/dp`` of one chunk's predictions ``energy_pred [b1-b0, t1-t0, D]``. On a kernel backend: the energy
    kernel on the chunk's own rows (``s_{t0} .. s_{t1}``, then the goal); where the chunk's last transition
    does not lead to the goal row (a window ending before ``T``, or ``last_next``), a dummy transition is
    appended whose gradient is dropped. On the reference backend: :func:`_reference_grad_pred`."""
    if backend == "reference":
        return _reference_grad_pred(energy_pred, states, chunk, gamma, sqrt_weights, last_next)
    horizon = states.shape[1] - 1
    rows = slice(chunk.b0, chunk.b1)
    goal = states[rows, horizon:]
    if chunk.t1 < horizon:
        chunk_states = torch.cat([states[rows, chunk.t0 : chunk.t1 + 1], goal], dim=1)
    elif last_next is not None:
        chunk_states = torch.cat([states[rows, chunk.t0 : horizon], last_next[rows].unsqueeze(1), goal], dim=1)
    else:
        chunk_states = states[rows, chunk.t0 :].contiguous()
    width = chunk.t1 - chunk.t0
    if chunk_states.shape[1] > width + 1:
        energy_pred = torch.cat([energy_pred, goal.to(energy_pred.dtype)], dim=1)
    _, grad_pred, _ = _energy_grads(energy_pred, chunk_states, gamma, backend, sqrt_weights)
    return grad_pred[:, :width]


def _reference_grad_pred(
    pred: torch.Tensor, states: torch.Tensor, chunk: Chunk, gamma: float, sqrt_weights: Optional[torch.Tensor],
    last_next: Optional[torch.Tensor],
) -> torch.Tensor:
    """``dE/dp`` of one chunk on the reference backend, elementwise on the chunk's rows: the values the
    reference energy op's autograd computes (``ops/lifted_energy/reference.py``: ``1 * 2 (p - s_next)``
    plus ``gamma * 2 (p - g)``, each rounded once, then their sum; with weights, of the ``sqrt(w)``-scaled
    copies, scaled back), without building its graph per chunk. ``tests/test_memory.py`` holds it to the
    op bitwise."""
    horizon = states.shape[1] - 1
    rows = slice(chunk.b0, chunk.b1)
    pred = pred.to(states.dtype)
    following = states[rows, chunk.t0 + 1 : chunk.t1 + 1]  # s_{t+1}; the goal row for t = T-1
    goal = states[rows, horizon:]
    if last_next is not None and chunk.t1 == horizon:
        following = torch.cat([following[:, :-1], last_next[rows].unsqueeze(1)], dim=1)
    if sqrt_weights is not None:
        pred, following, goal = pred * sqrt_weights, following * sqrt_weights, goal * sqrt_weights
    grad = (pred - following).mul_(2).add_((pred - goal).mul_(2).mul_(gamma))
    return grad if sqrt_weights is None else grad.mul_(sqrt_weights)


def chunked_vjp(
    world_model: WorldModel, states: torch.Tensor, actions: torch.Tensor, chunks: list[Chunk], gamma: float,
    backend: str, state_shape: tuple[int, ...], stop_gradient: bool, history: int, frames: Optional[torch.Tensor],
    sqrt_weights: Optional[torch.Tensor], model_precision: Optional[contextlib.AbstractContextManager],
    last_next: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """The world model and its VJP over ``chunks``, one at a time (only one chunk's graph is alive): each
    chunk's predictions, its ``dE/dp`` (:func:`_chunk_grad_pred`) and its VJP to its actions (and, for the
    ``stop_gradient=False`` ablation, to its model inputs). Writes nothing but ``frames``' copy of the rows.

    Returns:
        ``(pred [B, T, D] detached, action_grad [B, T, A], input_grad [B, T, D] or None)``; ``input_grad``
        is the model's state-input gradient of the rows ``s_0 .. s_{T-1}`` (ablation only).
    """
    batch, horizon, _ = actions.shape
    lead = history - 1
    rows = states[:, :horizon].detach()
    if stop_gradient and frames is not None:
        frames[:, lead:].copy_(rows)
        source = frames  # every window is a strided view of the frame buffer
    elif frames is not None:
        source = torch.cat([frames[:, :lead], rows], dim=1)
    else:
        source = rows
    input_grad = None if stop_gradient else torch.zeros_like(source)
    action_grad = torch.empty_like(actions)
    pred: Optional[torch.Tensor] = None
    for chunk in chunks:
        b, t = slice(chunk.b0, chunk.b1), slice(chunk.t0, chunk.t1)
        action_leaf = actions[b, t].detach().requires_grad_(True)
        model_input = source[b, chunk.t0 : chunk.t1 + lead].detach()
        model_input.requires_grad_(not stop_gradient)
        with torch.enable_grad(), model_precision or contextlib.nullcontext():
            chunk_pred = lifted_predictions(world_model, model_input, action_leaf, state_shape, stop_gradient, False,
                                            history)
        with torch.no_grad():
            chunk_grad = _chunk_grad_pred(_energy_pred(chunk_pred.detach(), backend), states, chunk, gamma, backend,
                                          sqrt_weights, last_next)
        inputs = (action_leaf,) if stop_gradient else (action_leaf, model_input)
        grads = torch.autograd.grad(chunk_pred, inputs, chunk_grad.to(chunk_pred.dtype))
        with torch.no_grad():
            action_grad[b, t] = grads[0]
            if input_grad is not None:
                input_grad[b, chunk.t0 : chunk.t1 + lead] += grads[1]
            if pred is None:
                pred = chunk_pred.new_empty((batch, horizon, chunk_pred.shape[-1]))
            pred[b, t] = chunk_pred.detach()
        del chunk_pred, chunk_grad, grads, action_leaf, model_input
    assert pred is not None
    return pred, action_grad, None if input_grad is None else input_grad[:, lead:]


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
