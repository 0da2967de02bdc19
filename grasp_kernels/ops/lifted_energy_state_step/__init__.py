"""The lifted energy and the state step in one pass: spec, custom op, Triton and CUDA launches."""

from .op import lifted_energy_state_step_
from .reference import lifted_energy_state_step_ref

__all__ = ["lifted_energy_state_step_", "lifted_energy_state_step_ref"]
