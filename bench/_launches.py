"""Counting what a piece of planner code launches, exactly and on any machine: the proxy for GPU launch
overhead that a CPU can measure.

- aten ops, through a ``TorchDispatchMode``: every op that would run a kernel on a GPU counts one. Ops
  that only make a view (their result aliases an input and nothing is written) and allocations without
  data (``empty``, ``empty_like``, ``empty_strided``) count none. A ``grasp::*`` custom op is seen as
  one op here; what it launches inside is counted by the next two.
- Triton launches, by wrapping ``JITFunction.run`` and the interpreter's ``InterpretedFunction.run``
  (``kernel[grid](...)`` goes through one of them on a GPU or under ``TRITON_INTERPRET=1``).
- launches of the compiled CUDA module, by wrapping its kernel entry points.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections import Counter
from typing import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from grasp_kernels.ops.table import OP_TABLE

_NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "lift_fresh", "detach",
              "_to_copy_meta", "is_same_size", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset"}
# the compiled module's kernel entry points: those of the op table's CUDA launches
_CUDA_ENTRY_POINTS = tuple(name for op in OP_TABLE for name in op.cuda_entry_points)


def launches_a_kernel(func: torch._ops.OpOverload) -> bool:
    """Whether an aten op runs a kernel on a GPU: not a pure view, not a data-less allocation."""
    if func.namespace == "grasp":
        return False  # counted through its Triton / CUDA launches
    if func._schema.name.split("::")[-1] in _NO_KERNEL:
        return False
    returns = func._schema.returns
    views = [r.alias_info is not None and not r.alias_info.is_write for r in returns]
    return not (returns and all(views))


@dataclasses.dataclass
class Launches:
    """What ran inside one :func:`count_launches` block."""

    aten: Counter = dataclasses.field(default_factory=Counter)
    triton: Counter = dataclasses.field(default_factory=Counter)
    cuda: Counter = dataclasses.field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.aten.values()) + sum(self.triton.values()) + sum(self.cuda.values())

    def __str__(self) -> str:
        return (f"{self.total} launches: {sum(self.aten.values())} aten, {sum(self.triton.values())} triton, "
                f"{sum(self.cuda.values())} cuda")


class _AtenCounter(TorchDispatchMode):
    def __init__(self, launches: Launches) -> None:
        super().__init__()
        self.launches = launches

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if launches_a_kernel(func):
            self.launches.aten[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def _triton_classes() -> list[type]:
    classes = []
    try:
        from triton.runtime.jit import JITFunction

        classes.append(JITFunction)
    except ImportError:
        return classes
    try:
        from triton.runtime.interpreter import InterpretedFunction

        classes.append(InterpretedFunction)
    except ImportError:
        pass
    return classes


@contextlib.contextmanager
def _patched(obj: object, name: str, wrapper) -> Iterator[None]:
    original = getattr(obj, name)
    setattr(obj, name, wrapper(original))
    try:
        yield
    finally:
        setattr(obj, name, original)


@contextlib.contextmanager
def count_launches() -> Iterator[Launches]:
    """Count the aten ops, Triton launches and CUDA-module launches of the block (any device)."""
    launches = Launches()

    def triton_wrapper(run):
        @functools.wraps(run)
        def counted(self, *args, **kwargs):
            if not kwargs.get("warmup", False):
                launches.triton[getattr(self, "__name__", str(self))] += 1
            return run(self, *args, **kwargs)

        return counted

    def cuda_wrapper(entry, name):
        @functools.wraps(entry)
        def counted(*args, **kwargs):
            launches.cuda[name] += 1
            return entry(*args, **kwargs)

        return counted

    with contextlib.ExitStack() as stack:
        for cls in _triton_classes():
            stack.enter_context(_patched(cls, "run", triton_wrapper))
        from grasp_kernels.ops import _cuda_common

        if _cuda_common.available():
            for name in _CUDA_ENTRY_POINTS:
                stack.enter_context(_patched(_cuda_common._cuda, name, lambda entry, n=name: cuda_wrapper(entry, n)))
        stack.enter_context(_AtenCounter(launches))
        yield launches
