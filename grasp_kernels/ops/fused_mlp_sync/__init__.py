"""One sync-phase step for an MLPDynamics world model: custom op and Triton kernel (the model packed as
for :mod:`..fused_mlp_iteration`).

Its specification (``reference.py``) is one step of the planner's sync phase,
:func:`grasp_kernels.sync.sync_step`.
"""

from .op import fused_mlp_sync_step_

__all__ = ["fused_mlp_sync_step_"]
