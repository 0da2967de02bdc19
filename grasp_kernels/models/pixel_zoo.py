"""Saving and loading :class:`~grasp_kernels.models.pixel.PixelWorldModel` (pixel world models).

A model file ``<env>-pixels.safetensors`` holds the float32 weights and buffers with the architecture in its
metadata; the JSON model card beside it records the objective, data, training, exact reproduce command and
held-out metrics (the file format: :mod:`grasp_kernels.models.model_files`). The package ships
``grasp_kernels/weights/<env>-pixels.safetensors`` for PointMaze-Medium and Push-T.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path
from typing import Optional, Union

import torch

from .._checks import check_device
from ..envs.pixels import check_size
from ..envs.sim import check_env_name, resolve_action_repeat
from .zoo import check_action_repeat, file_action_repeat
from .model_files import WEIGHTS_DIR, PathLike, card_path, check_tensors, int_field, read_weights, write_model_files
from .pixel import PixelWorldModel
from .pixel_training import PixelTrainConfig, measure_pixel_model

FORMAT = "grasp_kernels.pixel_world_model"
FORMAT_VERSION = 1


def default_path(env_name: str) -> Path:
    """The shipped pixel model of ``env_name``: ``grasp_kernels/weights/<env>-pixels.safetensors``."""
    return WEIGHTS_DIR / f"{check_env_name(env_name)}-pixels.safetensors"


def reproduce_command(env_name: str, seed: int = 0, out: Optional[PathLike] = None) -> str:
    """The command that trains ``env_name``'s pixel model with ``seed`` (into ``out``, if given)."""
    command = f"python -m grasp_kernels train-pixels --env {check_env_name(env_name)} --seed {seed}"
    return command if out is None else f"{command} --out {out}"


def _metadata(model: PixelWorldModel, action_repeat: int) -> dict[str, str]:
    """The file's metadata: format, environment, time step and every architecture size :func:`load_pixel_model`
    rebuilds."""
    return {
        "action_repeat": str(action_repeat),
        "format": FORMAT, "format_version": str(FORMAT_VERSION), "env": model.env_name,
        "frame_size": str(model.frame_size), "latent_dim": str(model.latent_dim), "window": str(model.window),
        "action_dim": str(model.action_dim), "channels": ",".join(map(str, model.channels)),
        "hidden": str(model.dynamics.net[0].out_features),
        "depth": str(sum(isinstance(m, torch.nn.Linear) for m in model.dynamics.net) - 1),
    }


OBJECTIVE_WORDS = {
    "reconstruction": "encoder+decoder: foreground-weighted reconstruction, then frozen; predictor: teacher-forced "
                      "next latent + open-loop rollout loss on the frozen latents",
    "jepa": "encoder: trained jointly with a predictor (JEPA: teacher-forced and open-loop next-latent prediction "
            "against stop-gradient targets, VICReg variance and covariance terms), then frozen; decoder: "
            "reconstruction on the frozen keypoints; predictor: teacher-forced next latent + open-loop rollout "
            "loss on the frozen latents",
}


def _card_metrics(metrics: dict) -> dict:
    """The held-out metrics a card records (of :func:`~grasp_kernels.models.pixel_training.train_pixel_world_model`'s
    dict): the latent errors, the PSNR, the probe's errors and what the probe was."""
    return {k: v for k, v in metrics.items()
            if k in ("one_step", "reconstruction_psnr", "probe", "probe_spec") or k.startswith("h") or k.startswith("probe_h")}


def save_pixel_model(model: PixelWorldModel, path: PathLike, metrics: dict, reproduce: Optional[str] = None) -> Path:
    """Write ``model`` (safetensors, float32, architecture in the metadata) and its JSON model card beside it;
    ``metrics["data"]["action_repeat"]`` is the model's time step (default: the environment's)."""
    if not isinstance(model, PixelWorldModel):
        raise TypeError(f"model must be a PixelWorldModel, got {type(model).__name__}")
    path = Path(path)
    metadata = _metadata(model, resolve_action_repeat(model.env_name, metrics.get("data", {}).get("action_repeat")))
    architecture = {
        "class": "grasp_kernels.models.PixelWorldModel",
        **{k: v for k, v in metadata.items() if k not in ("format", "format_version", "env", "action_repeat")},
        "parameters": {part: int(sum(p.numel() for p in getattr(model, part).parameters()))
                       for part in ("encoder", "decoder", "dynamics")},
        "planning_state": "window of the last `window` standardised latents, flattened: [window * latent_dim]",
        "objective": OBJECTIVE_WORDS[metrics.get("config", {}).get("objective", "reconstruction")],
    }
    training = {"config": metrics.get("config", {}), "seed": metrics.get("seed"), "seconds": metrics.get("seconds"),
                "final_loss": metrics.get("final_loss"), "threads": torch.get_num_threads()}
    return write_model_files(
        model, path, metadata, architecture, metrics.get("data", {}), training,
        reproduce or reproduce_command(model.env_name, metrics.get("seed", 0), path.parent),
        _card_metrics(metrics),
    )


