"""Pictures of navigation plans (matplotlib, imported lazily: it is an optional dependency)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .envs.navigation import NavigationTask
from .result import PlanResult
from .envs.pixels import PUSHT_CANVAS, pointmaze_world_to_pixel
from .envs.sim import POINTMAZE_SUCCESS_RADIUS, PUSHT_POSITION_SCALE, check_env_name


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


@dataclasses.dataclass
class PixelPlanRows:
    """One planner's rows of :func:`plot_pixel_plans`, ``B`` problems (numpy arrays on the host).

    Attributes:
        executed: ``[B, T+1, D]`` true states the simulator visited executing the plan (row 0: the start).
        success: ``[B]`` bool, the task's success at the last executed state.
        error: ``[B]`` the task distance of the last executed state (PointMaze: maze units; Push-T: block px).
        plan_frames: ``[B, K, S, S, 3]`` uint8 frames the plan passes through, decoded from its latents at
            the ``plan_steps`` given to :func:`plot_pixel_plans`.
        plan_source: what ``plan_frames`` were decoded from (e.g. ``"virtual states"``), for the row label.
        final_frames: ``[B, S, S, 3]`` uint8 rendered last executed states (Push-T draws the path over them).
        mpc_executed: ``[B, M+1, D]`` the path executed by MPC, drawn dashed; None: not run.
    """

    executed: np.ndarray
    success: np.ndarray
    error: np.ndarray
    plan_frames: np.ndarray
    plan_source: str
    final_frames: np.ndarray
    mpc_executed: Optional[np.ndarray] = None


def frame_xy(env_name: str, xy: np.ndarray, size: int) -> np.ndarray:
    """Positions of a real task -> continuous pixel ``(col, row) [..., 2]`` of its ``size`` frames, pixel
    edges at integers (``imshow(..., extent=(0, size, size, 0))``). PointMaze: world ``(x, y)`` of the ball;
    Push-T: a position in planning-state units (agent columns 0-1, block columns 2-3)."""
    xy = np.asarray(xy, dtype=np.float64)
    if check_env_name(env_name) == "pusht":  # gym-pusht draws its 512 px world 1:1, x right, y down
        return xy * PUSHT_POSITION_SCALE * size / PUSHT_CANVAS
    return pointmaze_world_to_pixel(env_name, xy, size)


def plot_pixel_plans(
    env_name: str,
    start_frames: np.ndarray,
    goal_frames: np.ndarray,
    goals: np.ndarray,
    rows: Mapping[str, PixelPlanRows],
    plan_steps: Sequence[int],
    path: Path,
    title: Optional[str] = None,
) -> Path:
    """Plans from pixels, one row per problem and planner (the planners of a problem one below the other, so
    that they compare at a glance): the start frame, the goal image, the executed path, and the frames the plan
    passes through at ``plan_steps`` (each titled with its time step).

    The executed path: PointMaze draws the true executed ball positions over the start frame (end x, goal *
    with the success radius); Push-T draws the agent's path (solid) and the block centre's path (dotted) over
    the final executed frame with the goal image faded in. An MPC path (``mpc_executed``) is drawn dashed.
    ``start_frames``/``goal_frames``: ``[B, S, S, 3]`` uint8; ``goals``: ``[B, D]`` goal states. Writes a PNG to
    ``path``.
    """
    from matplotlib.lines import Line2D

    plt = pyplot()
    pusht = check_env_name(env_name) == "pusht"
    problems, size = start_frames.shape[0], start_frames.shape[1]
    names = list(rows)
    columns = 3 + len(plan_steps)
    cell = 1.5  # inches per frame: a 64 px frame drawn at about 150 px
    title_strip, legend_strip = 0.6, 0.35  # inches above and below the frames, whatever their number
    height = (cell + 0.25) * problems * len(names) + title_strip + legend_strip
    width = max(cell * columns, 13.5)  # the two-line title's width
    fig, axes = plt.subplots(problems * len(names), columns, figsize=(width, height), squeeze=False)
    extent = (0, size, size, 0)  # pixel edges at integers, as frame_xy's coordinates
    for b in range(problems):
        for p, name in enumerate(names):
            row, axs = rows[name], axes[b * len(names) + p]
            axs[0].imshow(start_frames[b], extent=extent)
            axs[0].set_title("start", fontsize=7)
            axs[0].set_ylabel(f"{name}\npair {b}", fontsize=8, fontweight="bold")
            axs[1].imshow(goal_frames[b], extent=extent)
            axs[1].set_title("goal image", fontsize=7)
            _draw_executed(axs[2], env_name, b, row, start_frames[b], goal_frames[b], goals[b], size)
            for k, step in enumerate(plan_steps):
                axs[3 + k].imshow(row.plan_frames[b, k], extent=extent)
                axs[3 + k].set_title(f"t={step}", fontsize=7)
            axs[3].set_ylabel(f"plan: {row.plan_source}", fontsize=6)
            for ax in axs:
                ax.set_xticks([])
                ax.set_yticks([])
    if pusht:
        legend = [
            Line2D([], [], color="tab:red", label="agent's executed path"),
            Line2D([], [], color="tab:green", linestyle=":", label="block centre's executed path"),
        ]
        what = "final executed frame with the goal image faded in"
    else:
        legend = [
            Line2D([], [], color="tab:red", label="executed path (x: end)"),
            Line2D([], [], color="gold", marker="*", linestyle="none", markeredgecolor="k",
                   label=f"goal (success radius {POINTMAZE_SUCCESS_RADIUS})"),
        ]
        what = "executed path over the start frame"
    if any(r.mpc_executed is not None for r in rows.values()):
        legend.append(Line2D([], [], color="tab:purple", linestyle="--",
                             label="executed by MPC" + (" (block: green dashed)" if pusht else "")))
    fig.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=7, frameon=False)
    fig.suptitle(title or (
        f"{env_name} from pixels: each planner plans from the encoded start frame to the encoded goal image; the plan "
        f"is executed open loop in the simulator\n(executed: {what}; \u2713 reached the goal, \u2717 not, then the "
        f"final distance); right: the frames the plan passes through, decoded from its latents"), fontsize=9)
    return save_figure(fig, path, dpi=100, rect=(0, legend_strip / height, 1, 1 - title_strip / height))


def _draw_executed(ax, env_name: str, b: int, row: PixelPlanRows, start_frame: np.ndarray, goal_frame: np.ndarray,
                   goal: np.ndarray, size: int) -> None:
    """The executed-path panel of problem ``b`` (see :func:`plot_pixel_plans`)."""
    from matplotlib.patches import Circle

    extent = (0, size, size, 0)
    mark = "\u2713" if row.success[b] else "\u2717"
    # (states, line style, agent/ball colour): MPC's path dashed and in another colour, so that it stands apart
    paths = [(row.executed[b], "-", "tab:red")]
    if row.mpc_executed is not None:
        paths.append((row.mpc_executed[b], "--", "tab:purple"))
    if check_env_name(env_name) == "pusht":
        # the final frame, not the start: where the block ended up against the faded goal is the result
        ax.imshow(row.final_frames[b], extent=extent)
        ax.imshow(goal_frame, extent=extent, alpha=0.35)
        for states, style, color in paths:
            agent, block = frame_xy(env_name, states[:, 0:2], size), frame_xy(env_name, states[:, 2:4], size)
            ax.plot(agent[:, 0], agent[:, 1], style, color=color, linewidth=1.2)
            ax.plot(block[:, 0], block[:, 1], ":" if style == "-" else style, color="tab:green", linewidth=1.2)
        ax.set_title(f"final: {mark} {row.error[b]:.0f} px", fontsize=7)
    else:
        ax.imshow(start_frame, extent=extent)
        centre = frame_xy(env_name, goal[:2], size)
        radius = np.linalg.norm(frame_xy(env_name, goal[:2] + np.array([POINTMAZE_SUCCESS_RADIUS, 0.0]), size) - centre)
        ax.add_patch(Circle(tuple(centre), radius, color="gold", alpha=0.35))
        ax.scatter(*centre, marker="*", s=60, color="gold", edgecolors="k", linewidths=0.5, zorder=5)
        for states, style, color in paths:
            xy = frame_xy(env_name, states[:, :2], size)
            ax.plot(xy[:, 0], xy[:, 1], style, color=color, linewidth=1.4, zorder=4)
            ax.scatter(*xy[-1], marker="x", s=25, color=color, zorder=6)
        ax.set_title(f"executed: {mark} {row.error[b]:.2f}", fontsize=7)
    ax.set_xlim(0, size)  # a path that leaves the frame (Push-T's agent can) must not shrink the picture
    ax.set_ylim(size, 0)
