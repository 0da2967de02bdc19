"""Baseline planners with GRASP's ``plan(s0, goal) -> PlanResult`` interface, batched over plans."""

from .ablations import ABLATIONS, ablation_config
from .gd import GDConfig, GDPlanner
from .sampling import CEMConfig, CEMPlanner, MPPIConfig, MPPIPlanner

__all__ = [
    "ABLATIONS",
    "ablation_config",
    "GDConfig",
    "GDPlanner",
    "CEMConfig",
    "CEMPlanner",
    "MPPIConfig",
    "MPPIPlanner",
]
