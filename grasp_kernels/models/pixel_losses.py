"""The training objectives of a :class:`~grasp_kernels.models.pixel.PixelWorldModel`'s encoder.

* reconstruction (:func:`foreground_loss`): the decoder's squared error on the frame minus the empty scene,
  pixels that differ from the empty scene weighted ``1 + foreground_weight``, each foreground pixel also by
  its colour's weight (:func:`colour_weights`: every object colour counts alike, however small the object);
* JEPA (:func:`jepa_loss`): encoder and a latent predictor trained jointly on next-latent prediction against
  stop-gradient targets, kept from collapsing by VICReg's variance and covariance terms (:func:`vicreg_terms`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .pixel import PixelWorldModel, latent_windows

# the joint (JEPA) objective's VICReg constants: keypoint coordinates (in [-1, 1]) are divided by JEPA_SCALE
# so that the variance hinge asks each for a standard deviation of at least JEPA_SCALE; weights as VICReg's
JEPA_SCALE = 0.2
JEPA_WEIGHTS = {"prediction": 25.0, "variance": 25.0, "covariance": 1.0}

# pixels that differ from the empty scene by more than this (0-255, any channel) are foreground
FOREGROUND_THRESHOLD = 8
# foreground colours are binned on a grid of this many levels per channel (colour_weights)
COLOUR_LEVELS = 4
# a foreground colour covering less than this share of the foreground pixels is an edge blend, not an object
MIN_COLOUR_SHARE = 0.02


def _colour_bins(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., 3]`` -> the index of each pixel's colour in a ``COLOUR_LEVELS**3`` grid."""
    levels = (frames.long() * COLOUR_LEVELS) // 256
    return (levels[..., 0] * COLOUR_LEVELS + levels[..., 1]) * COLOUR_LEVELS + levels[..., 2]


def colour_weights(model: PixelWorldModel, frames: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """``[COLOUR_LEVELS**3]``: per colour bin, the weight of a foreground pixel of that colour. The colours that
    cover at least :data:`MIN_COLOUR_SHARE` of the foreground pixels (the objects' colours) share the weight
    equally, however few pixels each covers (a 2-px Push-T agent against the T: with plain weights every
    keypoint went to the T and the agent was lost); rarer colours (anti-aliased edges) weigh 1 before the
    weights are normalised to mean 1 over the foreground pixels."""
    flat = frames.reshape(-1, *frames.shape[-3:])
    sample = torch.from_numpy(flat[torch.randperm(len(flat), generator=generator)[:4000].numpy()])
    foreground = (sample.float() - model.background).abs().amax(dim=-1) > FOREGROUND_THRESHOLD
    counts = torch.bincount(_colour_bins(sample)[foreground], minlength=COLOUR_LEVELS**3).double()
    share = counts / counts.sum().clamp_min(1.0)
    common = share >= MIN_COLOUR_SHARE
    weights = torch.ones_like(share)
    weights[common] = 1.0 / (int(common.sum()) * share[common])
    weights = weights / (weights * share).sum().clamp_min(1e-12)  # mean 1 over the foreground pixels
    return weights.float()


def foreground_loss(model: PixelWorldModel, frames: torch.Tensor, foreground_weight: float,
                    colours: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Reconstruction MSE of uint8 ``frames [N, S, S, 3]``, foreground pixels weighted ``1 + foreground_weight``
    (times their colour's weight, :func:`colour_weights`, if given)."""
    residual = model.frames_to_input(frames)  # the frame minus the empty scene: the input and the target
    foreground = ((frames.float() - model.background).abs().amax(dim=-1) > FOREGROUND_THRESHOLD).float()  # [N, S, S]
    if colours is not None:
        foreground = foreground * colours[_colour_bins(frames)]
    weight = 1.0 + foreground_weight * foreground.unsqueeze(1)
    error = (model.decoder(model.encoder(residual)) - residual) ** 2
    return (weight * error).sum() / (weight.sum() * 3)


def vicreg_terms(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg's anti-collapse terms of ``latents [N, E]`` (Bardes et al. 2022): the variance hinge
    ``mean_e relu(1 - std_e)`` and the covariance penalty ``sum_{e != f} cov_ef^2 / E``."""
    n, dim = latents.shape
    std = torch.sqrt(latents.var(dim=0) + 1e-4)
    centred = latents - latents.mean(dim=0)
    cov = centred.T @ centred / max(n - 1, 1)
    off_diagonal = cov - torch.diag(torch.diagonal(cov))
    return torch.relu(1.0 - std).mean(), off_diagonal.pow(2).sum() / dim


def jepa_loss(model: PixelWorldModel, predictor: torch.nn.Module, frames: torch.Tensor, actions: torch.Tensor,
              window: int) -> tuple[torch.Tensor, dict[str, float]]:
    """The joint objective of encoder and predictor on clips ``frames [B, L, S, S, 3]`` uint8, ``actions
    [B, L-1, A]`` (``actions[:, j]`` leads from frame ``j`` to ``j + 1``), in a JEPA's form: every frame is
    encoded (``z = encoder / JEPA_SCALE``); the predictor (a :class:`LatentDynamics` over windows of ``window``
    latents) predicts each next latent from the true window (teacher forcing) and, open loop, the clip's
    latents after the first window; both are compared with the encoded frames under a stop-gradient; VICReg's
    variance and covariance terms (:func:`vicreg_terms`) over all encoded frames keep the encoder from
    collapsing to a constant, which predicts itself perfectly. Returns the weighted sum
    (:data:`JEPA_WEIGHTS`) and its terms."""
    batch, length = frames.shape[:2]
    latents = model.encoder(model.frames_to_input(frames)).reshape(batch, length, -1) / JEPA_SCALE
    dim = latents.shape[-1]
    target = latents.detach()
    windows = latent_windows(latents, window)[:, window - 1 : -1]  # windows ending at frames window-1 .. L-2
    steps = windows.shape[1]
    taken = actions[:, window - 1 :]
    forced = predictor(windows.reshape(batch * steps, -1), taken.reshape(batch * steps, -1))
    forced = forced.reshape(batch, steps, -1)[..., -dim:]
    state, rolled = windows[:, 0], []
    for k in range(steps):
        state = predictor(state, taken[:, k])
        rolled.append(state[:, -dim:])
    future = target[:, window:]
    prediction = (torch.mean((forced - future) ** 2) + torch.mean((torch.stack(rolled, 1) - future) ** 2)) / 2
    variance, covariance = vicreg_terms(latents.reshape(batch * length, dim))
    terms = {"prediction": prediction, "variance": variance, "covariance": covariance}
    total = sum(JEPA_WEIGHTS[name] * value for name, value in terms.items())
    return total, {name: float(value.detach()) for name, value in terms.items()}


__all__ = ["JEPA_SCALE", "JEPA_WEIGHTS", "colour_weights", "foreground_loss", "jepa_loss", "vicreg_terms"]
