"""Input handling shared by GRASP and the baseline planners: batching, input checks, the final rollout and
the result of the best chain per problem."""

from __future__ import annotations

import dataclasses
import time
from typing import Optional, Sequence, Union

import torch

from . import ops
from ._checks import as_bounds, check_finite, check_tensor
from .backends import triton_interpreter_active, warn_once
from .lifted import WorldModel
from .rollouts import rollout, weighted_sq_norm
from .result import PlanResult

BoundSpec = Union[None, float, Sequence[float], torch.Tensor]


class NonFiniteError(ValueError):
    """The plan produced NaN/Inf (the message names the iteration)."""


@dataclasses.dataclass
class Problem:
    """A batch of planning problems in the planners' flat layout.

    ``s0`` and ``goal`` are ``[B, *S]`` (``s0`` the current state); ``single`` remembers that the
    caller passed one plan ``[*S]``. For history-window world models (``h > 1`` frames per input),
    ``history_frames`` ``[B, h-1, *S]`` holds the older observed frames (oldest first).
    """

    s0: torch.Tensor
    goal: torch.Tensor
    state_shape: tuple[int, ...]
    single: bool
    history_frames: Optional[torch.Tensor] = None

    @property
    def history(self) -> int:
        """``h``, frames per world-model input (1: plain ``F(s, a)``)."""
        return 1 if self.history_frames is None else self.history_frames.shape[1] + 1

    def frames(self) -> torch.Tensor:
        """The rollout start: ``s0 [B, *S]`` for ``h = 1``, else the last ``h`` frames ``[B, h, *S]``."""
        if self.history_frames is None:
            return self.s0
        return torch.cat([self.history_frames, self.s0.unsqueeze(1)], dim=1)

    @property
    def batch(self) -> int:
        return self.s0.shape[0]

    @property
    def state_dim(self) -> int:
        dim = 1
        for size in self.state_shape:
            dim *= size
        return dim

    def flat(self, tensor: torch.Tensor) -> torch.Tensor:
        """``[B, *S] -> [B, D]``."""
        return tensor.reshape(tensor.shape[0], self.state_dim)

    def repeat(self, particles: int) -> "Problem":
        """Each problem repeated ``particles`` times (rows ``b*K .. b*K+K-1`` are problem ``b``): the chains."""
        if particles == 1:
            return self
        history = self.history_frames
        return Problem(
            s0=self.s0.repeat_interleave(particles, dim=0),
            goal=self.goal.repeat_interleave(particles, dim=0),
            state_shape=self.state_shape,
            single=False,
            history_frames=None if history is None else history.repeat_interleave(particles, dim=0),
        )


def make_problem(
    s0: torch.Tensor, goal: torch.Tensor, state_shape: Optional[Sequence[int]] = None, history: int = 1
) -> Problem:
    """Check ``s0``/``goal`` and bring them to ``[B, *S]``.

    Without ``state_shape``, a 1-D ``goal`` is one plan and a >= 2-D one is ``[B, *S]``; with it, a
    ``goal`` of ``len(state_shape)`` dimensions is one plan. For ``history = 1`` ``s0`` has the shape
    of ``goal``; for ``history = h > 1`` it carries the last ``h`` observed frames, ``[B, h, *S]``
    (``[h, *S]`` for one plan), oldest first.
    """
    check_tensor("s0", s0, dtypes=(torch.float32, torch.float64))
    check_tensor("goal", goal, dtypes=(s0.dtype,), device=s0.device)
    if s0.device.type == "meta":  # planning reads values (NaN checks, distances): meta tensors have none
        raise ValueError("s0 must hold data (a CPU or CUDA tensor), got a tensor on the meta device")
    if history > 1:
        return _make_history_problem(s0, goal, state_shape, history)
    if tuple(goal.shape) != tuple(s0.shape):
        raise ValueError(f"goal must have the shape of s0 {tuple(s0.shape)}, got {tuple(goal.shape)}")
    single, shape = _split_batch("s0", s0, state_shape)
    if single:
        s0, goal = s0.unsqueeze(0), goal.unsqueeze(0)
    check_finite("s0", s0)
    check_finite("goal", goal)
    return Problem(s0=s0, goal=goal, state_shape=shape, single=single)


