"""grasp_kernels: fused kernels and a planner engine for GRASP (arXiv 2602.00475).

Public API::

    from grasp_kernels import GraspConfig, GraspPlanner
    result = GraspPlanner(world_model, action_dim, GraspConfig(horizon=64)).plan(s0, goal)
"""

from .backends import resolve_backend
from .config import GraspConfig
from .planner import GraspPlanner
from .result import PlanResult

__version__ = "0.1.0"

__all__ = ["GraspConfig", "GraspPlanner", "PlanResult", "resolve_backend", "__version__"]
