"""Backend resolution: which implementation of the fused ops runs (docs/design.md, section 3).

``reference`` (pure PyTorch, any device), ``triton`` (Triton kernels on a GPU, or on the CPU under
``TRITON_INTERPRET=1``), ``cuda`` (the optional compiled module ``grasp_kernels._cuda``, GPU only) and
``auto`` (cuda if built and the tensors are on a GPU, else triton on a GPU, else reference).
The environment variable ``GRASP_KERNELS_BACKEND`` overrides every request. A requested backend that
cannot run falls back with one warning per reason, never silently and never with a crash at import.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import warnings
from typing import Optional

import torch

BACKENDS: tuple[str, ...] = ("auto", "reference", "triton", "cuda")

ENV_VAR = "GRASP_KERNELS_BACKEND"
_warned: set[str] = set()


class BackendFallbackWarning(RuntimeWarning):
    """A requested backend cannot run here and another one is used instead."""


def warn_once(message: str, stacklevel: int = 3) -> None:
    """Warn with :class:`BackendFallbackWarning` once per distinct message."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, BackendFallbackWarning, stacklevel=stacklevel)


def on_device(device: torch.device) -> contextlib.AbstractContextManager:
    """Make ``device`` torch's current CUDA device for a kernel launch (Triton and the CUDA module
    launch on the current device, not on their arguments'); a no-op off CUDA and in the common case
    where it already is, and torch's guard restores the previous device afterwards."""
    device = torch.device(device)
    if device.type != "cuda" or device.index is None or device.index == torch.cuda.current_device():
        return contextlib.nullcontext()
    return torch.cuda.device(device)


def triton_interpreter_active() -> bool:
    """True when Triton kernels run on the CPU through the interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def triton_unavailable_reason() -> Optional[str]:
    """None if the Triton kernels can be imported, else why not."""
    if importlib.util.find_spec("triton") is None:
        return "the triton package is not installed"
    try:
        from .ops import _triton_common  # noqa: F401  (imported here: Triton is optional)
    except ModuleNotFoundError as exc:
        if exc.name == "grasp_kernels.ops._triton_common":
            return "the Triton kernels are not part of this build"
        return f"importing the Triton kernels failed: {exc}"
    except Exception as exc:  # a broken triton install must not break import of the package
        return f"importing the Triton kernels failed: {type(exc).__name__}: {exc}"
    return None


@functools.lru_cache(maxsize=None)
def cuda_unavailable_reason() -> Optional[str]:
    """None if the compiled CUDA module ``grasp_kernels._cuda`` loads, else why not."""
    try:
        from . import _cuda  # noqa: F401  (optional: built only where nvcc exists)
    except ImportError as exc:
        return f"the CUDA module grasp_kernels._cuda is not built ({exc})"
    return None


def backend_unavailable_reason(name: str, device: torch.device) -> Optional[str]:
    """None if backend ``name`` can run on tensors on ``device``, else the reason it cannot."""
    device = torch.device(device)
    if name == "reference":
        return None
    if name == "triton":
        reason = triton_unavailable_reason()
        if reason is None and device.type != "cuda" and not triton_interpreter_active():
            reason = f"tensors are on {device} and TRITON_INTERPRET=1 is not set"
        return reason
    if name == "cuda":
        reason = cuda_unavailable_reason()
        if reason is None and device.type != "cuda":
            reason = f"tensors are on {device}, the cuda backend needs a CUDA device"
        return reason
    raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")


def requested_backend(backend: str) -> str:
    """The backend asked for: ``GRASP_KERNELS_BACKEND`` if set, else ``backend``."""
    forced = os.environ.get(ENV_VAR, "").strip()
    name = forced or backend
    if name not in BACKENDS:
        source = f"environment variable {ENV_VAR}" if forced else "backend"
        raise ValueError(f"{source} must be one of {BACKENDS}, got {name!r}")
    return name


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend ("reference" | "triton" | "cuda") that runs for ``device``."""
    device = torch.device(device)
    name = requested_backend(backend)
    if name == "auto":
        if device.type != "cuda":
            return "reference"
        for candidate in ("cuda", "triton"):
            reason = backend_unavailable_reason(candidate, device)
            if reason is None:
                return candidate
            warn_once(f"grasp_kernels: auto backend skips {candidate}: {reason}")
        return "reference"
    reason = backend_unavailable_reason(name, device)
    if reason is None:
        return name
    fallback = "triton" if name == "cuda" and backend_unavailable_reason("triton", device) is None else "reference"
    warn_once(f"grasp_kernels: backend {name!r} unavailable ({reason}); falling back to {fallback!r}")
    return fallback
