"""Long-run check (a benchmark, not a test): N plans in a loop, MPC-style (same shapes every time, warm
started from the previous plan), sampling resident memory and the number of live tensors every 50
plans; reports the growth after a warm-up. Target: none.

    python bench/long_run.py                      # 1000 plans
    python bench/long_run.py --quick              # 20 plans, sampled every 5 (smoke run)
    python bench/long_run.py --out bench/results/long_run_cpu_2026-12-01.md

Resident memory comes from psutil if installed, else /proc/self/statm. Live tensors are counted with
``gc`` (tensors reachable from Python objects; the allocator's own caches are not tensors).
"""

from __future__ import annotations

import _bench_env  # noqa: F401  (sys.path, TRITON_INTERPRET before the package's kernels)

import argparse
import datetime
import gc
import os
import platform
import sys
import warnings
from pathlib import Path
from typing import Optional

import torch

from grasp_kernels import GraspConfig, GraspPlanner
from grasp_kernels.models import MLPDynamics


def resident_mib() -> float:
    """Resident set size of this process in MiB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def live_tensors() -> int:
    """Tensors reachable by the garbage collector (after a collection)."""
    gc.collect()
    count = 0
    with warnings.catch_warnings():  # isinstance on some deprecated module proxies warns
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            try:
                if isinstance(obj, torch.Tensor):
                    count += 1
            except ReferenceError:  # a dead weak proxy
                continue
    return count


def run(plans: int, every: int, warmup: int, batch: int, horizon: int, iters: int, device: str,
        backend: str) -> list[tuple[int, float, int]]:
    """``plans`` MPC-style plans; returns ``(plans done, RSS MiB, live tensors)`` samples."""
    torch.manual_seed(0)
    model = MLPDynamics(4, 2, hidden=64, depth=2).to(device).eval()
    config = GraspConfig(horizon=horizon, iters=iters, sync_every=max(1, iters // 2), sync_steps=2, particles=2,
                         lr_states=0.02, lr_actions=0.05, goal_weight=0.1, backend=backend)
    planner = GraspPlanner(model, action_dim=2, config=config)
    s0 = torch.randn(batch, 4, device=device)
    goal = torch.randn(batch, 4, device=device)
    warm: Optional[torch.Tensor] = None
    samples = []
    for done in range(1, plans + 1):
        result = planner.plan(s0, goal, init_actions=warm)
        # receding horizon: shift the plan by one step, move the state along the rollout
        warm = torch.cat([result.actions[:, 1:], result.actions[:, -1:]], dim=1).detach()
        s0 = result.rollout[:, 1].detach().clone()
        del result
        if done % every == 0 or done == warmup:
            samples.append((done, resident_mib(), live_tensors()))
    return samples


def report(samples: list[tuple[int, float, int]], warmup: int, args: argparse.Namespace) -> str:
    after = [s for s in samples if s[0] >= warmup]
    first, last = after[0], after[-1]
    lines = [
        f"# Long run: {args.plans} GRASP plans in a loop (MPC-style, same shapes, warm-started)",
        "",
        f"date: {datetime.date.today().isoformat()}; machine: {platform.machine()} {platform.processor() or ''}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}; python {platform.python_version()}, "
        f"torch {torch.__version__}; device {args.device}, backend {args.backend}",
        f"shapes: batch {args.batch}, horizon {args.horizon}, {args.iters} iterations per plan, 2 chains, "
        f"MLPDynamics(4, 2, hidden 64); command: python bench/long_run.py {' '.join(sys.argv[1:])}",
        "",
        "| plans | resident memory (MiB) | live tensors |",
        "|---|---|---|",
    ] + [f"| {done} | {rss:.1f} | {tensors} |" for done, rss, tensors in samples] + [
        "",
        f"growth after the warm-up ({warmup} plans) to plan {last[0]}: resident memory {last[1] - first[1]:+.1f} MiB, "
        f"live tensors {last[2] - first[2]:+d}",
    ]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=1000)
    parser.add_argument("--every", type=int, default=50, help="sample every N plans")
    parser.add_argument("--warmup", type=int, default=100, help="plans before the growth is measured")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--horizon", type=int, default=25)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--quick", action="store_true", help="20 plans, sampled every 5, warm-up 5")
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.quick:
        args.plans, args.every, args.warmup, args.iters, args.horizon = 20, 5, 5, 4, 8
    for name in ("plans", "every", "warmup", "batch", "horizon", "iters"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup > args.plans:
        parser.error(f"--warmup ({args.warmup}) must be <= --plans ({args.plans})")
    samples = run(args.plans, args.every, args.warmup, args.batch, args.horizon, args.iters, args.device, args.backend)
    text = report(samples, args.warmup, args)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
