"""What a GRASP plan carries between iterations: built by :meth:`GraspPlanner.start`, advanced by
``iteration`` and ``sync``, turned into a result by ``finish``, captured by :mod:`grasp_kernels.graphs`."""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ._problem import Problem
from .ops import PackedMLP


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

    def record_sync(self, loss: Optional[torch.Tensor]) -> None:
        """A sync phase ran: its loss row (unless ``loss`` is None: a graph being captured has no values
        yet), the phase count, and the Adam step count restarting (the phase reset the moments)."""
        if loss is not None and self.syncs < self.sync_losses.shape[0]:
            self.sync_losses[self.syncs] = loss
        self.syncs += 1
        self.adam_step = 0
