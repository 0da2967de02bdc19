"""Training a :class:`~grasp_kernels.models.pixel.PixelWorldModel` (a pixel world model).

``train_pixel_world_model`` renders exploratory trajectories (:func:`grasp_kernels.envs.pixel_data.collect_pixels`,
cached), trains the encoder with its objective (:mod:`grasp_kernels.models.pixel_losses`: reconstruction, or
JEPA then the decoder alone), freezes it, trains the latent predictor on the frozen latents (teacher-forced
next-latent error plus an open-loop rollout term), and measures on held-out trajectories (another seed;
:mod:`grasp_kernels.models.pixel_probes`). Saving and loading: :mod:`grasp_kernels.models.pixel_zoo`.

Command line::

    python -m grasp_kernels train-pixels --env pointmaze-medium --seed 0
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

import numpy as np
import torch

from .._checks import check_int
from ..envs.pixels import FRAME_SIZE
from ..envs.sim import check_env_name, resolve_action_repeat
from .pixel import CHANNELS, LatentDynamics, PixelWorldModel, check_frame_size, latent_windows
from .pixel_losses import colour_weights, foreground_loss, jepa_loss
from .pixel_probes import batches, encode_all, evaluate_pixel_model, probe_spec, train_probe
from .training import HELDOUT_SEED_OFFSET, TrainConfig, adam_steps, rollout_loss
from ..envs.pixel_data import collect_pixels

PIXEL_ENVS = ("pointmaze-umaze", "pointmaze-medium", "pointmaze-large", "pusht")


@dataclasses.dataclass(frozen=True)
class PixelTrainConfig:
    """Hyper-parameters of one pixel world model (defaults: about 15-25 minutes on 2 cores per environment).

    Data: ``trajectories`` x ``length`` steps for training, ``heldout_trajectories`` for the metrics.
    Encoder, ``objective="reconstruction"``: ``encoder_steps`` Adam steps of ``encoder_batch`` frames, pixels
    that differ from the empty scene weighted ``1 + foreground_weight`` (times their colour's weight with
    ``balance_colours``, :func:`colour_weights`). ``objective="jepa"``: ``encoder_steps`` steps of the joint
    encoder-predictor objective (:func:`jepa_loss`) on ``jepa_batch`` clips of ``window + jepa_steps`` frames,
    then the decoder alone (``decoder_steps`` steps of the reconstruction loss, encoder frozen) for the
    pictures. Either way the encoder is then frozen and the planning predictor trained on its latents.
    Predictor: ``predictor_steps`` steps of the state models' loss (``batch_size`` one-step pairs,
    ``rollout_batch`` windows of ``rollout_steps`` open-loop steps).
    Frames are ``frame_size`` pixels square; one model step is ``action_repeat`` simulator steps (``None``: the
    environment's default); the data's exploration policy is ``policy``.
    """

    trajectories: int = 800
    length: int = 50
    heldout_trajectories: int = 100
    latent_dim: int = 16
    window: int = 3
    channels: tuple[int, ...] = CHANNELS
    encoder_steps: int = 1500
    encoder_batch: int = 96
    encoder_lr: float = 1e-3
    foreground_weight: float = 20.0
    balance_colours: bool = True
    hidden: int = 256
    depth: int = 3
    predictor_steps: int = 4000
    batch_size: int = 512
    lr: float = 1e-3
    rollout_steps: int = 8
    rollout_batch: int = 128
    rollout_weight: float = 1.0
    probe_steps: int = 10000
    objective: str = "reconstruction"
    jepa_batch: int = 16
    jepa_steps: int = 4
    decoder_steps: int = 600
    frame_size: int = FRAME_SIZE
    action_repeat: Optional[int] = None
    policy: str = "mixed"

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        check_frame_size(self.frame_size)  # before any data is collected for it
        if self.action_repeat is not None:
            check_int("action_repeat", self.action_repeat, minimum=1)


OBJECTIVES = ("reconstruction", "jepa")
# a frame may differ from the empty scene by this factor more than the most different training frame
SCENE_MARGIN = 1.5


# ---------------------------------------------------------------------------------------------- training


def _train_reconstruction(model: PixelWorldModel, frames: np.ndarray, config: PixelTrainConfig,
                          generator: torch.Generator, progress: bool, decoder_only: bool = False) -> float:
    """The reconstruction objective (:func:`foreground_loss`) on random frames: encoder and decoder for
    ``encoder_steps`` steps, or (``decoder_only``, after the JEPA objective: the decoder draws plans) the decoder
    alone for ``decoder_steps`` steps."""
    flat = torch.from_numpy(frames.reshape(-1, *frames.shape[-3:]))
    colours = colour_weights(model, frames, generator) if config.balance_colours else None

    def loss() -> torch.Tensor:
        index = torch.randint(0, len(flat), (config.encoder_batch,), generator=generator)
        return foreground_loss(model, flat[index], config.foreground_weight, colours)

    if decoder_only:
        return adam_steps(model.decoder.parameters(), loss, config.decoder_steps, config.encoder_lr,
                          f"decoder {model.env_name}", progress)
    params = [*model.encoder.parameters(), *model.decoder.parameters()]
    return adam_steps(params, loss, config.encoder_steps, config.encoder_lr, f"encoder {model.env_name}", progress)


def _train_jepa_encoder(model: PixelWorldModel, frames: np.ndarray, actions: np.ndarray, config: PixelTrainConfig,
                        generator: torch.Generator, progress: bool) -> float:
    """``encoder_steps`` steps of :func:`jepa_loss` on random clips, the encoder trained jointly with a predictor
    of the model's window (a fresh :class:`LatentDynamics`, discarded after: the planning predictor is trained on
    the frozen latents as for the reconstruction objective)."""
    count, steps_plus_one = frames.shape[:2]
    clip = config.window + config.jepa_steps
    if steps_plus_one < clip:
        raise ValueError(f"trajectories of {steps_plus_one} frames are shorter than a clip (window + jepa_steps = {clip})")
    predictor = LatentDynamics(model.latent_dim, config.window, actions.shape[-1], config.hidden, config.depth)
    flat_actions = torch.as_tensor(actions, dtype=torch.float32)
    _fit_action_stats(predictor, flat_actions)
    with torch.no_grad():
        predictor.delta_scale.fill_(0.1)  # latents in units of JEPA_SCALE: a step moves them by about this
    offsets = np.arange(clip)

    def loss() -> torch.Tensor:
        rows = torch.randint(0, count, (config.jepa_batch,), generator=generator).numpy()
        starts = torch.randint(0, steps_plus_one - clip + 1, (config.jepa_batch,), generator=generator).numpy()
        index = starts[:, None] + offsets
        clip_frames = torch.from_numpy(frames[rows[:, None], index])
        clip_actions = flat_actions[rows[:, None], index[:, :-1]]
        return jepa_loss(model, predictor, clip_frames, clip_actions, config.window)[0]

    params = [*model.encoder.parameters(), *predictor.parameters()]
    return adam_steps(params, loss, config.encoder_steps, config.encoder_lr, f"JEPA encoder {model.env_name}", progress)


def _fit_scene(model: PixelWorldModel, frames: np.ndarray, generator: torch.Generator) -> None:
    """``background``: the per-pixel median of up to 4000 training frames; ``frame_distance_limit``: the
    largest mean absolute difference of a training frame from it, times :data:`SCENE_MARGIN` (plus 2)."""
    flat = frames.reshape(-1, *frames.shape[-3:])
    sample = torch.randperm(len(flat), generator=generator)[:4000]
    background = torch.from_numpy(flat[sample.numpy()]).float().median(dim=0).values
    distances = [
        (torch.from_numpy(flat[part]).float() - background).abs().mean(dim=(1, 2, 3)).max()
        for part in batches(len(flat), 4096)
    ]
    with torch.no_grad():
        model.background.copy_(background)
        model.frame_distance_limit.fill_(float(torch.stack(distances).max()) * SCENE_MARGIN + 2.0)


@torch.no_grad()
def _fit_latent_stats(model: PixelWorldModel, frames: np.ndarray) -> None:
    model.latent_mean.zero_()
    model.latent_std.fill_(1.0)
    raw = encode_all(model, frames).reshape(-1, model.latent_dim).double()
    model.latent_mean.copy_(raw.mean(0).float())
    # one scale for every coordinate (the RMS of their stds): distances stay image-plane distances, and a
    # keypoint that barely moves is not blown up to the others' size (its noise would dominate the cost)
    model.latent_std.fill_(float(raw.std(0).pow(2).mean().sqrt().clamp_min(1e-6)))


@torch.no_grad()
def _fit_action_stats(dynamics: LatentDynamics, actions: torch.Tensor) -> None:
    """The predictor's action normalisation from the training actions ``[..., A]``."""
    flat = actions.reshape(-1, actions.shape[-1])
    dynamics.action_mean.copy_(flat.mean(0))
    dynamics.action_std.copy_(flat.std(0).clamp_min(1e-6))


