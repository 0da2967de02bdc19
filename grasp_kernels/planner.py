"""GRASP: the lifted, noisy, gradient-reshaped planner (docs/design.md, section 1).

One iteration is ONE batched world-model call over all ``B*T`` transitions, the fused energy with
its reshaped gradients, one VJP through the world model to the actions, and the fused Adam steps.
The sync phase (full-rollout gradient steps on the actions) is the only sequential part.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from . import lifted, ops, schedules
from ._checks import check_int
from ._problem import (
    NonFiniteError,
    action_bounds,
    best_chains_result,
    broadcast_state_weights,
    check_fused_mlp,
    check_init_states,
    check_model_history,
    check_planner_args,
    check_state_weights,
    clamp_,
    final_rollout,
    fused_mlp_backend_for,
    initial_actions,
    make_problem,
    raise_if_nonfinite,
)
from .backends import BackendFallbackWarning, resolve_backend, warn_once
from .compiled import CompiledFunction, compiled_iteration, iteration_function, step_tensor
from .config import GraspConfig
from .graphs import PlanGraphs, host_sync_forbidden
from .lifted import WorldModel, lifted_iteration
from .memory import MemoryPlan
from .plan_state import PlanState
from .randomness import per_plan_normal, plan_generators
from .result import PlanResult
from .sizing import memory_plan, retry_out_of_memory
from .sync import SYNC_RULES, SyncRule, SyncStep, cem_start, rule_for, sync_step


class GraspPlanner:
    """Plans action sequences for a world model with GRASP.

    Args:
        world_model: callable or ``nn.Module`` mapping ``states [N, *S]``, ``actions [N, A]`` to
            next states ``[N, *S]``.
        action_dim: ``A``.
        config: hyper-parameters (defaults: :class:`GraspConfig`).
        state_shape: ``S``; needed only to tell one structured state ``[*S]`` from a batch. Without
            it a 1-D ``goal`` is one plan and a >= 2-D ``goal`` is a batch ``[B, *S]``.
        state_weights: optional positive per-component weights ``w`` broadcastable to ``S``
            (e.g. patch tokens ``[P, E]`` plus proprio weighted by DINO-WM's ``alpha``). The energy's
            dynamics and goal terms, the sync loss and the final distance then use
            ``||x||_w^2 = sum w x^2``. Kernel backends evaluate it as the unweighted energy of
            ``sqrt(w) * pred`` and ``sqrt(w) * states`` (gradients scaled back by ``sqrt(w)``), with
            the separate energy and state-step kernels instead of the fused one.

    History windows (``config.history = h > 1``): the world model maps windows ``[N, h, *S]`` (oldest
    frame first) and actions ``[N, A]`` to next states ``[N, *S]``; ``s0`` carries the last ``h``
    observed frames ``[B, h, *S]`` and ``goal`` is one frame ``[B, *S]``. A world model that declares
    its window (an int attribute ``history``, ``num_hist`` or ``history_size``) must match ``h``.

    Example:
        >>> planner = GraspPlanner(model, action_dim=2, config=GraspConfig(horizon=64, iters=300))
        >>> result = planner.plan(s0, goal)          # s0, goal: [B, *S]
        >>> result.actions.shape                      # [B, 64, 2]
    """

    def __init__(
        self,
        world_model: WorldModel,
        action_dim: int,
        config: Optional[GraspConfig] = None,
        state_shape: Optional[Sequence[int]] = None,
        state_weights: Optional[torch.Tensor] = None,
    ) -> None:
        check_planner_args(world_model, action_dim)
        if config is None:
            config = GraspConfig()
        if not isinstance(config, GraspConfig):
            raise TypeError(f"config must be a GraspConfig, got {type(config).__name__}")
        config.validate()
        check_model_history(world_model, config.history)
        self.world_model = world_model
        self.action_dim = action_dim
        self.config = config
        self.state_shape = None if state_shape is None else tuple(int(s) for s in state_shape)
        self.state_weights = check_state_weights(state_weights, self.state_shape)
        if config.fused_mlp:
            check_fused_mlp(world_model, stop_gradient=config.stop_gradient, history=config.history,
                            model_dtype=config.model_dtype, state_weights=self.state_weights)
        self._graphs = PlanGraphs()
        # built once: the compiled sync step guards on the world model it is given (a new lambda per
        # call would recompile every phase)
        self._rollout = self.world_model if config.model_dtype is None else self._cast_rollout
        self._compiled_iteration: Optional[CompiledFunction] = None
        self._compiled_sync: Optional[CompiledFunction] = None
        self._memory_plans: dict[tuple, MemoryPlan] = {}  # memory_budget: the measured chunk sizes per shape
        if config.compile and config.cuda_graph:
            warn_once("grasp_kernels: compile=True is not combined with cuda_graph=True: nothing is compiled "
                      "(the captured plan, or the eager loop where capture cannot run, uses the eager functions)")
        elif config.compile:
            self._compiled_iteration = CompiledFunction(iteration_function(world_model, config), "the lifted iteration")
            self._compiled_sync = CompiledFunction(sync_step, "the sync step", self._compiled_iteration.fallback)
            if config.goal_weight_final is not None:
                warn_once("grasp_kernels: compile=True runs the lifted iteration eagerly with goal_weight_final set "
                          "(the compiled iteration bakes gamma in; the annealed gamma changes every iteration)")
            if SYNC_RULES[config.sync].compiled is None:
                warn_once(f"grasp_kernels: compile=True compiles the GD sync step only; sync={config.sync!r} runs eagerly")
        if config.fused_mlp and SYNC_RULES[config.sync].fused is None:
            warn_once(f"grasp_kernels: fused_mlp=True fuses the lifted iterations only with sync={config.sync!r}: "
                      f"{SYNC_RULES[config.sync].title} runs on the plain path (the fused sync kernel is the GD sync's)")

    def backend_for(self, device: torch.device, dtype: torch.dtype) -> str:
        """The concrete backend this planner runs with for states on ``device`` of ``dtype``."""
        name = resolve_backend(self.config.backend, device)
        if name != "reference" and dtype != torch.float32:
            warnings.warn(
                f"grasp_kernels: backend {name!r} runs float32 states only; {dtype} states use the reference",
                BackendFallbackWarning,
                stacklevel=3,
            )
            name = "reference"
        return name

    def plan(
        self,
        s0: torch.Tensor,
        goal: torch.Tensor,
        init_actions: Optional[torch.Tensor] = None,
        progress: bool = False,
        *,
        init_states: Optional[torch.Tensor] = None,
        plan_offset: int = 0,
    ) -> PlanResult:
        """Plan from ``s0`` to ``goal``.

        Args:
            s0: ``[B, *S]`` start states (or ``[*S]`` for one plan), float32 or float64; with
                ``config.history = h > 1`` the last ``h`` observed frames ``[B, h, *S]`` (``[h, *S]``).
            goal: goal states ``[B, *S]`` (``[*S]``), same dtype and device as ``s0``.
            init_actions: optional warm start ``[B, T, A]`` (or ``[T, A]``, shared by all plans).
            progress: show a progress bar over the iterations.
            init_states: optional warm start of the virtual states ``[B, T+1, *S]`` (``[T+1, *S]`` for
                one plan), e.g. the previous plan's ``states`` shifted (MPC): rows 1..T-1 start there
                (plus ``init_noise``, per chain) instead of on the line from ``s0`` to ``goal``; its rows 0
                and T are ignored (they are ``s0`` and ``goal``).
            plan_offset: the global index of this batch's first plan. A plan's random numbers (initial
                and state noise of each of its chains) depend on ``config.seed`` and its global index
                only, so plan ``i`` here equals plan ``plan_offset + i`` of any bigger batch with the same
                seed, alone, batched or on another rank (:mod:`grasp_kernels.randomness`).

        Returns:
            :class:`PlanResult` with ``actions [B,T,A]``, virtual ``states [B,T+1,*S]``,
            ``rollout [B,T+1,*S]``, ``final_distance [B]``, ``energy_history [iters, B]`` (leading
            ``B`` dropped for a single plan). With ``particles = K > 1`` the chain whose rollout
            ends closest to the goal is returned per problem.

        With ``config.cuda_graph`` the iterations and sync phases of a CUDA plan run as captured CUDA
        graphs, replayed for every later call with the same shapes (:mod:`grasp_kernels.graphs`); same
        results as the eager loop.
        """
        start = time.perf_counter()
        state = self.start(s0, goal, init_actions, init_states, plan_offset)
        if self.config.cuda_graph:
            replayed = self._graphs.run(
                self.config, state, self.sync_rule(state), iteration=self.iteration, sync_phase=self.sync_phase,
            )
            if replayed is not None:
                return self.finish(replayed, start)
        self.run_iterations(state, progress)
        return self.finish(state, start)

    def run_iterations(self, state: PlanState, progress: bool = False) -> None:
        """All lifted iterations of a started plan, each followed by a sync phase when one is due (until the
        phases stall, with ``config.stop_tolerance``)."""
        cfg = self.config
        for _ in tqdm(range(cfg.iters - state.iteration), desc="GRASP", disable=not progress, leave=False):
            self.iteration(state)
            if state.sync_due:
                self.sync(state)
                if cfg.stop_tolerance and state.stalled(cfg.stop_tolerance):
                    break

    @property
    def captured_plans(self) -> int:
        """How many plans (one per input shape) ``config.cuda_graph`` holds as captured CUDA graphs."""
        return len(self._graphs)

    def clear_cuda_graphs(self) -> None:
        """Drop the captured plans (``config.cuda_graph``): the next call of each shape captures anew.
        Needed after the world model's parameters were replaced by new tensors (in-place updates are
        seen by the graphs)."""
        self._graphs.clear()

    def start(
        self,
        s0: torch.Tensor,
        goal: torch.Tensor,
        init_actions: Optional[torch.Tensor] = None,
        init_states: Optional[torch.Tensor] = None,
        plan_offset: int = 0,
    ) -> PlanState:
        """Checked inputs, initial virtual states and actions, zeroed moments: the loop's state
        (``plan_offset``: as :meth:`plan`)."""
        cfg = self.config
        plan_offset = check_int("plan_offset", plan_offset, minimum=0)
        problem = make_problem(s0, goal, self.state_shape, cfg.history)
        if isinstance(init_actions, torch.Tensor) and problem.single and init_actions.dim() == 2:
            init_actions = init_actions.unsqueeze(0)
        actions = initial_actions(init_actions, problem.batch, cfg.horizon, self.action_dim, problem.s0)
        chains = problem.repeat(cfg.particles)
        actions = actions.repeat_interleave(cfg.particles, dim=0)
        device, dtype = problem.s0.device, problem.s0.dtype
        # chain c of the global batch is plan c // K's chain c % K: its randomness is keyed by c alone
        first_chain = plan_offset * cfg.particles
        chain_generators = plan_generators(cfg.seed, first_chain, chains.batch, device)
        low, high = action_bounds(cfg.action_low, cfg.action_high, self.action_dim, device, dtype)
        clamp_(actions, low, high)
        guess = None
        if init_states is not None:
            guess = check_init_states(init_states, problem, cfg.horizon)
            guess = guess.reshape(problem.batch, cfg.horizon + 1, -1).repeat_interleave(cfg.particles, dim=0)
        init_noise = None
        if cfg.init_noise > 0 and cfg.horizon > 1:
            init_noise = per_plan_normal(chain_generators, (cfg.horizon - 1, chains.state_dim), device, dtype)
        weights = None
        if self.state_weights is not None:
            weights = broadcast_state_weights(self.state_weights, problem.state_shape).to(device=device, dtype=dtype)
        s0_rows, goal_rows = chains.flat(chains.s0), chains.flat(chains.goal)
        states = lifted.init_states(s0_rows, goal_rows, cfg.horizon, cfg.init_noise, guess=guess, noise=init_noise)
        backend = self.backend_for(device, dtype)
        fused_backend = fused_mlp_backend_for(backend, device, dtype, cfg.model_dtype) if cfg.fused_mlp else None
        packed = None
        if fused_backend is not None:
            matmul_dtype = torch.bfloat16 if cfg.model_dtype == "bfloat16" else None
            packed = ops.pack_mlp(self.world_model, matmul_dtype=matmul_dtype, device=device)
        state = PlanState.allocate(
            cfg, problem, chains, backend, states, actions, low, high, chain_generators,
            noise_base=first_chain * max(cfg.horizon - 1, 0) * chains.state_dim, weights=weights, fused_mlp=packed,
            fused_backend=fused_backend,
        )
        # the chunk sizes (with a memory_budget measured on this state at zero learning rates: no draw, no change)
        state.memory = memory_plan(self, state, self._memory_plans)
        if cfg.init_cem_steps:  # the chains' CEM start replaces the line (same draws: after the initial noise)
            guess = cem_start(self, chains, actions, low, high, chain_generators, weights,
                              max_rows=None if state.memory is None else state.memory.rollout_rows)
            state.states.copy_(lifted.init_states(s0_rows, goal_rows, cfg.horizon, cfg.init_noise, guess=guess,
                                                  noise=init_noise))
        return state

    def iteration(self, state: PlanState, per_timestep: bool = False) -> torch.Tensor:
        """One lifted GRASP iteration in place on ``state`` (:func:`grasp_kernels.lifted.lifted_iteration`);
        returns the energy ``[B*K]``.

        ``per_timestep=True`` evaluates the model once per time step instead, as public GRASP ports
        do (for tests and benchmarks only). ``config.fused_mlp``: the whole iteration is one fused
        kernel for the MLPDynamics world model; it writes the new states to a second buffer and swaps
        it in, so ``state.states`` is a different tensor after the call (``per_timestep=True`` runs the
        normal iteration instead).
        """
        cfg = self.config
        it = state.iteration
        if it >= cfg.iters:
            raise RuntimeError(f"the plan already ran its {cfg.iters} iterations")
        step = state.adam_step + 1
        compiled = (self._compiled_iteration is not None and not per_timestep and not self._compiled_iteration.failed
                    and cfg.goal_weight_final is None)
        if state.fused_mlp is not None and not per_timestep:
            energy = self._fused_mlp_iteration(state, it, step)
        else:
            noise = self._reference_noise(state)  # drawn once: an out-of-memory retry reuses it

            def run(max_transitions: Optional[int]) -> torch.Tensor:
                if compiled and state.backend == "reference":
                    return compiled_iteration(self._compiled_iteration, state, step, self._noise_std(state), noise,
                                              max_transitions)
                if compiled:
                    warn_once(f"grasp_kernels: compile=True compiles the lifted iteration on the reference backend "
                              f"only; backend {state.backend!r} runs its kernels eagerly (the sync step is compiled)")
                return lifted_iteration(
                    self.world_model, state.states, state.actions, state.state_moments, state.action_moments,
                    step=step, gamma=self._goal_weight(state), state_adam=cfg.adam(cfg.lr_states),
                    action_adam=cfg.adam(cfg.lr_actions), noise_std=self._noise_std(state),
                    low=state.low, high=state.high, state_shape=state.chains.state_shape, backend=state.backend,
                    stop_gradient=cfg.stop_gradient, history=cfg.history, frames=state.frames,
                    sqrt_weights=state.sqrt_weights, noise=noise,
                    counters=ops.NoiseCounters(
                        None if state.backend == "reference" else schedules.iteration_seed(cfg.seed, it),
                        state.noise_base),
                    per_timestep=per_timestep,
                    model_precision=self.model_precision(state.states.device), max_transitions=max_transitions,
                )[0]

            energy = retry_out_of_memory(state, run, self.config.activation_checkpointing, self._memory_plans)
        state.record_iteration(energy)
        return energy

    def _reference_noise(self, state: PlanState) -> Optional[torch.Tensor]:
        """The reference backend's state noise of this iteration ``[B*K, T-1, D]``, one draw from each
        chain's generator (shard-invariant); None where no noise is drawn or the kernels draw it."""
        states = state.states
        batch, rows, dim = states.shape
        if state.backend != "reference" or rows <= 2 or not self._noise_std(state) > 0:
            return None
        return per_plan_normal(state.chain_generators, (rows - 2, dim), states.device, states.dtype)

    def _fused_mlp_iteration(self, state: PlanState, it: int, step: int) -> torch.Tensor:
        """The whole iteration as one fused kernel; the new states land in the spare buffer, which
        then becomes ``state.states`` (the buffers swap: no copy). Same seed as the unfused path."""
        cfg = self.config
        seed = schedules.iteration_seed(cfg.seed, it)
        with torch.no_grad():
            energy, new_states = ops.fused_mlp_iteration_(
                state.fused_mlp, state.states, state.actions, self._goal_weight(state), *state.state_moments,
                *state.action_moments, step, cfg.adam(cfg.lr_states), cfg.adam(cfg.lr_actions), self._noise_std(state),
                state.low, state.high, states_out=state.spare_states,
                counters=ops.NoiseCounters(seed, state.noise_base), backend=state.fused_backend,
            )
        state.states, state.spare_states = new_states, state.states
        return energy

    def model_precision(self, device: torch.device) -> contextlib.AbstractContextManager:
        """``torch.autocast`` in ``config.model_dtype`` around world-model calls (a no-op without it).
        Inside a CUDA graph capture the cast-weight cache is off (a cached cast would outlive its capture)."""
        if self.config.model_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(
            device.type, dtype=getattr(torch, self.config.model_dtype), cache_enabled=not host_sync_forbidden(device)
        )

    def rollout_model(self) -> WorldModel:
        """The world model of the sequential rollouts: under ``model_dtype`` its outputs are cast back to
        the states' dtype, so that a low-precision model does not make the rolled-out states low-precision."""
        return self._rollout

    def _cast_rollout(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The world model's next states in the states' dtype (the rollout model under ``model_dtype``)."""
        return self.world_model(states, actions).to(states.dtype)

    def _noise_std(self, state: PlanState) -> float:
        """Sigma of this iteration's Langevin noise (:func:`grasp_kernels.schedules.noise_std`)."""
        return schedules.noise_std(self.config, state.iteration, state.sync_every)

    def _goal_weight(self, state: PlanState) -> float:
        """Gamma of this iteration (:func:`grasp_kernels.schedules.goal_weight`)."""
        return schedules.goal_weight(self.config, state.iteration, state.sync_every)

    def sync(self, state: PlanState) -> torch.Tensor:
        """The sync phase (:meth:`sync_phase`) and its bookkeeping; returns the shooting loss ``[B*K]``."""
        loss = self.sync_phase(state)
        state.record_sync(loss)
        return loss

    def sync_rule(self, state: PlanState) -> SyncRule:
        """The rule that runs this plan's sync phases (:func:`grasp_kernels.sync.rule_for`)."""
        compiled = self._compiled_sync is not None
        return rule_for(self.config.sync, fused=state.fused_mlp is not None, compiled=compiled)

    def sync_phase(self, state: PlanState) -> torch.Tensor:
        """What a sync phase launches, the same in every phase (so one captured CUDA graph serves them
        all): the plan's sync rule (:meth:`sync_rule`), then the main Adam moments are zeroed. Checks the
        energy history for NaN/Inf first (one host sync per phase; skipped while a CUDA graph is captured,
        the end of the plan checks the whole history). Returns the shooting loss ``[B*K]``."""
        if self.config.check_finite and not host_sync_forbidden(state.states.device):
            raise_if_nonfinite(state.energy_history, state.iteration, "the GRASP energy")
        loss = self.sync_rule(state).run(self, state)
        torch._foreach_zero_([*state.state_moments, *state.action_moments])  # one launch for the four
        return loss

    def compiled_sync_step(self) -> Optional[SyncStep]:
        """The compiled sync step (``config.compile``, with :func:`grasp_kernels.sync.sync_step`'s
        signature: the Adam step goes in as a tensor), or None for the eager one."""
        compiled = self._compiled_sync
        if compiled is None or compiled.failed:
            return None

        def step_fn(world_model, s0, goal, actions, exp_avg, exp_avg_sq, step, *rest):
            return compiled(world_model, s0, goal, actions, exp_avg, exp_avg_sq, step_tensor(step, actions.device), *rest)

        return step_fn

    def finish(self, state: PlanState, start_time: Optional[float] = None) -> PlanResult:
        """Roll the actions out, keep the best chain per problem, build the :class:`PlanResult`."""
        cfg = self.config
        if cfg.check_finite:
            raise_if_nonfinite(state.energy_history, state.iteration, "the GRASP energy")
            if not bool(torch.isfinite(state.actions).all()):
                raise NonFiniteError(f"the planned actions hold NaN/Inf after {state.iteration} iterations")
        memory = state.memory
        with self.model_precision(state.states.device):
            rollout, distance = final_rollout(self.rollout_model(), state.chains, state.actions, state.weights,
                                              max_rows=None if memory is None else memory.rollout_rows)
        result = best_chains_result(
            state.problem, cfg.particles, state.backend, state.actions, state.states, rollout, distance,
            state.energy_history[: state.iteration], state.sync_losses[: state.syncs], start_time,
        )
        result.info["iterations"] = state.iteration
        if memory is not None:
            result.info["memory"] = memory.report(*state.actions.shape[:2])
        return result
