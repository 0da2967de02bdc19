"""Planning from pixels: the real tasks seen through rendered frames and a :class:`PixelWorldModel`.

The planners plan over the model's planning states (windows of encoded frames, ``[B, h*E]``) from the encoded
current frames to the encoded goal image, DINO-WM's setting; the actions are executed in the simulator and
success is judged on its true state (:func:`grasp_kernels.quality.executed_open_loop`,
:func:`grasp_kernels.quality.closed_loop` with ``observation=PixelObservation(model)``).

Example::

    model = load_pixel_model("pointmaze-medium")
    pairs = pixel_pairs("pointmaze-medium", 8, seed=2000)
    with PixelObservation(model) as observation:
        planner = GraspPlanner(model.dynamics, 2, pixel_grasp_config(50).replace(particles=8))
        score, result = executed_open_loop("pointmaze-medium", planner, pairs, observation=observation)
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import torch

from .config import GraspConfig
from .envs.pixels import FrameRenderer
from .envs.pixel_data import in_frame
from .envs.tasks import PairSet, make_pairs
from .models.pixel import PixelWorldModel
from .presets import pixel_grasp_base_fields


class PixelObservation:
    """Simulator states -> the planning states of ``model``: render each state (the simulator's own renderer,
    :class:`grasp_kernels.envs.pixels.FrameRenderer`), encode, window. Implements
    :class:`grasp_kernels.mpc.Observation`; a context manager (closes the renderer).

    Args:
        model: the pixel world model (its ``env_name`` and ``frame_size`` choose the renderer).
    """

    def __init__(self, model: PixelWorldModel) -> None:
        if not isinstance(model, PixelWorldModel):
            raise TypeError(f"model must be a PixelWorldModel, got {type(model).__name__}")
        self.model = model
        self.window = model.window
        self.renderer = FrameRenderer(model.env_name, model.frame_size)

    def frames(self, states: np.ndarray) -> np.ndarray:
        """``states [..., D]`` -> uint8 frames ``[..., S, S, 3]``."""
        states = np.asarray(states)
        flat = self.renderer.render(np.ascontiguousarray(states.reshape(-1, states.shape[-1])))
        return flat.reshape(*states.shape[:-1], *flat.shape[1:])

    def __call__(self, states: np.ndarray) -> torch.Tensor:
        """``states [B, k, D]`` (the last ``k <= h`` executed states, oldest first) -> ``[B, h*E]``."""
        states = np.asarray(states)
        if states.ndim != 3:
            raise ValueError(f"states must be [B, k, D] (the last executed states), got shape {states.shape}")
        return self.model.observe(self.frames(states))

    def goal(self, goals: np.ndarray) -> torch.Tensor:
        """``goals [B, D]`` -> the encoded goal images, ``[B, h*E]``."""
        return self.model.goal_state(self.frames(np.asarray(goals)))

    def close(self) -> None:
        self.renderer.close()

    def __enter__(self) -> "PixelObservation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pixel_pairs(
    env_name: str, n: int, seed: int, horizon: int = 25, action_repeat: Optional[int] = None, protocol: str = "region",
) -> PairSet:
    """:func:`grasp_kernels.envs.tasks.make_pairs` (of ``protocol``) whose starts and goals are in the picture
    (:func:`grasp_kernels.envs.pixel_data.in_frame`): PointMaze pairs are unchanged; Push-T pairs whose block
    left the frame are dropped and the set is drawn again (same seed, more candidates) until n remain (so
    ``"dino-wm"`` pairs from pixels keep every trajectory whose block stays in the picture)."""
    extra = 0
    while True:
        pairs = make_pairs(env_name, n + extra, seed, horizon, action_repeat, protocol)
        keep = np.flatnonzero(in_frame(env_name, pairs.starts) & in_frame(env_name, pairs.goals))
        if len(keep) >= n:
            keep = keep[:n]
            return dataclasses.replace(pairs, starts=pairs.starts[keep], goals=pairs.goals[keep])
        extra = 2 * extra + max(4, n // 4)


def pixel_grasp_config(horizon: int, seed: int = 0, backend: str = "auto") -> GraspConfig:
    """GRASP in a pixel model's standardised latent (:func:`grasp_kernels.presets.pixel_grasp_base_fields`)."""
    return GraspConfig(**pixel_grasp_base_fields(horizon, seed, backend))


__all__ = ["PixelObservation", "pixel_grasp_config", "pixel_pairs"]
