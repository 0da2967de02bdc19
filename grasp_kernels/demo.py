"""The demos behind ``python -m grasp_kernels demo``: the main job plans PointMaze through the shipped world
model with GRASP and CEM and executes the plans by MPC in the simulator (:func:`run_maze_demo`); ``--task
detour|open`` plans the synthetic navigation task with GRASP and the baselines (:func:`run_demo`); ``--pixels``
plans PointMaze or Push-T from frames through a pixel world model (:func:`run_pixel_demo`)."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from .baselines import CEMConfig, CEMPlanner, GDConfig, GDPlanner, MPPIConfig, MPPIPlanner
from .config import GraspConfig
from .envs import NavigationTask, make_task
from .planner import GraspPlanner
from .result import PlanResult
from .envs.sim import make_env
from .envs.tasks import goal_error, make_pairs, reached
from .models.zoo import load_world_model
from .pixel_tasks import PixelObservation, pixel_grasp_config, pixel_pairs
from .plotting import PixelPlanRows, plot_maze, plot_navigation, plot_pixel_plans
from . import presets
from .quality import closed_loop, executed_open_loop, grasp_factory, planner_settings
from .models.pixel_zoo import default_path, load_pixel_model


class Planner(Protocol):
    def plan(self, s0: torch.Tensor, goal: torch.Tensor, init_actions: Optional[torch.Tensor] = None, progress: bool = False) -> PlanResult: ...


@dataclasses.dataclass
class PlannerRow:
    """One line of the demo table."""

    planner: str
    successes: int
    problems: int
    median_distance: float
    wall_time: float

    @property
    def success_rate(self) -> float:
        return 100.0 * self.successes / self.problems


def grasp_config(horizon: int, seed: int = 0, backend: str = "auto", particles: int = 1) -> GraspConfig:
    """GRASP settings for the navigation tasks (state scale ~1, step <= 0.14 per model step).

    The authors' lr_states 0.1 is sized for latent features; here a virtual state moves about 0.1 per
    model step, so an Adam step of 0.1 overshoots and the chain of virtual states oscillates. Large
    noise, annealed to zero within each sync phase, is what lets chains leave the wall's local minimum
    (bench/detour_quality.py sweeps the alternatives).
    """
    return GraspConfig(
        horizon=horizon,
        iters=300,
        lr_states=0.01,
        lr_actions=0.03,
        state_noise=0.1,
        init_noise=0.1,
        anneal_noise=True,
        goal_weight=0.1,
        sync_every=25,
        sync_steps=10,
        sync_lr=0.05,
        seed=seed,
        backend=backend,
        particles=particles,
    )


def demo_planners(task: NavigationTask, horizon: int, seed: int = 0, backend: str = "auto", particles: int = 16) -> dict[str, Planner]:
    """The planners compared by the demo, each batched over problems."""
    model, action_dim = task.world_model, task.world_model.action_dim
    bounds = dict(action_low=task.action_low, action_high=task.action_high)
    return {
        "GRASP": GraspPlanner(model, action_dim, grasp_config(horizon, seed, backend)),
        f"GRASP x{particles}": GraspPlanner(model, action_dim, grasp_config(horizon, seed, backend, particles)),
        "GD": GDPlanner(model, action_dim, GDConfig(horizon=horizon, iters=200, lr=0.05, **bounds)),
        "CEM": CEMPlanner(model, action_dim, CEMConfig(horizon=horizon, seed=seed, **bounds)),
        "MPPI": MPPIPlanner(model, action_dim, MPPIConfig(horizon=horizon, seed=seed, **bounds)),
    }


def run_planners(
    task: NavigationTask,
    planners: dict[str, Planner],
    s0: torch.Tensor,
    goal: torch.Tensor,
    progress: bool = True,
) -> tuple[list[PlannerRow], dict[str, PlanResult]]:
    """Run every planner on the same problems; success = rollout ends within the task's radius."""
    rows, results = [], {}
    bar = tqdm(planners.items(), desc="planners", disable=not progress)
    for name, planner in bar:
        bar.set_postfix_str(name)
        result = planner.plan(s0, goal, progress=progress)
        successes = int(result.success(task.success_radius).sum())
        rows.append(PlannerRow(name, successes, s0.shape[0], float(result.final_distance.median()), result.wall_time))
        results[name] = result
    return rows, results


