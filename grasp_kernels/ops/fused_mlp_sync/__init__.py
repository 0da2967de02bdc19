"""One sync-phase step for an MLPDynamics world model: custom op and Triton kernel (the model packed as
for :mod:`..fused_mlp_iteration`).

Its specification is one step of the planner's sync phase, :func:`grasp_kernels.sync.sync_step` (the tests
compare against it); the op has no reference backend of its own.
"""

from .op import fused_mlp_sync_step_

__all__ = ["fused_mlp_sync_step_"]
