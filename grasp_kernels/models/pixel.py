"""A latent world model learned from pixels: frames -> latents, and an action-conditioned predictor in the latent.

The model (:class:`PixelWorldModel`) has three parts:

* :class:`FrameEncoder`: a 64x64 RGB frame (minus the empty scene) -> ``K = E/2`` keypoints, the spatial
  soft-argmax positions ``(x, y)`` of ``K`` learned feature maps (a deep spatial autoencoder), a flat latent
  ``z [E]``, standardised with the training latents' means and one common scale (distances stay image-plane
  distances);
* :class:`FrameDecoder`: keypoints -> Gaussian blobs -> convolutions -> the frame minus the empty scene; it is
  the encoder's training objective and draws the frames a plan passes through (:meth:`PixelWorldModel.decode`);
* :class:`LatentDynamics`: the predictor. Its input is a window of the last ``h`` latents and an action, its
  output the next window: ``[z_{t-h+1} .. z_t], a_t -> [z_{t-h+2} .. z_t, z_t + delta_scale * f(window, a_t)]``.
  The window, flattened to ``[h*E]``, is the planning state: every planner of the package (GRASP, GD, CEM,
  MPPI) and the MPC loop plan over ``[B, h*E]`` states with it unchanged, and GRASP's virtual states are
  windows (the shifted slots of consecutive windows are tied by the dynamics residual).

Training (:func:`train_pixel_world_model`) follows the "frozen encoder" recipe of the latent-world-model
literature: the encoder is trained with its own objective first (reconstruction of the frame minus the empty
scene, weighted towards the pixels that differ from it), then frozen; the predictor is trained on the frozen
latents with the next-latent error under teacher forcing plus a multi-step open-loop rollout loss (the state
models' loss, :func:`grasp_kernels.models.training.rollout_loss`). A frozen encoder cannot collapse, so no
anti-collapse regulariser is needed; see docs/design.md, section 8, for why this was chosen.

The planning objective is DINO-WM's: the squared distance between the final predicted latent window and the
goal image's latent repeated ``h`` times (the goal as a frame at rest).
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
from torch import nn
from ..envs.sim import check_env_name

FRAME_SIZE = 64
LATENT_DIM = 16
WINDOW = 3
CHANNELS = (32, 32)

ArrayLike = Union[np.ndarray, torch.Tensor]


def _check_positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def check_frame_size(frame_size: object) -> int:
    """A frame side the model can take: an int >= 1 divisible by 4 (the decoder's blob grid is a quarter
    of the frame)."""
    _check_positive("frame_size", frame_size)
    if frame_size % 4:
        raise ValueError(f"frame_size must be divisible by 4, got {frame_size}")
    return frame_size


class FrameEncoder(nn.Module):
    """Residual frames ``[N, 3, S, S]`` (the frame minus the empty scene, in ``[-1, 1]``) -> keypoints ``[N, 2K]``.

    A stride-2 convolution (kernel 5) and ``len(channels) - 1`` stride-1 convolutions (kernel 3), SiLU, then a
    convolution to ``K`` feature maps at ``S/2 x S/2``; each map's spatial softmax (a learned temperature per
    map) gives the expected image position ``(x, y)`` in ``[-1, 1]`` of what the map responds to: a deep spatial
    autoencoder's keypoints (Finn et al. 2016). Positions rather than a flat code because the objects that
    matter are small (a 2-px ball): a flat bottleneck learned to reconstruct the maze and dropped the ball.
    """

    def __init__(self, keypoints: int, channels: Sequence[int] = CHANNELS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 3
        for i, out in enumerate(channels):
            layers += [nn.Conv2d(width, out, 5 if i == 0 else 3, stride=2 if i == 0 else 1, padding=2 if i == 0 else 1),
                       nn.SiLU()]
            width = out
        layers.append(nn.Conv2d(width, keypoints, 3, padding=1))
        self.features = nn.Sequential(*layers)
        self.log_temperature = nn.Parameter(torch.zeros(keypoints))

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        return spatial_soft_argmax(self.features(residual), self.log_temperature.exp())


def spatial_soft_argmax(maps: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """``maps [N, K, H, W]`` -> ``[N, 2K]``: per map the softmax-weighted mean position ``(x, y)`` over the grid
    ``x, y in [-1, 1]`` (left/top = -1), the logits ``maps * temperature[k]``."""
    n, k, h, w = maps.shape
    weights = torch.softmax((maps * temperature[:, None, None]).reshape(n, k, h * w), dim=-1).reshape(n, k, h, w)
    ys = torch.linspace(-1.0, 1.0, h, device=maps.device, dtype=maps.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=maps.device, dtype=maps.dtype)
    x = (weights.sum(dim=2) * xs).sum(dim=-1)
    y = (weights.sum(dim=3) * ys).sum(dim=-1)
    return torch.stack([x, y], dim=-1).reshape(n, 2 * k)


class FrameDecoder(nn.Module):
    """Keypoints ``[N, 2K]`` -> residual frames ``[N, 3, S, S]``: a Gaussian blob per keypoint on an
    ``S/4 x S/4`` grid (std 1.5 cells), convolutions, two stride-2 transposed convolutions."""

    def __init__(self, keypoints: int, channels: Sequence[int] = CHANNELS, frame_size: int = FRAME_SIZE) -> None:
        super().__init__()
        self.grid = frame_size // 4
        width = channels[-1]
        self.body = nn.Sequential(
            nn.Conv2d(keypoints, width, 3, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(width, channels[0], 4, stride=2, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(channels[0], 3, 4, stride=2, padding=1),
        )

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        n = keypoints.shape[0]
        points = keypoints.reshape(n, -1, 2)
        axis = torch.linspace(-1.0, 1.0, self.grid, device=keypoints.device, dtype=keypoints.dtype)
        width = 1.5 * 2.0 / (self.grid - 1)
        gx = torch.exp(-((axis - points[..., 0:1]) ** 2) / (2 * width**2))  # [N, K, W]
        gy = torch.exp(-((axis - points[..., 1:2]) ** 2) / (2 * width**2))  # [N, K, H]
        return self.body(gy.unsqueeze(-1) * gx.unsqueeze(-2))


class LatentDynamics(nn.Module):
    """The predictor over windows of ``window`` latents, the planning state ``[N, window * latent_dim]``.

    ``forward(states [N, h*E], actions [N, A]) -> [N, h*E]``: the window shifted by one latent, the new last
    latent ``z_t + delta_scale * f([window, (a - action_mean) / action_std])`` with ``f`` an MLP of ``depth``
    hidden SiLU layers of width ``hidden``. The latents it sees are standardised (:class:`PixelWorldModel`).

    Attributes:
        latent_dim: ``E``.
        window: ``h``, latents per input (the attribute is not called ``history``: the planners see one
            Markov state, the window, and not ``h`` frames; see :class:`grasp_kernels.GraspConfig.history`).
        state_dim: ``h * E``.
        action_dim: ``A``.
    """

    def __init__(self, latent_dim: int, window: int, action_dim: int, hidden: int = 256, depth: int = 3) -> None:
        super().__init__()
        for name, value in (("latent_dim", latent_dim), ("window", window), ("action_dim", action_dim),
                            ("hidden", hidden), ("depth", depth)):
            _check_positive(name, value)
        self.latent_dim, self.window, self.action_dim = latent_dim, window, action_dim
        self.state_dim = latent_dim * window
        layers: list[nn.Module] = []
        width = self.state_dim + action_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, latent_dim))
        self.net = nn.Sequential(*layers)
        self.register_buffer("action_mean", torch.zeros(action_dim))
        self.register_buffer("action_std", torch.ones(action_dim))
        self.register_buffer("delta_scale", torch.ones(latent_dim))

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``states [N, h*E]``, ``actions [N, A]`` -> the next windows ``[N, h*E]``."""
        inputs = torch.cat([states, (actions - self.action_mean) / self.action_std], dim=-1)
        last = states[..., self.state_dim - self.latent_dim :]
        return torch.cat([states[..., self.latent_dim :], last + self.delta_scale * self.net(inputs)], dim=-1)


