"""The op benchmarks' registry: one entry per fused GRASP op, shared by ``bench/op_speed.py`` (markdown
tables) and ``bench/bench_ops.py`` (pytest-benchmark).

An entry says how to build the op's inputs for a shape (B, T, D), the op's non-tensor arguments, the
variants worth timing beside the op on each kernel backend, and the minimum bytes the op must move (each
input read once, each output written once; the goal row counted once per plan), the same for every
provider, so that GB/s is an effective bandwidth. The callables are the op table's (``grasp_kernels.ops.table``):
the op's specification and its public function ``grasp_kernels.ops.<public>(..., backend=b)``. Every op of the
table has an entry here, or is timed in whole plans (:data:`TIMED_IN_PLANS`); another is an error naming it.

Providers of a case: ``reference``, ``compile`` (torch.compile of the reference), and on each kernel
backend available here ``b`` and ``"b <variant>"``. ``lifted_energy`` is timed as what a planner needs:
energy plus both gradients (reference, compile and ``b``: forward and autograd backward; the kernel's
backward scales the gradients its forward computed; ``b 1-pass``: ``lifted_energy_grads``, no autograd).
In-place ops keep updating their inputs from call to call.
"""

from __future__ import annotations

import _bench_env  # noqa: F401  (first: TRITON_INTERPRET before Triton is imported)

import functools
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

import grasp_kernels.ops as ops
from grasp_kernels.backends import backend_unavailable_reason
from grasp_kernels.ops import AdamHyper, NoiseCounters
from grasp_kernels.ops.table import OP_TABLE, op_entry

# (B, T, D): B*T*D = 1e4 .. 1e8, horizon 50; D a multiple of 16 (vector loads) and, at 1e6 and 1e8, odd D too
GPU_SHAPES = [(4, 50, 50), (16, 50, 128), (64, 50, 320), (64, 50, 313), (256, 50, 784), (1024, 50, 1952),
              (1024, 50, 1953)]
QUICK_SHAPES = [(2, 8, 33), (4, 25, 100)]
KERNEL_BACKENDS = ("triton", "cuda")
GAMMA = 0.5
ADAM = dict(step=2, adam=AdamHyper(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8))
NOISE_STD = 0.01
SEED = dict(counters=NoiseCounters(seed=1))  # the kernels draw their noise in-kernel; the reference from its generator

Timed = Callable[[], object]
Randn = Callable[..., torch.Tensor]  # rn(*size, dtype=torch.float32): seeded normal samples on the device


def available_backends(device: torch.device) -> list[str]:
    return [b for b in KERNEL_BACKENDS if backend_unavailable_reason(b, device) is None]


def compiler(backend: str) -> Optional[Callable[[Callable], Callable]]:
    """torch.compile(dynamic=False) with ``backend``; None for "none"."""
    if backend == "none":
        return None
    return lambda fn: torch.compile(fn, backend=backend, dynamic=False)


@dataclass(frozen=True)
class OpBench:
    op: str  # the op's name in the op table (grasp_kernels.ops.table)
    inputs: Callable[[Randn, int, int, int, torch.dtype], dict[str, torch.Tensor]]  # (rn, B, T, D, pred dtype)
    nbytes: Callable[[int, int, int, int], int]  # (B, T, D, bytes per pred element)
    args: dict = field(default_factory=dict)  # non-tensor arguments, the same for the reference and the op
    kernel_args: dict = field(default_factory=dict)  # arguments only the kernels take
    variants: dict[str, Callable[..., object]] = field(default_factory=dict)  # name -> called like the op
    backward: bool = False  # time the output's autograd backward too (to the inputs that require grad)

    @property
    def name(self) -> str:
        """The op's public function, ``grasp_kernels.ops.<name>``."""
        return op_entry(self.op).public[0]

    @property
    def reference(self) -> Callable[..., object]:
        return functools.partial(op_entry(self.op).spec_function(), **self.args)

    def kernel(self, backend: str, fn: Optional[Callable[..., object]] = None) -> Callable[..., object]:
        fn = fn or op_entry(self.op).public_function()
        return functools.partial(fn, **self.args, **self.kernel_args, backend=backend)

    def providers(self, backends=KERNEL_BACKENDS) -> list[str]:
        return ["reference", "compile"] + [p for b in backends for p in (b, *(f"{b} {v}" for v in self.variants))]

    def cases(self, shape: tuple[int, int, int], device: torch.device, pred_dtype: torch.dtype = torch.float32,
              compile_fn: Optional[Callable[[Callable], Callable]] = None) -> dict[str, Timed]:
        """provider -> zero-argument callable running the op once on fresh seeded inputs of ``shape``."""
        g = torch.Generator(device="cpu").manual_seed(0)

        def rn(*size, dtype=torch.float32):
            return torch.randn(size, generator=g).to(device=device, dtype=dtype)

        tensors = self.inputs(rn, *shape, pred_dtype)
        cases = {"reference": self._timed(self.reference, tensors)}
        if compile_fn is not None:
            cases["compile"] = self._timed(compile_fn(self.reference), tensors)
        for b in available_backends(device):
            cases[b] = self._timed(self.kernel(b), tensors)
            for variant, fn in self.variants.items():
                cases[f"{b} {variant}"] = functools.partial(self.kernel(b, fn), **tensors)
        return cases

    def _timed(self, fn: Callable[..., object], tensors: dict[str, torch.Tensor]) -> Timed:
        if not self.backward:
            return functools.partial(fn, **tensors)
        leaves = tuple(t for t in tensors.values() if t.requires_grad)
        return lambda: torch.autograd.grad(fn(**tensors).sum(), leaves)