def load_pixel_model(
    env_name: str,
    path: Optional[PathLike] = None,
    device: Union[str, torch.device] = "cpu",
    action_repeat: Optional[int] = None,
    frame_size: Optional[int] = None,
) -> PixelWorldModel:
    """Load the pixel world model of ``env_name`` (eval mode, on ``device``, no gradients).

    Args:
        env_name: ``pointmaze-umaze|medium|large`` or ``pusht``.
        path: a file written by :func:`save_pixel_model`; default the shipped
            ``grasp_kernels/weights/<env>-pixels.safetensors``.
        device: where to put the model.
        action_repeat: the time step (simulator steps per model step) it will be used at; default the
            environment's (:func:`grasp_kernels.envs.sim.default_action_repeat`).
        frame_size: the frame side the caller will render; ``None`` takes the file's.

    Raises:
        ValueError: unknown env; a corrupt file; a file of another model format or another environment;
            tensors that do not fit the architecture in its metadata; a file trained with another
            ``action_repeat`` or ``frame_size`` than the requested one.
        FileNotFoundError: no such file (the message says how to build it).
    """
    name = check_env_name(env_name)
    device = check_device("device", device)
    path = default_path(name) if path is None else Path(path)
    hint = reproduce_command(name, 0, None if path == default_path(name) else path.parent)
    metadata, tensors = read_weights(path, default_path(name).name, hint)
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"path: {path} is not a pixel world model ({FORMAT}) file (metadata format={metadata.get('format')!r})"
        )
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise ValueError(f"path: {path} has format_version {metadata.get('format_version')!r}; this library reads {FORMAT_VERSION}")
    if metadata.get("env") != name:
        raise ValueError(f"path: {path} was trained for env {metadata.get('env')!r}, not for the requested env {name!r}")
    try:
        channels = tuple(int(c) for c in metadata.get("channels", "").split(","))
    except ValueError:
        raise ValueError(f"pixel world model file {path}: metadata field 'channels' is not a list of ints") from None
    sizes = {key: int_field(metadata, key, path) for key in ("frame_size", "latent_dim", "window", "action_dim", "hidden", "depth")}
    check_action_repeat(action_repeat, file_action_repeat(metadata, name, path), name, path)
    if frame_size is not None and check_size(frame_size, "frame_size") != sizes["frame_size"]:
        raise ValueError(
            f"frame_size: {path} was trained on {sizes['frame_size']} x {sizes['frame_size']} frames, not the "
            f"requested {frame_size} x {frame_size}; train one at that size (train-pixels --frame-size {frame_size})"
        )
    try:
        model = PixelWorldModel(name, sizes["latent_dim"], sizes["window"], sizes["action_dim"], channels,
                                sizes["hidden"], sizes["depth"], sizes["frame_size"])
    except ValueError as error:
        raise ValueError(f"pixel world model file {path}: its metadata describes no valid model ({error})") from None
    check_tensors(model, tensors, path, ", ".join(f"{k}={v}" for k, v in sizes.items()) + f", channels={channels}")
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    model.requires_grad_(False)
    return model.to(device).eval()


def remeasure(path: PathLike, env_name: str, probe_steps: Optional[int] = None, progress: bool = False) -> tuple[dict, dict]:
    """Measure the pixel model at ``path`` again on the data its card names, with today's probe, and rewrite the
    card's ``metrics``; the previous ones move to ``superseded_metrics`` (newest first) with the probe that
    measured them. Returns ``(previous, new)`` metrics. The weights are not touched.

    Raises:
        FileNotFoundError: no model file or no card beside it.
        ValueError: a card that names no training config, or any :func:`load_pixel_model` error.
    """
    path = Path(path)
    card_file = card_path(path)
    if not card_file.is_file():
        raise FileNotFoundError(f"path: no model card {card_file} beside {path}; remeasure reads the data it names")
    card = json.loads(card_file.read_text(encoding="utf-8"))
    config_fields = {f.name for f in dataclasses.fields(PixelTrainConfig)}
    recorded = card.get("training", {}).get("config")
    if not isinstance(recorded, dict):
        raise ValueError(f"path: the card {card_file} records no training config")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items() if k in config_fields}
    values["frame_size"] = card.get("data", {}).get("frame_size", values.get("frame_size", 64))
    # today's probe: its default steps unless given (the card's own probe_steps measured the superseded metrics)
    values["probe_steps"] = PixelTrainConfig().probe_steps if probe_steps is None else probe_steps
    config = PixelTrainConfig(**values)
    model = load_pixel_model(env_name, path, action_repeat=config.action_repeat)
    metrics = measure_pixel_model(model, int(card.get("training", {}).get("seed") or 0), config, progress=progress)
    previous = card.get("metrics", {})
    superseded = {"metrics": previous, "until": datetime.date.today().isoformat(),
                  "probe_spec": previous.get("probe_spec", "MLP 2 x 128 (SiLU), "
                                             f"{recorded.get('probe_steps', 2000)} Adam steps (underfits)")}
    card["superseded_metrics"] = [superseded, *card.get("superseded_metrics", [])]
    # what the data were (a card older than these fields: the defaults it was trained at)
    card.setdefault("data", {}).setdefault("action_repeat", resolve_action_repeat(env_name, config.action_repeat))
    card["data"].setdefault("policy", config.policy)
    card["metrics"] = _card_metrics(metrics)
    card_file.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return previous, card["metrics"]


__all__ = ["default_path", "load_pixel_model", "remeasure", "reproduce_command", "save_pixel_model"]
