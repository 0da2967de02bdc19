"""Planning quality on the real tasks: the planners and their sweeps, the open-loop (in the model) and
closed-loop (MPC in the simulator) protocols, and the statistics the tables report.

Shared by ``bench/planning_quality.py`` and the demo. Every planner plans all pairs of a set in one
batched call, with the same world model, the same pairs and the same cost (squared distance of the final
state to the goal state); wall time is per batch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable

import numpy as np
import torch

from .baselines import ABLATIONS, CEMConfig, CEMPlanner, GDConfig, GDPlanner, MPPIConfig, MPPIPlanner, ablation_config
from .config import GraspConfig
from .envs.tasks import PairSet, goal_error, reached
from .planner import GraspPlanner
from .presets import GRASP_SWEEP, grasp_base_fields, scaled_iters, scaled_work
from .result import PlanResult
from .distributed import gather_shards, max_over_ranks, plan_across_ranks, shard_range, world
from .envs.sim import SimBatch
from .mpc import MPCConfig, run_mpc

PlannerFactory = Callable[[int], object]
"""``iters_scale -> planner``: a planner of one setting, its iteration count scaled by ``iters_scale``."""

FAMILIES = ("GRASP", "GD", "CEM", "MPPI")


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion, in percent."""
    if trials == 0:
        return 0.0, 100.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


@dataclasses.dataclass
class Score:
    """Success and cost of one planner setting on one pair set."""

    successes: int
    trials: int
    median_error: float
    wall_time: float
    iters: int

    @property
    def rate(self) -> float:
        return 100.0 * self.successes / self.trials

    def cell(self) -> str:
        """``"42% (21/50; 29-56)"``: success with its 95% Wilson interval."""
        low, high = wilson_interval(self.successes, self.trials)
        return f"{self.rate:.0f}% ({self.successes}/{self.trials}; {low:.0f}-{high:.0f})"

    def key(self) -> tuple[int, float]:
        """Sort key of the sweep: most successes, then smallest median error."""
        return (-self.successes, self.median_error)


def grasp_base(horizon: int, seed: int = 0, backend: str = "auto") -> GraspConfig:
    """GRASP on the real tasks (:func:`grasp_kernels.presets.grasp_base_fields`)."""
    return GraspConfig(**grasp_base_fields(horizon, seed, backend))


GD_SWEEP = {f"lr {lr}": {"lr": lr} for lr in (0.02, 0.1)}
CEM_SWEEP = {f"var {v}": {"var_scale": v} for v in (0.5, 1.0)}
MPPI_SWEEP = {f"std {s}, temp {t}": {"noise_std": s, "temperature": t} for s, t in ((0.5, 0.05), (0.3, 0.01))}


def grasp_factory(model, action_dim: int, config: GraspConfig) -> PlannerFactory:
    """A GRASP setting whose work scales (:func:`grasp_kernels.presets.scaled_work`: the lifted iterations,
    the rollout steps of each sync phase and the CEM start's iterations, the number of phases kept), so that
    a scaled GRASP costs ``scale`` times as much (as the other families' scaled iteration counts do)."""

    def build(scale: float = 1.0) -> GraspPlanner:
        return GraspPlanner(model, action_dim, GraspConfig(**scaled_work(dataclasses.asdict(config), scale)))

    return build


