"""The demos behind ``python -m grasp_kernels demo``: the main job plans PointMaze through the shipped world
model with GRASP and CEM and executes the plans by MPC in the simulator (:func:`run_maze_demo`); ``--task
detour|open`` plans the synthetic navigation task with GRASP and the baselines (:func:`run_demo`)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional, Protocol

import torch
from tqdm.auto import tqdm

from .baselines import CEMConfig, CEMPlanner, GDConfig, GDPlanner, MPPIConfig, MPPIPlanner
from .config import GraspConfig
from .envs import NavigationTask, make_task
from .planner import GraspPlanner
from .result import PlanResult


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
        from .plotting import plot_navigation

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
    horizon: int = 50,
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
    GRASP runs the quality sweep's setting for the task (:meth:`GraspConfig.preset`), CEM DINO-WM's defaults.
    The first plan runs each planner's full iterations; the MPC's replans, warm-started from the shifted
    previous plan, run ``replan_iters_scale`` of them (both families alike; the quality benchmark's closed
    loop uses 0.25), which keeps the demo within about three minutes on two CPU cores.
    """
    from .envs.sim import make_env
    from .envs.tasks import make_pairs, reached
    from .models.zoo import load_world_model
    from .quality import closed_loop, grasp_factory, scaled_iters

    started = time.perf_counter()
    model = load_world_model(env_name, device=device)
    pairs = make_pairs(env_name, problems, seed)
    bounds = dict(action_low=-1.0, action_high=1.0)
    cem = CEMConfig(horizon=horizon, seed=seed, **bounds)
    grasp = grasp_factory(model, model.action_dim, GraspConfig.preset(env_name, horizon, seed=seed, backend=backend))
    planners = {  # name -> iteration scale -> planner
        "GRASP": grasp,
        "CEM": lambda scale: CEMPlanner(model, model.action_dim, dataclasses.replace(cem, iters=scaled_iters(cem.iters, scale))),
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
        f"for at most {2 * horizon} steps, device {device_name}, "
        f"torch {torch.__version__}",
        "| planner | first plan reaches goal in the model | MPC reaches goal in the simulator "
        "| median final distance (maze units; success: 0.45) | first plan (s) | all planning (s) |",
        "|---|---|---|---|---|---|",
    ] + [row.format() for row in rows]
    if out is not None:
        from .plotting import plot_maze

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