# ----------------------------------------------------------------------------------------------
# inputs and bytes (n = B*T*D elements, nv = B*(T-1)*D virtual-state elements, goal = B*D)
# ----------------------------------------------------------------------------------------------


def moments(rn: Randn, *size: int) -> dict[str, torch.Tensor]:
    """Adam moments of a plausible size: small means, small positive second moments."""
    return {"exp_avg": rn(*size) * 0.1, "exp_avg_sq": rn(*size).abs() * 0.01}


def energy_inputs(rn: Randn, B: int, T: int, D: int, pred_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {"pred": rn(B, T, D, dtype=pred_dtype).requires_grad_(True), "states": rn(B, T + 1, D).requires_grad_(True)}


def energy_bytes(B: int, T: int, D: int, pred_bytes: int) -> int:
    n, goal = B * T * D, B * D  # pred, states rows 1..T | grad_pred, grad_states, energy
    return n * pred_bytes + 4 * (n + goal) + 4 * n + 4 * (n + goal) + 4 * B


def state_step_inputs(rn: Randn, B: int, T: int, D: int, pred_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {"states": rn(B, T + 1, D), "grad": rn(B, T + 1, D), **moments(rn, B, T + 1, D)}


def state_step_bytes(B: int, T: int, D: int, pred_bytes: int) -> int:
    return 28 * B * (T - 1) * D  # states, grad, exp_avg, exp_avg_sq | states, exp_avg, exp_avg_sq


def action_step_inputs(rn: Randn, B: int, T: int, D: int, pred_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    actions = rn(B, T, D)
    low = actions.new_full((D,), -1.0)
    return {"actions": actions, "grad": rn(B, T, D), **moments(rn, B, T, D), "low": low, "high": -low}


def action_step_bytes(B: int, T: int, D: int, pred_bytes: int) -> int:
    return 28 * B * T * D + 8 * D  # actions [B, T, A=D] like the states, plus the bounds


def energy_state_step_inputs(rn: Randn, B: int, T: int, D: int, pred_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {"pred": rn(B, T, D, dtype=pred_dtype), "states": rn(B, T + 1, D), **moments(rn, B, T + 1, D)}


def energy_state_step_bytes(B: int, T: int, D: int, pred_bytes: int) -> int:
    n, nv, goal = B * T * D, B * (T - 1) * D, B * D
    # pred, states rows 1..T, moments | grad_pred, energy, states, moments
    return n * pred_bytes + 4 * (n + goal) + 8 * nv + 4 * n + 4 * B + 12 * nv


def unfused_energy_state_step(pred, states, gamma, exp_avg, exp_avg_sq, *, backend, counters, step, adam, noise_std):
    """What lifted_energy_state_step_ fuses: the energy's gradients, then the state step."""
    energy, grad_pred, grad_states = ops.lifted_energy_grads(pred, states, gamma, backend=backend)
    ops.state_step_(states, grad_states, exp_avg, exp_avg_sq, step, adam, noise_std, counters=counters, backend=backend)
    return energy, grad_pred


BENCHES = {bench.op: bench for bench in (
    OpBench("lifted_energy", energy_inputs, energy_bytes, dict(gamma=GAMMA),
            variants={"1-pass": ops.lifted_energy_grads}, backward=True),
    OpBench("state_step", state_step_inputs, state_step_bytes, dict(**ADAM, noise_std=NOISE_STD), SEED),
    OpBench("action_step", action_step_inputs, action_step_bytes, ADAM),
    OpBench("lifted_energy_state_step", energy_state_step_inputs, energy_state_step_bytes,
            dict(gamma=GAMMA, **ADAM, noise_std=NOISE_STD), SEED, variants={"unfused": unfused_energy_state_step}),
)}
# the fused MLP ops run a whole iteration / sync step of a world model: timed in plans (bench/planner_speed.py,
# provider fused_mlp), not here
TIMED_IN_PLANS = ("fused_mlp_iteration", "fused_mlp_sync")


def _registry() -> dict[str, OpBench]:
    """The op table's ops in table order, by public function name (KeyError naming an op without an entry)."""
    missing = [op.name for op in OP_TABLE if op.name not in BENCHES and op.name not in TIMED_IN_PLANS]
    if missing:
        raise KeyError(f"bench/_op_cases.py has no benchmark for the ops {missing}: add an OpBench to BENCHES")
    return {op.public[0]: BENCHES[op.name] for op in OP_TABLE if op.name in BENCHES}


OPS = _registry()
