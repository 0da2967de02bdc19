"""The op specifications: plain PyTorch, any device, float64-capable; every backend is checked against them.

Each lives beside its kernels (``grasp_kernels/ops/<op>/reference.py``); this module gathers them.
Layout (docs/design.md): ``states [B, T+1, D]`` (row 0 = s_0, row T = goal g, rows 1..T-1 the virtual
states), ``actions [B, T, A]``, world-model predictions ``pred [B, T, D]``.

The contract functions ``lifted_energy_ref``, ``state_step_ref`` and ``action_step_ref`` have the
signatures of the ops ``grasp_kernels.ops.lifted_energy``, ``state_step_`` and ``action_step_``. The
planner's own math (predictions, rollout, shooting loss, initialisation, sync) is :mod:`grasp_kernels.lifted`
and :mod:`grasp_kernels.sync`; it is also the specification of the fused MLP ops (``fused_mlp_iteration_``:
``lifted.lifted_iteration``, ``fused_mlp_sync_step_``: ``sync.sync_step``), which the tests compare against
(tests/_fused_mlp.py).
"""

from __future__ import annotations

from .ops._adam import adam_update_ref
from .ops.action_step.reference import action_step_ref
from .ops.lifted_energy.reference import lifted_energy_ref
from .ops.lifted_energy_state_step.reference import lifted_energy_state_step_ref
from .ops.state_step.reference import state_step_ref

__all__ = [
    "lifted_energy_ref",
    "state_step_ref",
    "action_step_ref",
    "adam_update_ref",
    "lifted_energy_state_step_ref",
]
