"""Launches per GRASP plan, counted exactly (aten ops, Triton and CUDA-module launches; bench/_launches.py):
the proxy for GPU launch overhead that a CPU can measure.

Providers: ``loop`` (a loop-over-time GRASP: one world-model call per time step, reference backend),
``eager`` (the batched reference), ``triton`` (the Triton ops), ``fused_mlp`` (GraspConfig(fused_mlp=True):
the fused MLP iteration kernel, and the fused sync step where the engine has one). Per plan = start +
iters x (one lifted iteration) + phases x (one sync phase) + finish; each part is counted on its own and
the formula is checked against a whole short plan counted in one go. Target: the fused path takes at
most 2 launches per lifted iteration and 2 per sync step.

    python bench/launch_count.py --out bench/results/launch_count_2026-12-01.md   # shipped PointMaze model
    python bench/launch_count.py --quick                                           # smoke run
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import warnings
from typing import Optional

import _bench_env  # noqa: F401  (first: TRITON_INTERPRET before Triton is imported)
import torch

from _launches import Launches, count_launches
from grasp_kernels import GraspConfig, GraspPlanner
from grasp_kernels.models import MLPDynamics
from grasp_kernels.models.zoo import load_world_model
from grasp_kernels.quality import grasp_base

PROVIDERS = {
    "loop": dict(backend="reference"),
    "eager": dict(backend="reference"),
    "triton": dict(backend="triton"),
    "fused_mlp": dict(backend="triton", fused_mlp=True),
}
TARGET_PER_ITERATION = 2
TARGET_PER_SYNC_STEP = 2


def _count(fn) -> Launches:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with count_launches() as launches:
            fn()
    return launches


def count_plan(model: torch.nn.Module, config: GraspConfig, s0: torch.Tensor, goal: torch.Tensor,
               per_timestep: bool) -> dict[str, Launches]:
    """Launches of each part of one plan: start, one lifted iteration (the second: the first may differ
    by one-time work), one sync phase, finish."""
    planner = GraspPlanner(model, model.action_dim, config)
    parts: dict[str, Launches] = {}
    holder = {}
    parts["start"] = _count(lambda: holder.setdefault("state", planner.start(s0, goal)))
    state = holder["state"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        planner.iteration(state, per_timestep=per_timestep)
    parts["iteration"] = _count(lambda: planner.iteration(state, per_timestep=per_timestep))
    parts["sync"] = _count(lambda: planner.sync(state))
    parts["finish"] = _count(lambda: planner.finish(state))
    return parts


def plan_total(parts: dict[str, Launches], config: GraspConfig) -> int:
    phases = config.iters // config.sync_every if config.sync_every and config.sync_steps else 0
    return (parts["start"].total + config.iters * parts["iteration"].total + phases * parts["sync"].total
            + parts["finish"].total)


def check_formula(model: torch.nn.Module, provider: str, s0: torch.Tensor, goal: torch.Tensor) -> tuple[int, int]:
    """(counted, predicted) launches of a whole short plan: the per-part counts must add up to it."""
    config = GraspConfig(horizon=6, iters=4, sync_every=2, sync_steps=2, **PROVIDERS[provider])
    per_timestep = provider == "loop"
    parts = count_plan(model, config, s0, goal, per_timestep)
    planner = GraspPlanner(model, model.action_dim, config)

    def whole():
        state = planner.start(s0, goal)
        for _ in range(config.iters):
            planner.iteration(state, per_timestep=per_timestep)
            if state.sync_due:
                planner.sync(state)
        planner.finish(state)

    return _count(whole).total, plan_total(parts, config)


def render(rows: list[tuple[str, dict[str, Launches]]], config: GraspConfig, args: argparse.Namespace,
           checks: dict[str, tuple[int, int]]) -> str:
    phases = config.iters // config.sync_every if config.sync_every else 0
    lines = [
        f"# Launches per GRASP plan ({datetime.date.today().isoformat()})",
        "",
        f"- world model: {args.model_text}; B = {args.batch}, T = {config.horizon}; iters = {config.iters}, sync every "
        f"{config.sync_every} ({phases} phases of {config.sync_steps} steps)",
        f"- counted with `python bench/launch_count.py{' --quick' if args.quick else ''}` on {platform.machine()} "
        f"(torch {torch.__version__}): aten ops that run a kernel on a GPU (views and data-less allocations "
        "excluded), Triton launches (interpreter on a CPU: the same launches), CUDA-module launches; the counts do "
        "not depend on the device or on B",
        (f"- fused_mlp row: an MLPDynamics with the same D, A and depth and H = {args.fused_hidden} (the same blocked "
         "kernel variant; the launches do not depend on the width, and the interpreter takes over 30 minutes at H = "
         "256)" if "fused_mlp" in args.providers and not args.quick else "- every row counts the same world model"),
        "- per plan = start + iters x iteration + phases x sync phase + finish; checked against whole short plans "
        "(T = 6, 4 iterations, 2 phases of 2 steps): " + ", ".join(
            f"{p} {c} counted / {e} summed" for p, (c, e) in checks.items()),
        f"- target: the fused path takes at most {TARGET_PER_ITERATION} launches per lifted iteration and "
        f"{TARGET_PER_SYNC_STEP} per sync step",
        "",
        "| provider | per lifted iteration | per sync phase | per sync step | start + finish | per plan | loop / this | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    loop_total = next((plan_total(parts, config) for name, parts in rows if name == "loop"), None)
    for name, parts in rows:
        total = plan_total(parts, config)
        per_step = parts["sync"].total / max(1, config.sync_steps)
        target = ""
        if name == "fused_mlp":
            ok = parts["iteration"].total <= TARGET_PER_ITERATION and per_step <= TARGET_PER_SYNC_STEP
            target = "met" if ok else "not met"
        ratio = f"{loop_total / total:.1f}x" if loop_total else ""
        lines.append(f"| {name} | {parts['iteration']} | {parts['sync']} | {per_step:.1f} | "
                     f"{parts['start'].total + parts['finish'].total} | {total} | {ratio} | {target} |")
    lines += ["", "What one lifted iteration and one sync phase launch, by op:", ""]
    for name, parts in rows:
        for part in ("iteration", "sync"):
            ops = {**parts[part].aten, **{f"triton:{k}": v for k, v in parts[part].triton.items()},
                   **{f"cuda:{k}": v for k, v in parts[part].cuda.items()}}
            top = ", ".join(f"{k} {v}" for k, v in sorted(ops.items(), key=lambda kv: -kv[1])[:12])
            lines.append(f"- {name}, {part}: {top}")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="pointmaze-medium", help="shipped world model to count with")
    parser.add_argument("--horizon", type=int, default=50)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--providers", nargs="*", default=list(PROVIDERS), choices=list(PROVIDERS))
    parser.add_argument("--quick", action="store_true", help="a small MLP and T = 8 (smoke run)")
    parser.add_argument("--fused-hidden", type=int, default=40,
                        help="fused_mlp row: hidden width of an MLPDynamics of the shipped model's D, A and depth (the "
                             "Triton interpreter runs H = 256 for over 30 minutes; the launches do not depend on the "
                             "width within a variant: 40 takes the blocked variant, as 256 does)")
    parser.add_argument("--out", help="also write the markdown table here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.quick:
        model = MLPDynamics(4, 2, hidden=16, depth=2)
        args.model_text, args.horizon = "MLPDynamics D=4 A=2 H=16 depth 2", 8
    else:
        model = load_world_model(args.env)
        args.model_text = f"shipped {args.env} (MLPDynamics D=4 A=2 H=256 depth 3)"
    config = grasp_base(args.horizon)
    s0, goal = torch.rand(args.batch, model.state_dim), torch.rand(args.batch, model.state_dim)
    rows, checks = [], {}
    for name in args.providers:
        cfg = config.replace(**PROVIDERS[name])
        counted = model
        if name == "fused_mlp" and not args.quick:
            torch.manual_seed(0)
            counted = MLPDynamics(model.state_dim, model.action_dim, hidden=args.fused_hidden,
                                  depth=len(model.net) // 2)
        rows.append((name, count_plan(counted, cfg, s0, goal, per_timestep=name == "loop")))
        checks[name] = check_formula(counted, name, s0[:2], goal[:2])
        print(f"{name}: iteration {rows[-1][1]['iteration']}; sync phase {rows[-1][1]['sync']}", file=sys.stderr)
    text = render(rows, config, args, checks)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    bad = {p: c for p, c in checks.items() if c[0] != c[1]}
    if bad:
        print(f"per-part counts do not add up to whole plans: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
