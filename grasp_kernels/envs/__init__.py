"""Planning tasks. The synthetic navigation task is differentiable and runs anywhere."""

from .navigation import DETOUR_WALLS, TASKS, NavigationTask, PointNavigation, make_task

__all__ = ["DETOUR_WALLS", "TASKS", "NavigationTask", "PointNavigation", "make_task"]