def format_table(rows: list[PlannerRow], title: str = "") -> str:
    """A markdown table of the rows."""
    lines = [title] if title else []
    lines += [
        "| planner | success | median final distance | wall time (s) |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.planner} | {row.success_rate:.0f}% ({row.successes}/{row.problems}) "
            f"| {row.median_distance:.3f} | {row.wall_time:.2f} |"
        )
    return "\n".join(lines)


def run_demo(
    task_name: str = "detour",
    horizon: int = 60,
    problems: int = 16,
    seed: int = 0,
    device: str = "cpu",
    backend: str = "auto",
    particles: int = 16,
    out: Optional[Path] = Path("out/demo.png"),
    progress: bool = True,
) -> tuple[str, dict[str, PlanResult]]:
    """Plan ``problems`` start/goal pairs of ``task_name`` with every planner; returns the table and
    the results, and writes the picture to ``out`` (None: no picture)."""
    task = make_task(task_name)
    task.world_model.to(device)
    s0, goal = task.sample(problems, seed=seed, device=torch.device(device))
    planners = demo_planners(task, horizon, seed, backend, particles)
    rows, results = run_planners(task, planners, s0, goal, progress)
    device_name = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "CPU"
    title = (
        f"Task {task.name!r}, horizon {horizon}, {problems} start/goal pairs (seed {seed}), success = final distance "
        f"< {task.success_radius}, device {device_name}, torch {torch.__version__}"
    )
    table = format_table(rows, title)
    if out is not None:
        plot_navigation(task, results, goal, Path(out))
    return table, results


@dataclasses.dataclass
class MazeRow:
    """One line of the PointMaze demo table."""

    planner: str
    planned: int
    executed: int
    problems: int
    median_distance: float
    planning_time: float
    plan_time: float

    def format(self) -> str:
        return (
            f"| {self.planner} | {100 * self.planned / self.problems:.0f}% ({self.planned}/{self.problems}) "
            f"| {100 * self.executed / self.problems:.0f}% ({self.executed}/{self.problems}) "
            f"| {self.median_distance:.2f} | {self.plan_time:.2f} | {self.planning_time:.1f} |"
        )


def run_maze_demo(
    env_name: str = "pointmaze-medium",
    horizon: int = 25,
    problems: int = 8,
    seed: int = 0,
    replan_every: int = 10,
    device: str = "cpu",
    backend: str = "auto",
    out: Optional[Path] = Path("out/demo.png"),
    progress: bool = True,
    replan_iters_scale: float = 0.5,
) -> tuple[str, dict]:
    """The main job: plan across a PointMaze layout with GRASP and CEM through the shipped world model,
    execute by MPC in the MuJoCo simulator, return the table (and the MPC results per planner), and draw
    the maze with the virtual states, the planned rollout and the executed path to ``out``.

    Start/goal pairs are far apart (:data:`grasp_kernels.envs.tasks.MIN_CELLS` cells along the maze's
    shortest path). "planned" = the first plan's rollout through the model ends within 0.45 of the goal;
    "executed" = the simulator's own success (within 0.45 at some step) within ``2 * horizon`` steps.
    At equal time: CEM runs DINO-WM's setting (``planner_settings``' ``var 1.0``, 30 iterations), GRASP the
    anytime profile's setting at CEM's own time (:func:`grasp_at_budget`).
    The first plan runs each planner's full iterations; the MPC's replans, warm-started from the shifted
    previous plan, run ``replan_iters_scale`` of them (both families alike; the quality benchmark's closed
    loop uses 0.25), which keeps the demo within about three minutes on two CPU cores.
    """
    started = time.perf_counter()
    model = load_world_model(env_name, device=device)
    pairs = make_pairs(env_name, problems, seed)
    grasp, how = grasp_at_budget(env_name, horizon, 1.0, "states", seed, backend)
    planners = {  # name -> iteration scale -> planner
        "GRASP": grasp_factory(model, model.action_dim, grasp),
        "CEM": planner_settings(model, model.action_dim, horizon, seed=seed, backend=backend)["CEM"][CEM_SETTING],
    }
    s0 = torch.as_tensor(pairs.starts, dtype=torch.float32, device=device)
    goals = torch.as_tensor(pairs.goals, dtype=torch.float32, device=device)
    rows, results, first_plans = [], {}, {}
    bar = tqdm(planners.items(), desc="planners", disable=not progress)
    for name, build in bar:
        bar.set_postfix_str(name)
        first = build(1.0).plan(s0, goals)
        planned = reached(env_name, first.rollout[:, -1].detach().cpu().numpy(), pairs.goals)
        score, result = closed_loop(env_name, build(replan_iters_scale), pairs, max_steps=2 * horizon,
                                    replan_every=replan_every, device=device, progress=progress)
        rows.append(MazeRow(name, int(planned.sum()), score.successes, problems, score.median_error,
                            first.wall_time + result.planning_time, first.wall_time))
        results[name], first_plans[name] = result, first
    device_name = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "CPU"
    lines = [
        f"{env_name}, horizon {horizon}, {problems} start/goal pairs across the maze (seed {seed}), shipped MLPDynamics "
        f"world model, MPC replanning every {replan_every} steps ({replan_iters_scale:g} x the iterations, warm-started) "
        f"for at most {2 * horizon} steps; CEM {CEM_SETTING} (DINO-WM's), GRASP {how} at CEM's own time; "
        f"device {device_name}, torch {torch.__version__}",
        "| planner | first plan reaches goal in the model | MPC reaches goal in the simulator "
        "| median final distance (maze units; success: 0.45) | first plan (s) | all planning (s) |",
        "|---|---|---|---|---|---|",
    ] + [row.format() for row in rows]
    if out is not None:
        env = make_env(env_name)
        try:
            plot_maze(env, first_plans, {n: r.executed for n, r in results.items()},
                      pairs.goals, Path(out), success={n: r.success for n, r in results.items()})
        finally:
            env.close()
    lines += [
        "",
        "What this shows: the state here is low-dimensional (x, y, vx, vy), where sampling planners such as CEM",
        "are strong, so CEM reaching more goals than GRASP is expected; GRASP's case is high-dimensional latent",
        "states (DINO-WM-style models), where sampling scales badly. Success vs horizon for GRASP, GD, CEM and",
        "MPPI on every shipped task: bench/results/README.md.",
        f"The demo ran in {time.perf_counter() - started:.0f} s.",
    ]
    return "\n".join(lines), results


