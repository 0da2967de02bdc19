"""Adapters that drop GRASP into existing planning stacks.

- :mod:`.stable_worldmodel`: ``GraspSolver``, the ``stable_worldmodel.solver.Solver`` protocol
  (``configure(...)`` / ``solve(info_dict, init_action=None)``), a replacement for their CEM/MPPI/GD.
- :mod:`.torchrl`: ``GraspMPCPlanner``, a ``torchrl.modules.planners.MPCPlannerBase`` usable where
  TorchRL's ``CEMPlanner`` is (imports torchrl).
- :mod:`.dino_wm`: ``DinoWMGraspPlanner``, DINO-WM's ``plan(obs_0, obs_g, actions=None)`` interface.

Each module imports its host library lazily or not at all, so ``import grasp_kernels`` never needs them.
"""

from ._common import encoder_state_check, latest_frames

__all__ = ["encoder_state_check", "latest_frames"]