def _split_batch(name: str, tensor: torch.Tensor, state_shape: Optional[Sequence[int]]) -> tuple[bool, tuple[int, ...]]:
    """``(single, S)`` of a ``[B, *S]`` or ``[*S]`` tensor (rules of :func:`make_problem`)."""
    if state_shape is None:
        single = tensor.dim() == 1
        shape = tuple(tensor.shape) if single else tuple(tensor.shape[1:])
    else:
        shape = tuple(int(s) for s in state_shape)
        if tuple(tensor.shape[-len(shape):]) != shape or tensor.dim() not in (len(shape), len(shape) + 1):
            raise ValueError(f"{name} must have shape [B, *{list(shape)}] or {list(shape)}, got {tuple(tensor.shape)}")
        single = tensor.dim() == len(shape)
    if tensor.dim() == 0 or (not single and tensor.shape[0] == 0):
        raise ValueError(f"{name} must hold at least one state, got shape {tuple(tensor.shape)}")
    return single, shape


def _make_history_problem(
    s0: torch.Tensor, goal: torch.Tensor, state_shape: Optional[Sequence[int]], history: int
) -> Problem:
    single, shape = _split_batch("goal", goal, state_shape)
    expected = (history, *shape) if single else (goal.shape[0], history, *shape)
    if tuple(s0.shape) != expected:
        what = f"[{history}, *S]" if single else f"[B, {history}, *S]"
        raise ValueError(
            f"s0 must carry the last history = {history} frames, {what} = {list(expected)} for goal of shape "
            f"{tuple(goal.shape)} (state shape S = {list(shape)}), got {tuple(s0.shape)}"
        )
    if single:
        s0, goal = s0.unsqueeze(0), goal.unsqueeze(0)
    check_finite("s0", s0)
    check_finite("goal", goal)
    return Problem(s0=s0[:, -1], goal=goal, state_shape=shape, single=single, history_frames=s0[:, :-1])


def action_bounds(
    low: BoundSpec, high: BoundSpec, action_dim: int, device: torch.device, dtype: torch.dtype
) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Bounds as ``[A]`` tensors (None: unbounded side); checks ``low <= high``."""
    return as_bounds(low, high, action_dim, device, dtype, names=("action_low", "action_high"))


def initial_actions(
    init_actions: Optional[torch.Tensor], batch: int, horizon: int, action_dim: int, like: torch.Tensor
) -> torch.Tensor:
    """A fresh ``[B, T, A]`` action tensor: zeros, or a copy of the warm start."""
    if init_actions is None:
        return torch.zeros(batch, horizon, action_dim, device=like.device, dtype=like.dtype)
    if isinstance(init_actions, torch.Tensor) and init_actions.dim() == 2:
        init_actions = init_actions.unsqueeze(0).expand(batch, -1, -1)
    check_tensor("init_actions", init_actions, shape=(batch, horizon, action_dim), device=like.device)
    check_finite("init_actions", init_actions)
    return init_actions.detach().to(like.dtype).clone()


def clamp_(actions: torch.Tensor, low: Optional[torch.Tensor], high: Optional[torch.Tensor]) -> torch.Tensor:
    if low is None and high is None:
        return actions
    return actions.clamp_(min=low, max=high)


@torch.no_grad()
def final_rollout(
    world_model: WorldModel, problem: Problem, actions: torch.Tensor, weights: Optional[torch.Tensor] = None,
    max_rows: Optional[int] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The true rollout ``[B, T+1, *S]`` of ``actions`` (through history windows for ``h > 1``) and
    its final distance ``[B]`` to the goal (weighted by ``weights``, broadcastable to ``S``, if given);
    ``max_rows``: roll at most that many rows at a time (bounded memory)."""
    trajectory = rollout(world_model, problem.frames(), actions, problem.history, max_rows=max_rows)
    if weights is None:
        distance = problem.flat(trajectory[:, -1] - problem.goal).norm(dim=1)
    else:
        distance = weighted_sq_norm(trajectory[:, -1] - problem.goal, weights).sqrt()
    return trajectory, distance


