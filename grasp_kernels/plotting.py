"""Pictures of navigation plans (matplotlib, imported lazily: it is an optional dependency)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .envs.navigation import NavigationTask
from .result import PlanResult


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (a clear ImportError without the demo extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("plotting needs matplotlib: pip install 'grasp_kernels[demo]'") from exc
    return plt


def save_figure(fig, path, dpi: int = 110, rect: Optional[tuple[float, float, float, float]] = None) -> Path:
    """Lay ``fig`` out (within ``rect`` of the figure, leaving the rest to a figure legend or title),
    write it to ``path`` (creating its folder), close it; returns the path."""
    fig.tight_layout(rect=rect)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def draw_walls(ax, task: NavigationTask) -> None:
    """Each capsule wall as a rectangle with round caps, to scale."""
    from matplotlib.patches import Circle, Polygon

    radius = task.world_model.radius
    for (x0, y0), (x1, y1) in task.world_model.walls:
        length = max(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5, 1e-9)
        nx, ny = -(y1 - y0) / length * radius, (x1 - x0) / length * radius
        corners = [(x0 + nx, y0 + ny), (x1 + nx, y1 + ny), (x1 - nx, y1 - ny), (x0 - nx, y0 - ny)]
        style = dict(facecolor="0.55", edgecolor="none", zorder=1)
        ax.add_patch(Polygon(corners, closed=True, **style))
        ax.add_patch(Circle((x0, y0), radius, **style))
        ax.add_patch(Circle((x1, y1), radius, **style))


def plot_navigation(
    task: NavigationTask,
    results: Mapping[str, PlanResult],
    goal: torch.Tensor,
    path: Path,
    problems: int = 8,
    title: Optional[str] = None,
) -> Path:
    """One panel per planner: rolled-out paths of the first ``problems`` plans (to ``goal [B, 2]``),
    and GRASP's virtual states as dots where the result has them. Writes a PNG to ``path``."""
    plt = pyplot()
    panels = len(results)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4.2), squeeze=False)
    colors = plt.get_cmap("tab10")
    goal = goal.detach().cpu()
    for ax, (name, result) in zip(axes[0], results.items()):
        draw_walls(ax, task)
        rollout = result.rollout.detach().cpu()
        states = result.states.detach().cpu()
        success = result.success(task.success_radius).cpu()
        shown = min(problems, rollout.shape[0])
        for b in range(shown):
            color = colors(b % 10)
            ax.plot(rollout[b, :, 0], rollout[b, :, 1], color=color, linewidth=1.5, alpha=0.9)
            if not torch.equal(states[b], rollout[b]):
                ax.scatter(states[b, 1:-1, 0], states[b, 1:-1, 1], color=color, s=6, alpha=0.5)
            ax.scatter(rollout[b, 0, 0], rollout[b, 0, 1], color=color, marker="o", s=30, edgecolors="k")
            ax.scatter(goal[b, 0], goal[b, 1], color=color, marker="*", s=90, edgecolors="k")
        rate = 100.0 * float(success.float().mean())
        ax.set_title(f"{name}: {rate:.0f}% success, {result.wall_time:.1f}s")
        ax.set_xlim(-1.2, 1.2)
        ax.set_ylim(-1.2, 1.2)
        ax.set_aspect("equal")
        ax.grid(alpha=0.2)
    fig.suptitle(title or f"{task.name}: rollouts (lines), GRASP virtual states (dots), start o, goal *")
    return save_figure(fig, path)