def _fit_dynamics_stats(model: PixelWorldModel, latents: torch.Tensor, actions: torch.Tensor) -> None:
    dynamics = model.dynamics
    _fit_action_stats(dynamics, actions)
    with torch.no_grad():
        deltas = (latents[:, 1:] - latents[:, :-1]).reshape(-1, latents.shape[-1])
        dynamics.delta_scale.copy_(deltas.std(0).clamp_min(1e-6))


def _train_predictor(model: PixelWorldModel, windows: torch.Tensor, actions: torch.Tensor, config: PixelTrainConfig,
                     generator: torch.Generator, progress: bool) -> float:
    """The state models' loss (:func:`rollout_loss`) on latent windows; errors in units of the latent deltas'
    std, on every slot of the window (the shifted slots are exact, so only the new latent contributes)."""
    dynamics = model.dynamics
    loss_config = TrainConfig(batch_size=config.batch_size, rollout_steps=config.rollout_steps,
                              rollout_batch=config.rollout_batch, rollout_weight=config.rollout_weight)
    scale = dynamics.delta_scale.repeat(dynamics.window)

    def loss() -> torch.Tensor:
        return rollout_loss(dynamics, windows, actions, loss_config, generator, scale=scale)

    return adam_steps(dynamics.parameters(), loss, config.predictor_steps, config.lr, f"predictor {model.env_name}",
                      progress)


