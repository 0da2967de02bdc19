"""Planning quality on the synthetic detour task: success over many start/goal pairs, per planner.

Fair protocol: every planner gets a small hyper-parameter sweep evaluated on a tuning set of
start/goal pairs; the best setting per planner (success, then median final distance) is evaluated
ONCE on a held-out set drawn with other seeds. Success = the rollout ends within the task's radius.
Reports success % with a 95% Wilson interval, median final distance and wall time per batch.

    python bench/detour_quality.py --out bench/results/detour_quality_cpu.md
    python bench/detour_quality.py --quick            # smoke run (CI)
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from grasp_kernels import GraspPlanner  # noqa: E402
from grasp_kernels.baselines import (  # noqa: E402
    ABLATIONS,
    CEMConfig,
    CEMPlanner,
    GDConfig,
    GDPlanner,
    MPPIConfig,
    MPPIPlanner,
    ablation_config,
)
from grasp_kernels.demo import PlannerRow, grasp_config, run_planners  # noqa: E402
from grasp_kernels.envs import make_task  # noqa: E402
from grasp_kernels.quality import wilson_interval  # noqa: E402

Factory = Callable[[], object]


def candidates(task, horizon: int, particles: int, quick: bool) -> dict[str, dict[str, Factory]]:
    """Per planner family, the settings swept on the tuning set."""
    model, bounds = task.world_model, dict(action_low=task.action_low, action_high=task.action_high)

    def grasp(particles_: int, ablation: str = "grasp", **changes):
        config = ablation_config(grasp_config(horizon, particles=particles_), ablation).replace(**changes)
        if quick:
            config = config.replace(iters=20, sync_every=10, sync_steps=2)
        return lambda: GraspPlanner(model, 2, config)

    gd_iters, samples, sample_iters = (20, 30, 3) if quick else (200, 300, 30)
    grasp_sweep = {
        "noise 0.1 annealed": {},
        "noise 0.1 constant": {"anneal_noise": False},
        "noise 0.03 annealed, lr_states 0.003": {"state_noise": 0.03, "init_noise": 0.03, "lr_states": 0.003},
        "gamma 0.01": {"goal_weight": 0.01},
    }
    families: dict[str, dict[str, Factory]] = {
        "GRASP": {name: grasp(1, **ch) for name, ch in grasp_sweep.items()},
        f"GRASP x{particles}": {name: grasp(particles, **ch) for name, ch in grasp_sweep.items()},
        "GD": {
            f"lr {lr}": (lambda lr=lr: GDPlanner(model, 2, GDConfig(horizon=horizon, iters=gd_iters, lr=lr, **bounds)))
            for lr in (0.02, 0.05, 0.2)
        },
        "CEM": {
            f"var {v}": (lambda v=v: CEMPlanner(model, 2, CEMConfig(horizon=horizon, samples=samples, topk=max(2, samples // 10), iters=sample_iters, var_scale=v, **bounds)))
            for v in (0.5, 1.0)
        },
        "MPPI": {
            f"std {s}, temp {t}": (lambda s=s, t=t: MPPIPlanner(model, 2, MPPIConfig(horizon=horizon, samples=samples, iters=sample_iters, noise_std=s, temperature=t, **bounds)))
            for s, t in ((0.5, 0.05), (1.0, 0.01))
        },
    }
    for name in ABLATIONS:
        if name != "grasp":
            families[f"GRASP x{particles} {name}"] = {"demo setting": grasp(particles, name)}
    return families


def evaluate(task, factory: Factory, s0, goal) -> PlannerRow:
    rows, _ = run_planners(task, {"p": factory()}, s0, goal, progress=False)
    return rows[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="detour")
    parser.add_argument("--horizon", type=int, default=60)
    parser.add_argument("--particles", type=int, default=16)
    parser.add_argument("--tune-problems", type=int, default=16)
    parser.add_argument("--test-problems", type=int, default=64)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.horizon, args.particles, args.tune_problems, args.test_problems = 12, 2, 2, 3
    torch.manual_seed(0)
    task = make_task(args.task)
    tune = task.sample(args.tune_problems, seed=1000)
    test = task.sample(args.test_problems, seed=2000)  # held out: evaluated once per planner

    lines = [
        f"# Planning quality, task {task.name!r}, horizon {args.horizon}",
        "",
        f"date {datetime.date.today().isoformat()}, device CPU ({platform.machine()}, {torch.get_num_threads()} threads), "
        f"torch {torch.__version__}; success = final distance < {task.success_radius}; tuning set {args.tune_problems} "
        f"pairs (seed 1000), held-out set {args.test_problems} pairs (seed 2000), each planner run as one batch.",
        "",
        "## Sweep on the tuning set",
        "",
        "| planner | setting | success | median final distance | wall time (s) |",
        "|---|---|---|---|---|",
    ]
    chosen: dict[str, tuple[str, Factory]] = {}
    for family, settings in candidates(task, args.horizon, args.particles, args.quick).items():
        best = None
        for setting, factory in settings.items():
            row = evaluate(task, factory, *tune)
            lines.append(f"| {family} | {setting} | {row.success_rate:.0f}% | {row.median_distance:.3f} | {row.wall_time:.2f} |")
            print(lines[-1], flush=True)
            key = (-row.successes, row.median_distance)
            if best is None or key < best[0]:
                best = (key, setting, factory)
        chosen[family] = (best[1], best[2])
    lines += [
        "",
        "## Held-out set (best setting per planner, evaluated once)",
        "",
        "| planner | setting | success (95% CI) | median final distance | wall time (s) |",
        "|---|---|---|---|---|",
    ]
    for family, (setting, factory) in chosen.items():
        row = evaluate(task, factory, *test)
        low, high = wilson_interval(row.successes, row.problems)
        lines.append(
            f"| {family} | {setting} | {row.success_rate:.0f}% ({row.successes}/{row.problems}; {low:.0f}-{high:.0f}) "
            f"| {row.median_distance:.3f} | {row.wall_time:.2f} |"
        )
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    print()
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
