"""Adam + Langevin noise on the virtual states: spec, custom op, Triton and CUDA launches."""

from .op import state_step_
from .reference import state_step_ref

__all__ = ["state_step_", "state_step_ref"]
