"""The planner-speed table as markdown: a header of what was run and measured, then three tables
(shapes and floors; time per iteration and per plan for every provider; the targets of the fastest
engine provider against the loop and against torch.compile)."""

from __future__ import annotations

import argparse
import datetime
import math
from typing import Optional

import torch

from _planner_floors import Floor, Rates
from _planner_providers import EAGER_MODEL, ENGINE, INTERPRETED, PROVIDERS, Row
from _timing import device_name, versions

# the targets the fastest engine provider is held to (GPU targets): x faster than loop at T >= 64, than compiled
LOOP_TARGET, LOOP_TARGET_MIN_HORIZON, COMPILED_TARGET = 20, 64, 3


def fmt(x: Optional[float], digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def ratio(numerator: Optional[float], denominator: float) -> Optional[float]:
    return numerator / denominator if numerator else None


def verdict(value: Optional[float], goal: float, applies: bool = True) -> str:
    if not applies:
        return f"n/a (T < {LOOP_TARGET_MIN_HORIZON})"
    if value is None:
        return "n/a"
    return "met" if value >= goal else "not met"


def provider_text(key: str, args: argparse.Namespace, rows: list[Row]) -> str:
    """What provider ``key`` runs, for the table's header."""
    if key == "compiled":
        return (f"compiled: torch.compile(backend={args.compile_backend!r}, dynamic=False) of the planner's lifted "
                "iteration on the reference backend (compile and warm-up not timed; trace_autograd_ops on so that autograd.grad is traced; "
                "compiled per shape: " + "; ".join(f"#{r.index} {r.compile_note}" for r in rows) + ")")
    return f"{key}: {PROVIDERS[key].description}"


def header(rows: list[Row], args: argparse.Namespace, device: torch.device, rates: Rates, model_text: str,
           selected: list[str]) -> list[str]:
    syncs = sync_phases(args)
    cuda_device = device.type == "cuda"
    tf32 = torch.backends.cuda.matmul.allow_tf32 if cuda_device else False
    interpreted = not cuda_device and bool(set(INTERPRETED) & set(selected))
    listed = lambda keys: ", ".join(k for k in keys if k in selected) or "none selected"  # noqa: E731
    return [
        f"# GRASP planner speed — {device_name(device, interpreter_note=interpreted)}",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- {versions()}",
        f"- world model: {model_text}",
        f"- dtype: states, actions, Adam moments and energy float32; world model {args.model_dtype}"
        + (f" (float32 matmul TF32 {'on' if tf32 else 'off'})" if cuda_device and args.model_dtype == "float32" else ""),
        f"- shapes: {'; '.join(f'#{r.index} {r.shape.text} B={r.shape.batch} T={r.shape.horizon}' for r in rows)}",
        "- timing: " + ("triton.testing.do_bench median (CUDA events, warm-up)" if cuda_device else
                        "torch.utils.benchmark median (CPU run: not a GPU number"
                        + ("; the Triton providers run in the interpreter: not a speed)" if interpreted else ")")),
        f"- per plan = iters x iteration + (iters / sync_every) x sync = {args.iters} x iteration + {syncs} x sync "
        f"(sync_steps = {args.sync_steps}; one sync phase measured per shape with the reference planner, the same "
        "code for every provider)",
        "- providers: " + "; ".join(provider_text(key, args, rows) for key in selected),
        f"- measured in this run: matmul {rates.tflops:.4g} TFLOP/s ({rates.matmul_n}x{rates.matmul_n} @ "
        f"{rates.matmul_n}x{rates.matmul_n}, {args.model_dtype}); copy bandwidth {rates.copy_gbs:.4g} GB/s "
        "(dst.copy_(src), read + write)",
        "- floor = max(FLOPs of one forward + action-input backward over B*T rows / matmul rate, minimum GRASP bytes "
        "per iteration (states, moments, actions, energy, weights once; no pred or activations) / copy bandwidth); "
        "% floor = floor / time",
        f"- best = fastest of {listed(ENGINE)}; targets: best >= {LOOP_TARGET}x faster than loop at "
        f"T >= {LOOP_TARGET_MIN_HORIZON}, >= {COMPILED_TARGET}x faster than compiled",
        "- outside WM = (iteration - world model forward + VJP alone over the same B*T rows) / iteration, for the "
        f"providers that call the eager batched model ({listed(EAGER_MODEL)})",
    ]


def sync_phases(args: argparse.Namespace) -> int:
    return args.iters // args.sync_every if args.sync_every and args.sync_steps else 0


def render(rows: list[Row], floors: dict[int, Floor], args: argparse.Namespace, device: torch.device, rates: Rates,
           model_text: str) -> str:
    """The markdown; ``floors`` maps a row's index to its floor."""
    selected = [key for key in PROVIDERS if key in args.providers]
    syncs = sync_phases(args)
    lines = header(rows, args, device, rates, model_text, selected) + [
        "",
        "## Shapes and floors",
        "",
        "| # | shape | B | T | B*T | GFLOP/iter | FLOP floor ms | MB/iter | byte floor ms | floor ms | bound "
        "| sync ms | model fwd+VJP ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = floors[r.index]
        lines.append(
            f"| {r.index} | {r.shape.text} | {r.shape.batch} | {r.shape.horizon} | {r.shape.rows} | {fmt(f.flops / 1e9)} "
            f"| {fmt(f.flop_ms)} | {fmt(f.nbytes / 1e6)} | {fmt(f.byte_ms)} | {fmt(f.ms)} "
            f"| {f.bound} | {fmt(r.sync_ms)} | {fmt(r.model_ms)} |"
        )
    lines += [
        "",
        "## Time per iteration and per plan",
        "",
        "| # | B | T | provider | iter ms | plan ms | % floor | loop/this | outside WM % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        loop = r.times.get("loop")
        for key in selected:
            ms = r.times.get(key)
            if ms is None:
                lines.append(f"| {r.index} | {r.shape.batch} | {r.shape.horizon} | {key} "
                             f"| n/a ({r.reasons.get(key, 'not run')}) | n/a | n/a | n/a | n/a |")
                continue
            plan = args.iters * ms + syncs * r.sync_ms
            outside = (100 * (ms - r.model_ms) / ms) if key in EAGER_MODEL and r.model_ms is not None else None
            lines.append(
                f"| {r.index} | {r.shape.batch} | {r.shape.horizon} | {key} | {fmt(ms)} | {fmt(plan)} "
                f"| {fmt(100 * floors[r.index].ms / ms, 3)} | {fmt(ratio(loop, ms), 4)} | {fmt(outside, 3)} |"
            )
    lines += [
        "",
        "## Targets",
        "",
        f"| # | B | T | best | best ms | loop/best | {LOOP_TARGET}x vs loop (T >= {LOOP_TARGET_MIN_HORIZON}) "
        f"| compiled/best | {COMPILED_TARGET}x vs compiled | best % floor |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        measured = {k: r.times[k] for k in ENGINE if r.times.get(k) is not None}
        if not measured:
            lines.append(f"| {r.index} | {r.shape.batch} | {r.shape.horizon} | n/a | n/a | n/a | n/a | n/a | n/a | n/a |")
            continue
        key = min(measured, key=measured.get)
        best = measured[key]
        vs_loop, vs_compiled = ratio(r.times.get("loop"), best), ratio(r.times.get("compiled"), best)
        lines.append(
            f"| {r.index} | {r.shape.batch} | {r.shape.horizon} | {key} | {fmt(best)} | {fmt(vs_loop)} "
            f"| {verdict(vs_loop, LOOP_TARGET, r.shape.horizon >= LOOP_TARGET_MIN_HORIZON)} | {fmt(vs_compiled)} "
            f"| {verdict(vs_compiled, COMPILED_TARGET)} | {fmt(100 * floors[r.index].ms / best, 3)} |"
        )
    if device.type != "cuda":
        lines += ["", "CPU run: the targets are GPU targets; these verdicts say nothing about them."]
    return "\n".join(lines)
