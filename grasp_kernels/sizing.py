"""The chunk sizes of a plan from ``GraspConfig.max_transitions`` / ``memory_budget`` (docs/design.md,
"Bounded memory"), measured once per input shape.

With a budget the planner measures the peak memory of one lifted iteration on the plan's own tensors
with zero learning rates (no noise drawn, no state or action changed, the moments zeroed after) at a few
chunk sizes
(:func:`grasp_kernels.memory.largest_fitting`), keeps the largest chunk whose peak plus the plan's own
tensors (``PlanState.nbytes``) fits, then measures one GD sync step at the chunking the sync derives from
it and shrinks the sync's chunks (or turns activation checkpointing on) if that step does not fit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any, Callable, Optional, Protocol

import torch

from .lifted import StateUpdateOutOfMemory, WorldModel, chunked_vjp, lifted_iteration
from .memory import (
    MemoryPlan,
    format_bytes,
    largest_fitting,
    measure_peak,
    parse_memory_budget,
    sync_chunking,
    transition_chunks,
)
from .graphs import host_sync_forbidden
from .plan_state import PlanState
from .sync import GDSync, rule_for, sync_step

__all__ = ["SizingContext", "memory_key", "memory_plan"]

DOES_NOT_FIT = 2**62  # the "peak" of a measurement that ran out of device memory


class SizingContext(Protocol):
    """What sizing reads from the planner (:class:`~grasp_kernels.planner.GraspPlanner`)."""

    world_model: WorldModel
    config: Any

    def rollout_model(self) -> WorldModel:
        """The world model of the sequential rollouts."""

    def model_precision(self, device: torch.device) -> contextlib.AbstractContextManager:
        """``torch.autocast`` in ``config.model_dtype`` around world-model calls (or a no-op)."""


def memory_key(state: PlanState) -> tuple:
    """What a plan's chunk sizes depend on: the shapes, dtypes, device and paths of its tensors."""
    tensors = (state.states, state.actions, state.frames, state.weights, state.chains.history_frames)
    return (state.backend, state.fused_backend, state.states.device,
            tuple(None if t is None else (tuple(t.shape), t.dtype) for t in tensors))


def memory_plan(context: SizingContext, state: PlanState, cache: dict[tuple, MemoryPlan]) -> Optional[MemoryPlan]:
    """The :class:`~grasp_kernels.memory.MemoryPlan` of ``state`` under ``context.config`` (None when neither
    ``max_transitions`` nor ``memory_budget`` is set); with a budget measured once per :func:`memory_key`
    and kept in ``cache`` (the plan gets a copy).

    Raises:
        ValueError: the budget cannot hold one transition (naming the budget and the bytes one transition
            needs), or ``max_transitions`` does not fit the budget.
    """
    cfg = context.config
    batch, horizon = state.actions.shape[:2]
    total = batch * horizon
    if cfg.memory_budget is None:
        if cfg.max_transitions is None:
            return None
        chains, checkpoint = sync_chunking(cfg.max_transitions, horizon, cfg.activation_checkpointing)
        return MemoryPlan(cfg.max_transitions, total, chains, checkpoint, cfg.max_transitions,
                          state_bytes=state.nbytes)
    key = memory_key(state)
    if key not in cache:
        cache[key] = _measured_plan(context, state, parse_memory_budget(cfg.memory_budget))
    return dataclasses.replace(cache[key])


