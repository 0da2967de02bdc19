"""Full-rollout gradient descent ("shooting"): Adam on the actions through the T-step rollout."""

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
from ..config import Bound
from ..lifted import WorldModel
from ..rollouts import shooting_grad
from ..memory import check_max_transitions, sync_chunking
from ..ops import AdamHyper
from ..ops.action_step.reference import action_step_ref
from ..result import PlanResult
from ._common import check_config, validate_fields


@dataclasses.dataclass
class GDConfig:
    """Shooting GD: ``iters`` Adam steps of rate ``lr`` on ``||rollout(s0, a)_T - g||^2`` (deterministic:
    no seed).

    Bounded memory (as GRASP's sync phase, :func:`grasp_kernels.memory.sync_chunking`): ``max_transitions``
    differentiates ``max_transitions // horizon`` plans at a time (the backward through ``T`` steps keeps
    ``T`` steps' activations per plan); when not one plan fits, or with ``activation_checkpointing=True``,
    each step's forward is recomputed in the backward and ``max_transitions`` plans go at a time. The final
    rollout rolls at most ``max_transitions`` plans at a time. The same plan as unchunked (bitwise for a
    world model whose rows do not depend on the batch size).
    """

    horizon: int = 50
    iters: int = 300
    lr: float = 0.05
    action_low: Bound = -1.0
    action_high: Bound = 1.0
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8
    max_transitions: Optional[int] = None
    activation_checkpointing: Optional[bool] = None

    def __post_init__(self) -> None:
        validate_fields(self, ints=("horizon", "iters"), positive=("lr",))
        check_max_transitions(self.max_transitions)
        if self.activation_checkpointing is not None and not isinstance(self.activation_checkpointing, bool):
            raise TypeError("activation_checkpointing must be None or a bool, got "
                            f"{type(self.activation_checkpointing).__name__}")


class GDPlanner:
    """Shooting baseline, batched over plans: each Adam step backpropagates through the whole rollout."""

    def __init__(
        self,
        world_model: WorldModel,
        action_dim: int,
        config: Optional[GDConfig] = None,
        state_shape: Optional[Sequence[int]] = None,
    ) -> None:
        self.world_model, self.action_dim = check_planner_args(world_model, action_dim)
        self.config = check_config(config or GDConfig(), GDConfig)
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
        """Plan from ``s0 [B, *S]`` to ``goal``; see :class:`grasp_kernels.PlanResult`.

        ``plan_offset`` (the global index of the batch's first plan, >= 0) is accepted for the common
        planner interface of :mod:`grasp_kernels.distributed` and checked; GD draws no random numbers,
        so it changes nothing.
        """
        start = time.perf_counter()
        check_int("plan_offset", plan_offset, minimum=0)
        cfg = self.config
        problem = make_problem(s0, goal, self.state_shape)
        actions = initial_actions(init_actions, problem.batch, cfg.horizon, self.action_dim, problem.s0)
        low, high = action_bounds(cfg.action_low, cfg.action_high, self.action_dim, actions.device, actions.dtype)
        clamp_(actions, low, high)
        exp_avg, exp_avg_sq = torch.zeros_like(actions), torch.zeros_like(actions)
        adam = AdamHyper(cfg.lr, cfg.beta1, cfg.beta2, cfg.adam_eps)
        history = torch.empty(cfg.iters, problem.batch, device=actions.device, dtype=actions.dtype)
        chains, checkpoint = sync_chunking(cfg.max_transitions, cfg.horizon, cfg.activation_checkpointing)
        for it in tqdm(range(cfg.iters), desc="GD", disable=not progress, leave=False):
            loss, grad = shooting_grad(self.world_model, problem.s0, actions, problem.goal, chains_per_chunk=chains,
                                       checkpoint=checkpoint)
            history[it] = loss
            with torch.no_grad():
                action_step_ref(actions, grad, exp_avg, exp_avg_sq, it + 1, adam, low, high)
        raise_if_nonfinite(history, cfg.iters, "the GD shooting loss")
        rollout, distance = final_rollout(self.world_model, problem, actions, max_rows=cfg.max_transitions)
        result = PlanResult(actions, rollout, rollout, distance, history)
        return squeeze_single(result, problem.single, start)