def _datasets(name: str, seed: int, config: PixelTrainConfig, progress: bool):
    """The training and held-out :class:`~grasp_kernels.envs.pixel_data.PixelDataset` of ``config`` and ``seed``."""
    sampling = dict(size=config.frame_size, action_repeat=resolve_action_repeat(name, config.action_repeat),
                    policy=config.policy, progress=progress)
    train = collect_pixels(name, config.trajectories, config.length, seed, **sampling)
    held = collect_pixels(name, config.heldout_trajectories, config.length, seed + HELDOUT_SEED_OFFSET, **sampling)
    return train, held


def _measure(model: PixelWorldModel, windows: torch.Tensor, train, held, probe_steps: int,
             generator: torch.Generator) -> dict:
    """:func:`evaluate_pixel_model` on ``held`` with a probe fitted on ``windows``, the latent windows of ``train``'s
    frames, and the probe's spec."""
    probe = train_probe(windows, torch.as_tensor(train.states), probe_steps, generator)
    metrics = evaluate_pixel_model(model, held.frames, held.states, held.actions, probe)
    metrics["probe_spec"] = probe_spec(probe_steps)
    return metrics


def measure_pixel_model(
    model: PixelWorldModel, seed: int = 0, config: Optional[PixelTrainConfig] = None, progress: bool = False,
) -> dict:
    """Held-out metrics of a trained ``model`` (:func:`evaluate_pixel_model`, with ``"probe_spec"``) on the data of
    ``config`` and ``seed``, those it was trained with (its card's): the probe is fitted on the training split's
    latents, everything is measured on the held-out split. Data sets come from the cache when present.
    """
    config = PixelTrainConfig() if config is None else config
    if not isinstance(config, PixelTrainConfig):
        raise TypeError(f"config must be a PixelTrainConfig, got {type(config).__name__}")
    if config.frame_size != model.frame_size:
        raise ValueError(f"config.frame_size is {config.frame_size} but the model reads {model.frame_size}-px frames")
    train, held = _datasets(model.env_name, seed, config, progress)
    model = model.eval()
    windows = latent_windows(encode_all(model, train.frames), model.window)
    return _measure(model, windows, train, held, config.probe_steps, torch.Generator().manual_seed(seed))


