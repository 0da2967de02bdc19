"""Saving and loading trained :class:`MLPDynamics` world models (safetensors, never pickle).

A model file ``<stem>.safetensors`` holds the float32 weights and normalisation buffers with metadata
(format version, environment, dimensions, architecture); a JSON model card ``<stem>.json`` beside it
records the data, seed, exact reproduce command and held-out metrics (the file format:
:mod:`grasp_kernels.models.model_files`). The package ships one model per environment in
``grasp_kernels/weights/<env>.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from .._checks import check_device
from ..envs.sim import PointMazeEnv, PushTEnv, check_env_name, resolve_action_repeat
from .mlp import MLPDynamics
from .model_files import WEIGHTS_DIR, PathLike, card_path, check_tensors, int_field, read_weights, write_model_files

FORMAT = "grasp_kernels.mlp_dynamics"
FORMAT_VERSION = 1
ACTIVATIONS: dict[str, type[nn.Module]] = {"SiLU": nn.SiLU, "ReLU": nn.ReLU, "Tanh": nn.Tanh, "GELU": nn.GELU}
# The time step of model files written before their metadata recorded it (the defaults of that time).
LEGACY_ACTION_REPEAT = {"pointmaze": 10, "pusht": 2}


def file_action_repeat(metadata: dict, env_name: str, path: Path) -> int:
    """The action repeat (simulator steps per model step) a model file was trained with: its metadata's
    ``action_repeat``, or :data:`LEGACY_ACTION_REPEAT` for files older than that field."""
    if "action_repeat" not in metadata:
        return LEGACY_ACTION_REPEAT[check_env_name(env_name).split("-")[0]]
    return int_field(metadata, "action_repeat", path)


def check_action_repeat(requested: Optional[int], trained: int, env_name: str, path: Path) -> int:
    """``trained`` if it equals ``requested`` (``None``: ``env_name``'s default), else a ValueError: a model
    stepped at another time step than it learned predicts the wrong motion without any other sign."""
    wanted = resolve_action_repeat(env_name, requested)
    if wanted != trained:
        which = "the requested" if requested is not None else f"{env_name}'s default"
        raise ValueError(
            f"model file {path} was trained with action_repeat={trained} (simulator steps per model step) but "
            f"{which} action_repeat is {wanted}; pass action_repeat={trained} or load a model trained with {wanted}"
        )
    return trained


def env_dims(env_name: str) -> tuple[int, int]:
    """``(state_dim, action_dim)`` of an environment, without building its simulator."""
    name = check_env_name(env_name)
    cls = PushTEnv if name == "pusht" else PointMazeEnv
    return cls.state_dim, cls.action_dim


def default_path(env_name: str) -> Path:
    """The shipped model file of ``env_name``: ``grasp_kernels/weights/<env>.safetensors``."""
    return WEIGHTS_DIR / f"{check_env_name(env_name)}.safetensors"


def _reproduce_hint(env_name: str) -> str:
    return f"python -m grasp_kernels train --env {env_name} --seed 0 --out {WEIGHTS_DIR}"


def _architecture(model: MLPDynamics) -> tuple[int, int, str]:
    """``(hidden, depth, activation name)`` read off ``model.net`` (alternating Linear, activation, ... Linear)."""
    linears = [m for m in model.net if isinstance(m, nn.Linear)]
    activations = {type(m).__name__ for m in model.net if not isinstance(m, nn.Linear)}
    if len(activations) != 1 or next(iter(activations)) not in ACTIVATIONS:
        raise ValueError(f"model: expected one activation type among {sorted(ACTIVATIONS)}, got {sorted(activations)}")
    return linears[0].out_features, len(linears) - 1, next(iter(activations))


def save_world_model(
    model: MLPDynamics, path: PathLike, env_name: str, metrics: dict, reproduce: Optional[str] = None
) -> Path:
    """Write ``model`` to ``path`` (safetensors, float32) and its JSON model card beside it.

    Args:
        model: the trained model.
        path: the ``.safetensors`` file to write (parent directories are created).
        env_name: the environment it was trained for; must match the model's dimensions.
        metrics: held-out metrics and training details (e.g. :func:`train_world_model`'s dict), stored in the card;
            its ``data["action_repeat"]`` is the model's time step (default: the environment's).
        reproduce: the exact command that rebuilds the file (default: the CLI with the card's seed).

    Returns:
        The path written.
    """
    name = check_env_name(env_name)
    if not isinstance(model, MLPDynamics):
        raise TypeError(f"model must be an MLPDynamics, got {type(model).__name__}")
    expected = env_dims(name)
    if (model.state_dim, model.action_dim) != expected:
        raise ValueError(
            f"model has (state_dim, action_dim) = {(model.state_dim, model.action_dim)} but env {name!r} has {expected}"
        )
    hidden, depth, activation = _architecture(model)
    action_repeat = resolve_action_repeat(name, metrics.get("data", {}).get("action_repeat"))
    path = Path(path)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "env": name,
        "state_dim": str(model.state_dim),
        "action_dim": str(model.action_dim),
        "hidden": str(hidden),
        "depth": str(depth),
        "activation": activation,
        "action_repeat": str(action_repeat),
    }
    seed = metrics.get("seed", 0)
    architecture = {
        "class": "grasp_kernels.models.MLPDynamics",
        "state_dim": model.state_dim,
        "action_dim": model.action_dim,
        "hidden": hidden,
        "depth": depth,
        "activation": activation,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "residual": "s' = s + delta_scale * net([(s - state_mean) / state_std, (a - action_mean) / action_std])",
    }
    training = {"config": metrics.get("config", {}), "seed": seed, "train_seconds": metrics.get("train_seconds"),
                "collect_seconds": metrics.get("collect_seconds"), "final_loss": metrics.get("final_loss")}
    return write_model_files(
        model, path, metadata, architecture, metrics.get("data", {}), training,
        reproduce or f"python -m grasp_kernels.models.training --env {name} --seed {seed} --out {path.parent}",
        {k: v for k, v in metrics.items() if k in ("one_step", "one_step_normalised_rmse")
         or (k.startswith("h") and k[1:].isdigit())},
    )


def load_world_model(
    env_name: str,
    path: Optional[PathLike] = None,
    device: Union[str, torch.device] = "cpu",
    action_repeat: Optional[int] = None,
) -> MLPDynamics:
    """Load a world model for ``env_name`` (eval mode, on ``device``).

    Args:
        env_name: ``pointmaze-umaze|medium|large`` or ``pusht``.
        path: a ``.safetensors`` file written by :func:`save_world_model`; default the shipped
            ``grasp_kernels/weights/<env>.safetensors``.
        device: where to put the model.
        action_repeat: the time step (simulator steps per model step) the model will be used at; default the
            environment's (:func:`grasp_kernels.envs.sim.default_action_repeat`).

    Raises:
        ValueError: unknown env name; a corrupt or truncated file; a file for another environment (metadata
            env, or dimensions that do not fit ``env_name``); tensors that do not fit the metadata's architecture;
            a file trained with another ``action_repeat`` than the requested one.
        FileNotFoundError: no such file (the message says how to reproduce it).
    """
    name = check_env_name(env_name)
    device = check_device("device", device)
    path = default_path(name) if path is None else Path(path)
    hint = _reproduce_hint(name) + ("" if path == default_path(name) else f" (and pass --out {path.parent})")
    metadata, tensors = read_weights(path, default_path(name).name, hint)

    if metadata.get("format") != FORMAT:
        raise ValueError(f"world model file {path} is not a {FORMAT} file (metadata format={metadata.get('format')!r})")
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        raise ValueError(f"world model file {path} has format_version {version!r}; this library reads {FORMAT_VERSION}")
    file_env = metadata.get("env")
    if file_env != name:
        raise ValueError(f"world model file {path} was trained for env {file_env!r}, not for the requested env {name!r}")
    dims = (int_field(metadata, "state_dim", path), int_field(metadata, "action_dim", path))
    if dims != env_dims(name):
        raise ValueError(
            f"world model file {path} has (state_dim, action_dim) = {dims} but env {name!r} has {env_dims(name)}"
        )
    check_action_repeat(action_repeat, file_action_repeat(metadata, name, path), name, path)
    hidden, depth = int_field(metadata, "hidden", path), int_field(metadata, "depth", path)
    activation = metadata.get("activation")
    if activation not in ACTIVATIONS:
        raise ValueError(f"world model file {path}: unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")

    model = MLPDynamics(dims[0], dims[1], hidden=hidden, depth=depth, activation=ACTIVATIONS[activation])
    check_tensors(model, tensors, path, f"hidden={hidden}, depth={depth}")
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    return model.to(device).eval()


def recorded_metrics(env_name: str, path: Optional[PathLike] = None) -> dict:
    """The model card of ``env_name``'s model (default: the shipped one) as a dict; its ``"metrics"`` hold the
    held-out errors measured at training time."""
    name = check_env_name(env_name)
    card = card_path(default_path(name) if path is None else Path(path))
    if not card.is_file():
        raise FileNotFoundError(f"model card {card} for env {name!r} not found; train it with: {_reproduce_hint(name)}")
    try:
        return json.loads(card.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"model card {card} is not valid JSON: {error}") from error
