"""Adam then clamp on the actions: spec, custom op, Triton and CUDA launches."""

from .op import action_step_
from .reference import action_step_ref, clamp_actions_

__all__ = ["action_step_", "action_step_ref", "clamp_actions_"]