def _measured_plan(context: SizingContext, state: PlanState, budget: int) -> MemoryPlan:
    cfg = context.config
    batch, horizon = state.actions.shape[:2]
    total = batch * horizon
    state_bytes = state.nbytes
    available = budget - state_bytes
    method = measure_peak(lambda: None, state.states.device)[1]

    def iteration_peak(n: int) -> int:
        return _iteration_peak(context, state, n)

    def chunk_peak(n: int) -> int:
        return _chunk_peak(context, state, n)

    if cfg.max_transitions is not None:
        chunk = min(cfg.max_transitions, total)
        peak = iteration_peak(chunk)
        slope = float(peak) / chunk
        if state_bytes + peak > budget:
            raise ValueError(
                f"max_transitions = {cfg.max_transitions} contradicts memory_budget = {cfg.memory_budget!r} "
                f"({budget} bytes): a lifted iteration with chunks of {chunk} transitions peaks at "
                f"{state_bytes + peak} bytes ({format_bytes(state_bytes + peak)}: the plan's tensors "
                f"{format_bytes(state_bytes)} + {format_bytes(peak)} measured by {method}); lower max_transitions, "
                "or leave it out to size the chunks from the budget"
            )
    else:
        chunk, peak, slope = largest_fitting(iteration_peak, chunk_peak, available, total, realized=lambda n: max(
            c.size for c in transition_chunks(batch, horizon, n)))
        if chunk == 0:
            raise ValueError(
                f"memory_budget = {cfg.memory_budget!r} ({budget} bytes) cannot hold one transition: one transition "
                f"needs {state_bytes + peak} bytes ({format_bytes(state_bytes + peak)}: the plan's tensors for "
                f"{batch} chains x {horizon} steps {format_bytes(state_bytes)} + one transition's iteration peak "
                f"{format_bytes(peak)}, measured by {method})"
            )
    chains, checkpoint = sync_chunking(chunk, horizon, cfg.activation_checkpointing)
    sync_peak = 0
    differentiated_sync = isinstance(rule_for(cfg.sync), GDSync) and state.fused_mlp is None
    if cfg.sync_every and cfg.sync_steps and differentiated_sync:
        chains, checkpoint, sync_peak = _fit_sync(context, state, chains, checkpoint, available, chunk)
    return MemoryPlan(
        max_transitions=chunk, transitions=total, sync_chains=chains, checkpoint=checkpoint, rollout_rows=chunk,
        budget=budget, state_bytes=state_bytes, measured_peak=state_bytes + max(peak, sync_peak),
        per_transition_bytes=slope, method=method,
    )


def _fit_sync(context: SizingContext, state: PlanState, chains: int, checkpoint: bool, available: int,
              max_transitions: int) -> tuple[int, bool, int]:
    """``(chains per chunk, checkpointing, measured peak)`` of the GD sync step, shrunk until it fits."""
    cfg = context.config
    batch = state.actions.shape[0]
    peak = 0
    for _ in range(6):
        peak = _sync_peak(context, state, chains, checkpoint)
        if peak <= available:
            return chains, checkpoint, peak
        if chains > 1:
            chains = max(1, int(min(chains, batch) * available / peak * 0.95))
        elif not checkpoint and cfg.activation_checkpointing is not False:
            chains, checkpoint = max_transitions, True
        else:
            break
    raise ValueError(
        f"memory_budget = {cfg.memory_budget!r}: the GD sync step does not fit ({format_bytes(peak)} measured at "
        f"{chains} chain(s) per chunk{' with activation checkpointing' if checkpoint else ''}, "
        f"{format_bytes(available)} available besides the plan's tensors); raise the budget"
    )


def _iteration_peak(context: SizingContext, state: PlanState, max_transitions: int) -> int:
    """The peak bytes one lifted iteration with chunks of ``max_transitions`` allocates, run on the plan's
    own tensors (no copies: they would count) with zero learning rates and no noise, so that no state or
    action changes and no random number is drawn; the Adam moments it wrote are zeroed again (a plan starts
    from zero moments)."""
    cfg = context.config

    def run() -> None:
        lifted_iteration(
            context.world_model, state.states, state.actions, state.state_moments, state.action_moments, step=1,
            gamma=cfg.goal_weight, state_adam=cfg.adam(0.0), action_adam=cfg.adam(0.0), noise_std=0.0, low=state.low, high=state.high, state_shape=state.chains.state_shape,
            backend=state.backend, stop_gradient=cfg.stop_gradient, history=cfg.history, frames=state.frames,
            sqrt_weights=state.sqrt_weights, model_precision=context.model_precision(state.states.device),
            max_transitions=max_transitions,
        )

    try:
        return measure_peak(run, state.states.device)[0]
    except (torch.OutOfMemoryError, StateUpdateOutOfMemory):  # the device could not hold it: it does not fit
        return DOES_NOT_FIT
    finally:
        torch._foreach_zero_([*state.state_moments, *state.action_moments])