def train_pixel_world_model(
    env_name: str, seed: int = 0, config: Optional[PixelTrainConfig] = None, progress: bool = True,
) -> tuple[PixelWorldModel, dict]:
    """Render data, train a :class:`PixelWorldModel` for ``env_name`` and measure it on held-out data.

    Args:
        env_name: ``pointmaze-umaze|medium|large`` or ``pusht``.
        seed: seeds the training data (``seed``), the held-out data (``seed + 1000003``), the weights and
            the minibatches.
        config: hyper-parameters (default :class:`PixelTrainConfig`).
        progress: tqdm bars for rendering and training.

    Returns:
        The model (CPU, eval mode) and its metrics (:func:`evaluate_pixel_model`) with ``"config"``,
        ``"seed"``, ``"data"`` and the seconds of each stage.
    """
    name = check_env_name(env_name)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    config = PixelTrainConfig() if config is None else config
    if not isinstance(config, PixelTrainConfig):
        raise TypeError(f"config must be a PixelTrainConfig, got {type(config).__name__}")
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    train, held = _datasets(name, seed, config, progress)
    seconds["data"] = time.perf_counter() - clock

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = PixelWorldModel(name, config.latent_dim, config.window, train.actions.shape[-1], config.channels,
                            config.hidden, config.depth, train.size)
    _fit_scene(model, train.frames, generator)
    clock = time.perf_counter()
    model.train()
    if config.objective == "jepa":
        encoder_loss = _train_jepa_encoder(model, train.frames, train.actions, config, generator, progress)
        model.encoder.requires_grad_(False)
        _train_reconstruction(model, train.frames, config, generator, progress, decoder_only=True)
    else:
        encoder_loss = _train_reconstruction(model, train.frames, config, generator, progress)
    model.eval()
    seconds["encoder"] = time.perf_counter() - clock
    for parameter in [*model.encoder.parameters(), *model.decoder.parameters()]:
        parameter.requires_grad_(False)  # frozen from here on

    clock = time.perf_counter()
    _fit_latent_stats(model, train.frames)
    latents = encode_all(model, train.frames)
    actions = torch.as_tensor(train.actions, dtype=torch.float32)
    _fit_dynamics_stats(model, latents, actions)
    windows = latent_windows(latents, model.window)
    model.dynamics.train()
    predictor_loss = _train_predictor(model, windows, actions, config, generator, progress)
    model.eval()
    seconds["predictor"] = time.perf_counter() - clock

    clock = time.perf_counter()
    metrics = _measure(model, windows, train, held, config.probe_steps, generator)  # the predictor's windows
    seconds["evaluation"] = time.perf_counter() - clock
    metrics.update(
        config={k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()},
        seed=seed,
        data={"train_frames": int(np.prod(train.frames.shape[:2])), "heldout_frames": int(np.prod(held.frames.shape[:2])),
              "train_seed": seed, "heldout_seed": seed + HELDOUT_SEED_OFFSET, "frame_size": train.size,
              "action_repeat": train.action_repeat, "policy": train.policy},
        seconds={k: round(v, 1) for k, v in seconds.items()},
        final_loss={"encoder": encoder_loss, "predictor": predictor_loss},
    )
    return model, metrics


__all__ = ["OBJECTIVES", "PIXEL_ENVS", "PixelTrainConfig", "measure_pixel_model", "train_pixel_world_model"]
