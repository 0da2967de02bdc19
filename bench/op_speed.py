#!/usr/bin/env python
"""Speed of the fused GRASP ops: one markdown table per op (DESIGN.md section 5).

For each shape (B*T*D from 1e4 to 1e8 elements on a GPU) and each kernel provider (triton, cuda when
built, and for the fused op the unfused triton pair it replaces): median time, achieved GB/s, % of
the device-copy bandwidth measured in the same run, and speedups against the pure-PyTorch
reference and against ``torch.compile`` of the reference.

GB/s counts the minimum bytes an op must move (each input read once, each output written once; the
goal row counted once per plan), the same for every provider, so GB/s is an effective bandwidth and
"% copy" compares it with ``dst.copy_(src)`` (read + write) measured here. ``lifted_energy`` is
timed as what a planner needs: energy plus both gradients (reference and torch.compile: forward and
autograd backward; ``triton``: the custom op forward and its backward, which scales the gradients
computed in the forward pass; ``triton 1-pass``: ``lifted_energy_grads``, no autograd).

GPU: ``python bench/op_speed.py --out bench/results/op_speed_<device>_<date>.md`` (median of
``triton.testing.do_bench``). CPU: ``--quick`` is a smoke run (tiny shapes, Triton interpreter,
wall-clock medians, torch.compile with the dynamo-only "eager" backend); CPU numbers are not GPU numbers.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
from typing import Callable, Optional

import torch

if not torch.cuda.is_available():  # before any Triton kernel is defined
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (ROOT, os.path.join(ROOT, "bench")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import grasp_kernels.ops as ops  # noqa: E402
from _timing import copy_bandwidth_gbs, time_ms  # noqa: E402  (bench/_timing.py, shared with planner_speed.py)
from grasp_kernels.backends import backend_unavailable_reason  # noqa: E402
from grasp_kernels.reference import (  # noqa: E402
    action_step_ref,
    lifted_energy_ref,
    lifted_energy_state_step_ref,
    state_step_ref,
)

OPS = ("lifted_energy", "state_step_", "action_step_", "lifted_energy_state_step_")
# (B, T, D): B*T*D = 1e4 .. 1e8, horizon 50; D a multiple of 16 (vector loads) and, at 1e6 and 1e8, odd D too
GPU_SHAPES = [(4, 50, 50), (16, 50, 128), (64, 50, 320), (64, 50, 313), (256, 50, 784), (1024, 50, 1952),
              (1024, 50, 1953)]
QUICK_SHAPES = [(2, 8, 33), (4, 25, 100)]
GAMMA = 0.5
ADAM = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
NOISE_STD = 0.01


# ----------------------------------------------------------------------------------------------
# cases: one callable per provider, and the bytes each op must move
# ----------------------------------------------------------------------------------------------


def kernel_backends(device: torch.device) -> list[str]:
    return [b for b in ("triton", "cuda") if backend_unavailable_reason(b, device) is None]


def op_bytes(op: str, B: int, T: int, D: int, pred_bytes: int) -> int:
    n, nv, goal = B * T * D, B * (T - 1) * D, B * D
    if op == "lifted_energy":  # pred, states rows 1..T | grad_pred, grad_states, energy
        return n * pred_bytes + 4 * (n + goal) + 4 * n + 4 * (n + goal) + 4 * B
    if op == "state_step_":  # states, grad, exp_avg, exp_avg_sq | states, exp_avg, exp_avg_sq
        return 28 * nv
    if op == "action_step_":  # actions [B, T, A=D] likewise, plus the bounds
        return 28 * n + 8 * D
    if op == "lifted_energy_state_step_":  # pred, states rows 1..T, moments | grad_pred, energy, states, moments
        return n * pred_bytes + 4 * (n + goal) + 8 * nv + 4 * n + 4 * B + 12 * nv
    raise ValueError(op)


def make_cases(op: str, B: int, T: int, D: int, device: torch.device, pred_dtype: torch.dtype,
               compile_fn: Optional[Callable]) -> dict[str, Callable[[], object]]:
    """provider -> zero-argument callable running the op once (in-place ops keep mutating their inputs)."""
    g = torch.Generator(device="cpu").manual_seed(0)

    def rn(*shape, dtype=torch.float32):
        return torch.randn(shape, generator=g).to(device=device, dtype=dtype)

    cases: dict[str, Callable[[], object]] = {}
    backends = kernel_backends(device)
    if op == "lifted_energy":
        pred = rn(B, T, D, dtype=pred_dtype).requires_grad_(True)
        states = rn(B, T + 1, D).requires_grad_(True)

        def autograd_case(fn):
            return lambda: torch.autograd.grad(fn(pred, states, GAMMA).sum(), (pred, states))

        cases["reference"] = autograd_case(lifted_energy_ref)
        if compile_fn is not None:
            cases["compile"] = autograd_case(compile_fn(lifted_energy_ref))
        for b in backends:
            cases[b] = autograd_case(lambda p, s, gm, b=b: ops.lifted_energy(p, s, gm, backend=b))
            cases[f"{b} 1-pass"] = lambda b=b: ops.lifted_energy_grads(pred, states, GAMMA, backend=b)
    elif op in ("state_step_", "lifted_energy_state_step_"):
        pred = rn(B, T, D, dtype=pred_dtype)
        states, grad = rn(B, T + 1, D), rn(B, T + 1, D)
        exp_avg, exp_avg_sq = rn(B, T + 1, D) * 0.1, rn(B, T + 1, D).abs() * 0.01
        if op == "state_step_":
            def ref(s, gr, m, v):
                return state_step_ref(s, gr, m, v, 2, noise_std=NOISE_STD, **ADAM)

            cases["reference"] = lambda: ref(states, grad, exp_avg, exp_avg_sq)
            if compile_fn is not None:
                compiled = compile_fn(ref)
                cases["compile"] = lambda: compiled(states, grad, exp_avg, exp_avg_sq)
            for b in backends:
                cases[b] = lambda b=b: ops.state_step_(states, grad, exp_avg, exp_avg_sq, 2, noise_std=NOISE_STD,
                                                       seed=1, backend=b, **ADAM)
        else:
            def ref(p, s, m, v):
                return lifted_energy_state_step_ref(p, s, GAMMA, m, v, 2, noise_std=NOISE_STD, **ADAM)

            cases["reference"] = lambda: ref(pred, states, exp_avg, exp_avg_sq)
            if compile_fn is not None:
                compiled = compile_fn(ref)
                cases["compile"] = lambda: compiled(pred, states, exp_avg, exp_avg_sq)
            for b in backends:
                cases[b] = lambda b=b: ops.lifted_energy_state_step_(
                    pred, states, GAMMA, exp_avg, exp_avg_sq, 2, noise_std=NOISE_STD, seed=1, backend=b, **ADAM)

                def unfused(b=b):
                    energy, grad_pred, grad_states = ops.lifted_energy_grads(pred, states, GAMMA, backend=b)
                    ops.state_step_(states, grad_states, exp_avg, exp_avg_sq, 2, noise_std=NOISE_STD, seed=1,
                                    backend=b, **ADAM)
                    return energy, grad_pred

                cases[f"{b} unfused"] = unfused
    elif op == "action_step_":
        actions, grad = rn(B, T, D), rn(B, T, D)
        exp_avg, exp_avg_sq = rn(B, T, D) * 0.1, rn(B, T, D).abs() * 0.01
        low, high = -torch.ones(D, device=device), torch.ones(D, device=device)

        def ref(a, gr, m, v):
            return action_step_ref(a, gr, m, v, 2, low=low, high=high, **ADAM)

        cases["reference"] = lambda: ref(actions, grad, exp_avg, exp_avg_sq)
        if compile_fn is not None:
            compiled = compile_fn(ref)
            cases["compile"] = lambda: compiled(actions, grad, exp_avg, exp_avg_sq)
        for b in backends:
            cases[b] = lambda b=b: ops.action_step_(actions, grad, exp_avg, exp_avg_sq, 2, low=low, high=high,
                                                    backend=b, **ADAM)
    else:
        raise ValueError(op)
    return cases


# ----------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------


def fmt(x: Optional[float], digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def run(args: argparse.Namespace) -> str:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    quick = args.quick or device.type != "cuda"
    shapes = QUICK_SHAPES if quick else GPU_SHAPES
    pred_dtype = torch.bfloat16 if args.pred_dtype == "bf16" else torch.float32
    compile_backend = args.compile_backend or ("eager" if quick else "inductor")
    compile_fn = None if compile_backend == "none" else (lambda f: torch.compile(f, backend=compile_backend, dynamic=False))

    import triton

    copy_gbs = copy_bandwidth_gbs(device, quick)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, Triton interpreter)"
    lines = [
        f"# grasp_kernels op speed — {name}",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- torch {torch.__version__}, triton {triton.__version__}, CUDA {torch.version.cuda}",
        f"- dtype: states/moments/grads float32, pred {str(pred_dtype).replace('torch.', '')}",
        f"- timing: {'triton.testing.do_bench median' if device.type == 'cuda' else 'wall-clock median (smoke run, not a GPU number)'}",
        f"- torch.compile backend of the reference: {compile_backend}",
        f"- device copy bandwidth (dst.copy_(src), read + write): {copy_gbs:.1f} GB/s",
        "- GB/s = minimum bytes of the op / median time; % copy = GB/s / copy bandwidth",
        "",
    ]
    ops_to_run = args.ops or OPS
    for op in ops_to_run:
        lines += [f"## {op}", "",
                  "| shape (B,T,D) | B*T*D | ref ms | compile ms | provider | ms | GB/s | % copy | x ref | x compile |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        fused_ratio = []
        for B, T, D in shapes:
            cases = make_cases(op, B, T, D, device, pred_dtype, compile_fn)
            times = {}
            for provider, fn in cases.items():
                try:
                    times[provider] = time_ms(fn, device, quick)
                except Exception as exc:  # keep the table going; report the failure in place
                    times[provider] = float("nan")
                    print(f"warning: {op} {provider} {(B, T, D)} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            nbytes = op_bytes(op, B, T, D, torch.finfo(pred_dtype).bits // 8)
            ref_ms, comp_ms = times.get("reference"), times.get("compile")
            for provider, ms in times.items():
                if provider in ("reference", "compile"):
                    continue
                gbs = nbytes / (ms * 1e-3) / 1e9
                lines.append(
                    f"| {B},{T},{D} | {B * T * D:.1e} | {fmt(ref_ms)} | {fmt(comp_ms)} | {provider} | {fmt(ms)} "
                    f"| {fmt(gbs)} | {fmt(100 * gbs / copy_gbs)} | {fmt(ref_ms / ms if ref_ms else None)} "
                    f"| {fmt(comp_ms / ms if comp_ms else None)} |"
                )
            for b in ("triton", "cuda"):
                if f"{b} unfused" in times:
                    fused_ratio.append((B * T * D, b, times[f"{b} unfused"] / times[b]))
            del cases
        if fused_ratio:
            lines.append("")
            for n, b, ratio in fused_ratio:
                verdict = "pays" if ratio > 1.05 else ("break-even" if ratio > 0.95 else "does not pay")
                if device.type != "cuda":
                    verdict += "; CPU interpreter, not a GPU measurement"
                lines.append(f"- fusion ({b}) at B*T*D = {n:.1e}: unfused / fused time = {ratio:.2f} ({verdict})")
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, few repetitions (CPU smoke run)")
    parser.add_argument("--out", help="also write the markdown to this file")
    parser.add_argument("--pred-dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend for the reference (default inductor; eager with --quick; none)")
    parser.add_argument("--ops", nargs="*", choices=OPS, help="subset of ops")
    args = parser.parse_args(argv)
    text = run(args)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
