"""``DinoWMGraspPlanner``: GRASP behind DINO-WM's planner interface ``plan(obs_0, obs_g, actions=None)``.

DINO-WM's planners (``CEMPlanner``, ``GDPlanner``, ``MPCPlanner`` in ``planning/``) return
``(actions [B, T, A], losses)`` with ``losses`` an array of ``inf`` ("all actions are valid") from
observations ``obs_0`` (``{"visual": [B, T_obs, H, W, C], "proprio": [B, T_obs, P]}``) and goals
``obs_g`` (the same with ``T = 1``), through a world model that exposes

* ``encode_obs(obs) -> {"visual": [B, T, P, E], "proprio": [B, T, E_p]}`` (``"proprio"`` optional),
* ``num_hist``: frames per predictor input ``h``,
* a one-step predictor ``predict_next(z_window, action) -> z_next`` on latent windows
  (``{"visual": [N, h, P, E], "proprio": [N, h, E_p]}``, actions ``[N, A]`` -> ``{"visual": [N, P, E],
  "proprio": [N, E_p]}``); pass ``predict_fn=`` to use another callable with that signature.

The latent state of a frame is the flat vector ``[visual (P*E), proprio (E_p)]`` and the energy is
weighted as DINO-WM's objective ``mse(visual) + alpha * mse(proprio)``: weights ``1/(P*E)`` on the
visual components and ``alpha/E_p`` on the proprio ones (``state_weights``), divided by the largest of
the two so that the largest weight is 1. The minimiser does not depend on that scale, but at DINO-WM's
size (``1/(196*384)``) unscaled weights would shrink the gradients towards Adam's ``eps``. So
``last_result.final_distance ** 2 * objective_scale`` is DINO-WM's objective.

Action bounds: none by default (DINO-WM plans z-scored actions and never clips them). Pass
``action_low=`` / ``action_high=`` (in the planner's action space) to clamp. The adapter owns the
bounds: a ``GraspConfig``'s are replaced.

DINO-WM's own ``VWorldModel`` folds the action of every frame into its latent (``z = [obs, act]``),
so its predictor also reads the ``h-1`` previous actions; GRASP's ``F(s_{t-h+1..t}, a_t)`` conditions on
``a_t`` only. Wrap such a model's predictor as ``predict_fn`` (e.g. placing ``a_t`` in every frame).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np
import torch

from .._checks import check_device, check_int
from ..config import GraspConfig
from .._problem import check_model_history, declared_history
from ..result import PlanResult
from ._common import UNSET, as_tensor, explicit_bounds, plan_from_frames

PredictFn = Callable[[dict, torch.Tensor], dict]

__all__ = ["DinoWMGraspPlanner"]


class DinoWMGraspPlanner:
    """DINO-WM-style planner on GRASP.

    Args:
        wm: the world model (module docstring); ``wm.num_hist`` sets ``config.history`` (a config with
            another ``history > 1`` is a history mismatch).
        action_dim: ``A`` (DINO-WM: env action dim * frameskip).
        config: GRASP hyper-parameters (``horizon`` is the plan length).
        alpha: weight of the proprio term (DINO-WM's objective ``alpha``), > 0: a zero weight would
            leave the proprio states unconstrained (leave ``"proprio"`` out of ``encode_obs`` instead).
        preprocessor: optional object with ``transform_obs(obs) -> obs`` (DINO-WM's ``Preprocessor``).
        predict_fn: the one-step predictor; default ``wm.predict_next``.
        device: where the plan runs (default: cpu).
        action_low, action_high: action bounds; None or not passed: unbounded (module docstring).

    Example:
        >>> planner = DinoWMGraspPlanner(wm, action_dim=10, config=GraspConfig(horizon=5, iters=300))
        >>> actions, losses = planner.plan(obs_0, obs_g)          # as DINO-WM's CEMPlanner.plan
    """

    def __init__(
        self,
        wm: Any,
        action_dim: int,
        config: Optional[GraspConfig] = None,
        alpha: float = 0.1,
        preprocessor: Any = None,
        predict_fn: Optional[PredictFn] = None,
        device: str | torch.device = "cpu",
        action_low: Any = UNSET,
        action_high: Any = UNSET,
    ) -> None:
        if not callable(getattr(wm, "encode_obs", None)):
            raise TypeError(f"wm must expose encode_obs(obs) -> dict of latents, got {type(wm).__name__}")
        predict_fn = predict_fn or getattr(wm, "predict_next", None)
        if not callable(predict_fn):
            raise TypeError("wm must expose predict_next(z_window, action) -> z_next, or pass predict_fn=")
        check_int("action_dim", action_dim, minimum=1)
        bounds = explicit_bounds(action_low, action_high)
        config = config or GraspConfig()
        declared = declared_history(wm)
        if declared is not None and config.history == 1:
            config = config.replace(history=declared[1])
        check_model_history(wm, config.history)
        config = config.replace(action_low=bounds.get("action_low"), action_high=bounds.get("action_high"))
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(
                f"alpha must be a finite float > 0, got {alpha!r}: a zero proprio weight leaves the proprio states "
                "unconstrained by the dynamics (leave 'proprio' out of encode_obs to plan on the visual latents only)"
            )
        self.wm, self.action_dim, self.config = wm, action_dim, config
        self.alpha = float(alpha)
        self.preprocessor = preprocessor
        self.predict_fn = predict_fn
        self.device = check_device("device", device)
        self._layout: Optional[tuple[tuple[int, int], Optional[int]]] = None
        self.last_result: Optional[PlanResult] = None

    @property
    def horizon(self) -> int:
        return self.config.horizon

    def plan(self, obs_0: dict, obs_g: dict, actions: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, np.ndarray]:
        """Plan from the observations ``obs_0`` to the goals ``obs_g``.

        Args:
            obs_0: ``{"visual": [B, T_obs, ...], "proprio": [B, T_obs, P]}``, ``T_obs >= wm.num_hist``.
            obs_g: goals, same keys, ``T = 1``.
            actions: optional warm start ``[B, t <= T, A]`` (zero-padded, as DINO-WM's planners).

        Returns:
            ``(actions [B, T, A], losses)``: ``losses`` is ``np.full(B, np.inf)`` as in DINO-WM.
        """
        z_0, z_g = self._encode(obs_0), self._encode(obs_g)
        frames0, goal_frames = self._flatten(z_0), self._flatten(z_g)
        result = plan_from_frames(
            self._dynamics, self.action_dim, self.config, frames0, goal_frames[:, -1],
            state_weights=self._weights(), init=actions, init_name="actions", frames_name="the frames of obs_0",
        )
        self.last_result = result
        return result.actions.detach(), np.full(result.actions.shape[0], np.inf)

    @property
    def objective_scale(self) -> float:
        """The factor between GRASP's weighted squared distance and DINO-WM's objective (module docstring):
        the largest raw weight, ``max(1/(P*E), alpha/E_p)``."""
        return float(self._raw_weights().max())

    # ---- latent layout: {"visual": [.., P, E], "proprio": [.., E_p]} <-> flat [.., P*E + E_p] -----

    def _encode(self, obs: dict) -> dict:
        if not isinstance(obs, dict) or "visual" not in obs:
            raise TypeError("observations must be a dict with a 'visual' entry (and optionally 'proprio')")
        if self.preprocessor is not None:
            obs = self.preprocessor.transform_obs(obs)
        obs = {k: as_tensor(f"obs[{k!r}]", v, self.device) for k, v in obs.items()}
        with torch.no_grad():
            z = self.wm.encode_obs(obs)
        if "visual" not in z or z["visual"].dim() != 4:
            raise ValueError("wm.encode_obs must return {'visual': [B, T, P, E], ...}")
        return z

    def _flatten(self, z: dict) -> torch.Tensor:
        visual = z["visual"].detach()
        proprio = z.get("proprio")
        layout = (tuple(visual.shape[2:]), None if proprio is None else int(proprio.shape[-1]))
        if self._layout is not None and layout != self._layout:
            raise ValueError(f"state shape mismatch: the encoder returned latents {layout}, earlier {self._layout}")
        self._layout = layout
        parts = [visual.reshape(*visual.shape[:2], -1)]
        if proprio is not None:
            parts.append(proprio.detach())
        return torch.cat(parts, dim=-1).float()

    def _unflatten(self, flat: torch.Tensor) -> dict:
        assert self._layout is not None
        (patches, embed), proprio_dim = self._layout
        visual_dim = patches * embed
        z = {"visual": flat[..., :visual_dim].reshape(*flat.shape[:-1], patches, embed)}
        if proprio_dim is not None:
            z["proprio"] = flat[..., visual_dim:]
        return z

    def _raw_weights(self) -> torch.Tensor:
        """DINO-WM's objective as per-component weights: ``1/(P*E)`` visual, ``alpha/E_p`` proprio."""
        if self._layout is None:
            raise RuntimeError("the latent layout is known after the first plan()")
        (patches, embed), proprio_dim = self._layout
        parts = [torch.full((patches * embed,), 1.0 / (patches * embed), dtype=torch.float64)]
        if proprio_dim:
            parts.append(torch.full((proprio_dim,), self.alpha / proprio_dim, dtype=torch.float64))
        return torch.cat(parts)

    def _weights(self) -> torch.Tensor:
        """The raw weights divided by the largest (same argmin, gradients of a usable size)."""
        raw = self._raw_weights()
        return (raw / raw.max()).to(device=self.device, dtype=torch.float32)

    def _dynamics(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``[N, h, D]`` windows (``[N, D]`` for h = 1), ``[N, A]`` -> ``[N, D]`` through ``predict_fn``."""
        window = states if self.config.history > 1 else states.unsqueeze(1)
        z_next = self.predict_fn(self._unflatten(window), actions)
        parts = [z_next["visual"].reshape(z_next["visual"].shape[0], -1)]
        if "proprio" in z_next and self._layout[1] is not None:  # type: ignore[index]
            parts.append(z_next["proprio"])
        return torch.cat(parts, dim=-1)
