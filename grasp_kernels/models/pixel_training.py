"""Training and measuring :class:`~grasp_kernels.models.pixel.PixelWorldModel` (pixel world models; saving and
loading: :mod:`grasp_kernels.models.pixel_zoo`).

``train_pixel_world_model`` renders exploratory trajectories (:func:`grasp_kernels.envs.pixels.collect_pixels`,
cached), trains the encoder with its reconstruction objective, freezes it, trains the latent predictor on the
frozen latents (teacher-forced next-latent error plus an open-loop rollout term), and measures on held-out
trajectories (another seed):

* ``one_step`` / ``h10``: RMSE of the predicted newest latent after 1 and 10 open-loop steps from the true
  window, in standardised latent units (1.0 = one latent standard deviation), beside the constant model's;
* ``probe``: how much of the true state the latents hold: a small MLP (latent window -> planning state)
  fitted on the training latents, its held-out errors in physical units (PointMaze position and velocity in
  maze units; Push-T agent/block px and block angle), and the same probe read off the predictor's 10-step
  open-loop windows (``probe_h10``: the model's 10-step error in physical units);
* ``reconstruction_psnr``: the decoder's held-out PSNR (dB).

Command line::

    python -m grasp_kernels train-pixels --env pointmaze-medium --seed 0
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..envs.sim import check_env_name
from ..lifted import rollout
from .pixel import CHANNELS, LatentDynamics, PixelWorldModel, latent_windows
from .training import HELDOUT_SEED_OFFSET, TrainConfig, _group_errors, rollout_loss
from .model_files import WEIGHTS_DIR
from .pixel_zoo import default_path, reproduce_command, save_pixel_model

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
    probe_steps: int = 2000
    objective: str = "reconstruction"
    jepa_batch: int = 16
    jepa_steps: int = 4
    decoder_steps: int = 600

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")


OBJECTIVES = ("reconstruction", "jepa")
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
# a frame may differ from the empty scene by this factor more than the most different training frame
SCENE_MARGIN = 1.5


# ---------------------------------------------------------------------------------------------- training


def _batches(count: int, size: int):
    for start in range(0, count, size):
        yield slice(start, min(count, start + size))


@torch.no_grad()
def encode_all(model: PixelWorldModel, frames: np.ndarray, batch: int = 1024) -> torch.Tensor:
    """``frames [..., S, S, 3]`` uint8 -> standardised latents ``[..., E]`` in batches (no gradients)."""
    flat = frames.reshape(-1, *frames.shape[-3:])
    out = torch.cat([model.encode(flat[part]) for part in _batches(len(flat), batch)])
    return out.reshape(*frames.shape[:-3], model.latent_dim)


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


def _foreground_loss(model: PixelWorldModel, frames: torch.Tensor, config: PixelTrainConfig,
                     colours: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Reconstruction MSE of uint8 ``frames [N, S, S, 3]``, foreground pixels weighted ``1 + foreground_weight``
    (times their colour's weight, :func:`colour_weights`, if given)."""
    residual = model.frames_to_input(frames)  # the frame minus the empty scene: the input and the target
    foreground = ((frames.float() - model.background).abs().amax(dim=-1) > FOREGROUND_THRESHOLD).float()  # [N, S, S]
    if colours is not None:
        foreground = foreground * colours[_colour_bins(frames)]
    weight = 1.0 + config.foreground_weight * foreground.unsqueeze(1)
    error = (model.decoder(model.encoder(residual)) - residual) ** 2
    return (weight * error).sum() / (weight.sum() * 3)


def _adam_steps(params, loss_fn, steps: int, lr: float, desc: str, progress: bool) -> float:
    """``steps`` Adam steps on ``loss_fn()`` with the learning rate decayed from ``lr`` to 0 on a cosine; returns
    the running (exponential moving average) loss. A tqdm bar named ``desc`` with ``progress``."""
    from tqdm.auto import tqdm

    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    )
    running = None
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, mininterval=1.0)
    for step in bar:
        loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{running:.5f}")
    return float(running)


