"""The files of a trained world model: a safetensors file and a JSON model card beside it (never pickle).

``<stem>.safetensors`` holds the float32 weights and buffers with string metadata (format, format version,
environment, architecture); ``<stem>.json``, the model card, records the architecture, data, training,
exact reproduce command and held-out metrics. One writer (:func:`write_model_files`) and one reader
(:func:`read_weights`, :func:`check_tensors`, :func:`int_field`) serve the state models
(:mod:`grasp_kernels.models.zoo`) and the pixel models (:mod:`grasp_kernels.models.pixel_zoo`).
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

PathLike = Union[str, os.PathLike]


def card_path(path: PathLike) -> Path:
    """The model card beside a model file: ``<stem>.json``."""
    return Path(path).with_suffix(".json")


def write_model_files(
    model: nn.Module, path: PathLike, metadata: dict[str, str], architecture: dict[str, Any], data: dict,
    training: dict, reproduce: str, metrics: dict,
) -> Path:
    """Write ``model``'s state dict (float32, contiguous, on the CPU) with ``metadata`` to ``path`` and its
    model card beside it (:func:`card_path`); returns ``path``.

    ``metadata`` must hold ``env``, ``format`` and ``format_version``; the card is ``{env, file, format,
    format_version, architecture, data, training, reproduce, metrics, created, library}`` in that order.
    Parent directories are created."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=metadata)
    # safetensors creates the file owner-only (0600); shipped package data must be readable by everyone.
    os.chmod(path, 0o644)
    card = {
        "env": metadata["env"],
        "file": path.name,
        "format": metadata["format"],
        "format_version": int(metadata["format_version"]),
        "architecture": architecture,
        "data": data,
        "training": training,
        "reproduce": reproduce,
        "metrics": metrics,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "library": {"torch": torch.__version__},
    }
    card_path(path).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return path


def read_weights(path: Path, file_name: str, reproduce: str) -> tuple[dict, dict]:
    """``(metadata, tensors)`` of a safetensors file (never pickle), with clear errors.

    Args:
        path: the file.
        file_name: the usual file name, for the message when ``path`` is a directory.
        reproduce: the command that rebuilds the file, for the messages.

    Raises:
        ValueError: a directory, or a corrupt/truncated/non-safetensors file.
        FileNotFoundError: no such file.
    """
    from safetensors import safe_open

    if path.is_dir():
        raise ValueError(f"path must be a .safetensors file, got the directory {path} (e.g. {path / file_name})")
    if not path.is_file():
        raise FileNotFoundError(f"world model file {path} not found; build it with: {reproduce}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises SafetensorError, OSError or others on damaged files
        raise ValueError(
            f"world model file {path} is corrupt or not a safetensors file ({type(error).__name__}: {error}); "
            f"rebuild it with: {reproduce}"
        ) from error
    return metadata, tensors


def int_field(metadata: dict, key: str, path: Path) -> int:
    """The metadata field ``key`` as an int >= 1 (``ValueError`` naming the file otherwise)."""
    try:
        value = int(metadata[key])
    except (KeyError, ValueError):
        raise ValueError(f"world model file {path}: metadata field {key!r} is missing or not an integer") from None
    if value < 1:
        raise ValueError(f"world model file {path}: metadata field {key!r} must be >= 1, got {value}")
    return value


def check_tensors(model: nn.Module, tensors: dict, path: Path, architecture: str) -> None:
    """Raise ``ValueError`` unless ``tensors`` are exactly ``model``'s state dict in names and shapes, all finite."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        wrong = sorted(f"{k}: {found[k]} != {expected[k]}" for k in set(found) & set(expected) if found[k] != expected[k])
        raise ValueError(
            f"world model file {path}: tensors do not fit the architecture in its metadata "
            f"({architecture}): missing {missing}, unexpected {extra}, wrong shapes {wrong}"
        )
    bad = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"world model file {path}: non-finite values in {bad}")