def planner_settings(
    model, action_dim: int, horizon: int, quick: bool = False, seed: int = 0, backend: str = "auto",
    samples: int = 100, base: GraspConfig | None = None, grasp_sweep: dict[str, dict[str, object]] | None = None,
) -> dict[str, dict[str, PlannerFactory]]:
    """Per family, the settings the sweep tries. CEM and MPPI use ``samples`` samples per iteration
    (DINO-WM uses 300: a third of the budget keeps the CPU sweep affordable; the equal-time table
    gives them more iterations where they are faster).

    ``base``: GRASP's configuration that ``grasp_sweep``'s changes apply to (default
    :func:`grasp_base` of ``horizon``, ``seed``, ``backend``; e.g. :func:`grasp_kernels.pixel_tasks.pixel_grasp_config`
    for a pixel model's latent); ``grasp_sweep``: GRASP's settings, name -> config changes (default
    :data:`GRASP_SWEEP`; :data:`PIXEL_GRASP_SWEEP` in a latent). ``quick`` shrinks ``base``'s budget too."""
    if base is None:
        base = grasp_base(horizon, seed, backend)
    elif not isinstance(base, GraspConfig):
        raise TypeError(f"base must be a GraspConfig, got {type(base).__name__}")
    elif base.horizon != horizon:
        raise ValueError(f"base.horizon ({base.horizon}) differs from horizon ({horizon})")
    grasp_sweep = GRASP_SWEEP if grasp_sweep is None else grasp_sweep
    gd_iters, sample_iters = 300, 30
    if quick:
        base = base.replace(iters=8, sync_every=4, sync_steps=2)
        gd_iters, sample_iters, samples = 8, 3, 16
    bounds = dict(action_low=-1.0, action_high=1.0)

    def gd(changes):
        return lambda scale=1.0: GDPlanner(model, action_dim, GDConfig(horizon=horizon, iters=scaled_iters(gd_iters, scale), **bounds, **changes))

    def cem(changes):
        return lambda scale=1.0: CEMPlanner(model, action_dim, CEMConfig(
            horizon=horizon, samples=samples, topk=max(2, samples // 10), iters=scaled_iters(sample_iters, scale), seed=seed,
            **bounds, **changes))

    def mppi(changes):
        return lambda scale=1.0: MPPIPlanner(model, action_dim, MPPIConfig(
            horizon=horizon, samples=samples, iters=scaled_iters(sample_iters, scale), seed=seed, **bounds, **changes))

    if quick:  # the smoke run's budget holds for every setting (one that sets its own iterations too)
        grasp_sweep = {name: {k: v for k, v in ch.items() if k not in ("iters", "sync_every", "sync_steps")}
                       for name, ch in grasp_sweep.items()}
    return {
        "GRASP": {name: grasp_factory(model, action_dim, base.replace(**ch)) for name, ch in grasp_sweep.items()},
        "GD": {name: gd(ch) for name, ch in GD_SWEEP.items()},
        "CEM": {name: cem(ch) for name, ch in CEM_SWEEP.items()},
        "MPPI": {name: mppi(ch) for name, ch in MPPI_SWEEP.items()},
    }


def ablation_factories(model, action_dim: int, grasp_setting: PlannerFactory) -> dict[str, PlannerFactory]:
    """GRASP with one chain per problem at a chosen setting, and its ablations (no noise, no
    stop-gradient, no sync): one chain each, so that the ablations isolate the algorithm's parts."""
    config = grasp_setting(1.0).config.replace(particles=1)
    return {
        "GRASP 1 chain" if name == "grasp" else f"GRASP {name}": grasp_factory(model, action_dim, ablation_config(config, name))
        for name in ABLATIONS
    }


def planner_iters(planner) -> int:
    return int(planner.config.iters)


def open_loop(
    env_name: str, planner, pairs: PairSet, device: str = "cpu", across_ranks: bool = False
) -> tuple[Score, PlanResult]:
    """The paper's protocol: plan from each start to its goal, roll the actions out through the world
    model, success = the final state meets the pairs' success rule (:func:`grasp_kernels.envs.tasks.reached`
    with ``pairs.protocol``).

    ``across_ranks``: every rank of the default process group plans its contiguous slice of the pairs
    (:func:`grasp_kernels.distributed.plan_across_ranks`, each pair with the randomness it gets in one
    process) and every rank gets the whole result and the same Score, its wall time the slowest
    rank's; without a process group, the plain single-process call.
    """
    s0 = torch.as_tensor(pairs.starts, device=device)
    goal = torch.as_tensor(pairs.goals, device=device)
    start = time.perf_counter()
    if across_ranks:
        result = plan_across_ranks(planner, s0, goal)
    else:
        result = planner.plan(s0, goal)
    if s0.device.type == "cuda":  # queued kernels count, as in the closed loop's timing
        torch.cuda.synchronize(s0.device)
    wall = time.perf_counter() - start
    if across_ranks:  # one value on every rank: the equal-time table scales iterations by it
        wall = max_over_ranks(wall)
    final = result.rollout[:, -1].detach().cpu().numpy()
    ok = reached(env_name, final, pairs.goals, pairs.protocol)
    errors = goal_error(env_name, final, pairs.goals)
    return Score(int(ok.sum()), len(pairs), float(np.median(errors)), wall, planner_iters(planner)), result


def closed_loop(
    env_name: str, planner, pairs: PairSet, max_steps: int, replan_every: int, device: str = "cpu",
    progress: bool = False, warm_start_states: bool = False, across_ranks: bool = False, observation=None,
) -> tuple[Score, object]:
    """MPC in the simulator (:func:`grasp_kernels.mpc.run_mpc`), success by the environment's own
    criterion (``pairs.protocol`` ``"region"``) or by the pairs' protocol's rule met at any model step
    (``"dino-wm"``: DINO-WM's eval_state, :func:`grasp_kernels.envs.tasks.reached`); the error column is the task
    distance of the last executed state.
    ``warm_start_states``: :attr:`grasp_kernels.mpc.MPCConfig.warm_start_states`.
    ``observation``: what the planner plans over (:class:`grasp_kernels.mpc.Observation`, e.g. encoded
    frames: :class:`grasp_kernels.pixel_tasks.PixelObservation`); None: the simulator's states.

    ``across_ranks``: every rank of the default process group runs the episodes of its contiguous
    slice of the pairs in its own simulators (``plan_offset`` = the slice's start, so each episode
    plans with the randomness it gets in one process); the successes and errors are gathered, so
    every rank gets the Score of all pairs (wall time: the slowest rank's) and the :class:`MPCResult`
    of its own slice (None for an empty slice). Without a process group, the single-process run.
    """
    config = MPCConfig(replan_every=replan_every, max_steps=max_steps, warm_start_states=warm_start_states)
    return _simulate(env_name, planner, pairs, config, device, progress, across_ranks, observation, final_only=False)


def executed_open_loop(
    env_name: str, planner, pairs: PairSet, device: str = "cpu", progress: bool = False, across_ranks: bool = False,
    observation=None,
) -> tuple[Score, object]:
    """DINO-WM's open-loop protocol in the simulator: plan once from each start (over ``observation``'s
    planning states if given, e.g. encoded frames), execute all ``H`` planned actions, success = the final
    executed state meets the pairs' success rule (:func:`grasp_kernels.envs.tasks.reached`). Wall time: the
    planning alone. ``across_ranks`` as in :func:`closed_loop`."""
    horizon = planner.config.horizon
    config = MPCConfig(replan_every=horizon, max_steps=horizon, warm_start=False, stop_on_success=False)
    return _simulate(env_name, planner, pairs, config, device, progress, across_ranks, observation, final_only=True)


def _simulate(env_name, planner, pairs, config, device, progress, across_ranks, observation, final_only):
    """Run ``config``'s episodes of every pair in simulators; success: sticky by the environment's criterion,
    or (``final_only``) :func:`reached` at the last executed state."""
    start, stop = 0, len(pairs)
    if across_ranks:
        start, stop = shard_range(len(pairs), *world())
    result, wall = None, 0.0
    success, errors = np.zeros(0, dtype=bool), np.zeros(0, dtype=np.float64)
    if stop > start:  # a rank with no pairs (fewer pairs than ranks) only joins the exchanges below
        sims = SimBatch(env_name, stop - start, action_repeat=pairs.action_repeat)
        try:
            # the region protocol's closed loop judges by the environment's own criterion, DINO-WM's by its rule
            rule = None if pairs.protocol == "region" else functools.partial(reached, env_name, protocol=pairs.protocol)
            result = run_mpc(
                planner, sims, pairs.starts[start:stop], pairs.goals[start:stop], config,
                progress=progress, device=device, plan_offset=start, observation=observation,
                success_rule=None if final_only else rule,
            )
        finally:
            sims.close()
        final = result.executed[:, -1]
        goals = pairs.goals[start:stop]
        success = reached(env_name, final, goals, pairs.protocol) if final_only else np.asarray(result.success, dtype=bool)
        errors = np.asarray(goal_error(env_name, final, goals), dtype=np.float64)
        wall = result.planning_time if final_only else result.wall_time
    if across_ranks:
        success = gather_shards(torch.from_numpy(success), len(pairs)).numpy()
        errors = gather_shards(torch.from_numpy(errors), len(pairs)).numpy()
        wall = max_over_ranks(wall)
    score = Score(int(np.sum(success)), len(pairs), float(np.median(errors)), wall, planner_iters(planner))
    return score, result


def pick_best(scores: dict[str, Score]) -> str:
    """The setting with the most successes, ties broken by the smaller median error."""
    return min(scores, key=lambda name: scores[name].key())