def _chunk_peak(context: SizingContext, state: PlanState, max_transitions: int) -> int:
    """The peak bytes of the first chunk alone of an iteration with chunks of ``max_transitions``
    (:func:`grasp_kernels.lifted.chunked_vjp` on one chunk: the loop's full-size buffers and one chunk's
    model, gradient and VJP); writes nothing but the frame buffer's copy of the rows."""
    cfg = context.config
    batch, horizon = state.actions.shape[:2]
    first = transition_chunks(batch, horizon, max_transitions)[:1]

    def run() -> None:
        chunked_vjp(context.world_model, state.states, state.actions, first, cfg.goal_weight, state.backend,
                    state.chains.state_shape, cfg.stop_gradient, cfg.history, state.frames, state.sqrt_weights,
                    context.model_precision(state.states.device), None)

    try:
        return measure_peak(run, state.states.device)[0]
    except torch.OutOfMemoryError:
        return DOES_NOT_FIT


def _sync_peak(context: SizingContext, state: PlanState, chains: Optional[int], checkpoint: bool) -> int:
    """The peak bytes of one GD sync step (:func:`grasp_kernels.sync.sync_step`) on the plan's actions with a
    zero learning rate (they do not change) and its own fresh moments."""
    cfg, problem = context.config, state.chains
    actions = state.actions
    start = problem.frames()

    def run() -> None:
        exp_avg, exp_avg_sq = torch.zeros_like(actions), torch.zeros_like(actions)  # as adam_phase allocates them
        with context.model_precision(actions.device):
            sync_step(context.rollout_model(), start, problem.goal, actions, exp_avg, exp_avg_sq, 1, cfg.adam(0.0),
                      state.low, state.high, problem.history, state.weights, chains, checkpoint)

    try:
        return measure_peak(run, actions.device)[0]
    except torch.OutOfMemoryError:
        return DOES_NOT_FIT


def retry_out_of_memory(
    state: PlanState, run: Callable[[Optional[int]], torch.Tensor], activation_checkpointing: Optional[bool],
    cache: dict,
) -> torch.Tensor:
    """``run(max_transitions)`` at the plan's chunk size; on ``torch.OutOfMemoryError`` (raised before the
    iteration wrote anything, :func:`~grasp_kernels.lifted.lifted_iteration`) once more at half of it, with
    a warning, and the plan keeps the halved size (the sync's and rollouts' chunks follow it). Not inside a
    CUDA graph capture (the capture fails). ``cache``: the planner's sized memory plans, updated with the
    halved size where the plan was sized from a budget."""
    memory = state.memory
    current = None if memory is None else memory.max_transitions
    try:
        return run(current)
    except torch.OutOfMemoryError as error:
        batch, horizon = state.actions.shape[:2]
        size = min(current or batch * horizon, batch * horizon)
        if size <= 1 or host_sync_forbidden(state.states.device):
            raise
        halved = size // 2
        warnings.warn(
            f"grasp_kernels: out of memory in lifted iteration {state.iteration} with chunks of {size} "
            f"transitions ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
            f"retrying it once with max_transitions = {halved} (the plan keeps it; set GraspConfig("
            "max_transitions=...) or memory_budget=... to choose it)", ResourceWarning, stacklevel=4,
        )
        if memory is None:
            memory = state.memory = MemoryPlan(None, batch * horizon, state_bytes=state.nbytes)
        memory.max_transitions = halved
        memory.rollout_rows = halved if memory.rollout_rows is None else min(memory.rollout_rows, halved)
        memory.sync_chains, memory.checkpoint = sync_chunking(halved, horizon, activation_checkpointing)
        memory.retries += 1
        if memory.budget is not None:
            cache[memory_key(state)] = dataclasses.replace(memory)
        if torch.cuda.is_available() and state.states.device.type == "cuda":
            torch.cuda.empty_cache()
        return run(halved)

