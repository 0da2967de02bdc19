"""The sampling core shared by CEM and MPPI (the baselines), GRASP's CEM sync and its chains' CEM start.

One iteration, batched over ``B`` plans (or chains), each drawing from its own generator (shard-invariant,
:mod:`grasp_kernels.randomness`): ``N`` candidates ``mean + spread * xi`` with ``xi ~ N(0, I)``, clamped
to the bounds, scored in one call, and a refit of ``(mean, spread)`` from the candidates and their costs.
What differs between the planners is only the refit (:func:`elites`-based for CEM, softmax weights for
MPPI), the shape of ``spread`` (``[B, T, A]`` per action, or ``[B, T, 1]`` per time step) and whether
sample 0 is the mean itself.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from ._problem import clamp_
from .randomness import per_plan_normal

# score(candidates [B, N, T, A]) -> cost [B, N]
Score = Callable[[torch.Tensor], torch.Tensor]
# refit(candidates [B, N, T, A], cost [B, N], spread) -> (mean [B, T, A], spread)
Refit = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

__all__ = ["Refit", "Score", "elites", "sample_and_refit"]


def elites(candidates: torch.Tensor, cost: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` lowest-cost candidates of each plan: ``[B, count, T, A]`` from ``candidates
    [B, N, T, A]`` and ``cost [B, N]``."""
    best = torch.topk(cost, count, dim=1, largest=False).indices
    return torch.gather(candidates, 1, best.view(*best.shape, 1, 1).expand(-1, -1, *candidates.shape[2:]))


@torch.no_grad()
def sample_and_refit(
    mean: torch.Tensor,
    spread: torch.Tensor,
    generators: Sequence[torch.Generator],
    iterations: int,
    samples: int,
    score: Score,
    refit: Refit,
    low: Optional[torch.Tensor],
    high: Optional[torch.Tensor],
    *,
    include_mean: bool = False,
    record: Optional[Callable[[int, torch.Tensor], None]] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``iterations`` rounds of sample, clamp, score and refit; returns the final ``(mean, spread)``.

    Args:
        mean: ``[B, T, A]`` initial mean (not modified).
        spread: the sampling standard deviation, ``[B, T, A]`` or ``[B, T, 1]``.
        generators: one per plan (``len == B``); plan ``b``'s ``xi [N, T, A]`` comes from ``generators[b]``.
        samples: ``N`` candidates per plan and round.
        score: the cost ``[B, N]`` of the candidates ``[B, N, T, A]``.
        refit: the new ``(mean, spread)`` from the candidates, their cost and the current spread; the
            new mean is clamped to the bounds here (a mean of in-bound values can round past one).
        low, high: the action bounds, None or ``[A]`` tensors.
        include_mean: candidate 0 is the mean itself (CEM and MPPI baselines: the mean is always scored).
        record: called as ``record(round, cost)`` after each scoring.
    """
    for round_ in range(iterations):
        xi = per_plan_normal(generators, (samples, *mean.shape[1:]), mean.device, mean.dtype)
        candidates = mean.unsqueeze(1) + spread.unsqueeze(1) * xi
        if include_mean:
            candidates[:, 0] = mean
        clamp_(candidates, low, high)
        cost = score(candidates)
        if record is not None:
            record(round_, cost)
        mean, spread = refit(candidates, cost, spread)
        clamp_(mean, low, high)
    return mean, spread
