"""CUDA graph capture of GRASP plans (``GraspConfig(cuda_graph=True)``).

With static shapes, everything a plan does after its initialisation is a fixed sequence of launches:
``iters`` lifted iterations (world-model forward, VJP to the actions, fused ops) with a sync phase after
every ``sync_every`` of them. :class:`PlanGraphs` captures it once per input shape and replays it for
every later ``plan()`` call of the same shape (an MPC loop replans with the same shapes every step), so
the host issues a few replays per plan instead of thousands of launches.

What is captured: ONE graph of a sync phase, replayed for every phase, and one graph per run of lifted
iterations between two phases. Every phase launches the same sequence (its Adam starts from fresh
moments, and it zeroes the main moments when it ends), so one graph serves all of them; the phase's
bookkeeping (its loss row, the phase count) runs eagerly after each replay. The sync phase is most of a
plan's launches (``sync_steps x T`` world-model calls forward and backward), so capturing it once keeps
the graph small where a whole-plan graph of a DINO-WM-sized model held several hundred thousand nodes.
The lifted runs are captured one by one because their per-iteration host values (the Adam step and its
bias corrections, the annealed noise scale, the noise seed, the energy-history row) stay plain kernel
arguments, baked in exactly as the eager loop passes them: every iteration of a replay draws the noise of
its own seed, and a replay launches the eager plan's kernels with the same arguments (the eager planner
also restarts from ``config.seed`` on every call); cuBLAS may pick other algorithms inside a capture, so
the tests hold replay and eager plans to 1e-5. The lifted graphs share one memory pool (they
are replayed in the order they were captured); the sync graph, replayed between them, has its own.

The initialisation (initial virtual states drawn from the chains' generators (or a guess), warm-start
actions) runs eagerly and is copied into the graphs' input buffers before each replay; the final rollout
and the choice of the best chain run eagerly after them.

A world model that cannot be captured (a host synchronisation such as ``.item()``, CPU work, ops that
are not capturable) makes the capture fail: the planner warns once and runs that shape eagerly.
The graphs read the world model's parameters in place: updating them in place (``load_state_dict``,
an optimiser step) is seen by later replays; assigning new parameter tensors needs
:meth:`grasp_kernels.GraspPlanner.clear_cuda_graphs`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Optional

import torch

from .backends import warn_once
from .config import GraspConfig
from .plan_state import PlanState
from .sync import SyncRule

StepFn = Callable[[PlanState], object]
SyncPhaseFn = Callable[[PlanState], torch.Tensor]

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
    """What a captured plan depends on: the configuration (its launch sequence and scalars), the shapes, and
    the noise counters' base (``plan_offset``: a scalar the captured launches hold)."""
    tensors = _inputs(state) + [state.spare_states, state.energy_history, state.sync_losses]
    return (
        repr(config), state.states.device, state.backend, state.fused_backend, state.noise_base,
        tuple(None if t is None else (tuple(t.shape), t.dtype) for t in tensors),
    )


def unsupported_reason(state: PlanState) -> Optional[str]:
    """Why this plan cannot be captured, or None."""
    if state.states.device.type != "cuda":
        return f"the states are on {state.states.device.type}, not a CUDA device"
    if state.backend == "reference":
        return "the reference backend draws its noise from per-chain torch.Generators (use backend='triton' or 'cuda')"
    return None


@dataclasses.dataclass
class _CapturedPlan:
    lifted: list[tuple[torch.cuda.CUDAGraph, bool]]  # each run of lifted iterations; a sync phase after it?
    sync_graph: Optional[torch.cuda.CUDAGraph]
    sync_loss: Optional[torch.Tensor]  # the sync graph's output, rewritten by each replay
    state: PlanState  # the static state: its buffers are the graphs' memory
    inputs: list[Optional[torch.Tensor]]
    counters: tuple[int, int, int]  # (iteration, adam_step, syncs) at the plan's end, as the eager loop leaves them

    def replay(self, fresh: PlanState) -> PlanState:
        for static, value in zip(self.inputs, _inputs(fresh)):
            if static is not None:
                static.copy_(value)
        self.state.syncs = 0
        for graph, sync_after in self.lifted:
            graph.replay()
            if sync_after:
                self.sync_graph.replay()
                self.state.record_sync(self.sync_loss)
        self.state.iteration, self.state.adam_step, self.state.syncs = self.counters
        return dataclasses.replace(self.state, problem=fresh.problem)

    @property
    def graphs(self) -> int:
        return len(self.lifted) + (self.sync_graph is not None)


