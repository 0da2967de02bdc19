"""One whole GRASP iteration for an MLPDynamics world model: custom op, Triton kernel, packing.

Its specification is the planner's own iteration, :func:`grasp_kernels.lifted.lifted_iteration` (the tests
compare against it, tests/_fused_mlp.py); the op has no reference backend of its own.
"""

from .op import fused_mlp_backend, fused_mlp_iteration_
from .pack import PackedMLP, fused_mlp_unsupported_reason, pack_mlp

__all__ = ["fused_mlp_backend", "fused_mlp_iteration_", "PackedMLP", "fused_mlp_unsupported_reason", "pack_mlp"]
