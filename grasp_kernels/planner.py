"""GRASP: the lifted, noisy, gradient-reshaped planner (DESIGN.md section 1).

One iteration is ONE batched world-model call over all ``B*T`` transitions, the fused energy with
its reshaped gradients, one VJP through the world model to the actions, and the fused Adam steps.
The sync phase (full-rollout gradient steps on the actions) is the only sequential part.
"""

from __future__ import annotations

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
    raise_if_nonfinite,
    squeeze_single,
)
from .backends import BackendFallbackWarning, resolve_backend
from .config import GraspConfig
from .reference import WorldModel, gd_sync_ref, init_states_ref, lifted_predictions_ref
from .result import PlanResult

# Kernel backends draw the noise from a seed that changes every iteration (never a growing offset);
# seeds stay below 2**31 so every backend takes them as a plain int32 argument.
_SEED_STRIDE = 0x9E3779B9
_SEED_MODULUS = (1 << 31) - 1


class GraspPlanner:
    """Plans action sequences for a world model with GRASP.

    Args:
        world_model: callable or ``nn.Module`` mapping ``states [N, *S]``, ``actions [N, A]`` to
            next states ``[N, *S]``.
        action_dim: ``A``.
        config: hyper-parameters (defaults: :class:`GraspConfig`).
        state_shape: ``S``; needed only to tell one structured state ``[*S]`` from a batch. Without
            it a 1-D ``s0`` is one plan and a >= 2-D ``s0`` is a batch ``[B, *S]``.

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
    ) -> None:
        check_planner_args(world_model, action_dim)
        if config is None:
            config = GraspConfig()
        if not isinstance(config, GraspConfig):
            raise TypeError(f"config must be a GraspConfig, got {type(config).__name__}")
        config.validate()
        self.world_model = world_model
        self.action_dim = action_dim
        self.config = config
        self.state_shape = None if state_shape is None else tuple(int(s) for s in state_shape)

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
    ) -> PlanResult:
        """Plan from ``s0`` to ``goal``.

        Args:
            s0: ``[B, *S]`` start states (or ``[*S]`` for one plan), float32 or float64.
            goal: goal states, same shape, dtype and device as ``s0``.
            init_actions: optional warm start ``[B, T, A]`` (or ``[T, A]``, shared by all plans).
            progress: show a progress bar over the iterations.

        Returns:
            :class:`PlanResult` with ``actions [B,T,A]``, virtual ``states [B,T+1,*S]``,
            ``rollout [B,T+1,*S]``, ``final_distance [B]``, ``energy_history [iters, B]`` (leading
            ``B`` dropped for a single plan). With ``particles = K > 1`` the chain whose rollout
            ends closest to the goal is returned per problem.
        """
        start = time.perf_counter()
        cfg = self.config
        problem = make_problem(s0, goal, self.state_shape)
        if init_actions is not None and problem.single and init_actions.dim() == 2:
            init_actions = init_actions.unsqueeze(0)
        actions = initial_actions(init_actions, problem.batch, cfg.horizon, self.action_dim, problem.s0)
        chains = _repeat_chains(problem, cfg.particles)
        actions = actions.repeat_interleave(cfg.particles, dim=0)
        backend = self.backend_for(problem.s0.device, problem.s0.dtype)

        states, actions, history, sync_losses = self._optimise(chains, actions, backend, progress)

        rollout, distance = final_rollout(self.world_model, chains, actions)
        best = distance.view(problem.batch, cfg.particles).argmin(dim=1)
        rows = torch.arange(problem.batch, device=best.device) * cfg.particles + best

        state_shape = (problem.batch, cfg.horizon + 1, *problem.state_shape)
        result = PlanResult(
            actions=actions[rows],
            states=states[rows].reshape(state_shape),
            rollout=rollout[rows],
            final_distance=distance[rows],
            energy_history=history[:, rows],
            info={"backend": backend, "particle": best, "sync_loss": sync_losses[:, rows]},
        )
        return squeeze_single(result, problem.single, start)

    def _optimise(
        self, problem: Problem, actions: torch.Tensor, backend: str, progress: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The GRASP loop on the flat layout: returns states, actions, energy and sync-loss histories."""
        cfg = self.config
        device, dtype = problem.s0.device, problem.s0.dtype
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
        low, high = action_bounds(cfg.action_low, cfg.action_high, self.action_dim, device, dtype)
        clamp_(actions, low, high)
        states = init_states_ref(
            problem.flat(problem.s0), problem.flat(problem.goal), cfg.horizon, cfg.init_noise, generator
        )
        state_moments = (torch.zeros_like(states), torch.zeros_like(states))
        action_moments = (torch.zeros_like(actions), torch.zeros_like(actions))
        history = torch.full((cfg.iters, problem.batch), float("nan"), device=device, dtype=dtype)
        num_syncs = cfg.iters // cfg.sync_every if cfg.sync_every and cfg.sync_steps else 0
        sync_losses = torch.empty((num_syncs, problem.batch), device=device, dtype=dtype)

        adam_step = 0
        for it in tqdm(range(cfg.iters), desc="GRASP", disable=not progress, leave=False):
            adam_step += 1
            energy, state_grad, action_grad = self._lifted_gradients(problem, states, actions, backend)
            history[it] = energy
            with torch.no_grad():
                seed = None if backend == "reference" else (cfg.seed * _SEED_STRIDE + it + 1) % _SEED_MODULUS
                ops.state_step_(
                    states, state_grad, *state_moments, adam_step, cfg.lr_states, cfg.beta1, cfg.beta2,
                    cfg.adam_eps, cfg.state_noise, generator=generator, seed=seed, backend=backend,
                )
                ops.action_step_(
                    actions, action_grad, *action_moments, adam_step, cfg.lr_actions, cfg.beta1, cfg.beta2,
                    cfg.adam_eps, low, high, backend=backend,
                )
            if num_syncs and (it + 1) % cfg.sync_every == 0:
                if cfg.check_finite:
                    raise_if_nonfinite(history, it + 1, "the GRASP energy")
                phase = (it + 1) // cfg.sync_every - 1
                sync_losses[phase] = gd_sync_ref(
                    self.world_model, problem.s0, problem.goal, actions, cfg.sync_steps, cfg.sync_lr,
                    cfg.beta1, cfg.beta2, cfg.adam_eps, low, high,
                )
                for moment in (*state_moments, *action_moments):
                    moment.zero_()
                adam_step = 0
        if cfg.check_finite:
            raise_if_nonfinite(history, cfg.iters, "the GRASP energy")
            raise_if_nonfinite(actions.reshape(1, -1), 1, "the planned actions")
        return states, actions, history, sync_losses

    def _lifted_gradients(
        self, problem: Problem, states: torch.Tensor, actions: torch.Tensor, backend: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Energy ``[B]`` and the reshaped gradients w.r.t. states and actions (one model call)."""
        state_leaf = states.detach().requires_grad_(True)
        action_leaf = actions.detach().requires_grad_(True)
        with torch.enable_grad():
            pred = lifted_predictions_ref(
                self.world_model, state_leaf, action_leaf, problem.state_shape, self.config.stop_gradient
            )
            energy = ops.lifted_energy(pred, state_leaf, self.config.goal_weight, backend=backend)
            state_grad, action_grad = torch.autograd.grad(energy.sum(), (state_leaf, action_leaf))
        return energy.detach(), state_grad, action_grad


def _repeat_chains(problem: Problem, particles: int) -> Problem:
    """Each problem repeated ``particles`` times (rows ``b*K .. b*K+K-1`` are problem ``b``)."""
    if particles == 1:
        return problem
    return Problem(
        s0=problem.s0.repeat_interleave(particles, dim=0),
        goal=problem.goal.repeat_interleave(particles, dim=0),
        state_shape=problem.state_shape,
        single=False,
    )
