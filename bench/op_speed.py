#!/usr/bin/env python
"""Speed of the fused GRASP ops: one markdown table per op.

For each shape (B*T*D from 1e4 to 1e8 elements on a GPU) and each kernel provider (triton, cuda when
built, and for the fused op the unfused pair it replaces): median time, achieved GB/s, % of the
device-copy bandwidth measured in the same run, and speedups against the pure-PyTorch reference and
against ``torch.compile`` of the reference. The ops, their inputs, providers and bytes are the registry
of ``bench/_op_cases.py``, shared with the pytest-benchmark suite ``bench/bench_ops.py``.

GB/s counts the minimum bytes an op must move, the same for every provider, so GB/s is an effective
bandwidth and "% copy" compares it with ``dst.copy_(src)`` (read + write) measured here.

GPU: ``python bench/op_speed.py --out bench/results/op_speed_<device>_<date>.md`` (median of
``triton.testing.do_bench``). CPU: ``--quick`` is a smoke run (tiny shapes, Triton interpreter,
wall-clock medians, torch.compile with the dynamo-only "eager" backend); CPU numbers are not GPU numbers.
"""

from __future__ import annotations

import _bench_env  # noqa: F401  (first: TRITON_INTERPRET before Triton is imported)

import argparse
import datetime
import math
import os
import sys
from typing import Optional

import torch

from _op_cases import GPU_SHAPES, OPS, QUICK_SHAPES, compiler
from _timing import copy_bandwidth_gbs, device_name, time_ms, versions


def fmt(x: Optional[float], digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def fusion_verdict(ratio: float, cuda_device: bool) -> str:
    verdict = "pays" if ratio > 1.05 else ("break-even" if ratio > 0.95 else "does not pay")
    return verdict if cuda_device else verdict + "; CPU interpreter, not a GPU measurement"


def op_table(op: str, shapes: list[tuple[int, int, int]], device: torch.device, pred_dtype: torch.dtype,
             compile_fn, quick: bool, copy_gbs: float) -> list[str]:
    """The ``## op`` section: a row per shape and kernel provider, then whether fusion pays."""
    entry = OPS[op]
    lines = [f"## {op}", "",
             "| shape (B,T,D) | B*T*D | ref ms | compile ms | provider | ms | GB/s | % copy | x ref | x compile |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    fused_ratio = []
    for B, T, D in shapes:
        times = {}
        for provider, fn in entry.cases((B, T, D), device, pred_dtype, compile_fn).items():
            try:
                times[provider] = time_ms(fn, device, quick)
            except Exception as exc:  # keep the table going; report the failure in place
                times[provider] = float("nan")
                print(f"warning: {op} {provider} {(B, T, D)} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        nbytes = entry.nbytes(B, T, D, torch.finfo(pred_dtype).bits // 8)
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
        fused_ratio += [(B * T * D, b, times[f"{b} unfused"] / times[b]) for b in ("triton", "cuda")
                        if f"{b} unfused" in times]
    if fused_ratio:
        lines.append("")
        lines += [f"- fusion ({b}) at B*T*D = {n:.1e}: unfused / fused time = {ratio:.2f} "
                  f"({fusion_verdict(ratio, device.type == 'cuda')})" for n, b, ratio in fused_ratio]
    return lines + [""]


def run(args: argparse.Namespace) -> str:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    quick = args.quick or device.type != "cuda"
    pred_dtype = torch.bfloat16 if args.pred_dtype == "bf16" else torch.float32
    compile_backend = args.compile_backend or ("eager" if quick else "inductor")
    copy_gbs = copy_bandwidth_gbs(device, quick)
    lines = [
        f"# grasp_kernels op speed — {device_name(device)}",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- {versions()}",
        f"- dtype: states/moments/grads float32, pred {str(pred_dtype).replace('torch.', '')}",
        f"- timing: {'triton.testing.do_bench median' if device.type == 'cuda' else 'wall-clock median (smoke run, not a GPU number)'}",
        f"- torch.compile backend of the reference: {compile_backend}",
        f"- device copy bandwidth (dst.copy_(src), read + write): {copy_gbs:.1f} GB/s",
        "- GB/s = minimum bytes of the op / median time; % copy = GB/s / copy bandwidth",
        "",
    ]
    for op in args.ops or OPS:
        lines += op_table(op, QUICK_SHAPES if quick else GPU_SHAPES, device, pred_dtype, compiler(compile_backend),
                          quick, copy_gbs)
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, few repetitions (CPU smoke run)")
    parser.add_argument("--out", help="also write the markdown to this file")
    parser.add_argument("--pred-dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend for the reference (default inductor; eager with --quick; none)")
    parser.add_argument("--ops", nargs="*", choices=list(OPS), help="subset of ops")
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
