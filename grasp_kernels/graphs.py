"""CUDA graph capture of whole GRASP plans (``GraspConfig(cuda_graph=True)``).

With static shapes, everything a plan does after its initialisation is a fixed sequence of launches:
``iters`` lifted iterations (world-model forward, VJP to the actions, fused ops) with a sync phase after
every ``sync_every`` of them. :class:`PlanGraphs` captures that whole sequence once per input shape as
one CUDA graph and replays it for every later ``plan()`` call of the same shape (an MPC loop replans
with the same shapes every step), so the host issues one replay per plan instead of thousands of launches.

Why the whole plan and not one graph per iteration: the per-iteration host values (the Adam step and
its bias corrections, the annealed noise scale, the noise seed, the energy-history row) then stay plain
kernel arguments, baked into the graph exactly as the eager loop passes them. Every iteration of a replay
draws the noise of its own seed, and a replay reproduces the eager plan of the same ``config.seed``
bit for bit (the eager planner also restarts from ``config.seed`` on every call). The initialisation
(initial virtual states drawn from the planner's generator (or a guess), warm-start actions) runs eagerly and is
copied into the graph's input buffers before each replay; the final rollout and the choice of the best
chain run eagerly after it.

A world model that cannot be captured (a host synchronisation such as ``.item()``, CPU work, ops that
are not capturable) makes the capture fail: the planner warns once and runs that shape eagerly.
The graph reads the world model's parameters in place: updating them in place (``load_state_dict``,
an optimiser step) is seen by later replays; assigning new parameter tensors needs
:meth:`grasp_kernels.GraspPlanner.clear_cuda_graphs`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch

from .backends import warn_once
from .config import GraspConfig
from .plan_state import PlanState

StepFn = Callable[[PlanState], object]

# Eager iterations run on a scratch copy before capturing, on the capture's stream: they compile the Triton
# kernels and create the cuBLAS handles and the stream's workspace, which must not happen inside a capture.
WARMUP_ITERATIONS = 3


def _inputs(state: PlanState) -> list[Optional[torch.Tensor]]:
    """The tensors a plan reads before writing them, in a fixed order (the graph's input buffers). The
    energy history and the sync losses are not among them: the plan writes every row of both."""
    chains = state.chains
    packed = () if state.fused_mlp is None else state.fused_mlp.tensors  # re-packed per call: weight updates
    return [
        state.states, state.actions, *state.state_moments, *state.action_moments, state.low, state.high,
        state.frames, state.weights, state.sqrt_weights,
        chains.s0, chains.goal, chains.history_frames, *packed,
    ]


def _clone(state: PlanState) -> PlanState:
    """A copy of ``state`` with its own buffers."""

    def copy(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if tensor is None else tensor.clone()

    chains = dataclasses.replace(
        state.chains, s0=copy(state.chains.s0), goal=copy(state.chains.goal),
        history_frames=copy(state.chains.history_frames),
    )
    return dataclasses.replace(
        state, chains=chains, states=copy(state.states), actions=copy(state.actions),
        state_moments=tuple(copy(m) for m in state.state_moments),
        action_moments=tuple(copy(m) for m in state.action_moments),
        low=copy(state.low), high=copy(state.high), energy_history=copy(state.energy_history),
        sync_losses=copy(state.sync_losses), frames=copy(state.frames), weights=copy(state.weights),
        sqrt_weights=copy(state.sqrt_weights), spare_states=copy(state.spare_states),
        fused_mlp=None if state.fused_mlp is None else dataclasses.replace(
            state.fused_mlp, tensors=tuple(t.clone() for t in state.fused_mlp.tensors)),
    )


def _plan_key(config: GraspConfig, state: PlanState) -> tuple:
    """What a captured plan depends on: the configuration (its launch sequence and scalars) and the shapes."""
    tensors = _inputs(state) + [state.spare_states, state.energy_history, state.sync_losses]
    return (
        repr(config), state.states.device, state.backend, state.fused_backend,
        tuple(None if t is None else (tuple(t.shape), t.dtype) for t in tensors),
    )


def unsupported_reason(state: PlanState) -> Optional[str]:
    """Why this plan cannot be captured, or None."""
    if state.states.device.type != "cuda":
        return f"the states are on {state.states.device.type}, not a CUDA device"
    if state.backend == "reference":
        return "the reference backend draws its noise from a torch.Generator (use backend='triton' or 'cuda')"
    return None


@dataclasses.dataclass
class _CapturedPlan:
    graph: torch.cuda.CUDAGraph
    state: PlanState  # the static state: its buffers are the graph's memory, its counters the plan's end
    inputs: list[Optional[torch.Tensor]]

    def replay(self, fresh: PlanState) -> PlanState:
        for static, value in zip(self.inputs, _inputs(fresh)):
            if static is not None:
                static.copy_(value)
        self.graph.replay()
        return dataclasses.replace(self.state, problem=fresh.problem)


class PlanGraphs:
    """One captured plan per input shape of a planner (None where the capture failed)."""

    def __init__(self) -> None:
        self._plans: dict[tuple, Optional[_CapturedPlan]] = {}

    def clear(self) -> None:
        self._plans.clear()

    def __len__(self) -> int:
        return sum(plan is not None for plan in self._plans.values())

    def run(
        self, config: GraspConfig, fresh: PlanState, *, run_iterations: StepFn, iteration: StepFn, sync: StepFn
    ) -> Optional[PlanState]:
        """Run the plan whose initial state is ``fresh`` by graph replay (capturing it first for a new
        shape); returns the finished static state, or None (after one warning) to run it eagerly.

        ``run_iterations(state)`` runs every iteration and sync phase of a started plan (what is
        captured); ``iteration(state)`` and ``sync(state)`` run one of each (the warm-up before the
        capture). The cache key is ``config`` and the shapes of ``fresh``."""
        reason = unsupported_reason(fresh)
        if reason is not None:
            warn_once(f"grasp_kernels: cuda_graph=True runs the plan eagerly: {reason}")
            return None
        key = _plan_key(config, fresh)
        if key not in self._plans:
            warm_up = _WarmUp(iteration, sync, min(WARMUP_ITERATIONS, config.iters))
            self._plans[key] = _capture(fresh, run_iterations, warm_up)
        plan = self._plans[key]
        return None if plan is None else plan.replay(fresh)


class _Uncapturable(Exception):
    """The world model (or something else on the plan's path) cannot be captured."""


@dataclasses.dataclass
class _WarmUp:
    iteration: StepFn
    sync: StepFn
    iterations: int


def _capture(fresh: PlanState, run_iterations: StepFn, warm_up: _WarmUp) -> Optional[_CapturedPlan]:
    """The captured plan of ``fresh``'s shape, or None (one warning) if the plan cannot be captured.
    Errors of the plan itself (a diverging warm-up, out of memory) propagate."""
    try:
        return _record(fresh, run_iterations, warm_up)
    except _Uncapturable as exc:
        warn_once(
            f"grasp_kernels: cuda_graph=True runs the plan eagerly: capturing it as a CUDA graph failed ({exc}); "
            "world models that synchronise with the host (.item(), .cpu(), data-dependent shapes) cannot be captured"
        )
        return None


def _record(fresh: PlanState, run_iterations: StepFn, warm_up: _WarmUp) -> _CapturedPlan:
    """Warm up, then capture ``run_iterations`` on a copy of ``fresh`` (raises _Uncapturable)."""
    device = fresh.states.device
    with torch.cuda.device(device):
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        _warm_up(warm_up, fresh, side)
        static = _clone(fresh)
        inputs = _inputs(static)  # before the capture: the fused-MLP path swaps its state buffers
        graph = torch.cuda.CUDAGraph()
        # the stream context is entered outside torch.cuda.graph so that the previous stream comes back
        # even when ending an invalidated capture raises
        with torch.cuda.stream(side):
            try:
                with torch.cuda.graph(graph, stream=side):
                    if not torch.cuda.is_current_stream_capturing():
                        raise _Uncapturable("the capture did not start on the plan's device")
                    run_iterations(static)
            except _Uncapturable:
                raise
            except Exception as exc:  # noqa: BLE001 - anything failing inside a capture: run eagerly
                raise _Uncapturable(f"{type(exc).__name__}: {_first_line(exc)}") from exc
        torch.cuda.current_stream(device).wait_stream(side)
    return _CapturedPlan(graph, static, inputs)


def _warm_up(warm_up: _WarmUp, fresh: PlanState, side: torch.cuda.Stream) -> None:
    """A few eager iterations and one sync phase on a scratch copy, on the capture's stream, with host
    synchronisation made an error: a world model that synchronises is found here, before any capture."""
    warm = _clone(fresh)
    previous = torch.cuda.get_sync_debug_mode()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(warm_up.iterations):
                warm_up.iteration(warm)
            if warm.sync_every:
                warm_up.sync(warm)
        except RuntimeError as exc:
            if "synchroniz" in str(exc):
                raise _Uncapturable(f"{type(exc).__name__}: {_first_line(exc)}") from exc
            raise
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    torch.cuda.current_stream().wait_stream(side)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:200]
