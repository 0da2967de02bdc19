"""The op table: one entry per op folder, the one hand-kept list of the ops.

What lists ops derives its list from :data:`OP_TABLE`: the tests' launches and kernel backends
(tests/_kernels.py, tests/_cuda_helpers.py), the launch counter's CUDA entry points (bench/_launches.py), the
Triton kernels compiled ahead of time (tests/_lowering_specs.py), the sanitizer's cases
(bench/sanitize_kernels.py) and the op benchmarks (bench/_op_cases.py). Those files keep only what is theirs
per op (inputs, shapes, configurations), keyed by :attr:`OpEntry.name`, and fail naming an op of the table
they do not cover; tests/test_op_table.py checks the entries against the op folders and every one of those
files against the table.

An entry names things; it imports nothing. :meth:`OpEntry.launcher` and :meth:`OpEntry.triton_kernel_functions`
import the op's launch modules on first use (Triton and the compiled CUDA module are optional).
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Callable

__all__ = ["OP_TABLE", "OpEntry", "op_entry"]


@dataclasses.dataclass(frozen=True)
class OpEntry:
    """One op: the folder ``grasp_kernels/ops/<name>/`` and what it holds.

    Attributes:
        name: the folder's name.
        public: its public functions in :mod:`grasp_kernels.ops` (the first is the op itself).
        custom_op: its ``torch.library`` custom op, ``torch.ops.grasp.<custom_op>``.
        spec: its specification, ``module:function``: one in :mod:`grasp_kernels.reference`, or the planner's
            own math for the fused MLP ops (their op has no reference backend).
        backends: the kernel backends with a launch, each ``launcher(backend)`` in ``op.py``.
        triton_kernels: the ``@triton.jit`` kernels of its ``triton_kernel.py``, in launch order (the energy
            kernels' second pass, ``sum_partials_kernel``, is :mod:`._triton_common`'s).
        cuda_entry_points: the functions of the compiled module ``grasp_kernels._cuda`` its ``cuda_launch.py``
            calls.
    """

    name: str
    public: tuple[str, ...]
    custom_op: str
    spec: str
    backends: tuple[str, ...]
    triton_kernels: tuple[str, ...]
    cuda_entry_points: tuple[str, ...] = ()

    def module(self, part: str) -> ModuleType:
        """The op's module ``part`` ("op", "reference", "triton_kernel", "cuda_launch"), imported."""
        return importlib.import_module(f"grasp_kernels.ops.{self.name}.{part}")

    def launcher(self, backend: str) -> Callable[..., None]:
        """The launch function of ``backend`` (one of :attr:`backends`) behind the custom op."""
        if backend not in self.backends:
            raise ValueError(f"op {self.name} has no {backend!r} launch (its backends: {self.backends})")
        return self.module("op").launcher(backend)

    def public_function(self) -> Callable[..., object]:
        """The op's public function, ``grasp_kernels.ops.<public[0]>``."""
        return getattr(importlib.import_module("grasp_kernels.ops"), self.public[0])

    def spec_function(self) -> Callable[..., object]:
        """The op's specification (:attr:`spec`), imported."""
        module, name = self.spec.split(":")
        return getattr(importlib.import_module(module), name)

    def triton_kernel_functions(self) -> list[object]:
        """The ``@triton.jit`` functions of :attr:`triton_kernels` (imports Triton)."""
        module = self.module("triton_kernel")
        return [getattr(module, name) for name in self.triton_kernels]


KERNELS = ("triton", "cuda")
REFERENCE = "grasp_kernels.reference"

OP_TABLE: tuple[OpEntry, ...] = (
    OpEntry("lifted_energy", ("lifted_energy", "lifted_energy_grads"), "lifted_energy",
            f"{REFERENCE}:lifted_energy_ref", KERNELS, ("lifted_energy_kernel",), ("lifted_energy_fwd",)),
    OpEntry("state_step", ("state_step_",), "state_step", f"{REFERENCE}:state_step_ref", KERNELS,
            ("state_step_kernel",), ("state_step",)),
    OpEntry("action_step", ("action_step_",), "action_step", f"{REFERENCE}:action_step_ref", KERNELS,
            ("action_step_kernel",), ("action_step",)),
    OpEntry("lifted_energy_state_step", ("lifted_energy_state_step_",), "lifted_energy_state_step",
            f"{REFERENCE}:lifted_energy_state_step_ref", KERNELS, ("lifted_energy_state_step_kernel",),
            ("lifted_energy_state_step",)),
    OpEntry("fused_mlp_iteration", ("fused_mlp_iteration_",), "fused_mlp_iteration",
            "grasp_kernels.lifted:lifted_iteration", ("triton",), ("_fused_mlp_iteration_kernel",)),
    OpEntry("fused_mlp_sync", ("fused_mlp_sync_step_",), "fused_mlp_sync_step", "grasp_kernels.sync:sync_step",
            ("triton",), ("_fused_mlp_sync_kernel",)),
)


def op_entry(name: str) -> OpEntry:
    """The entry of op folder ``name`` (KeyError naming the table's ops otherwise)."""
    for entry in OP_TABLE:
        if entry.name == name:
            return entry
    raise KeyError(f"no op {name!r} in grasp_kernels.ops.table.OP_TABLE (its ops: {[e.name for e in OP_TABLE]})")
