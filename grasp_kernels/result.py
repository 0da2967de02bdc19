"""The result every planner of the package returns."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch


@dataclasses.dataclass
class PlanResult:
    """One batch of plans.

    Attributes:
        actions: ``[B, T, A]`` planned actions.
        states: ``[B, T+1, *S]`` the planner's states: GRASP's virtual states (row 0 = s0,
            row T = goal); for shooting planners (GD, CEM, MPPI) the rollout of their actions.
        rollout: ``[B, T+1, *S]`` the actions rolled out through the world model from s0 (row 0 =
            the current state; history-window models roll through windows of the observed frames).
        final_distance: ``[B]`` Euclidean distance ``||rollout[:, T] - goal||`` (GRASP with
            ``state_weights`` ``w``: the weighted ``sqrt(sum w (rollout[:, T] - goal)^2)``).
        energy_history: ``[iters, B]`` the planner's objective per iteration (GRASP: lifted energy;
            GD: shooting loss; CEM/MPPI: cost of the mean), kept on the device during planning.
        wall_time: seconds spent in ``plan`` (including the final rollout).
        info: planner-specific extras (e.g. chosen particle, sync losses).
    """

    actions: torch.Tensor
    states: torch.Tensor
    rollout: torch.Tensor
    final_distance: torch.Tensor
    energy_history: torch.Tensor
    wall_time: float = 0.0
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __repr__(self) -> str:
        """One short line: shapes, dtype/device, the final-distance summary, iterations, backend (the
        dataclass default printed every tensor: tens of thousands of characters)."""
        distance = self.final_distance.detach().float().reshape(-1)
        if distance.numel() and bool(torch.isfinite(distance).all()):
            dist = f"min {distance.min().item():.4g}, median {distance.median().item():.4g}, max {distance.max().item():.4g}"
        elif distance.numel():
            dist = "holds NaN/Inf"
        else:
            dist = "empty"
        parts = [
            f"actions={_shape(self.actions)}",
            f"states={_shape(self.states)}",
            f"rollout={_shape(self.rollout)}",
            f"dtype={str(self.actions.dtype).replace('torch.', '')}",
            f"device={self.actions.device}",
            f"final_distance=[{dist}]",
            f"iterations={self.energy_history.shape[0] if self.energy_history.dim() else 0}",
        ]
        if "backend" in self.info:
            parts.append(f"backend={self.info['backend']!r}")
        parts.append(f"wall_time={self.wall_time:.3g}s")
        return f"PlanResult({', '.join(parts)})"

    def success(self, threshold: float) -> torch.Tensor:
        """``[B]`` bool: the rollout ends within ``threshold`` of the goal."""
        return self.final_distance < threshold


def _shape(tensor: torch.Tensor) -> str:
    return "[" + ", ".join(str(size) for size in tensor.shape) + "]"