def raise_if_nonfinite(history: torch.Tensor, upto: int, what: str) -> None:
    """Raise naming the first iteration < ``upto`` whose ``history`` row holds NaN/Inf.

    One host sync: called once per sync phase and at the end, never per iteration.
    """
    rows = history[:upto]
    total = rows.sum()
    if bool(total * 0 == 0):  # NaN/Inf anywhere makes the sum non-finite: 3 launches, not a per-element test
        return
    bad = ~torch.isfinite(rows).all(dim=1)
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise NonFiniteError(
            f"{what} became NaN/Inf at iteration {first}: the world model returned non-finite values "
            "or the step sizes diverged"
        )


def check_planner_args(world_model: WorldModel, action_dim: Optional[int]) -> tuple[WorldModel, Optional[int]]:
    """``world_model`` is callable and ``action_dim`` an int >= 1 that the model does not contradict
    (through its own ``action_dim``); ``action_dim=None`` checks the model alone (known later)."""
    if not callable(world_model):
        raise TypeError(f"world_model must be callable (states, actions) -> next states, got {type(world_model).__name__}")
    if action_dim is None:
        return world_model, None
    if isinstance(action_dim, bool) or not isinstance(action_dim, int) or action_dim < 1:
        raise ValueError(f"action_dim must be an int >= 1, got {action_dim!r}")
    declared = getattr(world_model, "action_dim", None)
    if isinstance(declared, int) and not isinstance(declared, bool) and declared != action_dim:
        raise ValueError(f"action_dim ({action_dim}) differs from the world model's action_dim ({declared})")
    return world_model, action_dim


def squeeze_single(result: PlanResult, single: bool, start: float) -> PlanResult:
    """Drop the batch dimension of a single plan and stamp the wall time."""
    if single:
        result = dataclasses.replace(
            result,
            actions=result.actions[0],
            states=result.states[0],
            rollout=result.rollout[0],
            final_distance=result.final_distance[0],
            energy_history=result.energy_history[:, 0],
        )
    result.wall_time = time.perf_counter() - start
    return result


def best_chains_result(
    problem: Problem,
    particles: int,
    backend: str,
    actions: torch.Tensor,
    states: torch.Tensor,
    rollout: torch.Tensor,
    distance: torch.Tensor,
    energy_history: torch.Tensor,
    sync_losses: torch.Tensor,
    start_time: Optional[float] = None,
) -> PlanResult:
    """The :class:`PlanResult` of a finished GRASP plan: per problem the chain whose rollout ends closest
    to the goal (``particles`` chains per problem, rows ``b*K .. b*K+K-1``).

    Args:
        actions: ``[B*K, T, A]``; ``states`` ``[B*K, T+1, D]``; ``rollout`` ``[B*K, T+1, *S]``;
            ``distance`` ``[B*K]``; ``energy_history`` ``[iters run, B*K]``; ``sync_losses``
            ``[syncs run, B*K]``. Shared by the planner and the time-sharded plan.
    """
    best = distance.view(problem.batch, particles).argmin(dim=1)
    rows = torch.arange(problem.batch, device=best.device) * particles + best
    result = PlanResult(
        actions=actions[rows],
        states=states[rows].reshape(problem.batch, states.shape[1], *problem.state_shape),
        rollout=rollout[rows],
        final_distance=distance[rows],
        energy_history=energy_history[:, rows],
        info={"backend": backend, "particle": best, "sync_loss": sync_losses[:, rows]},
    )
    return squeeze_single(result, problem.single, time.perf_counter() if start_time is None else start_time)


def check_init_states(init_states: object, problem: Problem, horizon: int) -> torch.Tensor:
    """``init_states`` as ``[B, T+1, *S]`` (a single plan's ``[T+1, *S]`` gets its batch dimension)."""
    expected = (problem.batch, horizon + 1, *problem.state_shape)
    check_tensor("init_states", init_states, dtypes=(problem.s0.dtype,), device=problem.s0.device)
    if problem.single and tuple(init_states.shape) == expected[1:]:
        init_states = init_states.unsqueeze(0)
    if tuple(init_states.shape) != expected:
        want = f"[T+1, *S] = {list(expected[1:])}" if problem.single else f"[B, T+1, *S] = {list(expected)}"
        raise ValueError(f"init_states must have shape {want}, got {tuple(init_states.shape)}")
    check_finite("init_states (rows 1..T-1)", init_states[:, 1:-1])
    return init_states


