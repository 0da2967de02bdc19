"""Command line: ``python -m grasp_kernels demo`` (also the console script ``grasp-kernels``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from .config import BACKENDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grasp-kernels", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="plan across PointMaze with GRASP and CEM through the shipped world model and execute by MPC in the "
        "simulator (or, with --task detour|open, the synthetic navigation task with GRASP, GD, CEM and MPPI)",
    )
    demo.add_argument("--task", default="pointmaze-medium",
                      choices=("pointmaze-umaze", "pointmaze-medium", "pointmaze-large", "detour", "open"))
    demo.add_argument("--horizon", type=int, help="default: 50 (PointMaze), 60 (synthetic)")
    demo.add_argument("--problems", type=int, help="start/goal pairs, planned as one batch; default 8 (PointMaze), 16")
    demo.add_argument("--replan-every", type=int, default=5, help="PointMaze: MPC replanning period")
    demo.add_argument("--particles", type=int, default=16, help="synthetic task: chains of the multi-chain GRASP row")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--backend", default="auto", choices=BACKENDS)
    demo.add_argument("--out", type=Path, default=Path("out/demo.png"), help="PNG of the plans")
    demo.add_argument("--no-progress", action="store_true")
    train = commands.add_parser(
        "train", add_help=False, help="train the shipped world models from a seed (see --help of the subcommand)"
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    # The train subcommand's options belong to its own parser (argparse.REMAINDER does not capture a
    # leading "--flag" after a subcommand), so they are collected as unknown arguments and handed over.
    args, rest = parser.parse_known_args(argv)
    if args.command == "train":
        from .models.training import main_train

        return main_train(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "demo":
        common = dict(seed=args.seed, device=args.device, backend=args.backend, out=args.out,
                      progress=not args.no_progress)
        if args.task.startswith("pointmaze"):
            from .demo import run_maze_demo

            table, _ = run_maze_demo(env_name=args.task, horizon=args.horizon or 50, problems=args.problems or 8,
                                     replan_every=args.replan_every, **common)
        else:
            from .demo import run_demo

            table, _ = run_demo(task_name=args.task, horizon=args.horizon or 60, problems=args.problems or 16,
                                particles=args.particles, **common)
        print(table)
        print(f"\nwrote {args.out}")
    return 0
