"""Argument checks shared by the reference, the ops and the planners.

Every check raises ``TypeError`` (wrong kind or dtype) or ``ValueError`` (wrong shape, device,
layout or values) with a message that names the argument and what was expected.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Optional, Union

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# an action bound: None (unbounded), one float for every dimension, or a tensor [A]
BoundArg = Union[None, float, torch.Tensor]


def check_tensor(
    name: str,
    value: object,
    *,
    ndim: Optional[int] = None,
    shape: Optional[Sequence[Optional[int]]] = None,
    dtypes: Optional[Sequence[torch.dtype]] = FLOAT_DTYPES,
    device: Optional[torch.device] = None,
    contiguous: bool = False,
) -> torch.Tensor:
    """Check one tensor argument; ``None`` entries of ``shape`` match any size."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if dtypes is not None and value.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype in ({allowed}), got {str(value.dtype).replace('torch.', '')}")
    if shape is not None:
        ndim = len(shape)
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D{_shape_text(shape)}, got shape {tuple(value.shape)}")
    if shape is not None:
        for expected, got in zip(shape, value.shape):
            if expected is not None and expected != got:
                raise ValueError(f"{name} must have shape {_shape_text(shape).strip()}, got {tuple(value.shape)}")
    if device is not None and value.device != torch.device(device):
        raise ValueError(f"{name} must be on device {device}, got {value.device}")
    if contiguous and not value.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous()), got strides {value.stride()}")
    return value


def check_same_device(**tensors: Optional[torch.Tensor]) -> None:
    """All given tensors live on one device."""
    present = {k: v for k, v in tensors.items() if v is not None}
    devices = {v.device for v in present.values()}
    if len(devices) > 1:
        listing = ", ".join(f"{k} on {v.device}" for k, v in present.items())
        raise ValueError(f"tensors must share one device, got {listing}")


def check_finite(name: str, value: torch.Tensor) -> torch.Tensor:
    """Raise if ``value`` holds NaN or Inf (one host sync: never call inside a hot loop)."""
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} contains {bad} NaN/Inf value(s)")
    return value


def check_int(name: str, value: object, minimum: Optional[int] = None) -> int:
    """An integer (not a bool; numpy integers too), optionally ``>= minimum``; returned as an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_device(name: str, device: object) -> torch.device:
    """A device that this torch can use: a ``torch.device`` or a string such as "cpu", "cuda:0"."""
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"{name} must be a str or torch.device, got {type(device).__name__}")
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"{name} must name a device such as 'cpu' or 'cuda:0', got {device!r}") from None
    if parsed.type == "cuda":
        # torch's own message is an AssertionError from deep inside the first allocation
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"{name} is {device!r} but CUDA cannot be used: {why}; use 'cpu'")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"{name} is {device!r} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif parsed.type == "meta":
        raise ValueError(f"{name} must hold data (e.g. 'cpu' or 'cuda'), got the meta device")
    return parsed


def check_scalar(name: str, value: object, *, minimum: Optional[float] = None, exclusive: bool = False) -> float:
    """A finite real number, optionally bounded below."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and (value < minimum or (exclusive and value == minimum)):
        relation = ">" if exclusive else ">="
        raise ValueError(f"{name} must be {relation} {minimum}, got {value}")
    return value


def as_bound(
    name: str,
    bound: Union[None, float, Sequence[float], torch.Tensor],
    action_dim: int,
    device: torch.device,
    dtype: torch.dtype,
) -> Optional[torch.Tensor]:
    """An action bound as a tensor ``[A]`` (None stays None).

    Python numbers are checked for NaN on the host; a tensor bound costs one device sync for its NaN
    check (planners convert their bounds once, before the loop).
    """
    if bound is None:
        return None
    if isinstance(bound, torch.Tensor):
        tensor = bound.detach().to(device=device, dtype=dtype)
        if torch.isnan(tensor).any():
            raise ValueError(f"{name} contains NaN")
    else:
        if isinstance(bound, (int, float)) and not isinstance(bound, bool):
            values = [float(bound)] * action_dim
        else:
            try:
                values = [float(b) for b in bound]  # type: ignore[union-attr]
            except (TypeError, ValueError):
                raise TypeError(f"{name} must be None, a float, a sequence of floats or a tensor, got {bound!r}") from None
        if any(math.isnan(v) for v in values):
            raise ValueError(f"{name} contains NaN")
        tensor = torch.tensor(values, device=device, dtype=dtype)
    if tensor.dim() == 0:
        tensor = tensor.expand(action_dim).clone()
    if tensor.shape != (action_dim,):
        raise ValueError(f"{name} must have one value per action dimension ({action_dim}), got shape {tuple(tensor.shape)}")
    return tensor


def as_bounds(
    low: Union[None, float, Sequence[float], torch.Tensor],
    high: Union[None, float, Sequence[float], torch.Tensor],
    action_dim: int,
    device: torch.device,
    dtype: torch.dtype,
    names: tuple[str, str] = ("low", "high"),
) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Both action bounds as tensors ``[A]`` (:func:`as_bound`), checked ``low <= high``.

    The order check costs one device sync when both are given: call it once, before a loop.
    """
    low_t = as_bound(names[0], low, action_dim, device, dtype)
    high_t = as_bound(names[1], high, action_dim, device, dtype)
    if low_t is not None and high_t is not None and bool((low_t > high_t).any()):
        raise ValueError(f"{names[0]} must be <= {names[1]}, got {low_t.tolist()} and {high_t.tolist()}")
    return low_t, high_t


def _shape_text(shape: Optional[Sequence[Optional[int]]]) -> str:
    if shape is None:
        return ""
    return " [" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