PIXEL_HORIZON = 25  # Push-T's pairs are 25-step pushes; PointMaze-Medium at 25 is where GRASP leads from pixels
PIXEL_PARTICLES = 8  # GRASP's chains where a task has no anytime profile
# planner_settings' CEM setting the demos run: DINO-WM's own variance scale and 30 iterations, CEM's own time
# (the unit of the budgets)
CEM_SETTING = "var 1.0"
PIXEL_BUDGETS = (0.5, 1.0, 2.0)  # multiples of CEM's own time: the demo's success-vs-time table
PIXEL_PLAN_FRAMES = 6


def pixel_horizon(env_name: str) -> int:
    """The pixel demo's default horizon (every task: 25)."""
    return PIXEL_HORIZON


def pixel_weights_path(env_name: str, weights_dir: Optional[Path] = None) -> Path:
    """``<weights_dir>/<env>-pixels.safetensors`` (default: the package's weights folder)."""
    path = default_path(env_name)
    return path if weights_dir is None else Path(weights_dir) / path.name


def grasp_at_budget(env_name: str, horizon: int, budget: float, observation: str = "states", seed: int = 0,
                    backend: str = "auto") -> tuple[GraspConfig, str]:
    """GRASP's setting at ``budget`` (a multiple of CEM's own time) planning from ``observation`` ("states" or
    "pixels"): the committed anytime profile's frontier setting (:meth:`GraspConfig.preset`) at ``horizon``,
    else at the task's nearest profiled horizon; with no profile of the task, from states the quality sweep's
    choice (``budget=None``), from pixels the default pixel setting with ``PIXEL_PARTICLES`` chains, each with
    its work scaled by ``budget``. Returns the config and how it was chosen (for the demo's table).

    Raises:
        ValueError: a budget outside the profile's range (:func:`grasp_kernels.presets.preset_fields`)."""
    profiled = presets.GRASP_FRONTIER.get((env_name, observation), {})
    if profiled:
        nearest = min(profiled, key=lambda h: (abs(h - horizon), h))
        fields = presets.preset_fields(env_name, nearest, budget=budget, observation=observation, seed=seed,
                                       backend=backend)
        where = "" if nearest == horizon else f", H={nearest}'s"
        return GraspConfig(**{**fields, "horizon": horizon}), f"the anytime profile's frontier setting{where}"
    if observation == "pixels":
        base, how = pixel_grasp_config(horizon, seed, backend).replace(particles=PIXEL_PARTICLES), f"x{PIXEL_PARTICLES} chains"
    else:
        base, how = GraspConfig.preset(env_name, horizon, budget=None, seed=seed, backend=backend), "the sweep's choice"
    return GraspConfig(**presets.scaled_work(dataclasses.asdict(base), budget)), f"no anytime profile: {how}, work x budget"