def plot_maze(
    env,
    first_plans: Mapping[str, PlanResult],
    executed: Mapping[str, np.ndarray],
    goals: np.ndarray,
    path: Path,
    problems: Optional[int] = None,
    title: Optional[str] = None,
    success: Optional[Mapping[str, np.ndarray]] = None,
) -> Path:
    """One panel per planner on a PointMaze layout (``env``: :class:`grasp_kernels.envs.sim.PointMazeEnv`):
    the first plan's virtual states (dots; GRASP only) and its rollout through the world model (dashed),
    the path executed in the simulator by MPC (solid, ``executed[name] [B, steps+1, 4]``), start o and
    goal * with the success radius, each goal numbered with its problem index and, given ``success[name]``
    (``[B]`` bool), a check or cross mark; a legend of the marks. ``problems``: draw the first ones only
    (default: all). Writes a PNG to ``path``."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle, Rectangle

    from .envs.sim import POINTMAZE_SUCCESS_RADIUS

    plt = pyplot()
    panels = len(first_plans)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 5.6), squeeze=False)
    colors = plt.get_cmap("tab10")
    rows, cols = env.maze_map.shape
    half_w, half_h = cols * env.scaling / 2, rows * env.scaling / 2
    for ax, (name, plan) in zip(axes[0], first_plans.items()):
        for x, y, w, h in env.wall_rectangles():
            ax.add_patch(Rectangle((x, y), w, h, facecolor="0.55", edgecolor="none", zorder=1))
        rollout, states = plan.rollout.detach().cpu(), plan.states.detach().cpu()
        path_xy = executed[name]
        shown = rollout.shape[0] if problems is None else min(problems, rollout.shape[0])
        reached = None if success is None else np.asarray(success[name], dtype=bool)
        for b in range(shown):
            color = colors(b % 10)
            if not torch.equal(states[b], rollout[b]):
                ax.scatter(states[b, 1:-1, 0], states[b, 1:-1, 1], color=color, s=7, alpha=0.55, zorder=3)
            ax.plot(rollout[b, :, 0], rollout[b, :, 1], color=color, linestyle="--", linewidth=1.2, zorder=3)
            ax.plot(path_xy[b, :, 0], path_xy[b, :, 1], color=color, linewidth=2.0, zorder=4)
            ax.scatter(path_xy[b, 0, 0], path_xy[b, 0, 1], color=color, marker="o", s=36, edgecolors="k", zorder=5)
            ax.add_patch(Circle(tuple(goals[b, :2]), POINTMAZE_SUCCESS_RADIUS, color=color, alpha=0.15, zorder=2))
            ax.scatter(goals[b, 0], goals[b, 1], color=color, marker="*", s=110, edgecolors="k", zorder=5)
            # labels fan out around the goal so that goals in one cell stay readable
            mark = "" if reached is None else (" \u2713" if reached[b] else " \u2717")
            angle = 2 * np.pi * b / max(shown, 1)
            ax.annotate(f"{b}{mark}", tuple(goals[b, :2]), xytext=(14 * np.cos(angle), 14 * np.sin(angle)),
                        textcoords="offset points", fontsize=8, color=color, fontweight="bold", ha="center",
                        va="center", zorder=6)
        summary = "" if reached is None else f": {int(reached[:shown].sum())}/{shown} reached in the simulator"
        ax.set_title(f"{name}{summary}", fontsize=10)
        ax.set_xlim(-half_w, half_w)
        ax.set_ylim(-half_h, half_h)
        ax.set_aspect("equal")
    legend = [
        Line2D([], [], color="k", marker=".", linestyle="none", label="virtual states (GRASP)"),
        Line2D([], [], color="k", linestyle="--", label="first plan, rolled out in the model"),
        Line2D([], [], color="k", linewidth=2.0, label="path executed by MPC in the simulator"),
        Line2D([], [], color="k", marker="o", linestyle="none", label="start"),
        Line2D([], [], color="k", marker="*", markersize=10, linestyle="none",
               label=f"goal n (success radius {POINTMAZE_SUCCESS_RADIUS}); \u2713 reached, \u2717 not"),
    ]
    fig.legend(handles=legend, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title or f"{env.name}: all {shown} problems, one colour each", fontsize=9)
    return save_figure(fig, path, rect=(0, 0.09, 1, 0.98))  # the bottom strip holds the legend