def _train_reconstruction(model: PixelWorldModel, frames: np.ndarray, config: PixelTrainConfig,
                          generator: torch.Generator, progress: bool, decoder_only: bool = False) -> float:
    """The reconstruction objective (:func:`_foreground_loss`) on random frames: encoder and decoder for
    ``encoder_steps`` steps, or (``decoder_only``, after the JEPA objective: the decoder draws plans) the decoder
    alone for ``decoder_steps`` steps."""
    flat = torch.from_numpy(frames.reshape(-1, *frames.shape[-3:]))
    colours = colour_weights(model, frames, generator) if config.balance_colours else None

    def loss() -> torch.Tensor:
        index = torch.randint(0, len(flat), (config.encoder_batch,), generator=generator)
        return _foreground_loss(model, flat[index], config, colours)

    if decoder_only:
        return _adam_steps(model.decoder.parameters(), loss, config.decoder_steps, config.encoder_lr,
                           f"decoder {model.env_name}", progress)
    params = [*model.encoder.parameters(), *model.decoder.parameters()]
    return _adam_steps(params, loss, config.encoder_steps, config.encoder_lr, f"encoder {model.env_name}", progress)


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
    return _adam_steps(params, loss, config.encoder_steps, config.encoder_lr, f"JEPA encoder {model.env_name}", progress)


