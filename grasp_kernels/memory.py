"""Planning in bounded memory (``GraspConfig(max_transitions=N)`` / ``memory_budget=``; docs/design.md,
"Bounded memory"): the chunk schedules, the budget's parsing, the peak measurement and the sizing rule.

GRASP differentiates the world model over all ``B*T`` transitions of an iteration at once; the
activations the model saves for that VJP are most of a plan's memory. Under the stop-gradient energy
every transition is independent, so the planner evaluates the model and its VJP over chunks of at most
``N`` transitions (:func:`transition_chunks`) and takes the Adam steps once on the full tensors.
The sequential rollouts (sync phase, final rollout, baselines) chunk over chains
(:func:`sync_chunking`, :func:`row_chunks`).

This module holds no world-model math (that stays in :mod:`grasp_kernels.lifted`): it is the planner's
bookkeeping of chunk sizes and bytes.
"""

from __future__ import annotations

import dataclasses
import re
import weakref
from typing import Any, Callable, Optional, Union

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

MemoryBudget = Union[int, str]

__all__ = [
    "Chunk",
    "LiveTensorPeak",
    "MemoryBudget",
    "MemoryPlan",
    "check_max_transitions",
    "format_bytes",
    "measure_peak",
    "parse_memory_budget",
    "row_chunks",
    "sync_chunking",
    "transition_chunks",
]

_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_BUDGET = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*$")
BUDGET_FORMS = ("an int number of bytes, or a string: a number and a unit, e.g. '512MiB', '8GiB', '2GB', "
                "'1.5 GiB' (units B, KB, MB, GB, TB = powers of 1000; KiB, MiB, GiB, TiB = powers of 1024)")


def parse_memory_budget(value: object, name: str = "memory_budget") -> int:
    """Bytes of a memory budget: an int ``>= 1`` or a string such as ``"512MiB"``, ``"8GiB"``, ``"2GB"``,
    ``"1.5 GiB"`` (case-insensitive units; ``"B"`` or no unit: bytes). Raises ValueError/TypeError
    naming ``name`` and the accepted forms."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{name} must be {BUDGET_FORMS}; got {type(value).__name__} {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"{name} must be >= 1 byte, got {value}")
        return value
    match = _BUDGET.match(value)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS and unit != "":
        raise ValueError(f"{name} {value!r} does not parse: it must be {BUDGET_FORMS}")
    size = int(float(match.group(1)) * _UNITS[unit or "b"])
    if size < 1:
        raise ValueError(f"{name} must be >= 1 byte, got {value!r}")
    return size


def format_bytes(size: float) -> str:
    """``size`` bytes for messages and tables, in binary units: ``"1.50 GiB"``, ``"512 B"``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(size) >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{int(size)} B"


