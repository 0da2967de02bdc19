"""Command line: ``python -m grasp_kernels demo`` (also the console script ``grasp-kernels``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from .config import BACKENDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grasp-kernels", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="plan the synthetic detour task with GRASP, GD, CEM and MPPI")
    demo.add_argument("--task", default="detour", choices=("detour", "open"))
    demo.add_argument("--horizon", type=int, default=60)
    demo.add_argument("--problems", type=int, default=16, help="start/goal pairs, planned as one batch")
    demo.add_argument("--particles", type=int, default=16, help="chains per problem of the multi-chain GRASP row")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--backend", default="auto", choices=BACKENDS)
    demo.add_argument("--out", type=Path, default=Path("out/demo.png"), help="PNG of the plans")
    demo.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        table, _ = run_demo(
            task_name=args.task,
            horizon=args.horizon,
            problems=args.problems,
            seed=args.seed,
            device=args.device,
            backend=args.backend,
            particles=args.particles,
            out=args.out,
            progress=not args.no_progress,
        )
        print(table)
        print(f"\nwrote {args.out}")
    return 0