def _fit_scene(model: PixelWorldModel, frames: np.ndarray, generator: torch.Generator) -> None:
    """``background``: the per-pixel median of up to 4000 training frames; ``frame_distance_limit``: the
    largest mean absolute difference of a training frame from it, times :data:`SCENE_MARGIN` (plus 2)."""
    flat = frames.reshape(-1, *frames.shape[-3:])
    sample = torch.randperm(len(flat), generator=generator)[:4000]
    background = torch.from_numpy(flat[sample.numpy()]).float().median(dim=0).values
    distances = [
        (torch.from_numpy(flat[part]).float() - background).abs().mean(dim=(1, 2, 3)).max()
        for part in _batches(len(flat), 4096)
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

    return _adam_steps(dynamics.parameters(), loss, config.predictor_steps, config.lr, f"predictor {model.env_name}",
                       progress)


def _train_probe(windows: torch.Tensor, states: torch.Tensor, steps: int, generator: torch.Generator) -> torch.nn.Module:
    """A 2x128 MLP ``window [h*E] -> standardised state [D]`` (the measurement of what the latents hold)."""
    x = windows.reshape(-1, windows.shape[-1])
    y = states.reshape(-1, states.shape[-1])
    mean, std = y.mean(0), y.std(0).clamp_min(1e-6)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[-1], 128), torch.nn.SiLU(), torch.nn.Linear(128, 128),
                              torch.nn.SiLU(), torch.nn.Linear(128, y.shape[-1]))

    def loss() -> torch.Tensor:
        index = torch.randint(0, len(x), (512,), generator=generator)
        return torch.mean((net(x[index]) - (y[index] - mean) / std) ** 2)

    _adam_steps(net.parameters(), loss, steps, 1e-3, "probe", progress=False)
    net.eval()

    class Probe(torch.nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return net(w) * std + mean

    return Probe().eval()


@torch.no_grad()
def evaluate_pixel_model(
    model: PixelWorldModel, frames: np.ndarray, states: np.ndarray, actions: np.ndarray,
    probe: Optional[torch.nn.Module] = None, horizon: int = 10,
) -> dict:
    """Held-out metrics of ``model`` on trajectories ``frames [N, L+1, S, S, 3]``, ``states [N, L+1, D]``,
    ``actions [N, L, A]`` (see the module docstring); ``probe``: a fitted latent-window -> state probe."""
    model = model.eval()
    latents = encode_all(model, frames)
    windows = latent_windows(latents, model.window)
    a = torch.as_tensor(actions, dtype=torch.float32)
    n, length = a.shape[:2]
    dim, e = model.state_dim, model.latent_dim

    def newest(w: torch.Tensor) -> torch.Tensor:
        return w[..., dim - e :]

    def rmse(x: torch.Tensor, y: torch.Tensor) -> float:
        return float(torch.sqrt(torch.mean((x - y) ** 2)))

    pred = model.dynamics(windows[:, :-1].reshape(-1, dim), a.reshape(n * length, -1)).reshape(n, length, dim)
    metrics: dict = {
        "one_step": {"latent_rmse": rmse(newest(pred), latents[:, 1:]),
                     "constant": rmse(latents[:, :-1], latents[:, 1:])},
    }
    starts = list(range(0, length - horizon + 1, horizon))
    if starts:
        start = torch.cat([windows[:, t] for t in starts])
        acts = torch.cat([a[:, t : t + horizon] for t in starts])
        target = torch.cat([latents[:, t + horizon] for t in starts])
        final = rollout(model.dynamics, start, acts)[:, -1]
        metrics[f"h{horizon}"] = {"latent_rmse": rmse(newest(final), target), "constant": rmse(newest(start), target)}
    recon = [model.decode(latents.reshape(-1, e)[part]) for part in _batches(n * (length + 1), 2048)]
    mse = float(np.mean((np.concatenate(recon).astype(np.float64) - frames.reshape(-1, *frames.shape[-3:])) ** 2))
    metrics["reconstruction_psnr"] = float(10 * np.log10(255.0**2 / max(mse, 1e-12)))
    if probe is not None:
        metrics["probe"] = _group_errors(model.env_name, probe(windows).numpy(), states)
        if starts:
            true = np.concatenate([states[:, t + horizon] for t in starts])
            metrics[f"probe_h{horizon}"] = _group_errors(model.env_name, probe(final).numpy(), true)
    return metrics


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
    from ..envs.pixels import collect_pixels

    name = check_env_name(env_name)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    config = PixelTrainConfig() if config is None else config
    if not isinstance(config, PixelTrainConfig):
        raise TypeError(f"config must be a PixelTrainConfig, got {type(config).__name__}")
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    train = collect_pixels(name, config.trajectories, config.length, seed, progress=progress)
    held = collect_pixels(name, config.heldout_trajectories, config.length, seed + HELDOUT_SEED_OFFSET, progress=progress)
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
    probe = _train_probe(windows, torch.as_tensor(train.states), config.probe_steps, generator)
    metrics = evaluate_pixel_model(model, held.frames, held.states, held.actions, probe)
    seconds["evaluation"] = time.perf_counter() - clock
    metrics.update(
        config={k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()},
        seed=seed,
        data={"train_frames": int(np.prod(train.frames.shape[:2])), "heldout_frames": int(np.prod(held.frames.shape[:2])),
              "train_seed": seed, "heldout_seed": seed + HELDOUT_SEED_OFFSET, "frame_size": train.size},
        seconds={k: round(v, 1) for k, v in seconds.items()},
        final_loss={"encoder": encoder_loss, "predictor": predictor_loss},
    )
    return model, metrics


# -------------------------------------------------------------------------------------------------- CLI


def format_metrics(name: str, metrics: dict) -> str:
    parts = [f"{key}: latent RMSE {metrics[key]['latent_rmse']:.3f} (constant {metrics[key]['constant']:.3f})"
             for key in ("one_step", "h10") if key in metrics]
    for key in ("probe", "probe_h10"):
        if key in metrics:
            parts.append(f"{key}: " + ", ".join(f"{k}={v:.3g}" for k, v in metrics[key].items()))
    parts.append(f"PSNR {metrics['reconstruction_psnr']:.1f} dB")
    return f"{name}: " + "; ".join(parts)


def main_train_pixels(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m grasp_kernels train-pixels --env NAME --seed S --out DIR``: train, save, print metrics."""
    from ..cli import int_at_least

    parser = argparse.ArgumentParser(prog="python -m grasp_kernels train-pixels",
                                     description="Train a pixel world model (encoder, decoder, latent predictor).")
    parser.add_argument("--env", required=True, choices=PIXEL_ENVS)
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="output directory (default: the package's weights/)")
    defaults = PixelTrainConfig()
    # every integer hyper-parameter is a flag (the model card's reproduce command names the changed ones)
    int_fields = [f.name for f in dataclasses.fields(PixelTrainConfig)
                  if isinstance(getattr(defaults, f.name), int) and not isinstance(getattr(defaults, f.name), bool)]
    for field in int_fields:
        parser.add_argument(f"--{field.replace('_', '-')}", type=int_at_least(1), default=getattr(defaults, field))
    parser.add_argument("--no-balance-colours", dest="balance_colours", action="store_false",
                        help="plain foreground weights (every foreground pixel alike)")
    parser.add_argument("--objective", choices=OBJECTIVES, default=defaults.objective,
                        help="the encoder's objective: reconstruction (default) or jepa (trained jointly with a predictor)")
    parser.add_argument("--threads", type=int_at_least(1), default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = {f: getattr(args, f) for f in int_fields}
    config = dataclasses.replace(defaults, balance_colours=args.balance_colours, objective=args.objective, **overrides)
    model, metrics = train_pixel_world_model(args.env, args.seed, config, progress=not args.no_progress)
    command = [reproduce_command(args.env, args.seed, args.out)]
    command += [f"--{k.replace('_', '-')} {v}" for k, v in overrides.items() if v != getattr(defaults, k)]
    command += [] if config.balance_colours else ["--no-balance-colours"]
    command += [] if config.objective == defaults.objective else [f"--objective {config.objective}"]
    path = save_pixel_model(model, args.out / default_path(args.env).name, metrics, reproduce=" ".join(command))
    print(format_metrics(args.env, metrics), f"-> {path} ({path.stat().st_size / 1e6:.2f} MB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main_train_pixels())


__all__ = ["PixelTrainConfig", "evaluate_pixel_model", "jepa_loss", "train_pixel_world_model", "vicreg_terms"]