def run_pixel_demo(
    env_name: str = "pointmaze-medium",
    horizon: Optional[int] = None,
    problems: int = 16,
    seed: int = 0,
    weights_dir: Optional[Path] = None,
    mpc: bool = False,
    replan_every: int = 10,
    replan_iters_scale: float = 0.5,
    iters_scale: float = 1.0,
    budgets: Sequence[float] = PIXEL_BUDGETS,
    device: str = "cpu",
    backend: str = "auto",
    out: Optional[Path] = Path("out/pixel_demo.png"),
    progress: bool = True,
) -> tuple[str, dict]:
    """Planning from pixels at equal time: plan ``problems`` start/goal pairs of ``env_name`` (PointMaze or Push-T)
    from the encoded start frame to the encoded goal image through the pixel world model, with GRASP and CEM at
    each of ``budgets`` (multiples of CEM's own time: CEM runs ``planner_settings``' ``var 1.0`` with its
    iterations scaled by the budget, GRASP the committed anytime profile's frontier setting at that budget,
    :func:`grasp_at_budget`), execute every plan open loop in the simulator (all ``horizon`` actions,
    :func:`grasp_kernels.quality.executed_open_loop`) and, with ``mpc``, by MPC too at 1x (``2 * horizon``
    steps, replanning every ``replan_every`` steps from the encoded current frames with ``replan_iters_scale``
    of the work). Success is judged on the simulator's true state.

    Args:
        env_name: ``pointmaze-umaze|medium|large`` or ``pusht``.
        horizon: plan length; default :func:`pixel_horizon`.
        problems: start/goal pairs (:func:`grasp_kernels.pixel_tasks.pixel_pairs` of ``seed``), one batch.
        weights_dir: the folder of ``<env>-pixels.safetensors`` (default: the package's weights).
        iters_scale: every planner's work times this on top of the budget (1: as profiled; tests use less).
        budgets: the table's budgets, each > 0; the picture (and MPC) are of 1x if listed, else the largest.
        out: the PNG (:func:`grasp_kernels.plotting.plot_pixel_plans`); None: no picture.

    Returns:
        The table (markdown, with a title and notes) and the simulator runs: ``results[name]`` the open-loop
        :class:`grasp_kernels.mpc.MPCResult` of each planner at the picture's budget (``"GRASP"``, ``"CEM"``),
        ``results[f"{name} {budget:g}x"]`` at every budget, and with ``mpc`` ``results[f"{name} MPC"]``.

    Raises:
        FileNotFoundError: no weights file (the message names it and the ``train-pixels`` command).
        ValueError: ``iters_scale`` or a budget <= 0.
    """
    started = time.perf_counter()
    if not iters_scale > 0:
        raise ValueError(f"iters_scale must be > 0, got {iters_scale}")
    budgets = sorted(float(b) for b in budgets)
    if not budgets or not all(math.isfinite(b) and b > 0 for b in budgets):
        raise ValueError(f"budgets must be numbers > 0 (multiples of CEM's own time), got {budgets}")
    main_budget = 1.0 if 1.0 in budgets else budgets[-1]
    horizon = pixel_horizon(env_name) if horizon is None else horizon
    weights = pixel_weights_path(env_name, weights_dir)
    # first, so that a missing file fails before the pairs (Push-T's take seconds) are drawn
    model = load_pixel_model(env_name, weights, device=device)
    env_name = model.env_name  # the canonical name
    dynamics, action_dim = model.dynamics, model.action_dim
    cem = planner_settings(dynamics, action_dim, horizon, seed=seed, backend=backend)["CEM"][CEM_SETTING]
    grasp_configs = {b: grasp_at_budget(env_name, horizon, b, "pixels", seed, backend) for b in budgets}
    planners = {}  # (name, budget) -> iteration scale -> planner
    for budget, (config, _) in grasp_configs.items():
        planners["GRASP", budget] = grasp_factory(dynamics, action_dim, config)
        planners["CEM", budget] = lambda scale, budget=budget: cem(budget * scale)
    pairs = pixel_pairs(env_name, problems, seed, horizon)
    steps = sorted({int(round(t)) for t in np.linspace(0, horizon, min(PIXEL_PLAN_FRAMES, horizon + 1))})
    scores, results, pictures = {}, {}, {}
    with PixelObservation(model) as observation:
        start_frames, goal_frames = observation.frames(pairs.starts), observation.frames(pairs.goals)
        bar = tqdm(sorted(planners.items(), key=lambda item: (item[0][1], item[0][0])), desc="planners",
                   disable=not progress)
        for (name, budget), build in bar:
            bar.set_postfix_str(f"{name} {budget:g}x")
            planner = build(iters_scale)
            key = f"{name} {budget:g}x"
            scores[key], results[key] = executed_open_loop(env_name, planner, pairs, device=device,
                                                           observation=observation)
            if budget != main_budget:
                continue
            scores[name], results[name] = scores[key], results[key]
            if mpc:
                scores[f"{name} MPC"], results[f"{name} MPC"] = closed_loop(
                    env_name, build(iters_scale * replan_iters_scale), pairs, max_steps=2 * horizon,
                    replan_every=min(replan_every, horizon), device=device, observation=observation)
            if out is not None:
                pictures[name] = _pixel_rows(env_name, model, observation, results[name], pairs,
                                             isinstance(planner, GraspPlanner), steps, results.get(f"{name} MPC"))
    if out is not None:
        plot_pixel_plans(env_name, start_frames, goal_frames, pairs.goals, pictures, steps, Path(out))
    device_name = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "CPU"
    units = "block px; success: within 20 px and 20 deg" if env_name == "pusht" else "maze units; success: 0.45"
    cem_time = results[f"CEM {main_budget:g}x"].planning_time / main_budget
    lines = [
        f"{env_name} from pixels, horizon {horizon}, {problems} start/goal pairs (seed {seed}), pixel world model "
        f"{weights}, planned from the encoded start frame to the encoded goal image, every plan executed open loop "
        f"(all {horizon} actions); CEM {CEM_SETTING} (DINO-WM's; 1x = its 30 iterations), GRASP "
        f"{grasp_configs[main_budget][1]}" + ("" if iters_scale == 1 else f", {iters_scale:g} x the iterations")
        + f"; device {device_name}, torch {torch.__version__}",
        f"| budget (x CEM's own time) | GRASP success (95% CI) | GRASP planning (s) | CEM success (95% CI) | "
        f"CEM planning (s) |",
        "|---|---|---|---|---|",
    ]
    for budget in budgets:
        grasp, cem_score = scores[f"GRASP {budget:g}x"], scores[f"CEM {budget:g}x"]
        lines.append(f"| {budget:g}x | {grasp.cell()} | {results[f'GRASP {budget:g}x'].planning_time:.1f} | "
                     f"{cem_score.cell()} | {results[f'CEM {budget:g}x'].planning_time:.1f} |")
    if mpc:
        lines += ["", f"| planner | MPC at {main_budget:g}x, replanning every {min(replan_every, horizon)} steps, at "
                  f"most {2 * horizon} | median final distance ({units}) | planning (s) |", "|---|---|---|---|"]
        for name in ("GRASP", "CEM"):
            score = scores[f"{name} MPC"]
            lines.append(f"| {name} | {score.cell()} | {score.median_error:.2f} | {results[f'{name} MPC'].planning_time:.1f} |")
    lines += [
        "",
        f"CEM's own time here: {cem_time:.1f} s. Success is judged on the simulator's true final state; the planners "
        "only ever see encoded frames. Where GRASP leads at which budget, on 50 pairs per task: bench/results/README.md "
        "(anytime profiles).",
        f"The demo ran in {time.perf_counter() - started:.0f} s.",
    ]
    return "\n".join(lines), results


def _pixel_rows(env_name: str, model, observation, result, pairs, virtual: bool, steps: list[int], mpc_result):
    """The picture's rows of one planner: the plan's frames decoded at ``steps`` from GRASP's virtual states
    (``virtual``) or else the predicted rollout, the executed path and the final frame."""
    plan = result.first_plan
    states = (plan.states if virtual else plan.rollout).detach()[:, steps]
    final = result.executed[:, -1]
    return PixelPlanRows(
        executed=result.executed,
        success=reached(env_name, final, pairs.goals),
        error=goal_error(env_name, final, pairs.goals),
        plan_frames=model.decode(model.last_latents(states)),
        plan_source="virtual states" if virtual else "predicted rollout",
        final_frames=observation.frames(final),
        mpc_executed=None if mpc_result is None else mpc_result.executed,
    )
