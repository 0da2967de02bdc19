"""GRASP's sync phases: full-rollout steps on the actions after every ``sync_every`` lifted iterations.

A sync rule is one class with one method, :meth:`SyncRule.run`, that runs a phase on a
:class:`~grasp_kernels.plan_state.PlanState` and returns the shooting loss ``[B*K]``, plus flags that say
what it supports. :data:`SYNC_RULES` maps ``GraspConfig.sync`` to a rule; the planner, the CUDA-graph
capture and time sharding ask the flags (:func:`rule_for`), never the name.

* ``"gd"`` (:class:`GDSync`): ``sync_steps`` Adam steps with fresh moments on the shooting loss
  ``||rollout(s_0, a)_T - g||^2`` through the unrolled rollout. Its variants run the same math on a
  compiled step (:class:`CompiledGDSync`) or as one fused kernel per step (:class:`FusedMLPSync`); the
  time-sharded planner runs it as a pipeline over ranks on the same :func:`adam_phase`.
* ``"cem"`` (:class:`CEMSync`): ``sync_steps`` CEM iterations over the actions through the rollout,
  around the current actions, with a per-time-step variance from the virtual states' deviation from
  their straight line (the authors' released solver's ``sync_mode='cem'``).

Adding a rule: a subclass with ``name``, its flags and ``run``, and an entry in :data:`SYNC_RULES`
(docs/design.md, "How to add a sync rule").
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ClassVar, Optional, Protocol, Sequence, Union

import torch

from . import ops
from ._checks import BoundArg, check_tensor
from .backends import warn_once
from .cem import elites, sample_and_refit
from ._problem import Problem
from .lifted import WorldModel
from .rollouts import rollout, shooting_grad, shooting_loss
from .ops.action_step.reference import action_step_ref
from .plan_state import PlanState

__all__ = [
    "CEMSync",
    "CompiledGDSync",
    "FusedMLPSync",
    "GDSync",
    "SYNC_RULES",
    "SyncContext",
    "SyncRule",
    "SyncStep",
    "adam_phase",
    "cem_start",
    "cem_sync",
    "cem_sync_variance",
    "gd_sync",
    "rule_for",
    "sync_step",
]

SyncStep = Callable[..., torch.Tensor]


def sync_step(
    world_model: WorldModel,
    s0: torch.Tensor,
    goal: torch.Tensor,
    actions: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: Union[int, torch.Tensor],
    adam: ops.AdamHyper,
    low: BoundArg,
    high: BoundArg,
    history: int = 1,
    weights: Optional[torch.Tensor] = None,
    chains_per_chunk: Optional[int] = None,
    checkpoint: bool = False,
) -> torch.Tensor:
    """One GD sync step, in place: the shooting loss through the unrolled ``T``-step rollout, its
    gradient w.r.t. ``actions [B, T, A]``, then Adam (moments ``exp_avg``, ``exp_avg_sq``, 1-based ``step``,
    an int or a 0-d float64 tensor; constants ``adam``) and the clamp to ``[low, high]``.

    Bounded memory: ``chains_per_chunk`` differentiates at most that many chains at a time and
    ``checkpoint`` recomputes each rollout step in the backward (:func:`~grasp_kernels.rollouts.shooting_grad`);
    the Adam step runs once on all chains.

    Returns:
        ``[B]`` shooting loss of the actions before the step (detached).
    """
    loss, grad = shooting_grad(world_model, s0, actions, goal, history, weights, chains_per_chunk=chains_per_chunk,
                               checkpoint=checkpoint)
    with torch.no_grad():
        action_step_ref(actions, grad, exp_avg, exp_avg_sq, step, adam, low, high)
    return loss


def adam_phase(
    actions: torch.Tensor, steps: int, adam_step: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
) -> torch.Tensor:
    """``steps`` Adam steps on ``actions [B, T, A]`` with fresh zero moments: ``adam_step(exp_avg,
    exp_avg_sq, step)`` takes step ``step = 1..steps`` in place and returns that step's loss ``[B]``.
    Returns the last loss (zeros for ``steps = 0``)."""
    exp_avg = torch.zeros_like(actions)
    exp_avg_sq = torch.zeros_like(actions)
    loss = torch.zeros(actions.shape[0], device=actions.device, dtype=actions.dtype)
    for step in range(1, steps + 1):
        loss = adam_step(exp_avg, exp_avg_sq, step)
    return loss


def gd_sync(
    world_model: WorldModel,
    s0: torch.Tensor,
    goal: torch.Tensor,
    actions: torch.Tensor,
    steps: int,
    adam: ops.AdamHyper,
    low: BoundArg,
    high: BoundArg,
    history: int = 1,
    weights: Optional[torch.Tensor] = None,
    step_fn: Optional[SyncStep] = None,
    chains_per_chunk: Optional[int] = None,
    checkpoint: bool = False,
) -> torch.Tensor:
    """The GD sync phase: ``steps`` Adam steps (fresh moments, constants ``adam``) on ``actions`` through the
    full rollout.

    ``s0`` is ``[B, *S]`` (``[B, h, *S]`` for ``history = h > 1``), ``goal`` ``[B, *S]``; ``weights``
    as :func:`~grasp_kernels.rollouts.shooting_loss`; ``step_fn``: a stand-in for :func:`sync_step` with
    its signature (the compiled step); ``chains_per_chunk`` and ``checkpoint``: bounded memory, as
    :func:`sync_step`. Plans are independent, so minimising the sum of their shooting losses minimises
    each. Updates ``actions`` in place, clamped after each step.

    Returns:
        ``[B]`` shooting loss of the actions before the last step (detached).
    """
    step_fn = sync_step if step_fn is None else step_fn
    chunking = () if chains_per_chunk is None and not checkpoint else (chains_per_chunk, checkpoint)
    return adam_phase(actions, steps, lambda exp_avg, exp_avg_sq, step: step_fn(
        world_model, s0, goal, actions, exp_avg, exp_avg_sq, step, adam, low, high, history, weights, *chunking))


def cem_sync_variance(states: torch.Tensor, var_scale: float, var_min: float) -> torch.Tensor:
    """The CEM sync's initial per-time-step sampling variance ``[B, T]`` from the virtual states.

    ``dev_t = mean_d (s_t - l_t)_d^2`` for ``t = 1..T-1``, with ``l_t = s_0 + (t/T) (g - s_0)`` the
    straight line the states start on (rows 0 and T of ``states``), and ``dev_0 = mean_{t=1..T-1} dev_t``
    (the first action has no virtual state before it). Returns ``var_t = var_scale * dev_t + var_min``;
    ``var_min`` everywhere for ``T = 1``. Where the relaxed optimisation moved the states far from the
    line, the search over the actions is wider. The deviation is unweighted (``state_weights`` do not enter).

    Args:
        states: ``[B, T+1, D]`` (row 0 = s_0, row T = goal, rows 1..T-1 the virtual states).
    """
    batch, rows, _ = states.shape
    horizon = rows - 1
    if horizon == 1:
        return torch.full((batch, 1), var_min, device=states.device, dtype=states.dtype)
    states = states.detach()
    frac = torch.arange(1, horizon, device=states.device, dtype=states.dtype).div_(horizon).view(1, -1, 1)
    line = states[:, :1] + frac * (states[:, -1:] - states[:, :1])
    deviation = (states[:, 1:-1] - line).square().mean(dim=-1)  # [B, T-1]
    deviation = torch.cat([deviation.mean(dim=1, keepdim=True), deviation], dim=1)  # [B, T]
    return deviation * var_scale + var_min


def cem_sync(
    world_model: WorldModel,
    s0: torch.Tensor,
    goal: torch.Tensor,
    actions: torch.Tensor,
    states: Optional[torch.Tensor],
    steps: int,
    samples: int,
    elite_count: int,
    var_scale: float,
    var_min: float,
    low: Optional[torch.Tensor],
    high: Optional[torch.Tensor],
    generators: Sequence[torch.Generator],
    history: int = 1,
    weights: Optional[torch.Tensor] = None,
    initial_var: Optional[torch.Tensor] = None,
    max_rows: Optional[int] = None,
) -> torch.Tensor:
    """The CEM sync phase: ``steps`` CEM iterations over the actions through the full rollout (the
    sampling core :func:`grasp_kernels.cem.sample_and_refit`); the final mean is written to ``actions``.

    With ``B`` chains, horizon ``T``, action dim ``A``, ``N = samples`` and ``E = elite_count``:

    1. ``mean [B, T, A] = actions``; ``var [B, T] =`` :func:`cem_sync_variance` ``(states)``, or
       ``initial_var`` if given (the chains' CEM start, ``GraspConfig.init_cem_steps``).
    2. Each iteration: ``xi [B, N, T, A]``, row ``b`` drawn from ``generators[b]`` (shard-invariant);
       candidates ``mean + sqrt(var) * xi`` clamped to ``[low, high]``; their shooting losses ``[B, N]``
       (one rollout over ``B*N`` rows); the ``E`` lowest are the elites; ``mean =`` their mean (clamped),
       ``var =`` their unbiased variance averaged over ``A``, plus ``var_min``.
    3. ``actions = mean`` (the refit mean, not the best candidate seen, as the authors' solver).

    Args:
        s0: rollout start ``[B, *S]`` (``[B, h, *S]`` for ``history = h > 1``); ``goal`` ``[B, *S]``.
        actions: ``[B, T, A]``, overwritten.
        states: ``[B, T+1, D]`` virtual states (only read, for the variance; unused with ``initial_var``).
        low, high: the action bounds, None or ``[A]`` tensors (``+-inf`` allowed).
        generators: one per chain (``len == B``).
        weights: per-component state weights of the shooting loss (broadcastable to ``S``), or None.
        initial_var: ``[B, T]`` initial sampling variance replacing the one from ``states``, or None.
        max_rows: roll at most this many candidates out at a time (bounded memory; None: all ``B*N``).

    Returns:
        ``[B]`` shooting loss of the actions written back (one extra rollout over ``B`` rows; the GD
        sync reports the loss before its last step instead).
    """
    batch, horizon, action_dim = actions.shape
    if len(generators) != batch:
        raise ValueError(f"cem_sync needs one generator per chain ({batch}), got {len(generators)}")
    if initial_var is not None:
        check_tensor("initial_var", initial_var, shape=(batch, horizon), dtypes=(actions.dtype,), device=actions.device)
    with torch.no_grad():
        var = cem_sync_variance(states, var_scale, var_min) if initial_var is None else initial_var
        start = s0.repeat_interleave(samples, dim=0)
        target = goal.repeat_interleave(samples, dim=0)

        def score(candidates: torch.Tensor) -> torch.Tensor:
            flat = candidates.view(batch * samples, horizon, action_dim)
            return shooting_loss(world_model, start, flat, target, history, weights, max_rows=max_rows).view(
                batch, samples)

        def refit(candidates: torch.Tensor, cost: torch.Tensor, spread: torch.Tensor):
            elite = elites(candidates, cost, elite_count)
            refit_var = elite.var(dim=1).mean(dim=-1) + var_min  # the elites' variance, before the mean's clamp
            return elite.mean(dim=1), refit_var.sqrt().view(batch, horizon, 1)

        spread = var.sqrt().view(batch, horizon, 1)
        mean, _ = sample_and_refit(actions.detach().clone(), spread, generators, steps, samples, score, refit,
                                   low, high)
        actions.copy_(mean)
        return shooting_loss(world_model, s0, actions, goal, history, weights, max_rows=max_rows)


class SyncContext(Protocol):
    """What a sync rule reads from the planner running it (:class:`~grasp_kernels.planner.GraspPlanner`)."""

    config: Any  # the plan's GraspConfig

    def rollout_model(self) -> WorldModel:
        """The world model of the sequential rollouts (its output in the states' dtype)."""

    def model_precision(self, device: torch.device) -> contextlib.AbstractContextManager:
        """``torch.autocast`` in ``config.model_dtype`` around world-model calls (or a no-op)."""

    def compiled_sync_step(self) -> Optional[SyncStep]:
        """The compiled :func:`sync_step`, or None where it is not compiled (or compiling failed)."""


class SyncRule:
    """One way to run a sync phase (module docstring).

    Flags (class attributes):
        name: the ``GraspConfig.sync`` value that selects it (its family, for the variants).
        capturable: its launches are the same in every phase and draw no host-side random numbers, so
            one captured CUDA graph can replay every phase (``GraspConfig(cuda_graph=True)``).
        time_shardable: :class:`~grasp_kernels.distributed.TimeShardedPlanner` runs it as a pipeline.
        fused: the variant that runs it on the fused MLP kernel (``fused_mlp=True``), or None.
        compiled: the variant that runs it on a ``torch.compile``d step (``compile=True``), or None.
        uses_kernel_backends: it runs the triton/cuda kernels where the plan does (else the reference math).
    """

    name: ClassVar[str]
    title: ClassVar[str]  # for messages: "the GD sync"
    capturable: ClassVar[bool] = False
    time_shardable: ClassVar[bool] = False
    fused: ClassVar[Optional[type["SyncRule"]]] = None
    compiled: ClassVar[Optional[type["SyncRule"]]] = None
    uses_kernel_backends: ClassVar[bool] = False
    # why a CUDA graph cannot replay it (capturable False)
    not_capturable_because: ClassVar[str] = ""

    def run(self, context: SyncContext, state: PlanState) -> torch.Tensor:
        """Run one sync phase on ``state`` in place (the actions; the moments are the planner's to reset);
        returns the shooting loss ``[B*K]``."""
        raise NotImplementedError


class GDSync(SyncRule):
    """``sync="gd"``: Adam on the shooting loss through the unrolled rollout (:func:`gd_sync`)."""

    name = "gd"
    title = "the GD sync"
    capturable = True
    time_shardable = True

    def run(self, context: SyncContext, state: PlanState) -> torch.Tensor:
        cfg, chains, memory = context.config, state.chains, state.memory
        with context.model_precision(state.states.device):
            return gd_sync(
                context.rollout_model(), chains.frames(), chains.goal, state.actions, cfg.sync_steps,
                cfg.adam(cfg.sync_lr), state.low, state.high, chains.history, state.weights,
                step_fn=self.step_fn(context, state), chains_per_chunk=None if memory is None else memory.sync_chains,
                checkpoint=memory is not None and memory.checkpoint,
            )

    def step_fn(self, context: SyncContext, state: PlanState) -> Optional[SyncStep]:
        """The step :func:`gd_sync` takes (None: :func:`sync_step`)."""
        return None


class CompiledGDSync(GDSync):
    """The GD sync on the ``torch.compile``d :func:`sync_step` (``compile=True``); eager if compiling failed,
    and with activation checkpointing over several chunks of chains (bounded memory), which torch.compile
    does not take (one recomputed backward region per graph)."""

    def step_fn(self, context: SyncContext, state: PlanState) -> Optional[SyncStep]:
        memory = state.memory
        if memory is not None and memory.checkpoint and (memory.sync_chains or 0) < state.actions.shape[0]:
            warn_once("grasp_kernels: compile=True runs the GD sync step eagerly with activation checkpointing over "
                      "several chunks of chains (torch.compile takes one recomputed backward region per graph)")
            return None
        return context.compiled_sync_step()


class FusedMLPSync(GDSync):
    """The GD sync with each step one fused kernel (:func:`grasp_kernels.ops.fused_mlp_sync_step_`, the
    packed MLPDynamics of the fused iteration): the same Adam, bounds and reported loss."""

    uses_kernel_backends = True

    def run(self, context: SyncContext, state: PlanState) -> torch.Tensor:
        cfg, chains, actions = context.config, state.chains, state.actions
        s0, goal = chains.flat(chains.s0).contiguous(), chains.flat(chains.goal).contiguous()
        workspace = torch.empty((chains.batch, cfg.horizon + 1, chains.state_dim), device=s0.device, dtype=torch.float32)
        adam = cfg.adam(cfg.sync_lr)
        with torch.no_grad():
            return adam_phase(actions, cfg.sync_steps, lambda exp_avg, exp_avg_sq, step: ops.fused_mlp_sync_step_(
                state.fused_mlp, s0, goal, actions, exp_avg, exp_avg_sq, step, adam, state.low, state.high,
                workspace=workspace, backend=state.fused_backend))


GDSync.fused = FusedMLPSync
GDSync.compiled = CompiledGDSync


class CEMSync(SyncRule):
    """``sync="cem"``: CEM over the actions through the rollout (:func:`cem_sync`), drawing from the
    chains' generators on the host."""

    name = "cem"
    title = "the CEM sync"
    not_capturable_because = "the CEM sync (sync='cem') draws from per-chain torch.Generators"

    def run(self, context: SyncContext, state: PlanState) -> torch.Tensor:
        cfg, chains = context.config, state.chains
        with context.model_precision(state.states.device):
            return cem_sync(
                context.rollout_model(), chains.frames(), chains.goal, state.actions, state.states, cfg.sync_steps,
                cfg.cem_sync_samples, cfg.cem_sync_elites, cfg.cem_sync_var_scale, cfg.cem_sync_var_min,
                state.low, state.high, state.chain_generators, chains.history, state.weights,
                max_rows=None if state.memory is None else state.memory.rollout_rows,
            )


def cem_start(
    context: SyncContext, chains: Problem, actions: torch.Tensor, low: Optional[torch.Tensor],
    high: Optional[torch.Tensor], generators: Sequence[torch.Generator], weights: Optional[torch.Tensor],
    max_rows: Optional[int] = None,
) -> torch.Tensor:
    """The chains' CEM start (``GraspConfig.init_cem_steps``): :func:`cem_sync` from ``actions [B*K, T, A]``
    (overwritten with the final means) with the initial variance ``init_cem_var`` everywhere, each chain
    drawing from its own generator; returns the model rollout of those actions ``[B*K, T+1, D]``, the
    chains' initial virtual states. ``max_rows``: rows per rollout call (bounded memory)."""
    cfg = context.config
    initial_var = torch.full(actions.shape[:2], cfg.init_cem_var, device=actions.device, dtype=actions.dtype)
    with context.model_precision(actions.device), torch.no_grad():
        cem_sync(
            context.rollout_model(), chains.frames(), chains.goal, actions, None, cfg.init_cem_steps,
            cfg.cem_sync_samples, cfg.cem_sync_elites, cfg.cem_sync_var_scale, cfg.cem_sync_var_min,
            low, high, generators, chains.history, weights, initial_var=initial_var, max_rows=max_rows,
        )
        trajectory = rollout(context.rollout_model(), chains.frames(), actions, chains.history, max_rows=max_rows)
    return trajectory.to(actions.dtype).reshape(chains.batch, cfg.horizon + 1, chains.state_dim)


SYNC_RULES: dict[str, type[SyncRule]] = {rule.name: rule for rule in (GDSync, CEMSync)}


def rule_for(sync: str, *, fused: bool = False, compiled: bool = False) -> SyncRule:
    """The rule that runs ``GraspConfig.sync == sync`` for a plan: its fused variant where the plan runs
    the fused MLP kernel, else its compiled variant with ``compile=True``, else the rule itself."""
    rule = SYNC_RULES[sync]
    if fused and rule.fused is not None:
        return rule.fused()
    if compiled and rule.compiled is not None:
        return rule.compiled()
    return rule()