def check_fused_mlp(
    world_model: WorldModel, *, stop_gradient: bool, history: int, model_dtype: Optional[str],
    state_weights: Optional[torch.Tensor],
) -> None:
    """Raise ValueError if ``GraspConfig(fused_mlp=True)`` cannot apply (a world model or settings the
    fused MLP kernel does not implement); the arguments are the config's fields of those names."""
    reason = ops.fused_mlp_unsupported_reason(world_model)
    if reason is None and not stop_gradient:
        reason = "it implements the stop-gradient energy only (stop_gradient=True)"
    if reason is None and history != 1:
        reason = f"it implements history = 1 only, got history = {history}"
    if reason is None and state_weights is not None:
        reason = "it implements the unweighted energy only (no state_weights)"
    if reason is None and model_dtype == "float16":
        reason = "its matrix inputs are float32 or bfloat16 (model_dtype='float16' is not implemented)"
    if reason is not None:
        raise ValueError(f"GraspConfig(fused_mlp=True) cannot be used: {reason}")


_HISTORY_ATTRIBUTES = ("history", "num_hist", "history_size")


def declared_history(world_model: WorldModel) -> Optional[tuple[str, int]]:
    """``(attribute, h)`` if the world model declares its window length (``history``, ``num_hist``
    or ``history_size``, an int), else None."""
    for name in _HISTORY_ATTRIBUTES:
        value = getattr(world_model, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return name, value
    return None


def check_model_history(world_model: WorldModel, history: int) -> None:
    """Raise if the world model declares a window length other than ``history``."""
    declared = declared_history(world_model)
    if declared is not None and declared[1] != history:
        name, value = declared
        raise ValueError(
            f"history mismatch: the world model declares {name} = {value} frames per input but the planner "
            f"uses history = {history}; set GraspConfig(history={value})"
        )


def check_state_weights(weights: Optional[torch.Tensor], state_shape: Optional[tuple[int, ...]]) -> Optional[torch.Tensor]:
    """``state_weights``: None or a finite, strictly positive floating tensor (broadcastable to ``S`` if known).

    A zero weight is rejected: the energy would not constrain that component (its Adam step is zero),
    the Langevin noise would random-walk it, and the world model would be fed the drifting value."""
    if weights is None:
        return None
    check_tensor("state_weights", weights)
    if not bool(torch.isfinite(weights).all()):
        raise ValueError("state_weights must be finite")
    if bool((weights <= 0).any()):
        raise ValueError(
            f"state_weights must be > 0 (got min {float(weights.min()):g}): a zero weight leaves that state "
            "component unconstrained by the dynamics (the noise random-walks it and the world model is fed the "
            "drifting value); drop the component from the state or give it a small positive weight"
        )
    if state_shape is not None:
        broadcast_state_weights(weights, state_shape)
    return weights.detach()


def broadcast_state_weights(weights: torch.Tensor, state_shape: Sequence[int]) -> torch.Tensor:
    """``weights`` broadcast to the state shape ``S`` (a ValueError naming both if it cannot be)."""
    try:
        return torch.broadcast_to(weights, tuple(state_shape)).contiguous()
    except RuntimeError:
        raise ValueError(
            f"state_weights of shape {tuple(weights.shape)} is not broadcastable to the state shape {tuple(state_shape)}"
        ) from None


def fused_mlp_backend_for(backend: str, device: torch.device, dtype: torch.dtype, model_dtype: Optional[str]) -> Optional[str]:
    """The backend of the fused MLP kernel for a plan on ``backend`` with states of ``dtype`` on ``device``,
    or None (one warning) to run the normal iteration: the fused kernel is Triton-only and float32-only."""
    if backend == "reference":
        reason = "the planner runs on the reference backend"
    elif dtype != torch.float32:
        reason = f"the states are {dtype}"
    elif model_dtype is not None and device.type != "cuda" and triton_interpreter_active():
        reason = "the Triton interpreter has no bfloat16 tl.dot"
    else:
        name = ops.fused_mlp_backend(backend, device)
        if name == "triton":
            return name
        reason = "the Triton kernels cannot run here"
    warn_once(f"grasp_kernels: fused_mlp=True runs the normal iteration: {reason} (the fused MLP "
              "kernel needs the triton or cuda backend and float32 states)")
    return None
