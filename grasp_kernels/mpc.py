"""Receding-horizon MPC in a real simulator, batched over ``B`` episodes.

Every replan step makes ONE batched ``planner.plan`` call for all ``B`` episodes (finished ones
included: the shapes stay static and one batched call is cheaper than re-batching), executes the first
``replan_every`` planned actions in the simulators, and plans again from the states read back. The
planner's horizon is fixed: the plan window recedes with the episode.

Works with every planner of the package (:class:`~grasp_kernels.GraspPlanner` and the
:mod:`grasp_kernels.baselines` GD, CEM and MPPI planners): anything with
``plan(s0 [B, D], goal [B, D], init_actions [B, T, A] | None) -> PlanResult`` and a ``config.horizon``.

Example::

    sims = SimBatch("pointmaze-umaze", batch=4)
    result = run_mpc(planner, sims, starts, goals, MPCConfig(max_steps=100, replan_every=4))
    result.success.mean(), result.executed.shape          # [4, 101, 4]
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
from typing import TYPE_CHECKING, Callable, Optional, Protocol, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from ._checks import check_device
from .config import _check_int
from .result import PlanResult

if TYPE_CHECKING:  # the simulators need the envs extra; run_mpc only uses the SimBatch interface
    from .envs.sim import SimBatch

__all__ = ["MPCConfig", "MPCResult", "Observation", "run_mpc", "shift_actions", "shift_states"]


class Planner(Protocol):
    """What :func:`run_mpc` needs of a planner."""

    config: object

    def plan(
        self, s0: torch.Tensor, goal: torch.Tensor, init_actions: Optional[torch.Tensor] = None
    ) -> PlanResult: ...


class Observation(Protocol):
    """What a planner sees of the simulator, for world models that do not plan over the simulator's state
    (e.g. :class:`grasp_kernels.pixel_tasks.PixelObservation`: rendered frames, encoded to latents).

    ``window``: how many of the last executed states a planning state depends on (``k``);
    ``__call__(states [B, k, D]) -> [B, D']``: the planning states of the last ``k`` executed states (oldest
    first; at the start of an episode the first state is repeated); ``goal(goals [B, D]) -> [B, D']``: the
    goal planning states.
    """

    window: int

    def __call__(self, states: np.ndarray) -> torch.Tensor: ...

    def goal(self, goals: np.ndarray) -> torch.Tensor: ...


@dataclasses.dataclass
class MPCConfig:
    """Receding-horizon control settings.

    Attributes:
        max_steps: model steps per episode (>= 1); one model step is ``action_repeat`` simulator steps.
        replan_every: ``k``: execute the first ``k`` planned actions, then replan (1 <= k <= the
            planner's horizon; the upper bound is checked by :func:`run_mpc`).
        warm_start: initialise each replan with the previous plan shifted by the ``k`` executed actions,
            its last ``k`` rows filled with the plan's last action (:func:`shift_actions`). Repeating the
            last action rather than padding with zeros keeps a plan that is still under way (e.g. a
            force that is still pushing) continuous; the planner revises the tail anyway. False: every
            plan starts from the planner's own initialisation (zeros).
        warm_start_states: (needs ``warm_start``) a planner whose ``plan`` takes an ``init_states``
            argument and returns ``states`` whose row T is the goal (GRASP) also starts from the previous
            plan's virtual states shifted by the executed steps, the rows past the old horizon at the
            goal (:func:`shift_states`): the lifted chain that the last plan optimised, rather than a
            fresh straight line from the current state to the goal. Other planners are unaffected.
            Off by default: on the real tasks it did not help consistently (closed loop, 50 pairs each,
            with vs without: Push-T H=25 2 vs 4 %, PointMaze H=50 UMaze 0 vs 4 %, Medium 0 vs 0 %,
            Large 14 vs 8 %; ``bench/results/planning_quality_*_mpc_states.md``).
        stop_on_success: an episode that met the environment's success criterion stops stepping: its
            simulator is frozen (``SimBatch.step(active=...)``) and its executed states repeat.
    """

    max_steps: int
    replan_every: int = 1
    warm_start: bool = True
    warm_start_states: bool = False
    stop_on_success: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError``/``TypeError`` naming the first field that is out of range."""
        _check_int("max_steps", self.max_steps, minimum=1)
        _check_int("replan_every", self.replan_every, minimum=1)
        for name in ("warm_start", "warm_start_states", "stop_on_success"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {type(getattr(self, name)).__name__}")
        if self.warm_start_states and not self.warm_start:
            raise ValueError("warm_start_states=True needs warm_start=True (the states are warm-started with the actions)")


@dataclasses.dataclass
class MPCResult:
    """The outcome of :func:`run_mpc` for ``B`` episodes (numpy arrays on the host).

    Attributes:
        success: ``[B]`` bool, the environment's own success criterion (sticky: met at any simulator
            step since the reset), or ``run_mpc``'s ``success_rule`` met after the reset or any model step.
        steps: ``[B]`` int, model steps taken until the first success (0: the start already met it);
            ``max_steps`` for an episode that never succeeded.
        executed: ``[B, max_steps+1, D]`` float32 states the simulators actually visited; row 0 is the
            start as read back after the reset. Rows after an episode stopped (success with
            ``stop_on_success``, or all episodes done) repeat its last state.
        actions: ``[B, max_steps, A]`` float32 actions sent to the simulators; NaN where an episode did
            not step (frozen or after the loop ended).
        final_distance: ``[B]`` Euclidean distance of the last executed state to the goal over the FULL
            planning state (PointMaze: position and velocity; Push-T: every component). It is not the
            environment's success criterion, which looks at env-specific components only (use
            ``success`` for that).
        first_plan: the initial plan (for plots); made even when every start already met the success
            criterion and nothing was executed.
        plans: number of batched ``planner.plan`` calls (including that one).
        planning_time: seconds spent in ``planner.plan`` (summed; a CUDA device is synchronised
            before the clock stops).
        wall_time: seconds of the whole run (reset, planning, simulation).
    """

    success: np.ndarray
    steps: np.ndarray
    executed: np.ndarray
    actions: np.ndarray
    final_distance: np.ndarray
    first_plan: PlanResult
    plans: int
    planning_time: float
    wall_time: float


def shift_actions(actions: torch.Tensor, shift: int) -> torch.Tensor:
    """The warm start after executing ``shift`` actions: ``actions [B, T, A]`` moved ``shift`` rows
    earlier, the freed last ``shift`` rows filled with the last action ``actions[:, T-1]``.

    Args:
        actions: ``[B, T, A]`` the previous plan.
        shift: ``0 <= shift <= T``.

    Returns:
        A new ``[B, T, A]`` tensor (the input is not modified).
    """
    if not isinstance(actions, torch.Tensor) or actions.dim() != 3:
        raise ValueError(f"actions must be a [B, T, A] tensor, got {getattr(actions, 'shape', type(actions).__name__)}")
    return _shift_rows(actions, shift, horizon=actions.shape[1])


def _shift_rows(tensor: torch.Tensor, shift: int, horizon: int) -> torch.Tensor:
    """``tensor [B, N, ...]`` moved ``shift <= horizon`` rows earlier along dim 1, its last row repeated
    into the freed rows (a new tensor)."""
    _check_int("shift", shift, minimum=0)
    if shift > horizon:
        raise ValueError(f"shift must be <= the horizon ({horizon}), got {shift}")
    tail = tensor[:, -1:].expand(-1, shift, *tensor.shape[2:])
    return torch.cat([tensor[:, shift:], tail], dim=1)  # cat always allocates


def run_mpc(
    planner: Planner,
    sims: "SimBatch",
    starts: np.ndarray,
    goals: np.ndarray,
    config: MPCConfig,
    progress: bool = False,
    device: Optional[Union[str, torch.device]] = None,
    plan_offset: int = 0,
    observation: Optional[Observation] = None,
    success_rule: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None,
) -> MPCResult:
    """Run ``B`` receding-horizon MPC episodes in lock step.

    Args:
        planner: a planner with ``plan(s0, goal, init_actions)`` and ``config.horizon`` (GRASP, GD, CEM,
            MPPI). History-window planners (``config.history > 1``) are not supported.
        sims: ``B`` simulators (:class:`grasp_kernels.envs.sim.SimBatch`).
        starts: ``[B, D]`` start planning states.
        goals: ``[B, D]`` goal planning states.
        config: :class:`MPCConfig`.
        progress: show a progress bar over the replans.
        device: where the planner runs (states and goals are handed to it as float32 tensors there);
            None: the device of the world model's first parameter, else the CPU.
        plan_offset: the global index of episode 0 (>= 0), passed to every ``planner.plan`` so that
            episode ``i`` plans with the randomness of episode ``plan_offset + i`` of a bigger batch (a
            rank's slice of the episodes; :mod:`grasp_kernels.distributed`). 0 is not passed on, so
            planners without the argument still work.
        observation: what the planner plans over (:class:`Observation`), e.g. latents of rendered frames;
            None: the simulator's planning states themselves. Execution, success and ``executed`` stay in
            the simulator's states.
        success_rule: ``(states [B, D], goals [B, D]) -> [B]`` bool, the episodes' success test on the states
            read back after the reset and after every model step (e.g.
            :func:`grasp_kernels.envs.tasks.dino_wm_reached`); an episode succeeds at its first step that meets it
            (sticky). None: the simulators' own criterion (``sims.success()``).

    Returns:
        :class:`MPCResult`.
    """
    wall_start = time.perf_counter()
    if not isinstance(config, MPCConfig):
        raise TypeError(f"config must be an MPCConfig, got {type(config).__name__}")
    config.validate()
    plan_offset = _check_int("plan_offset", plan_offset, minimum=0)
    horizon = _planner_horizon(planner)
    if config.replan_every > horizon:
        raise ValueError(f"replan_every must be <= the planner's horizon ({horizon}), got {config.replan_every}")
    batch, state_dim, action_dim = len(sims), int(sims.state_dim), int(sims.action_dim)
    planner_action_dim = getattr(planner, "action_dim", action_dim)
    if planner_action_dim != action_dim:
        raise ValueError(f"planner.action_dim ({planner_action_dim}) differs from the simulators' ({action_dim})")
    model_state_dim = getattr(getattr(planner, "world_model", None), "state_dim", state_dim)
    if observation is None and model_state_dim != state_dim:  # e.g. a planner built on another environment's world model
        raise ValueError(
            f"planner.world_model.state_dim ({model_state_dim}) differs from the simulators' state_dim ({state_dim}, "
            f"env {getattr(sims, 'name', '?')!r}): load the world model of that environment"
        )
    starts = _check_states("starts", starts, batch, state_dim)
    goals = _check_states("goals", goals, batch, state_dim)
    device = _planner_device(planner) if device is None else check_device("device", device)

    max_steps, every = config.max_steps, config.replan_every
    executed = np.empty((batch, max_steps + 1, state_dim), dtype=np.float32)
    executed_actions = np.full((batch, max_steps, action_dim), np.nan, dtype=np.float32)
    current = np.asarray(sims.reset_to(starts, goals), dtype=np.float32)
    executed[:, 0] = current

    def succeeded() -> np.ndarray:
        """``[B]`` bool: the episodes that meet the success test now (the simulators' own: sticky already)."""
        if success_rule is None:
            return np.asarray(sims.success(), dtype=bool).copy()
        return np.asarray(success_rule(current, goals), dtype=bool).reshape(batch).copy()

    done = succeeded()
    steps = np.where(done, 0, max_steps).astype(np.int64)
    if observation is None:
        goal_tensor = torch.as_tensor(goals, dtype=torch.float32, device=device)
    else:
        window = _check_int("observation.window", getattr(observation, "window", None), minimum=1)
        goal_tensor = torch.as_tensor(observation.goal(goals.astype(np.float32)), dtype=torch.float32, device=device)

    def planning_states() -> np.ndarray | torch.Tensor:
        """What the planner plans from at model step ``t``: the current states, or their observation."""
        if observation is None:
            return current
        rows = np.clip(np.arange(t - window + 1, t + 1), 0, None)
        return observation(executed[:, rows])

    first_plan: Optional[PlanResult] = None
    warm: Optional[torch.Tensor] = None
    warm_states: Optional[torch.Tensor] = None
    takes_states = config.warm_start and config.warm_start_states and _takes_init_states(planner)
    plans, planning_time, t = 0, 0.0, 0
    bar = tqdm(total=math.ceil(max_steps / every), desc="MPC", disable=not progress, leave=False)
    try:
        while t < max_steps and not (config.stop_on_success and done.all()):
            result, seconds = _timed_plan(
                planner, planning_states(), goal_tensor, warm, device, (batch, horizon, action_dim), warm_states,
                plan_offset,
            )
            planning_time += seconds
            plans += 1
            planned = result.actions
            if first_plan is None:
                first_plan = result
            planned_host = planned.detach().to("cpu", torch.float32).numpy()
            executed_now = 0
            for j in range(min(every, max_steps - t)):
                active = ~done if config.stop_on_success else np.ones(batch, dtype=bool)
                if not active.any():
                    break
                current = np.asarray(sims.step(planned_host[:, j], active=active), dtype=np.float32)
                t += 1
                executed_now += 1
                # frozen episodes repeat their previous row exactly, whatever the simulator reads back
                current[~active] = executed[~active, t - 1]
                executed[:, t] = current
                executed_actions[active, t - 1] = planned_host[active, j]
                newly = succeeded() & ~done
                steps[newly] = t
                done |= newly
            if config.warm_start:
                warm = shift_actions(planned.detach(), executed_now)
            if takes_states:
                if not isinstance(result.states, torch.Tensor):
                    raise TypeError("warm_start_states: the planner's result has no states tensor to warm-start from")
                warm_states = shift_states(result.states.detach(), executed_now)
            bar.update(1)
            bar.set_postfix(step=t, success=int(done.sum()))
    finally:
        bar.close()
    executed[:, t + 1 :] = executed[:, t : t + 1]
    if first_plan is None:
        # every start already met the criterion (the loop never ran): plan once anyway so that
        # first_plan is always a plan of the whole batch
        first_plan, seconds = _timed_plan(
            planner, planning_states(), goal_tensor, None, device, (batch, horizon, action_dim), plan_offset=plan_offset
        )
        planning_time += seconds
        plans += 1
    final_distance = np.linalg.norm(executed[:, -1].astype(np.float64) - goals, axis=1)
    return MPCResult(
        success=succeeded() if success_rule is None else done,
        steps=steps,
        executed=executed,
        actions=executed_actions,
        final_distance=final_distance,
        first_plan=first_plan,
        plans=plans,
        planning_time=planning_time,
        wall_time=time.perf_counter() - wall_start,
    )


def _timed_plan(
    planner: Planner,
    states: Union[np.ndarray, torch.Tensor],
    goals: torch.Tensor,
    init_actions: Optional[torch.Tensor],
    device: torch.device,
    action_shape: tuple[int, int, int],
    init_states: Optional[torch.Tensor] = None,
    plan_offset: int = 0,
) -> tuple[PlanResult, float]:
    """One batched plan from host ``states [B, D]`` to ``goals [B, D]`` (float32 on ``device``), its
    seconds (a CUDA device synchronised first, so that queued kernels count) and a check of its actions."""
    s0 = torch.as_tensor(states, dtype=torch.float32, device=device)
    extra = {} if init_states is None else {"init_states": init_states}
    if plan_offset:
        extra["plan_offset"] = plan_offset
    start = time.perf_counter()
    result = planner.plan(s0, goals, init_actions=init_actions, **extra)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    shape = tuple(result.actions.shape)
    if shape != action_shape:
        raise ValueError(f"the planner returned actions of shape {shape}, expected [B, T, A] = {action_shape}")
    return result, seconds


def shift_states(states: torch.Tensor, shift: int) -> torch.Tensor:
    """The warm start of a plan's states after executing ``shift`` steps: ``states [B, T+1, *S]`` moved
    ``shift`` rows earlier, the freed last rows filled with the goal row ``states[:, T]``. Row 0 is
    the previous plan's prediction of the current state (the planner replaces it with the observed one).

    Args:
        states: ``[B, T+1, *S]`` (row T = the goal).
        shift: ``0 <= shift <= T``.
    """
    if not isinstance(states, torch.Tensor) or states.dim() < 3 or states.shape[1] < 2:
        raise ValueError(f"states must be a [B, T+1, *S] tensor, got {getattr(states, 'shape', type(states).__name__)}")
    return _shift_rows(states, shift, horizon=states.shape[1] - 1)


def _takes_init_states(planner: object) -> bool:
    try:
        return "init_states" in inspect.signature(planner.plan).parameters
    except (TypeError, ValueError):
        return False


def _planner_horizon(planner: object) -> int:
    if not callable(getattr(planner, "plan", None)):
        raise TypeError(f"planner must have a plan(s0, goal, init_actions) method, got {type(planner).__name__}")
    cfg = getattr(planner, "config", None)
    horizon = getattr(cfg, "horizon", None)
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise TypeError(f"planner.config.horizon must be an int >= 1, got {horizon!r}")
    history = getattr(cfg, "history", 1)
    if history != 1:
        raise ValueError(
            f"run_mpc plans from single states; planner.config.history must be 1, got {history} "
            "(history-window world models are not supported here)"
        )
    return horizon


def _planner_device(planner: object) -> torch.device:
    """The device of the world model's first parameter or buffer (CPU for a parameterless model)."""
    model = getattr(planner, "world_model", None)
    if isinstance(model, torch.nn.Module):
        for tensor in (*model.parameters(), *model.buffers()):
            return tensor.device
    return torch.device("cpu")


def _check_states(name: str, value: object, batch: int, state_dim: int) -> np.ndarray:
    """``value`` as a float64 ``[B, D]`` array (tensors are moved to the host)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a numeric [B, D] array, got {type(value).__name__}") from None
    if array.shape != (batch, state_dim):
        raise ValueError(f"{name} must have shape (B, D) = {(batch, state_dim)}, got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN/Inf")
    return array
