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

from . import ops
from ._problem import (
    Problem,
    action_bounds,
    check_planner_args,
    clamp_,
    final_rollout,
    initial_actions,
    make_problem,
    NonFiniteError,
    raise_if_nonfinite,
    squeeze_single,
)
from ._checks import check_finite, check_int, check_tensor
from .backends import BackendFallbackWarning, resolve_backend, triton_interpreter_active, warn_once
from .compiled import CompiledFunction, iteration_function, step_tensor
from .config import GraspConfig
from .graphs import PlanGraphs
from . import lifted
from .lifted import WorldModel, cem_sync, gd_sync, lifted_iteration, sync_step
from .plan_state import PlanState
from .randomness import per_plan_normal, plan_generators
from .result import PlanResult

# Kernel backends draw the noise from a seed that changes every iteration (never a growing offset);
# seeds stay below 2**31 so every backend takes them as a plain int32 argument.
_SEED_STRIDE = 0x9E3779B9
_SEED_MODULUS = (1 << 31) - 1


def _iteration_seed(seed: int, iteration: int) -> int:
    """The kernels' noise seed of one iteration (every backend takes it as a plain int32)."""
    return (seed * _SEED_STRIDE + iteration + 1) % _SEED_MODULUS


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
            check_fused_mlp(world_model, config, self.state_weights)
        self._graphs = PlanGraphs()
        # built once: the compiled sync step guards on the world model it is given (a new lambda per
        # call would recompile every phase)
        self._rollout = self.world_model if config.model_dtype is None else self._cast_rollout
        self._compiled_iteration: Optional[CompiledFunction] = None
        self._compiled_sync: Optional[CompiledFunction] = None
        if config.compile and config.cuda_graph:
            warn_once("grasp_kernels: compile=True is not combined with cuda_graph=True: nothing is compiled "
                      "(the captured plan, or the eager loop where capture cannot run, uses the eager functions)")
        elif config.compile:
            self._compiled_iteration = CompiledFunction(iteration_function(world_model, config), "the lifted iteration")
            self._compiled_sync = CompiledFunction(sync_step, "the sync step", self._compiled_iteration.fallback)
            if config.goal_weight_final is not None:
                warn_once("grasp_kernels: compile=True runs the lifted iteration eagerly with goal_weight_final set "
                          "(the compiled iteration bakes gamma in; the annealed gamma changes every iteration)")
            if config.sync == "cem":
                warn_once("grasp_kernels: compile=True compiles the GD sync step only; sync='cem' runs eagerly")
        if config.fused_mlp and config.sync == "cem":
            warn_once("grasp_kernels: fused_mlp=True fuses the lifted iterations only with sync='cem': the CEM sync "
                      "runs on the plain path (the fused sync kernel is the GD sync's)")

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
                self.config, state, iteration=self.iteration, sync_phase=self.sync_phase, record_sync=self.record_sync,
            )
            if replayed is not None:
                return self.finish(replayed, start)
        self.run_iterations(state, progress)
        return self.finish(state, start)

    def run_iterations(self, state: PlanState, progress: bool = False) -> None:
        """All lifted iterations of a started plan, each followed by a sync phase when one is due."""
        for _ in tqdm(range(self.config.iters - state.iteration), desc="GRASP", disable=not progress, leave=False):
            self.iteration(state)
            if state.sync_due:
                self.sync(state)

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
        chains = _repeat_chains(problem, cfg.particles)
        actions = actions.repeat_interleave(cfg.particles, dim=0)
        device, dtype = problem.s0.device, problem.s0.dtype
        # chain c of the global batch is plan c // K's chain c % K: its randomness is keyed by c alone
        first_chain = plan_offset * cfg.particles
        chain_generators = plan_generators(cfg.seed, first_chain, chains.batch, device)
        low, high = action_bounds(cfg.action_low, cfg.action_high, self.action_dim, device, dtype)
        clamp_(actions, low, high)
        guess = None
        if init_states is not None:
            guess = _check_init_states(init_states, problem, cfg.horizon)
            guess = guess.reshape(problem.batch, cfg.horizon + 1, -1).repeat_interleave(cfg.particles, dim=0)
        init_noise = None
        if cfg.init_noise > 0 and cfg.horizon > 1:
            init_noise = per_plan_normal(chain_generators, (cfg.horizon - 1, chains.state_dim), device, dtype)
        weights = None
        if self.state_weights is not None:
            weights = broadcast_state_weights(self.state_weights, problem.state_shape).to(device=device, dtype=dtype)
        if cfg.init_cem_steps:
            guess = self._cem_initialisation(chains, actions, low, high, chain_generators, weights)
        states = lifted.init_states(chains.flat(chains.s0), chains.flat(chains.goal), cfg.horizon, cfg.init_noise,
                                    guess=guess, noise=init_noise)
        num_syncs = cfg.iters // cfg.sync_every if cfg.sync_every and cfg.sync_steps else 0
        frames = None
        if chains.history_frames is not None:
            # [B*K, h-1+T, D]: the h-1 older observed frames (fixed), then a copy of the rows s_0..s_{T-1}
            # refreshed before each lifted model call; the B*T windows are a strided view of it
            lead = chains.history - 1
            frames = torch.empty(chains.batch, lead + cfg.horizon, chains.state_dim, device=device, dtype=dtype)
            frames[:, :lead] = chains.history_frames.reshape(chains.batch, lead, chains.state_dim)
        backend = self.backend_for(device, dtype)
        if backend != "reference":  # the kernels' form (+-inf where unbounded), built once: no per-step sync
            inf = torch.tensor(float("inf"), device=device, dtype=dtype)
            low = (-inf).expand(self.action_dim).contiguous() if low is None else low.contiguous()
            high = inf.expand(self.action_dim).contiguous() if high is None else high.contiguous()
        packed, spare, fused_backend = None, None, None
        if cfg.fused_mlp:
            fused_backend = self._fused_mlp_backend(backend, device, dtype)
            if fused_backend is not None:
                matmul_dtype = torch.bfloat16 if cfg.model_dtype == "bfloat16" else None
                packed = ops.pack_mlp(self.world_model, matmul_dtype=matmul_dtype, device=device)
                spare = torch.empty_like(states)  # the second state buffer (the kernel writes every row)
        return PlanState(
            problem=problem,
            chains=chains,
            backend=backend,
            states=states,
            actions=actions,
            state_moments=(torch.zeros_like(states), torch.zeros_like(states)),
            action_moments=(torch.zeros_like(actions), torch.zeros_like(actions)),
            low=low,
            high=high,
            chain_generators=chain_generators,
            noise_base=first_chain * max(cfg.horizon - 1, 0) * chains.state_dim,
            energy_history=torch.full((cfg.iters, chains.batch), float("nan"), device=device, dtype=dtype),
            sync_losses=torch.full((num_syncs, chains.batch), float("nan"), device=device, dtype=dtype),
            sync_every=cfg.sync_every if num_syncs else 0,
            frames=frames,
            weights=weights,
            sqrt_weights=None if weights is None else weights.reshape(-1).sqrt().contiguous(),
            fused_mlp=packed,
            spare_states=spare,
            fused_backend=fused_backend,
        )

    def _cem_initialisation(
        self, chains: Problem, actions: torch.Tensor, low: Optional[torch.Tensor], high: Optional[torch.Tensor],
        generators: Sequence[torch.Generator], weights: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """``config.init_cem_steps`` CEM iterations per chain from ``actions [B*K, T, A]`` (overwritten with the
        final means), each chain drawing from its own generator; returns the model rollout of those actions
        ``[B*K, T+1, D]``, the chains' initial virtual states."""
        cfg = self.config
        initial_var = torch.full(actions.shape[:2], cfg.init_cem_var, device=actions.device, dtype=actions.dtype)
        with self._model_precision(actions.device), torch.no_grad():
            cem_sync(
                self._rollout_model(), chains.frames(), chains.goal, actions, None, cfg.init_cem_steps,
                cfg.cem_sync_samples, cfg.cem_sync_elites, cfg.cem_sync_var_scale, cfg.cem_sync_var_min,
                low, high, generators, chains.history, weights, initial_var=initial_var,
            )
            trajectory = lifted.rollout(self._rollout_model(), chains.frames(), actions, chains.history)
        return trajectory.to(actions.dtype).reshape(chains.batch, cfg.horizon + 1, chains.state_dim)

    def _fused_mlp_backend(self, backend: str, device: torch.device, dtype: torch.dtype) -> Optional[str]:
        """The backend of the fused MLP kernel for this plan, or None (one warning) to run the normal
        iteration: the fused kernel is Triton-only and float32-only."""
        if backend == "reference":
            reason = "the planner runs on the reference backend"
        elif dtype != torch.float32:
            reason = f"the states are {dtype}"
        elif self.config.model_dtype is not None and device.type != "cuda" and triton_interpreter_active():
            reason = "the Triton interpreter has no bfloat16 tl.dot"
        else:
            name = ops.fused_mlp_backend(backend, device)
            if name == "triton":
                return name
            reason = "the Triton kernels cannot run here"
        warn_once(f"grasp_kernels: fused_mlp=True runs the normal iteration: {reason} (the fused MLP "
                             "kernel needs the triton or cuda backend and float32 states)")
        return None

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
        if state.fused_mlp is not None and not per_timestep:
            return self._fused_mlp_iteration(state, it, step)
        if (self._compiled_iteration is not None and not per_timestep and not self._compiled_iteration.failed
                and cfg.goal_weight_final is None):
            if state.backend == "reference":
                return self._compiled_lifted_iteration(state, it, step)
            warn_once(f"grasp_kernels: compile=True compiles the lifted iteration on the reference backend only; "
                      f"backend {state.backend!r} runs its kernels eagerly (the sync step is compiled)")
        energy, _, _ = lifted_iteration(
            self.world_model, state.states, state.actions, state.state_moments, state.action_moments,
            step=step, gamma=self._goal_weight(state), lr_states=cfg.lr_states, lr_actions=cfg.lr_actions, beta1=cfg.beta1,
            beta2=cfg.beta2, eps=cfg.adam_eps, noise_std=self._noise_std(state), low=state.low, high=state.high,
            state_shape=state.chains.state_shape, backend=state.backend, stop_gradient=cfg.stop_gradient,
            history=cfg.history, frames=state.frames, sqrt_weights=state.sqrt_weights,
            noise=self._reference_noise(state), seed=None if state.backend == "reference" else _iteration_seed(cfg.seed, it),
            noise_base=state.noise_base, per_timestep=per_timestep,
            model_precision=self._model_precision(state.states.device),
        )
        state.energy_history[it] = energy
        state.adam_step = step
        state.iteration = it + 1
        return energy

    def _reference_noise(self, state: PlanState) -> Optional[torch.Tensor]:
        """The reference backend's state noise of this iteration ``[B*K, T-1, D]``, one draw from each
        chain's generator (shard-invariant); None where no noise is drawn or the kernels draw it."""
        states = state.states
        batch, rows, dim = states.shape
        if state.backend != "reference" or rows <= 2 or not self._noise_std(state) > 0:
            return None
        return per_plan_normal(state.chain_generators, (rows - 2, dim), states.device, states.dtype)

    def _compiled_lifted_iteration(self, state: PlanState, it: int, step: int) -> torch.Tensor:
        """The iteration through ``torch.compile`` (:mod:`grasp_kernels.compiled`): the step and sigma as
        0-d tensors and the noise drawn here from the chains' generators, exactly as the eager reference
        draws it, so that one graph serves every iteration."""
        states = state.states
        batch, rows, dim = states.shape
        sigma = self._noise_std(state)
        noise = self._reference_noise(state)
        if noise is None:  # the eager reference draws nothing then
            noise = states.new_zeros((batch, rows - 2, dim))
        energy = self._compiled_iteration(
            states, state.actions, *state.state_moments, *state.action_moments, step_tensor(step, states.device),
            torch.full((), sigma, dtype=states.dtype, device=states.device), noise, state.frames, state.low,
            state.high, state.sqrt_weights, state.chains.state_shape,
        )
        state.energy_history[it] = energy
        state.adam_step = step
        state.iteration = it + 1
        return energy

    def _fused_mlp_iteration(self, state: PlanState, it: int, step: int) -> torch.Tensor:
        """The whole iteration as one fused kernel; the new states land in the spare buffer, which
        then becomes ``state.states`` (the buffers swap: no copy). Same seed as the unfused path."""
        cfg = self.config
        seed = _iteration_seed(cfg.seed, it)
        with torch.no_grad():
            energy, new_states = ops.fused_mlp_iteration_(
                state.fused_mlp, state.states, state.actions, self._goal_weight(state), *state.state_moments,
                *state.action_moments, step, cfg.lr_states, cfg.lr_actions, cfg.beta1, cfg.beta2, cfg.adam_eps,
                self._noise_std(state), state.low, state.high, states_out=state.spare_states, seed=seed,
                noise_base=state.noise_base, backend=state.fused_backend,
            )
        state.states, state.spare_states = new_states, state.states
        state.energy_history[it] = energy
        state.adam_step = step
        state.iteration = it + 1
        return energy

    def _fused_mlp_sync(self, state: PlanState) -> torch.Tensor:
        """:func:`~grasp_kernels.lifted.gd_sync` as ``sync_steps`` fused kernels (one launch per step, the
        packed model of the fused iteration): fresh zero moments, the same Adam and bounds; returns the
        shooting loss ``[B*K]`` before the last step."""
        cfg = self.config
        chains, actions = state.chains, state.actions
        s0, goal = chains.flat(chains.s0).contiguous(), chains.flat(chains.goal).contiguous()
        exp_avg, exp_avg_sq = torch.zeros_like(actions), torch.zeros_like(actions)
        workspace = torch.empty((chains.batch, cfg.horizon + 1, chains.state_dim), device=s0.device, dtype=torch.float32)
        with torch.no_grad():
            for step in range(1, cfg.sync_steps + 1):  # >= 1: a plan without sync steps has no sync phase
                loss = ops.fused_mlp_sync_step_(
                    state.fused_mlp, s0, goal, actions, exp_avg, exp_avg_sq, step, cfg.sync_lr, cfg.beta1, cfg.beta2,
                    cfg.adam_eps, state.low, state.high, workspace=workspace, backend=state.fused_backend,
                )
        return loss

    def _model_precision(self, device: torch.device) -> contextlib.AbstractContextManager:
        """``torch.autocast`` in ``config.model_dtype`` around world-model calls (a no-op without it).
        Inside a CUDA graph capture the cast-weight cache is off (a cached cast would outlive its capture)."""
        if self.config.model_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(
            device.type, dtype=getattr(torch, self.config.model_dtype), cache_enabled=not _host_sync_forbidden(device)
        )

    def _rollout_model(self) -> WorldModel:
        """The world model of the sequential rollouts: under ``model_dtype`` its outputs are cast back to
        the states' dtype, so that a low-precision model does not make the rolled-out states low-precision."""
        return self._rollout

    def _cast_rollout(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The world model's next states in the states' dtype (the rollout model under ``model_dtype``)."""
        return self.world_model(states, actions).to(states.dtype)

    def _anneal_fraction(self, state: PlanState) -> float:
        """How far this iteration is into its annealing period, ``j / P`` in ``[0, 1)``: the ``j``-th
        (0-based) iteration of a sync phase of ``P`` iterations (of the whole plan without sync). The one
        schedule of ``anneal_noise`` and ``goal_weight_final``."""
        period = state.sync_every or self.config.iters
        return (state.iteration % period) / period

    def _noise_std(self, state: PlanState) -> float:
        """Sigma of this iteration's Langevin noise (a host scalar: no device sync)."""
        cfg = self.config
        if not cfg.anneal_noise:
            return cfg.state_noise
        return cfg.state_noise * (1.0 - self._anneal_fraction(state))

    def _goal_weight(self, state: PlanState) -> float:
        """Gamma of this iteration (a host scalar): ``goal_weight``, or with ``goal_weight_final`` the
        linear decay towards it on the annealing schedule (:meth:`_anneal_fraction`), or over the whole plan
        with ``goal_weight_schedule="plan"``."""
        cfg = self.config
        if cfg.goal_weight_final is None:
            return cfg.goal_weight
        fraction = self._anneal_fraction(state) if cfg.goal_weight_schedule == "phase" else state.iteration / cfg.iters
        return cfg.goal_weight + (cfg.goal_weight_final - cfg.goal_weight) * fraction

    def sync(self, state: PlanState) -> torch.Tensor:
        """The sync phase (:meth:`sync_phase`) and its bookkeeping (:meth:`record_sync`); returns the
        shooting loss ``[B*K]``."""
        loss = self.sync_phase(state)
        self.record_sync(state, loss)
        return loss

    def sync_phase(self, state: PlanState) -> torch.Tensor:
        """What a sync phase launches, the same in every phase (so one captured CUDA graph serves them
        all): ``sync_steps`` Adam steps on the actions through the full rollout (fresh moments; with
        ``config.fused_mlp`` on the fused kernel, one launch per step), or with ``config.sync == "cem"``
        ``sync_steps`` CEM iterations (:func:`grasp_kernels.lifted.cem_sync`, the plain path, drawing from
        the chains' generators), then the main Adam moments are zeroed. Checks the energy history for NaN/Inf first (one host sync per phase; skipped while a
        CUDA graph is captured, the end of the plan checks the whole history). Returns the shooting loss
        ``[B*K]``."""
        cfg = self.config
        if cfg.check_finite and not _host_sync_forbidden(state.states.device):
            raise_if_nonfinite(state.energy_history, state.iteration, "the GRASP energy")
        chains = state.chains
        if cfg.sync == "cem":
            with self._model_precision(state.states.device):
                loss = cem_sync(
                    self._rollout_model(), chains.frames(), chains.goal, state.actions, state.states, cfg.sync_steps,
                    cfg.cem_sync_samples, cfg.cem_sync_elites, cfg.cem_sync_var_scale, cfg.cem_sync_var_min,
                    state.low, state.high, state.chain_generators, chains.history, state.weights,
                )
        elif state.fused_mlp is not None:
            loss = self._fused_mlp_sync(state)
        else:
            with self._model_precision(state.states.device):
                loss = gd_sync(
                    self._rollout_model(), chains.frames(), chains.goal, state.actions, cfg.sync_steps, cfg.sync_lr,
                    cfg.beta1, cfg.beta2, cfg.adam_eps, state.low, state.high, chains.history, state.weights,
                    step_fn=self._sync_step_fn(),
                )
        torch._foreach_zero_([*state.state_moments, *state.action_moments])  # one launch for the four
        return loss

    @staticmethod
    def record_sync(state: PlanState, loss: Optional[torch.Tensor]) -> None:
        """A sync phase's bookkeeping: its loss row (unless ``loss`` is None: a graph being captured has
        no values yet), the phase count, the Adam step count restarting."""
        if loss is not None and state.syncs < state.sync_losses.shape[0]:
            state.sync_losses[state.syncs] = loss
        state.syncs += 1
        state.adam_step = 0

    def _sync_step_fn(self) -> Optional[lifted.SyncStep]:
        """The compiled sync step (``config.compile``, with :func:`grasp_kernels.lifted.sync_step`'s
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
        with self._model_precision(state.states.device):
            rollout, distance = final_rollout(self._rollout_model(), state.chains, state.actions, state.weights)
        return best_chains_result(
            state.problem, self.config, state.backend, state.actions, state.states, rollout, distance,
            state.energy_history[: state.iteration], state.sync_losses[: state.syncs], start_time,
        )


def best_chains_result(
    problem: Problem,
    config: GraspConfig,
    backend: str,
    actions: torch.Tensor,
    states: torch.Tensor,
    rollout: torch.Tensor,
    distance: torch.Tensor,
    energy_history: torch.Tensor,
    sync_losses: torch.Tensor,
    start_time: Optional[float] = None,
) -> PlanResult:
    """The :class:`PlanResult` of a finished plan: per problem the chain whose rollout ends closest to
    the goal (``config.particles`` chains per problem, rows ``b*K .. b*K+K-1``).

    Args:
        actions: ``[B*K, T, A]``; ``states`` ``[B*K, T+1, D]``; ``rollout`` ``[B*K, T+1, *S]``;
            ``distance`` ``[B*K]``; ``energy_history`` ``[iters run, B*K]``; ``sync_losses``
            ``[syncs run, B*K]``. Shared by :meth:`GraspPlanner.finish` and the time-sharded plan.
    """
    best = distance.view(problem.batch, config.particles).argmin(dim=1)
    rows = torch.arange(problem.batch, device=best.device) * config.particles + best
    result = PlanResult(
        actions=actions[rows],
        states=states[rows].reshape(problem.batch, config.horizon + 1, *problem.state_shape),
        rollout=rollout[rows],
        final_distance=distance[rows],
        energy_history=energy_history[:, rows],
        info={"backend": backend, "particle": best, "sync_loss": sync_losses[:, rows]},
    )
    return squeeze_single(result, problem.single, time.perf_counter() if start_time is None else start_time)


def _host_sync_forbidden(device: torch.device) -> bool:
    """A CUDA graph is being captured, or host synchronisation is an error (the capture's warm-up):
    the per-phase finite check, a host sync, is skipped (the end of the plan checks the whole history)."""
    return device.type == "cuda" and (torch.cuda.is_current_stream_capturing() or torch.cuda.get_sync_debug_mode() == 2)


def _repeat_chains(problem: Problem, particles: int) -> Problem:
    """Each problem repeated ``particles`` times (rows ``b*K .. b*K+K-1`` are problem ``b``)."""
    if particles == 1:
        return problem
    history = problem.history_frames
    return Problem(
        s0=problem.s0.repeat_interleave(particles, dim=0),
        goal=problem.goal.repeat_interleave(particles, dim=0),
        state_shape=problem.state_shape,
        single=False,
        history_frames=None if history is None else history.repeat_interleave(particles, dim=0),
    )


def _check_init_states(init_states: object, problem: "Problem", horizon: int) -> torch.Tensor:
    """``init_states`` as ``[B, T+1, *S]`` (a single plan's ``[T+1, *S]`` gets its batch dimension)."""
    expected = (problem.batch, horizon + 1, *problem.state_shape)
    check_tensor("init_states", init_states, dtypes=(problem.s0.dtype,), device=problem.s0.device)
    if problem.single and tuple(init_states.shape) == expected[1:]:
        init_states = init_states.unsqueeze(0)
    if tuple(init_states.shape) != expected:
        want = f"[T+1, *S] = {list(expected[1:])}" if problem.single else f"[B, T+1, *S] = {list(expected)}"
        raise ValueError(f"init_states must have shape {want}, got {tuple(init_states.shape)}")
    check_finite("init_states (rows 1..T-1)", init_states[:, 1:-1])
    return init_states


def check_fused_mlp(world_model: WorldModel, config: GraspConfig, state_weights: Optional[torch.Tensor]) -> None:
    """Raise ValueError if ``GraspConfig(fused_mlp=True)`` cannot apply to this planner (world model or
    settings the fused MLP kernel does not implement)."""
    reason = ops.fused_mlp_unsupported_reason(world_model)
    if reason is None and not config.stop_gradient:
        reason = "it implements the stop-gradient energy only (stop_gradient=True)"
    if reason is None and config.history != 1:
        reason = f"it implements history = 1 only, got history = {config.history}"
    if reason is None and state_weights is not None:
        reason = "it implements the unweighted energy only (no state_weights)"
    if reason is None and config.model_dtype == "float16":
        reason = "its matrix inputs are float32 or bfloat16 (model_dtype='float16' is not implemented)"
    if reason is not None:
        raise ValueError(f"GraspConfig(fused_mlp=True) cannot be used: {reason}")


_HISTORY_ATTRIBUTES = ("history", "num_hist", "history_size")


def declared_history(world_model: WorldModel) -> Optional[tuple[str, int]]:
    """``(attribute, h)`` if the world model declares its window length (``history``, ``num_hist``
    or ``history_size``, an int), else None."""
    for name in _HISTORY_ATTRIBUTES:
        value = getattr(world_model, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return name, value
    return None


def check_model_history(world_model: WorldModel, history: int) -> None:
    """Raise if the world model declares a window length other than ``history``."""
    declared = declared_history(world_model)
    if declared is not None and declared[1] != history:
        name, value = declared
        raise ValueError(
            f"history mismatch: the world model declares {name} = {value} frames per input but the planner "
            f"uses history = {history}; set GraspConfig(history={value})"
        )


def check_state_weights(weights: Optional[torch.Tensor], state_shape: Optional[tuple[int, ...]]) -> Optional[torch.Tensor]:
    """``state_weights``: None or a finite, strictly positive floating tensor (broadcastable to ``S`` if known).

    A zero weight is rejected: the energy would not constrain that component (its Adam step is zero),
    the Langevin noise would random-walk it, and the world model would be fed the drifting value."""
    if weights is None:
        return None
    check_tensor("state_weights", weights)
    if not bool(torch.isfinite(weights).all()):
        raise ValueError("state_weights must be finite")
    if bool((weights <= 0).any()):
        raise ValueError(
            f"state_weights must be > 0 (got min {float(weights.min()):g}): a zero weight leaves that state "
            "component unconstrained by the dynamics (the noise random-walks it and the world model is fed the "
            "drifting value); drop the component from the state or give it a small positive weight"
        )
    if state_shape is not None:
        broadcast_state_weights(weights, state_shape)
    return weights.detach()


def broadcast_state_weights(weights: torch.Tensor, state_shape: Sequence[int]) -> torch.Tensor:
    """``weights`` broadcast to the state shape ``S`` (a ValueError naming both if it cannot be)."""
    try:
        return torch.broadcast_to(weights, tuple(state_shape)).contiguous()
    except RuntimeError:
        raise ValueError(
            f"state_weights of shape {tuple(weights.shape)} is not broadcastable to the state shape {tuple(state_shape)}"
        ) from None
