"""Every kernel of the engine once, on small odd shapes, checked against its reference: the workload of
the compute-sanitizer step of ``bench/device_check.sh`` (memcheck, initcheck, ...), where each launch
should touch only its own tensors. One set of cases per op of the op table (``CASES``, keyed by the names in
``grasp_kernels.ops.table``; an op without cases is an error), run on each kernel backend the op has. It
covers each Triton kernel (the four ops, the multi-chunk energy sum, the fused MLP iteration in its
register and blocked variants with tensor and in-kernel noise and one or several time chunks, the fused
sync step in both variants with one or several plan blocks; the blocked variants also forced to 2
persistent programs, each looping over several tiles) and each CUDA kernel (the four ops, on the scalar
path (D, A odd) and the 16-byte vector path (D, A multiples of 4), one and several chunks per plan); a
few seconds on a GPU, so the sanitizer's slowdown stays affordable.

    python bench/sanitize_kernels.py              # needs a CUDA device; exits 1 on a mismatch
    python bench/sanitize_kernels.py --device cpu --backends triton   # CPU smoke run (Triton interpreter)
    compute-sanitizer --tool memcheck --error-exitcode 9 python bench/sanitize_kernels.py
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from typing import Callable, ContextManager, Optional

import _bench_env  # noqa: F401  (first: puts the repository on sys.path)
import torch

from grasp_kernels import ops
from grasp_kernels.backends import backend_unavailable_reason
from grasp_kernels.lifted import lifted_iteration
from grasp_kernels.models import MLPDynamics
from grasp_kernels.ops import AdamHyper, NoiseCounters
from grasp_kernels.ops.table import OP_TABLE
from grasp_kernels.reference import action_step_ref, lifted_energy_ref, lifted_energy_state_step_ref, state_step_ref
from grasp_kernels.sync import sync_step

ADAM = dict(step=3, adam=AdamHyper(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8))


def _randn(*shape: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(*shape, generator=g).to(device)


def _close(name: str, got: torch.Tensor, want: torch.Tensor, tol: float = 1e-4) -> None:
    err = (got.double() - want.double()).abs().max().item() if got.numel() else 0.0
    scale = max(1.0, want.double().abs().max().item() if want.numel() else 0.0)
    if not err <= tol * scale:
        raise AssertionError(f"{name}: max error {err:.3g} (scale {scale:.3g})")


def energy_cases(backend: str, device: torch.device, g: torch.Generator) -> None:
    # D odd: scalar path; D = 8: the CUDA vector path; T*D = 3500: several chunks per plan
    for batch, horizon, dim, pred_dtype in ((3, 5, 7, torch.float32), (2, 6, 8, torch.bfloat16), (2, 700, 5, torch.float32),
                                            (2, 700, 8, torch.float32), (2, 700, 8, torch.bfloat16)):
        states = _randn(batch, horizon + 1, dim, g=g, device=device)
        pred = _randn(batch, horizon, dim, g=g, device=device).to(pred_dtype)
        energy, grad_pred, grad_states = ops.lifted_energy_grads(pred, states, 0.3, backend=backend)
        want = lifted_energy_ref(pred.double(), states.double(), 0.3)
        _close(f"{backend} lifted_energy {tuple(states.shape)} {pred_dtype}", energy, want, 1e-5)
        assert grad_pred.shape == pred.shape and grad_states.shape == states.shape


# (B, T, D, A) of the step ops: odd sizes, the scalar paths; multiples of 4, the CUDA vector paths; T*D = 5600,
# several chunks per plan
STEP_SHAPES = ((3, 6, 5, 3), (2, 7, 8, 4), (2, 700, 8, 4))


def state_step_cases(backend: str, device: torch.device, g: torch.Generator) -> None:
    for batch, horizon, dim, _ in STEP_SHAPES:
        for noise_kind in ("tensor", "seed"):
            states = _randn(batch, horizon + 1, dim, g=g, device=device)
            grad, m, v = (_randn(*states.shape, g=g, device=device) for _ in range(3))
            v = v.abs()
            noise = _randn(batch, horizon - 1, dim, g=g, device=device) if noise_kind == "tensor" else None
            want = [t.clone() for t in (states, m, v)]
            ops.state_step_(states, grad, m, v, noise_std=0.01, noise=noise, counters=NoiseCounters(11),
                            backend=backend, **ADAM)
            if noise is not None:
                state_step_ref(*want[:1], grad, *want[1:], noise_std=0.01, noise=noise, **ADAM)
                _close(f"{backend} state_step noise tensor", states, want[0])


def action_step_cases(backend: str, device: torch.device, g: torch.Generator) -> None:
    for batch, horizon, _, action_dim in STEP_SHAPES:
        actions = _randn(batch, horizon, action_dim, g=g, device=device)
        grad, m, v = (_randn(*actions.shape, g=g, device=device) for _ in range(3))
        v = v.abs()
        want = [t.clone() for t in (actions, m, v)]
        ops.action_step_(actions, grad, m, v, low=-0.5, high=0.5, backend=backend, **ADAM)
        action_step_ref(want[0], grad, want[1], want[2], low=-0.5, high=0.5, **ADAM)
        _close(f"{backend} action_step", actions, want[0])


def energy_state_step_cases(backend: str, device: torch.device, g: torch.Generator) -> None:
    for batch, horizon, dim, _ in STEP_SHAPES:
        states = _randn(batch, horizon + 1, dim, g=g, device=device)
        pred = _randn(batch, horizon, dim, g=g, device=device)
        m, v = torch.zeros_like(states), torch.zeros_like(states)
        noise = _randn(batch, horizon - 1, dim, g=g, device=device)
        want = [t.clone() for t in (states, m, v)]
        energy, _ = ops.lifted_energy_state_step_(pred, states, 0.3, m, v, noise_std=0.01, noise=noise,
                                                  backend=backend, **ADAM)
        want_energy, _ = lifted_energy_state_step_ref(pred, want[0], 0.3, want[1], want[2], noise_std=0.01,
                                                      noise=noise, **ADAM)
        _close(f"{backend} lifted_energy_state_step energy", energy, want_energy, 1e-5)
        _close(f"{backend} lifted_energy_state_step states", states, want[0])
        ops.lifted_energy_state_step_(pred, states, 0.3, m, v, noise_std=0.01, counters=NoiseCounters(5),
                                      backend=backend, **ADAM)


def wide_grid(programs: Optional[int]) -> ContextManager[None]:
    """The wide launches' default grid (``None``: min(tiles, SMs) programs, one tile each at these shapes)
    or ``programs`` persistent programs, each looping over several tiles with one scratch."""
    from grasp_kernels.ops._mlp_triton import force_wide_programs

    return contextlib.nullcontext() if programs is None else force_wide_programs(programs)


def fused_mlp_cases(backend: str, device: torch.device, g: torch.Generator) -> None:
    # H = 16: the register variant; H = 40: the blocked variant with its per-program scratch; T = 150: several
    # time chunks per plan (the energy summed by the second pass; 9 tiles), once more over 2 programs that
    # loop; in-kernel noise after the tensor noise
    for hidden, depth, horizon, programs in ((16, 2, 9, None), (40, 3, 9, None), (16, 1, 150, None), (40, 2, 150, None),
                                             (40, 2, 150, 2)):
        torch.manual_seed(hidden)
        model = MLPDynamics(5, 3, hidden=hidden, depth=depth).to(device)
        batch = 3
        states = _randn(batch, horizon + 1, 5, g=g, device=device)
        actions = _randn(batch, horizon, 3, g=g, device=device)
        moments = [torch.zeros_like(states), torch.zeros_like(states), torch.zeros_like(actions), torch.zeros_like(actions)]
        noise = _randn(batch, horizon - 1, 5, g=g, device=device)
        want = [t.clone() for t in (states, actions, *moments)]
        scalars = dict(step=1, state_adam=AdamHyper(0.01), action_adam=AdamHyper(0.01), noise_std=0.01,
                       low=-1.0, high=1.0, noise=noise)
        name = f"fused_mlp_iteration H={hidden} T={horizon}" + (f" {programs} programs" if programs else "")
        with wide_grid(programs):
            energy, new_states = ops.fused_mlp_iteration_(model, states, actions, 0.3, *moments, backend=backend,
                                                          **scalars)
        want_energy, _, _ = lifted_iteration(  # the fused iteration's specification: one planner iteration
            model, want[0], want[1], tuple(want[2:4]), tuple(want[4:]), gamma=0.3, state_shape=(5,), **scalars)
        _close(name, energy, want_energy, 1e-4)
        _close(f"{name} states", new_states, want[0])
        _close(f"{name} actions", actions, want[1])
        scalars.update(noise=None, step=2)
        with wide_grid(programs):
            ops.fused_mlp_iteration_(model, new_states, actions, 0.3, *moments, counters=NoiseCounters(9),
                                     backend=backend, **scalars)


def fused_sync_cases(backend: str, device: torch.device, g: torch.Generator) -> None:
    # the fused sync step: register (H = 16) and blocked (H = 40) variants, one plan block and several
    # (B = 19 > 16 plans per program), 5 blocks over 2 programs that loop; its workspace of T+1 states
    for hidden, depth, batch, programs in ((16, 2, 3, None), (40, 3, 19, None), (40, 3, 70, 2)):
        torch.manual_seed(hidden)
        model = MLPDynamics(5, 3, hidden=hidden, depth=depth).to(device)
        horizon = 7
        s0, goal = _randn(batch, 5, g=g, device=device), _randn(batch, 5, g=g, device=device)
        actions = _randn(batch, horizon, 3, g=g, device=device)
        m, v = torch.zeros_like(actions), torch.zeros_like(actions)
        want = [t.clone() for t in (actions, m, v)]
        adam = dict(step=1, adam=AdamHyper(0.05, 0.9, 0.999, 1e-8), low=-1.0, high=1.0)
        with wide_grid(programs):
            loss = ops.fused_mlp_sync_step_(model, s0, goal, actions, m, v, backend=backend, **adam)
        want_loss = sync_step(model, s0, goal, *want, **adam)  # the fused sync step's specification
        name = f"fused_mlp_sync H={hidden} B={batch}" + (f" {programs} programs" if programs else "")
        _close(f"{name} loss", loss, want_loss, 1e-4)
        _close(f"{name} actions", actions, want[0])


# each op's cases, by the op table's name: (backend, device, generator) -> None, raising on a mismatch
CASES: dict[str, Callable[[str, torch.device, torch.Generator], None]] = {
    "lifted_energy": energy_cases,
    "state_step": state_step_cases,
    "action_step": action_step_cases,
    "lifted_energy_state_step": energy_state_step_cases,
    "fused_mlp_iteration": fused_mlp_cases,
    "fused_mlp_sync": fused_sync_cases,
}


def cases_for(backends: list[str], device: torch.device, g: torch.Generator) -> list[tuple[str, Callable[[], None]]]:
    """``(name, run)`` of every op of the op table on each of ``backends`` it has a kernel for (KeyError naming an
    op without cases)."""
    missing = [op.name for op in OP_TABLE if op.name not in CASES]
    if missing:
        raise KeyError(f"bench/sanitize_kernels.py has no cases for the ops {missing}: add them to CASES")
    return [(f"{backend} {op.name}", functools.partial(CASES[op.name], backend, device, g))
            for op in OP_TABLE for backend in op.backends if backend in backends]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="*", default=["triton", "cuda"], choices=["triton", "cuda"])
    parser.add_argument("--device", default="cuda", help="cuda; or cpu for a smoke run of the Triton kernels "
                        "under the interpreter (set without CUDA)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("sanitize_kernels: needs a CUDA device (or --device cpu --backends triton)", file=sys.stderr)
        return 2
    for backend in args.backends:
        reason = backend_unavailable_reason(backend, device)
        if reason is not None:
            print(f"sanitize_kernels: backend {backend} unavailable: {reason}", file=sys.stderr)
            return 1
    for name, run in cases_for(args.backends, device, torch.Generator().manual_seed(0)):
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        print(f"ok  {name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