class PlanGraphs:
    """The captured graphs of each input shape of a planner (None where the capture failed)."""

    def __init__(self) -> None:
        self._plans: dict[tuple, Optional[_CapturedPlan]] = {}

    def clear(self) -> None:
        self._plans.clear()

    def __len__(self) -> int:
        return sum(plan is not None for plan in self._plans.values())

    def run(
        self, config: GraspConfig, fresh: PlanState, sync_rule: SyncRule, *, iteration: StepFn,
        sync_phase: SyncPhaseFn,
    ) -> Optional[PlanState]:
        """Run the plan whose initial state is ``fresh`` by graph replay (capturing it first for a new
        shape); returns the finished static state, or None (after one warning) to run it eagerly.

        ``iteration(state)`` runs one lifted iteration, ``sync_phase(state)`` one sync phase's launches
        (returning its loss; ``PlanState.record_sync`` is its host bookkeeping), ``sync_rule`` the rule it
        runs (only a capturable one is captured); ``config.iters`` bounds the plan. The cache key is
        ``config`` and the shapes of ``fresh``."""
        reason = unsupported_reason(fresh)
        if reason is None and not sync_rule.capturable:
            reason = sync_rule.not_capturable_because
        if reason is not None:
            warn_once(f"grasp_kernels: cuda_graph=True runs the plan eagerly: {reason}")
            return None
        if fresh.iteration >= config.iters:
            return None  # nothing to capture
        key = _plan_key(config, fresh)
        if key not in self._plans:
            steps = _PlanSteps(iteration, sync_phase, config.iters)
            self._plans[key] = _capture(fresh, steps)
        plan = self._plans[key]
        return None if plan is None else plan.replay(fresh)


class _Uncapturable(Exception):
    """The world model (or something else on the plan's path) cannot be captured."""


@dataclasses.dataclass
class _PlanSteps:
    iteration: StepFn
    sync_phase: SyncPhaseFn
    iters: int


def _capture(fresh: PlanState, steps: _PlanSteps) -> Optional[_CapturedPlan]:
    """The captured plan of ``fresh``'s shape, or None (one warning) if the plan cannot be captured.
    Errors of the plan itself (a diverging warm-up, out of memory) propagate."""
    try:
        return _record(fresh, steps)
    except _Uncapturable as exc:
        warn_once(
            f"grasp_kernels: cuda_graph=True runs the plan eagerly: capturing it as a CUDA graph failed ({exc}); "
            "world models that synchronise with the host (.item(), .cpu(), data-dependent shapes) cannot be captured"
        )
        return None


@contextlib.contextmanager
def _capturing(graph: torch.cuda.CUDAGraph, stream: torch.cuda.Stream, pool=None):
    """``torch.cuda.graph`` on ``stream``; anything failing inside it means the plan cannot be captured."""
    try:
        with torch.cuda.graph(graph, pool=pool, stream=stream):
            if not torch.cuda.is_current_stream_capturing():
                raise _Uncapturable("the capture did not start on the plan's device")
            yield
    except _Uncapturable:
        raise
    except Exception as exc:  # noqa: BLE001 - anything failing inside a capture: run eagerly
        raise _Uncapturable(f"{type(exc).__name__}: {_first_line(exc)}") from exc


def _record(fresh: PlanState, steps: _PlanSteps) -> _CapturedPlan:
    """Warm up, then capture a copy of ``fresh``'s plan: each run of lifted iterations up to a sync phase,
    and the first sync phase (raises _Uncapturable)."""
    device = fresh.states.device
    with torch.cuda.device(device):
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        _warm_up(steps, fresh, side)
        static = _clone(fresh)
        inputs = _inputs(static)  # before the capture: the fused-MLP path swaps its state buffers
        lifted: list[tuple[torch.cuda.CUDAGraph, bool]] = []
        sync_graph, sync_loss, pool = None, None, None
        # the stream context is entered outside torch.cuda.graph so that the previous stream comes back
        # even when ending an invalidated capture raises
        with torch.cuda.stream(side):
            while static.iteration < steps.iters:
                graph = torch.cuda.CUDAGraph()
                with _capturing(graph, side, pool):
                    steps.iteration(static)
                    while not static.sync_due and static.iteration < steps.iters:
                        steps.iteration(static)
                pool = graph.pool() if pool is None else pool
                sync_after = static.sync_due
                if sync_after:
                    if sync_graph is None:
                        sync_graph = torch.cuda.CUDAGraph()
                        with _capturing(sync_graph, side):
                            sync_loss = steps.sync_phase(static)
                    static.record_sync(None)  # the host counters the next run is captured with (no loss yet)
                lifted.append((graph, sync_after))
        torch.cuda.current_stream(device).wait_stream(side)
    counters = (static.iteration, static.adam_step, static.syncs)
    return _CapturedPlan(lifted, sync_graph, sync_loss, static, inputs, counters)


def _warm_up(steps: _PlanSteps, fresh: PlanState, side: torch.cuda.Stream) -> None:
    """A few eager iterations and one sync phase on a scratch copy, on the capture's stream, with host
    synchronisation made an error: a world model that synchronises is found here, before any capture."""
    warm = _clone(fresh)
    previous = torch.cuda.get_sync_debug_mode()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(min(WARMUP_ITERATIONS, steps.iters)):
                steps.iteration(warm)
            if warm.sync_every:
                warm.record_sync(steps.sync_phase(warm))
        except RuntimeError as exc:
            if "synchroniz" in str(exc):
                raise _Uncapturable(f"{type(exc).__name__}: {_first_line(exc)}") from exc
            raise
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    torch.cuda.current_stream().wait_stream(side)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:200]


def host_sync_forbidden(device: torch.device) -> bool:
    """A CUDA graph is being captured, or host synchronisation is an error (the capture's warm-up):
    host syncs (the per-phase finite check) are skipped; the end of the plan checks the whole history."""
    return device.type == "cuda" and (torch.cuda.is_current_stream_capturing() or torch.cuda.get_sync_debug_mode() == 2)
