"""Sampling-based baselines: CEM (DINO-WM's planner defaults) and MPPI, batched over plans.

Both score every candidate action sequence by the terminal cost ``||rollout(s0, a)_T - g||^2`` and
roll all ``B * samples`` candidates out in one batch per time step; ``max_transitions`` (bounded memory,
stable-worldmodel's batch size) rolls at most that many candidates at a time, with the same plan
(bitwise for a world model whose rows do not depend on the batch size).

Shard-invariant: plan ``i`` of a batch draws its samples from its own generator, seeded by the config's
seed and its global index ``plan_offset + i`` (:func:`grasp_kernels.randomness.plan_generators`), so a
plan gets the same samples alone, in any batch, or on any rank of :mod:`grasp_kernels.distributed`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from .._checks import check_int
from .._problem import (
    action_bounds,
    check_planner_args,
    clamp_,
    final_rollout,
    initial_actions,
    make_problem,
    raise_if_nonfinite,
    squeeze_single,
)
from ..cem import elites, sample_and_refit
from ..config import Bound
from ..lifted import WorldModel
from ..randomness import plan_generators
from ..result import PlanResult
from ._common import check_config, terminal_cost, validate_fields


@dataclasses.dataclass
class CEMConfig:
    """Cross-entropy method; defaults of DINO-WM's CEM planner (300 samples, top 30, 30 iterations, var_scale 1)."""

    horizon: int = 50
    samples: int = 300
    topk: int = 30
    iters: int = 30
    var_scale: float = 1.0
    action_low: Bound = -1.0
    action_high: Bound = 1.0
    seed: int = 0
    max_transitions: Optional[int] = None

    def __post_init__(self) -> None:
        validate_fields(self, ints=("horizon", "samples", "topk", "iters", "seed"), positive=("var_scale",))
        if self.topk > self.samples:
            raise ValueError(f"topk must be <= samples ({self.samples}), got {self.topk}")


@dataclasses.dataclass
class MPPIConfig:
    """Model-predictive path integral: softmax(-cost / temperature) weighted update of the mean."""

    horizon: int = 50
    samples: int = 300
    iters: int = 30
    noise_std: float = 0.5
    temperature: float = 0.05
    action_low: Bound = -1.0
    action_high: Bound = 1.0
    seed: int = 0
    max_transitions: Optional[int] = None

    def __post_init__(self) -> None:
        validate_fields(self, ints=("horizon", "samples", "iters", "seed"), positive=("noise_std", "temperature"))


class _SamplingPlanner:
    """Shared loop: sample around the mean (sample 0 is the mean itself), score, update."""

    name = "sampling"

    def __init__(
        self, world_model: WorldModel, action_dim: int, config: object, state_shape: Optional[Sequence[int]] = None
    ) -> None:
        self.world_model, self.action_dim = check_planner_args(world_model, action_dim)
        self.config = config
        self.state_shape = state_shape

    def plan(
        self,
        s0: torch.Tensor,
        goal: torch.Tensor,
        init_actions: Optional[torch.Tensor] = None,
        progress: bool = False,
        *,
        plan_offset: int = 0,
    ) -> PlanResult:
        """Plan from ``s0 [B, *S]`` to ``goal``; ``init_actions`` warm-starts the mean.

        ``plan_offset``: the global index of the batch's first plan (>= 0): plan ``i`` draws the samples
        of plan ``plan_offset + i`` of any bigger batch with the same seed (a rank's slice of a global
        batch passes its start; :func:`grasp_kernels.distributed.plan_across_ranks`).
        """
        start = time.perf_counter()
        plan_offset = check_int("plan_offset", plan_offset, minimum=0)
        cfg = self.config
        problem = make_problem(s0, goal, self.state_shape)
        mean = initial_actions(init_actions, problem.batch, cfg.horizon, self.action_dim, problem.s0)
        low, high = action_bounds(cfg.action_low, cfg.action_high, self.action_dim, mean.device, mean.dtype)
        clamp_(mean, low, high)
        spread = self._initial_spread(mean)
        generators = plan_generators(cfg.seed, plan_offset, problem.batch, mean.device)
        history = torch.empty(cfg.iters, problem.batch, device=mean.device, dtype=mean.dtype)
        bar = tqdm(total=cfg.iters, desc=self.name, disable=not progress, leave=False)

        def record(iteration: int, cost: torch.Tensor) -> None:
            history[iteration] = cost[:, 0]  # sample 0 is the mean
            bar.update()

        with bar:
            mean, _ = sample_and_refit(
                mean, spread, generators, cfg.iters, cfg.samples,
                lambda candidates: terminal_cost(self.world_model, problem.s0, problem.goal, candidates,
                                                 cfg.max_transitions),
                self._update, low, high, include_mean=True, record=record,
            )
        raise_if_nonfinite(history, cfg.iters, f"the {self.name} cost")
        rollout, distance = final_rollout(self.world_model, problem, mean, max_rows=cfg.max_transitions)
        return squeeze_single(PlanResult(mean, rollout, rollout, distance, history), problem.single, start)

    def _initial_spread(self, mean: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _update(
        self, candidates: torch.Tensor, cost: torch.Tensor, spread: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class CEMPlanner(_SamplingPlanner):
    """Cross-entropy method: refit a diagonal Gaussian to the ``topk`` lowest-cost samples."""

    name = "CEM"

    def __init__(
        self, world_model: WorldModel, action_dim: int, config: Optional[CEMConfig] = None, state_shape: Optional[Sequence[int]] = None
    ) -> None:
        super().__init__(world_model, action_dim, check_config(config or CEMConfig(), CEMConfig), state_shape)

    def _initial_spread(self, mean: torch.Tensor) -> torch.Tensor:
        return torch.full_like(mean, self.config.var_scale)

    def _update(self, candidates, cost, spread):
        best = elites(candidates, cost, self.config.topk)
        return best.mean(dim=1), best.std(dim=1, unbiased=self.config.topk > 1)


class MPPIPlanner(_SamplingPlanner):
    """MPPI: the mean moves to the softmax(-cost / temperature) weighted average of the samples."""

    name = "MPPI"

    def __init__(
        self, world_model: WorldModel, action_dim: int, config: Optional[MPPIConfig] = None, state_shape: Optional[Sequence[int]] = None
    ) -> None:
        super().__init__(world_model, action_dim, check_config(config or MPPIConfig(), MPPIConfig), state_shape)

    def _initial_spread(self, mean: torch.Tensor) -> torch.Tensor:
        return torch.full_like(mean, self.config.noise_std)

    def _update(self, candidates, cost, spread):
        weights = torch.softmax(-(cost - cost.min(dim=1, keepdim=True).values) / self.config.temperature, dim=1)
        return (weights.view(*weights.shape, 1, 1) * candidates).sum(dim=1), spread
