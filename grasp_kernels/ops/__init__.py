"""The fused GRASP ops, one folder per op, each with its specification (``reference.py``), its
``torch.library`` custom op and public function (``op.py``), its Triton kernel (``triton_kernel.py``)
and its CUDA launch (``cuda_launch.py``). docs/design.md describes the layout.

Every public function takes a keyword-only ``backend`` ("auto" | "reference" | "triton" | "cuda", see
:mod:`grasp_kernels.backends`). The triton and cuda backends run the ``torch.ops.grasp.*`` custom ops
(float32 states, float32 or bfloat16 ``pred``, contiguous tensors; anything else is rejected with an
error naming the argument); the reference backend runs the op's specification. Noise seeds: see
:mod:`grasp_kernels.ops._dispatch`.

The op table (:mod:`grasp_kernels.ops.table`) lists the ops once, for everything that iterates over them.

The scalars come in families, one frozen object each (:mod:`grasp_kernels.ops._params`): Adam's constants
:class:`AdamHyper` and the in-kernel noise's Philox key and counters :class:`NoiseCounters`. Per-call
values (the Adam ``step``, ``noise_std``) are separate arguments.
"""

from __future__ import annotations

from ._params import AdamHyper, NoiseCounters
from .action_step import action_step_
from .fused_mlp_iteration import (
    PackedMLP,
    fused_mlp_backend,
    fused_mlp_iteration_,
    fused_mlp_unsupported_reason,
    pack_mlp,
)
from .fused_mlp_sync import fused_mlp_sync_step_
from .lifted_energy import lifted_energy, lifted_energy_grads
from .lifted_energy_state_step import lifted_energy_state_step_
from .state_step import state_step_

__all__ = [
    "AdamHyper",
    "NoiseCounters",
    "lifted_energy",
    "lifted_energy_grads",
    "state_step_",
    "action_step_",
    "lifted_energy_state_step_",
    "fused_mlp_iteration_",
    "fused_mlp_sync_step_",
    "fused_mlp_backend",
    "pack_mlp",
    "PackedMLP",
    "fused_mlp_unsupported_reason",
]