class PixelWorldModel(nn.Module):
    """Encoder, decoder and latent predictor of one environment (see the module docstring).

    Args:
        env_name: the environment whose frames it reads (checked against the goal frames it is given).
        latent_dim: ``E``.
        window: ``h``, latents per predictor input.
        action_dim: ``A``.
        channels: the encoder's convolution widths (the decoder mirrors them).
        hidden, depth: the predictor MLP's width and number of hidden layers.
        frame_size: ``S``, frames are ``[S, S, 3]`` uint8 (divisible by ``2**len(channels)``).

    The buffers ``latent_mean``/``latent_std`` standardise the encoder's raw output; ``background`` is the
    empty scene (the per-pixel median training frame) and ``frame_distance_limit`` the largest mean absolute
    difference from it that a frame of this environment showed in training (times a margin): a frame further
    from it is another scene (:meth:`check_scene`).
    """

    def __init__(
        self,
        env_name: str,
        latent_dim: int = LATENT_DIM,
        window: int = WINDOW,
        action_dim: int = 2,
        channels: Sequence[int] = CHANNELS,
        hidden: int = 256,
        depth: int = 3,
        frame_size: int = FRAME_SIZE,
    ) -> None:
        super().__init__()
        self.env_name = check_env_name(env_name)
        check_frame_size(frame_size)
        _check_positive("latent_dim", latent_dim)
        channels = tuple(_check_positive("channels", c) for c in channels)
        if not channels:
            raise ValueError("channels must name at least one convolution width")
        if latent_dim % 2:
            raise ValueError(f"latent_dim must be even (an (x, y) pair per keypoint), got {latent_dim}")
        self.frame_size, self.channels = frame_size, channels
        self.encoder = FrameEncoder(latent_dim // 2, channels)
        self.decoder = FrameDecoder(latent_dim // 2, channels, frame_size)
        self.dynamics = LatentDynamics(latent_dim, window, action_dim, hidden, depth)
        self.register_buffer("latent_mean", torch.zeros(latent_dim))
        self.register_buffer("latent_std", torch.ones(latent_dim))
        self.register_buffer("background", torch.zeros(frame_size, frame_size, 3))
        self.register_buffer("frame_distance_limit", torch.tensor(1.0))

    @property
    def latent_dim(self) -> int:
        return self.dynamics.latent_dim

    @property
    def window(self) -> int:
        return self.dynamics.window

    @property
    def state_dim(self) -> int:
        """``h * E``, the planning state's size."""
        return self.dynamics.state_dim

    @property
    def action_dim(self) -> int:
        return self.dynamics.action_dim

    # ----------------------------------------------------------------------------------------- frames

    def _device(self) -> torch.device:
        return self.latent_mean.device

    def frames_to_input(self, frames: ArrayLike, name: str = "frames") -> torch.Tensor:
        """uint8 frames ``[..., S, S, 3]`` -> encoder input ``[N, 3, S, S]``: the frame minus the empty scene, in
        ``[-1, 1]``, on the model's device (``N`` the product of the leading dims); checks dtype and size."""
        frames = self._check_frames(frames, name)
        images = frames.reshape(-1, self.frame_size, self.frame_size, 3).to(self._device()).float()
        return (images - self.background).div(255.0).permute(0, 3, 1, 2)

    def _check_frames(self, frames: ArrayLike, name: str) -> torch.Tensor:
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        if not isinstance(frames, torch.Tensor):
            raise TypeError(f"{name} must be a uint8 numpy array or tensor of RGB frames, got {type(frames).__name__}")
        if frames.dtype != torch.uint8:
            raise TypeError(f"{name} must have dtype uint8 (RGB 0-255, as rendered), got {frames.dtype}")
        want = (self.frame_size, self.frame_size, 3)
        if frames.dim() < 3 or tuple(frames.shape[-3:]) != want:
            raise ValueError(
                f"{name} must have shape [..., {self.frame_size}, {self.frame_size}, 3] ({self.env_name} frames of "
                f"this model), got {tuple(frames.shape)}"
            )
        return frames

    def check_scene(self, frames: ArrayLike, name: str = "frames") -> None:
        """Raise ``ValueError`` if any frame ``[..., S, S, 3]`` is too far from this environment's empty scene
        to be one of its frames (e.g. a goal image of another environment)."""
        frames = self._check_frames(frames, name)
        images = frames.reshape(-1, self.frame_size, self.frame_size, 3).to(self._device()).float()
        distance = (images - self.background).abs().mean(dim=(1, 2, 3))
        worst = float(distance.max())
        if worst > float(self.frame_distance_limit):
            raise ValueError(
                f"{name} do not look like {self.env_name} frames: mean absolute difference {worst:.1f} from its empty "
                f"scene, at most {float(self.frame_distance_limit):.1f} in its training frames (a frame of another "
                f"environment, or another renderer?)"
            )

    def encode(self, frames: ArrayLike, name: str = "frames") -> torch.Tensor:
        """uint8 frames ``[..., S, S, 3]`` -> standardised latents ``[..., E]`` (float32, model's device)."""
        lead = tuple(frames.shape[:-3])
        raw = self.encoder(self.frames_to_input(frames, name))
        return ((raw - self.latent_mean) / self.latent_std).reshape(*lead, self.latent_dim)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Standardised latents ``[..., E]`` -> uint8 frames ``[..., S, S, 3]`` (numpy), for pictures."""
        lead = tuple(latents.shape[:-1])
        with torch.no_grad():
            raw = latents.reshape(-1, self.latent_dim).to(self._device(), torch.float32) * self.latent_std + self.latent_mean
            images = self.decoder(raw).permute(0, 2, 3, 1).mul(255.0).add(self.background)
            images = images.clamp(0.0, 255.0).round().to(torch.uint8)
        return images.reshape(*lead, self.frame_size, self.frame_size, 3).cpu().numpy()

    # --------------------------------------------------------------------------------- planning states

    @torch.no_grad()
    def observe(self, frames: ArrayLike) -> torch.Tensor:
        """The planning state of the last ``h`` observed frames ``[B, h, S, S, 3]`` (oldest first) -> ``[B, h*E]``.
        Fewer frames than ``h`` (the start of an episode) repeat the oldest, as a ball at rest would look."""
        frames = self._check_frames(frames, "frames")
        if frames.dim() != 5 or not 1 <= frames.shape[1] <= self.window:
            raise ValueError(f"frames must be [B, k, S, S, 3] with 1 <= k <= window = {self.window}, got {tuple(frames.shape)}")
        latents = self.encode(frames)
        pad = latents[:, :1].expand(-1, self.window - latents.shape[1], -1)
        return torch.cat([pad, latents], dim=1).reshape(latents.shape[0], self.state_dim)

    @torch.no_grad()
    def goal_state(self, goal_frames: ArrayLike) -> torch.Tensor:
        """Goal images ``[B, S, S, 3]`` -> goal planning states ``[B, h*E]`` (the goal latent repeated ``h``
        times: the goal scene at rest). Raises if a frame is not a scene of this environment."""
        goal = self._check_frames(goal_frames, "goal_frames")
        if goal.dim() != 4:
            raise ValueError(f"goal_frames must be [B, S, S, 3], got {tuple(goal.shape)}")
        self.check_scene(goal, "goal_frames")
        latents = self.encode(goal, "goal_frames")
        return latents.repeat(1, self.window)

    def last_latents(self, states: torch.Tensor) -> torch.Tensor:
        """Planning states ``[..., h*E]`` -> their newest latent ``[..., E]`` (e.g. to decode a plan's frames)."""
        return states[..., self.state_dim - self.latent_dim :]


# ------------------------------------------------------------------------------------------------ windows


def latent_windows(latents: torch.Tensor, window: int) -> torch.Tensor:
    """Trajectories of latents ``[N, L+1, E]`` -> their planning states ``[N, L+1, window*E]``: row ``t`` holds
    ``z_{t-h+1} .. z_t``, the rows before the first repeating ``z_0`` (as :meth:`PixelWorldModel.observe`)."""
    n, steps, dim = latents.shape
    padded = torch.cat([latents[:, :1].expand(n, window - 1, dim), latents], dim=1)
    return padded.unfold(1, window, 1).movedim(-1, 2).reshape(n, steps, window * dim)


__all__ = ["FrameDecoder", "FrameEncoder", "LatentDynamics", "PixelWorldModel", "latent_windows"]
