"""What both shardings share: the process group (torch.distributed, launched by ``torchrun``), the
world it spans, the contiguous split of a range over ranks, and collectives that fail with a clear
error instead of hanging.

Every collective here runs under the process group's timeout (``init(timeout_s=)``); a rank that
died or never arrived turns into :class:`DistributedError` naming the operation, the rank and the
world size, not an endless wait. gloo honours that timeout on CPU tensors; NCCL honours it where
``TORCH_NCCL_ASYNC_ERROR_HANDLING`` is on (torch's default since 2.2).
"""

from __future__ import annotations

import datetime
import os
from typing import Optional

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 300.0


class DistributedError(RuntimeError):
    """A collective or point-to-point exchange that failed or timed out (a dead or missing rank, a
    mismatched world size, ranks that disagree on the work)."""


def is_active() -> bool:
    """Whether a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default group; ``(0, 1)`` without one."""
    if not is_active():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def init(backend: Optional[str] = None, timeout_s: float = DEFAULT_TIMEOUT_S, device: Optional[torch.device] = None) -> tuple[int, int]:
    """Initialise the default process group from ``torchrun``'s environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) unless one exists; returns ``(rank, world_size)``.

    Args:
        backend: "gloo" (CPU tensors) or "nccl" (CUDA tensors); default: "nccl" when ``device`` is a
            CUDA device, else "gloo".
        timeout_s: the timeout of every collective of the group, in seconds (> 0).
        device: the device the ranks' tensors live on (picks the default backend).

    Raises:
        DistributedError: no process group and no ``torchrun`` environment to build one from.
    """
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise ValueError(f"timeout_s must be a number of seconds > 0, got {timeout_s!r}")
    if is_active():
        return world()
    missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise DistributedError(
            f"no process group: launch with torchrun (e.g. torchrun --nproc-per-node 2 script.py), which sets "
            f"{', '.join(missing)}; or call torch.distributed.init_process_group first"
        )
    if backend is None:
        backend = "nccl" if device is not None and torch.device(device).type == "cuda" else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=float(timeout_s)))
    return world()


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous part ``[start, stop)`` of ``range(n)`` that ``rank`` of ``world_size`` holds:
    sizes differ by at most one, the first ``n % world_size`` ranks hold one more."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size) with world_size >= 1, got rank {rank}, world_size {world_size}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def guarded(what: str):
    """A context manager turning a failed or timed-out exchange into :class:`DistributedError` that names
    ``what``, this rank and the world size (torch raises RuntimeError/DistBackendError with backend text)."""
    return _Guard(what)


class _Guard:
    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None or isinstance(exc, DistributedError) or not isinstance(exc, RuntimeError):
            return False
        rank, size = world()
        raise DistributedError(
            f"{self.what} failed on rank {rank} of {size} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "a rank that died or timed out, or ranks that called different collectives"
        ) from exc


def agree(what: str, values: list[int]) -> None:
    """Check that every rank passes the same ``values`` (e.g. the global batch and horizon): one
    all-gather; raises :class:`DistributedError` listing what each rank passed."""
    rank, size = world()
    if size == 1:
        return
    mine = torch.tensor(values, dtype=torch.int64, device=group_device())
    gathered = [torch.empty_like(mine) for _ in range(size)]
    with guarded(f"checking {what} across ranks"):
        if mine.numel():
            dist.all_gather(gathered, mine)
    rows = [g.cpu().tolist() for g in gathered]
    if any(row != rows[0] for row in rows):
        listing = "; ".join(f"rank {r}: {row}" for r, row in enumerate(rows))
        raise DistributedError(f"ranks disagree on {what}: {listing}")


def group_device() -> torch.device:
    """The device collectives of the default group take tensors on (CUDA for NCCL)."""
    if is_active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