def check_max_transitions(value: object, name: str = "max_transitions") -> Optional[int]:
    """None, or an int ``>= 1`` (a bool is not an int here): ValueError/TypeError naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be None or an int >= 1, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be None or an int >= 1, got {value}")
    return value


@dataclasses.dataclass(frozen=True)
class Chunk:
    """A rectangle of transitions of the flat ``[B*K, T]`` layout: chains ``b0 <= b < b1``, time steps
    ``t0 <= t < t1``. Either whole chains (``t0 = 0``, ``t1 = T``) or a time window of one chain."""

    b0: int
    b1: int
    t0: int
    t1: int

    @property
    def size(self) -> int:
        """Transitions in the chunk."""
        return (self.b1 - self.b0) * (self.t1 - self.t0)


def _balanced(total: int, most: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges covering ``total`` items, each at most ``most`` long, as few as possible
    and of (nearly) equal length."""
    count = -(-total // most)
    base, extra = divmod(total, count)
    ranges, start = [], 0
    for i in range(count):
        stop = start + base + (i < extra)
        ranges.append((start, stop))
        start = stop
    return ranges


def transition_chunks(batch: int, horizon: int, max_transitions: Optional[int]) -> list[Chunk]:
    """The chunks of a lifted iteration over ``batch`` chains of ``horizon`` transitions, each of at most
    ``max_transitions`` transitions: whole chains (``max_transitions // horizon`` per chunk, balanced)
    when a chain fits, else time windows of one chain (balanced). None: one chunk of everything."""
    if max_transitions is None or max_transitions >= batch * horizon:
        return [Chunk(0, batch, 0, horizon)]
    if max_transitions >= horizon:
        return [Chunk(b0, b1, 0, horizon) for b0, b1 in _balanced(batch, max_transitions // horizon)]
    windows = _balanced(horizon, max_transitions)
    return [Chunk(b, b + 1, t0, t1) for b in range(batch) for t0, t1 in windows]


def row_chunks(rows: int, max_rows: Optional[int]) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of at most ``max_rows`` rows covering ``rows`` (balanced; one range for None)."""
    if max_rows is None or max_rows >= rows or rows == 0:
        return [(0, rows)]
    return _balanced(rows, max_rows)


def sync_chunking(max_transitions: Optional[int], horizon: int, checkpoint: Optional[bool]) -> tuple[Optional[int], bool]:
    """``(chains per chunk, activation checkpointing)`` of a differentiated ``horizon``-step rollout (the
    GD sync phase, the GD baseline) under ``max_transitions``.

    Backpropagating through ``T`` steps keeps ``T`` steps' activations per chain. Without checkpointing a
    chunk holds ``max_transitions // T`` chains. When not even one chain fits (``max_transitions < T``),
    activation checkpointing (``checkpoint=None``: automatic) keeps only each step's input and recomputes
    its forward during the backward: ``max_transitions`` chains per chunk then hold one step's activations
    at a time. ``checkpoint=True`` always recomputes (``max_transitions`` chains per chunk); ``False``
    never does (at least one whole chain per chunk, even above ``max_transitions``).
    """
    if checkpoint is None:
        checkpoint = max_transitions is not None and max_transitions < horizon
    if max_transitions is None:
        return None, bool(checkpoint)
    if checkpoint:
        return max_transitions, True
    return max(1, max_transitions // horizon), False


class LiveTensorPeak(TorchDispatchMode):
    """The peak bytes of tensor storages allocated while the mode is active and still alive (the CPU's
    stand-in for ``torch.cuda.max_memory_allocated``; CPU torch keeps no allocator statistics).

    Every op's outputs are seen; an output whose storage is none of the op's inputs' storages is a new
    allocation (a view or an in-place result shares an input's) and counts until its storage is freed (a
    finalizer on the storage object, which torch keeps alive as long as the storage). Storages that existed
    before the mode (the plan's state, the weights) do not count. Not seen: memory outside tensors (the
    allocator's caching and fragmentation, oneDNN/MKL workspaces, the Python objects); ``bench/memory.py``
    compares the count with the resident set size.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: dict[int, int] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if _has_storage(t)}
        for tensor in tree_flatten(out)[0]:
            if _has_storage(tensor):
                storage = tensor.untyped_storage()
                key = id(storage)
                if key not in inputs and key not in self._live:
                    self._add(storage, key)
        return out

    def _add(self, storage: torch.UntypedStorage, key: int) -> None:
        size = storage.nbytes()
        self._live[key] = size
        self.current += size
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)


def _has_storage(value: object) -> bool:
    return isinstance(value, torch.Tensor) and value.layout == torch.strided and value.device.type != "meta"


def measure_peak(fn: Callable[[], object], device: torch.device) -> tuple[int, str]:
    """``(bytes, method)``: the peak memory ``fn()`` allocates above what was allocated when it started.

    CUDA: ``torch.cuda.max_memory_allocated`` (the caching allocator's statistics, exact for tensors).
    Elsewhere: :class:`LiveTensorPeak` (tensor storages alive at once; no allocator overhead).
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - before), "torch.cuda.max_memory_allocated"
    with LiveTensorPeak() as tracker:
        fn()
    return tracker.peak, "live tensor storages (torch dispatch)"


@dataclasses.dataclass
class MemoryPlan:
    """How a plan bounds its memory; ``PlanResult.info["memory"]`` is :meth:`report`.

    Attributes:
        max_transitions: transitions per chunk of a lifted iteration (None: one chunk of all ``B*K*T``).
        transitions: ``B*K*T``, the lifted batch.
        sync_chains: chains per chunk of the differentiated rollout of the GD sync (None: all), and
            ``checkpoint``: whether its backward recomputes each step's forward.
        rollout_rows: rows per chunk of the forward-only rollouts (final rollout, CEM sync; None: all).
        budget: the budget in bytes (``memory_budget``), or None.
        state_bytes: the plan state (virtual states, actions, moments, buffers) the budget also holds.
        measured_peak: the measured peak of one lifted iteration (and one sync step) at this chunk size,
            plus ``state_bytes``; None without a budget.
        per_transition_bytes: the measured growth of the iteration's peak per transition of a chunk.
        method: how the peak was measured (:func:`measure_peak`).
    """

    max_transitions: Optional[int]
    transitions: int
    sync_chains: Optional[int] = None
    checkpoint: bool = False
    rollout_rows: Optional[int] = None
    budget: Optional[int] = None
    state_bytes: Optional[int] = None
    measured_peak: Optional[int] = None
    per_transition_bytes: Optional[float] = None
    method: Optional[str] = None
    retries: int = 0

    @property
    def chunks_per_iteration(self) -> int:
        """Chunks of one lifted iteration (1: unchunked)."""
        return -(-self.transitions // self.max_transitions) if self.max_transitions else 1

    def report(self, batch: int, horizon: int) -> dict[str, Any]:
        """The plain-value summary for ``PlanResult.info["memory"]`` (``largest_chunk``: the transitions of the
        largest chunk the limit makes, whole chains or equal windows of one chain)."""
        chunks = transition_chunks(batch, horizon, self.max_transitions)
        return {
            "max_transitions": self.max_transitions,
            "largest_chunk": max(chunk.size for chunk in chunks),
            "chunks_per_iteration": len(chunks),
            "transitions": self.transitions,
            "sync_chains_per_chunk": self.sync_chains,
            "activation_checkpointing": self.checkpoint,
            "rollout_rows_per_chunk": self.rollout_rows,
            "budget": self.budget,
            "state_bytes": self.state_bytes,
            "measured_peak": self.measured_peak,
            "per_transition_bytes": self.per_transition_bytes,
            "method": self.method,
            "out_of_memory_retries": self.retries,
        }


def largest_fitting(iteration_peak: Callable[[int], int], chunk_peak: Callable[[int], int], available: int,
                    total: int, realized: Callable[[int], int] = lambda n: n, attempts: int = 4,
                    margin: float = 0.97) -> tuple[int, int, float]:
    """The largest chunk size ``n <= total`` whose iteration peak ``iteration_peak(n)`` fits ``available``.

    ``realized(n)`` is the size ``r`` of the largest chunk a limit of ``n`` makes (whole chains round it
    down). An iteration's peak is ``max(F, a + b r)``: the full-size work after the chunk loop (the energy
    op and the Adam steps on all ``B*K*T`` rows), or the chunk loop, whose peak is linear in the chunk
    (its full-size buffers plus one chunk's activations). ``chunk_peak(n)`` measures ONE chunk of the loop
    (cheap), at one transition and the next realized size, which gives ``a`` and ``b``; the guess is where
    ``a + b r`` reaches ``margin * available``, checked with one whole iteration and shrunk by the
    overshoot while it does not fit (``attempts`` iterations at most). No measurement is expected to pass
    the budget (the second chunk is measured only where ``b <= a + b`` guarantees it fits). Returns ``(n,
    its measured iteration peak, b)``; ``n = 0`` when one transition does not fit (the second value is then
    its peak).
    """
    first = iteration_peak(1)
    if first > available or total == 1:
        return (0 if first > available else 1), first, float(first)
    small, large = 1, next((n for n in range(2, total + 1) if realized(n) > realized(1)), 1)
    loop_small = chunk_peak(small)
    # the second chunk measured fits for sure when b <= loop_small (a >= 0) does: else one transition it is
    if large == 1 or loop_small * realized(large) / realized(small) > available:
        return 1, first, float(loop_small)
    loop_large = chunk_peak(large)
    slope = max((loop_large - loop_small) / (realized(large) - realized(small)), 1.0)
    best, best_peak = 1, first
    guess = min(total, realized(small) + int((margin * available - loop_small) / slope))
    for _ in range(attempts):
        if guess <= best or realized(guess) <= realized(best):
            break
        peak = iteration_peak(guess)
        if peak <= available:
            best, best_peak = guess, peak
            break
        guess = int(realized(guess) * available / peak * margin)  # not linear after all: shrink by the overshoot
    return best, best_peak, slope
