"""What a GRASP plan carries between iterations: built by :meth:`GraspPlanner.start`, advanced by
``iteration`` and ``sync``, turned into a result by ``finish``, captured by :mod:`grasp_kernels.graphs`."""

from __future__ import annotations

import dataclasses
from typing import Optional, Protocol

import torch

from ._problem import Problem
from .memory import MemoryPlan
from .ops import PackedMLP


class _PlanConfig(Protocol):
    """The GraspConfig fields a plan's buffers are sized by."""

    iters: int
    horizon: int
    sync_every: int
    sync_steps: int


@dataclasses.dataclass
class PlanState:
    """Everything a GRASP plan carries between iterations (flat layout, ``B*K`` chains).

    ``states [B*K, T+1, D]`` stays contiguous (the kernels' layout). With ``fused_mlp`` (the packed
    MLPDynamics of the fused kernel), ``spare_states`` is the second state buffer the kernel writes and
    ``fused_backend`` the backend it runs on; ``states`` and ``spare_states`` swap every iteration. For history windows,
    ``frames [B*K, h-1+T, D]`` holds the ``h-1`` older observed frames then a per-iteration copy of
    ``s_0 .. s_{T-1}``; ``weights`` (broadcastable to ``S``) and ``sqrt_weights [D]`` are the state
    weights, or None.

    Randomness is per chain (shard-invariant, :mod:`grasp_kernels.randomness`): ``chain_generators``
    holds one generator per chain (its initial noise, then the reference backend's state noise), and
    the kernels draw chain ``c``'s noise at Philox counters ``noise_base + c * (T-1)*D + ...``, where
    ``noise_base`` places the batch's first chain in the global batch.

    ``memory`` (:class:`~grasp_kernels.memory.MemoryPlan`): the chunk sizes of the plan's world-model calls
    (``GraspConfig.max_transitions`` / ``memory_budget``), or None (unchunked).

    Built by :meth:`GraspPlanner.start`; advanced by :meth:`GraspPlanner.iteration` and
    :meth:`GraspPlanner.sync`; turned into a result by :meth:`GraspPlanner.finish`.
    """

    problem: Problem
    chains: Problem
    backend: str
    states: torch.Tensor
    actions: torch.Tensor
    state_moments: tuple[torch.Tensor, torch.Tensor]
    action_moments: tuple[torch.Tensor, torch.Tensor]
    low: Optional[torch.Tensor]
    high: Optional[torch.Tensor]
    chain_generators: list[torch.Generator]
    energy_history: torch.Tensor
    sync_losses: torch.Tensor
    sync_every: int
    iteration: int = 0
    adam_step: int = 0
    syncs: int = 0
    frames: Optional[torch.Tensor] = None
    weights: Optional[torch.Tensor] = None
    sqrt_weights: Optional[torch.Tensor] = None
    fused_mlp: Optional[PackedMLP] = None
    spare_states: Optional[torch.Tensor] = None
    fused_backend: Optional[str] = None
    noise_base: int = 0
    memory: Optional[MemoryPlan] = None

    @classmethod
    def allocate(
        cls, config: "_PlanConfig", problem: Problem, chains: Problem, backend: str, states: torch.Tensor,
        actions: torch.Tensor, low: Optional[torch.Tensor], high: Optional[torch.Tensor],
        chain_generators: list[torch.Generator], *, noise_base: int, weights: Optional[torch.Tensor],
        fused_mlp: Optional[PackedMLP], fused_backend: Optional[str],
    ) -> "PlanState":
        """The state of a plan whose initial ``states [B*K, T+1, D]`` and ``actions [B*K, T, A]`` are drawn:
        zero moments, NaN-filled histories (``config.iters`` rows; one per sync phase), the history frame
        buffer, the bounds in the kernels' form on a kernel backend, and the fused kernel's spare buffer."""
        device, dtype, batch = states.device, states.dtype, chains.batch
        num_syncs = config.iters // config.sync_every if config.sync_every and config.sync_steps else 0
        frames = None
        if chains.history_frames is not None:
            # [B*K, h-1+T, D]: the h-1 older observed frames (fixed), then a copy of the rows s_0..s_{T-1}
            # refreshed before each lifted model call; the B*T windows are a strided view of it
            lead = chains.history - 1
            frames = torch.empty(batch, lead + config.horizon, chains.state_dim, device=device, dtype=dtype)
            frames[:, :lead] = chains.history_frames.reshape(batch, lead, chains.state_dim)
        if backend != "reference":  # the kernels' form (+-inf where unbounded), built once: no per-step sync
            inf = torch.tensor(float("inf"), device=device, dtype=dtype)
            action_dim = actions.shape[-1]
            low = (-inf).expand(action_dim).contiguous() if low is None else low.contiguous()
            high = inf.expand(action_dim).contiguous() if high is None else high.contiguous()
        return cls(
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
            noise_base=noise_base,
            energy_history=torch.full((config.iters, batch), float("nan"), device=device, dtype=dtype),
            sync_losses=torch.full((num_syncs, batch), float("nan"), device=device, dtype=dtype),
            sync_every=config.sync_every if num_syncs else 0,
            frames=frames,
            weights=weights,
            sqrt_weights=None if weights is None else weights.reshape(-1).sqrt().contiguous(),
            fused_mlp=fused_mlp,
            # the second state buffer of the fused kernel (it writes every row)
            spare_states=None if fused_mlp is None else torch.empty_like(states),
            fused_backend=fused_backend,
        )

    @property
    def nbytes(self) -> int:
        """Bytes of the plan's own tensors (states, actions, moments, buffers, histories, the chains' inputs):
        what a ``memory_budget`` holds besides the world model's activations."""
        chains = self.chains
        tensors = [self.states, self.actions, *self.state_moments, *self.action_moments, self.low, self.high,
                   self.energy_history, self.sync_losses, self.frames, self.weights, self.sqrt_weights,
                   self.spare_states, chains.s0, chains.goal, chains.history_frames]
        if self.fused_mlp is not None:
            tensors += list(self.fused_mlp.tensors)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    @property
    def sync_due(self) -> bool:
        """A sync phase follows the iteration just run."""
        return bool(self.sync_every) and self.iteration % self.sync_every == 0

    def record_iteration(self, energy: torch.Tensor) -> None:
        """A lifted iteration ran with Adam step ``adam_step + 1``: its energy row ``[B*K]`` (kept on the
        device) and the counters."""
        self.energy_history[self.iteration] = energy
        self.adam_step += 1
        self.iteration += 1

    def stalled(self, tolerance: float) -> bool:
        """At a sync phase: no chain's mean energy over the iterations since the previous phase fell by more
        than ``tolerance`` times its mean over the phase before (``GraspConfig.stop_tolerance``); False
        before two phases of iterations have run. One host read."""
        window, end = self.sync_every, self.iteration
        if not window or end < 2 * window:
            return False
        now = self.energy_history[end - window : end].mean(dim=0)
        before = self.energy_history[end - 2 * window : end - window].mean(dim=0)
        fall = (before - now) / before.abs().clamp_min(torch.finfo(before.dtype).tiny)
        return bool((fall <= tolerance).all())

    def record_sync(self, loss: Optional[torch.Tensor]) -> None:
        """A sync phase ran: its loss row (unless ``loss`` is None: a graph being captured has no values
        yet), the phase count, and the Adam step count restarting (the phase reset the moments)."""
        if loss is not None and self.syncs < self.sync_losses.shape[0]:
            self.sync_losses[self.syncs] = loss
        self.syncs += 1
        self.adam_step = 0
