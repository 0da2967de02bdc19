"""A synthetic, differentiable point-navigation task (the paper's "ball navigation" kind).

A point in the plane moves with bounded velocity actions; walls are capsules (line segments with a
radius) that push the point out along their normal, so the point slides along a wall and gradients
stay smooth (a hard collision with zero gradient defeats every gradient planner; learned world
models are smooth; docs/design.md, section 6). Several sub-steps per model step keep the point from
tunnelling through a wall.

The ``detour`` layout traps the start inside a U-shaped cup whose open side faces away from the
goal: the shortest path first moves away from the goal, around the cup, then to the goal. Greedy
descent on the distance to the goal drives the point into the bottom of the cup.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

Segment = tuple[tuple[float, float], tuple[float, float]]

DETOUR_WALLS: tuple[Segment, ...] = (
    ((-0.2, -0.45), (-0.2, 0.45)),  # the cup's bottom, between start and goal
    ((-0.75, 0.45), (-0.2, 0.45)),  # upper arm
    ((-0.75, -0.45), (-0.2, -0.45)),  # lower arm
)


class PointNavigation(nn.Module):
    """Differentiable point dynamics with capsule walls: a world model ``F(s, a) -> s'``.

    ``s' = s + dt * clamp(a, -max_speed, max_speed)`` integrated in ``substeps`` pieces, each followed
    by a smooth push out of every wall: ``q += n * softplus(k (r - d)) / k`` with ``d`` the distance to
    the wall's segment and ``n`` the unit normal away from it.

    Args:
        walls: wall segments ``((x0, y0), (x1, y1))``.
        dt: time per model step.
        max_speed: per-axis bound of the velocity action.
        radius: wall half-thickness.
        substeps: integration sub-steps; ``dt * max_speed * sqrt(2) / substeps`` must stay below
            ``radius`` so that the point cannot jump across a wall.
        sharpness: ``k`` of the softplus push (larger: harder walls).
    """

    state_dim = 2
    action_dim = 2

    def __init__(
        self,
        walls: tuple[Segment, ...] = (),
        dt: float = 0.1,
        max_speed: float = 1.0,
        radius: float = 0.05,
        substeps: int = 4,
        sharpness: float = 200.0,
    ) -> None:
        super().__init__()
        if dt * max_speed * 2**0.5 / substeps >= radius and walls:
            raise ValueError(
                f"substeps={substeps} too few: one sub-step moves up to {dt * max_speed * 2**0.5 / substeps:.3f} "
                f">= wall radius {radius}, the point could tunnel through a wall"
            )
        segments = torch.tensor(walls, dtype=torch.float32).reshape(-1, 2, 2)
        self.register_buffer("wall_start", segments[:, 0].clone(), persistent=False)
        self.register_buffer("wall_end", segments[:, 1].clone(), persistent=False)
        self.walls = tuple(walls)
        self.dt = dt
        self.max_speed = max_speed
        self.radius = radius
        self.substeps = substeps
        self.sharpness = sharpness

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``states [N, 2]``, ``actions [N, 2]`` -> next states ``[N, 2]``."""
        velocity = actions.clamp(-self.max_speed, self.max_speed)
        step = velocity * (self.dt / self.substeps)
        position = states
        for _ in range(self.substeps):
            position = self.push_out(position + step)
        return position

    def push_out(self, points: torch.Tensor) -> torch.Tensor:
        """Push ``points [N, 2]`` out of every wall in turn (smoothly).

        One projection per wall, in sequence: in a concave corner where two walls overlap, leaving
        one wall must not leave the point inside the other (it would be carried through it).
        """
        start = self.wall_start.to(points.dtype)
        axis = self.wall_end.to(points.dtype) - start
        for w in range(start.shape[0]):
            offset = _segment_offset(points, start[w], axis[w])
            distance = offset.square().sum(-1, keepdim=True).add(1e-12).sqrt()
            depth = F.softplus(self.sharpness * (self.radius - distance)) / self.sharpness
            points = points + offset * (depth / distance)
        return points

    def distance_to_walls(self, points: torch.Tensor) -> torch.Tensor:
        """Distance of ``points [..., 2]`` to the nearest wall surface (negative inside); +inf without walls."""
        if self.wall_start.shape[0] == 0:
            return torch.full(points.shape[:-1], float("inf"), device=points.device, dtype=points.dtype)
        start = self.wall_start.to(points.dtype)
        offsets = _segment_offset(points.unsqueeze(-2), start, self.wall_end.to(points.dtype) - start)
        return offsets.norm(dim=-1).min(dim=-1).values - self.radius


def _segment_offset(points: torch.Tensor, start: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """Offset of ``points [..., 2]`` from the nearest point of the segment ``start + [0, 1] * axis``."""
    along = ((points - start) * axis).sum(-1, keepdim=True) / axis.square().sum(-1, keepdim=True)
    return points - (start + along.clamp(0.0, 1.0) * axis)


@dataclasses.dataclass
class NavigationTask:
    """A navigation task: the world model plus a sampler of start/goal pairs.

    Attributes:
        name: task name.
        world_model: the differentiable dynamics.
        start: nominal start ``[2]``; goal: nominal goal ``[2]``.
        spread: half-width of the uniform jitter applied to start and goal when sampling problems.
        success_radius: a plan succeeds when its rollout ends within this distance of the goal.
        action_low, action_high: action bounds.
    """

    name: str
    world_model: PointNavigation
    start: tuple[float, float]
    goal: tuple[float, float]
    spread: float = 0.05
    success_radius: float = 0.1
    action_low: float = -1.0
    action_high: float = 1.0

    def sample(
        self, count: int, seed: int = 0, device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` start/goal pairs ``[count, 2]`` each, jittered uniformly by ``spread``."""
        generator = torch.Generator().manual_seed(seed)
        jitter = (torch.rand(2, count, 2, generator=generator, dtype=torch.float64) * 2 - 1) * self.spread
        s0 = torch.tensor(self.start, dtype=torch.float64) + jitter[0]
        goal = torch.tensor(self.goal, dtype=torch.float64) + jitter[1]
        return s0.to(device=device, dtype=dtype), goal.to(device=device, dtype=dtype)


TASKS = ("detour", "open")


def make_task(name: str = "detour") -> NavigationTask:
    """``detour``: U-shaped trap, the path first leads away from the goal. ``open``: no walls."""
    if name == "detour":
        return NavigationTask(name, PointNavigation(DETOUR_WALLS), start=(-0.45, 0.0), goal=(0.7, 0.0))
    if name == "open":
        return NavigationTask(name, PointNavigation(()), start=(-0.6, -0.3), goal=(0.6, 0.4))
    raise ValueError(f"unknown task {name!r}; expected one of {TASKS}")
