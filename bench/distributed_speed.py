"""Wall time per plan vs the number of ranks on the CPU, for both shardings.

Each world size runs under ``torchrun`` (gloo, one process per rank, one thread each); the driver
launches them in turn and renders one table. Both shardings plan the same problem as one process
(``GraspPlanner.plan``), which is the 1-rank row:

- plans across ranks (:func:`grasp_kernels.distributed.plan_across_ranks`): ``--batch`` plans, each rank
  its slice; the throughput case;
- time across ranks (:class:`grasp_kernels.distributed.TimeShardedPlanner`): one batch, each rank a
  chunk of the horizon; the long-horizon / big-model case.

    python bench/distributed_speed.py --ranks 1 2 4 --out bench/results/distributed_speed_cpu_2026-12-01.md
    python bench/distributed_speed.py --quick          # smoke (CI)

The workload is an MLP world model (``--dim``, ``--hidden``) whose per-iteration cost dominates the
exchanges; ranks beyond the machine's cores share them (the table says how many cores there were).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _timing import write_report  # noqa: E402


def _workload(args):
    import torch

    from grasp_kernels import GraspConfig
    from grasp_kernels.models import MLPDynamics

    torch.manual_seed(0)
    model = MLPDynamics(args.dim, args.action_dim, hidden=args.hidden, depth=2)
    config = GraspConfig(horizon=args.horizon, iters=args.iters, sync_every=args.sync_every, sync_steps=args.sync_steps,
                         lr_states=0.02, lr_actions=0.05, state_noise=0.01, init_noise=0.01, goal_weight=0.1,
                         seed=0, backend="reference")
    g = torch.Generator().manual_seed(1)
    return model, config, g


def worker(args) -> None:
    """One rank under torchrun: time both shardings (``--repeats`` plans each, after one warm-up)."""
    import torch
    import torch.distributed as dist

    from grasp_kernels import GraspPlanner
    from grasp_kernels.distributed import TimeShardedPlanner, init, plan_across_ranks

    torch.set_num_threads(1)
    rank, size = init(backend="gloo")
    model, config, g = _workload(args)
    results = {}
    cases = {
        "plans across ranks": (args.batch, lambda s0, goal: plan_across_ranks(
            GraspPlanner(model, args.action_dim, config), s0, goal)),
        "time across ranks": (args.time_batch, lambda s0, goal: TimeShardedPlanner(
            model, args.action_dim, config).plan(s0, goal)),
    }
    single = GraspPlanner(model, args.action_dim, config)
    for name, (batch, run) in cases.items():
        s0 = torch.randn(batch, args.dim, generator=g)
        goal = torch.randn(batch, args.dim, generator=g)
        runs = {name: run}
        if size == 1:  # the alternative a user has: one process, GraspPlanner.plan
            runs[f"one process: {name}"] = single.plan
        for label, plan in runs.items():
            times = []
            for repeat in range(args.repeats + 1):
                dist.barrier()
                start = time.perf_counter()
                plan(s0, goal)
                elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
                dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # a plan takes as long as its slowest rank
                if repeat:  # the first plan warms up allocators and the process group
                    times.append(elapsed.item())
            results[label] = times
    if rank == 0:
        Path(args.worker_out).write_text(json.dumps({"world_size": size, "times": results}))
    dist.destroy_process_group()


def run_world(args, ranks: int) -> dict:
    """Launch one world size under torchrun and return rank 0's timings."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "times.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
                   str(Path(__file__).resolve()), "--worker", "--worker-out", str(out)]
        command += [f"--{key.replace('_', '-')}={getattr(args, key)}" for key in WORKLOAD_KEYS]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout)
        if completed.returncode != 0 or not out.exists():
            raise SystemExit(f"torchrun with {ranks} ranks failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
        return json.loads(out.read_text())


WORKLOAD_KEYS = ("dim", "action_dim", "hidden", "horizon", "iters", "sync_every", "sync_steps", "batch", "time_batch",
                 "repeats")


def render(args, runs: list[dict]) -> str:
    import torch

    cores = os.cpu_count()
    lines = [
        f"# Distributed GRASP on the CPU ({datetime.date.today().isoformat()})",
        "",
        f"`python bench/distributed_speed.py --ranks {' '.join(map(str, args.ranks))}`; torchrun, gloo, one process "
        f"per rank with one thread, on a {cores}-core {platform.machine()} machine, torch {torch.__version__}. "
        f"World model: MLPDynamics D = {args.dim}, A = {args.action_dim}, hidden {args.hidden}, depth 2; GRASP T = "
        f"{args.horizon}, {args.iters} iterations, sync every {args.sync_every} for {args.sync_steps} steps, reference "
        f"backend. Plans across ranks: {args.batch} plans; time across ranks: {args.time_batch} plans. Median of "
        f"{args.repeats} plans after one warm-up, each plan timed on its slowest rank.",
        "",
        "| sharding | ranks | median s per plan | speed-up vs one process | min | max |",
        "|---|---|---|---|---|---|",
    ]
    single = next((run for run in runs if run["world_size"] == 1), None)
    if single is None:
        raise SystemExit("--ranks must include 1 (the one-process GraspPlanner baseline runs there)")
    for name in ("plans across ranks", "time across ranks"):
        one = single["times"][f"one process: {name}"]
        base = statistics.median(one)
        lines.append(f"| one process, `GraspPlanner.plan` | 1 | {base:.3f} | 1.00x | {min(one):.3f} | {max(one):.3f} |")
        for run in runs:
            times = run["times"][name]
            median = statistics.median(times)
            over = " (more ranks than cores)" if run["world_size"] > (cores or 1) else ""
            lines.append(f"| {name} | {run['world_size']}{over} | {median:.3f} | {base / median:.2f}x | {min(times):.3f} "
                         f"| {max(times):.3f} |")
    lines += [
        "",
        "Plans across ranks exchange nothing until one gather per plan; time across ranks exchanges one "
        "boundary row per plan per iteration and pipelines the sync phase, whose rollout stays sequential, so "
        "its speed-up is bounded by the sync phase's share of the plan (Amdahl). On GPUs the case for time "
        "sharding is memory: bench/results/distributed_model_2026-12-01.md.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--action-dim", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--horizon", type=int, default=64)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--sync-every", type=int, default=50)
    parser.add_argument("--sync-steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32, help="plans across ranks: the global batch")
    parser.add_argument("--time-batch", type=int, default=8, help="time across ranks: the batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per world size")
    parser.add_argument("--quick", action="store_true", help="a tiny workload on 1 and 2 ranks (smoke test)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.quick:
        args.ranks, args.dim, args.hidden, args.horizon, args.iters = [1, 2], 4, 16, 8, 6
        args.sync_every, args.sync_steps, args.batch, args.time_batch, args.repeats = 3, 2, 4, 2, 1
    if any(r < 1 for r in args.ranks) or any(r > args.horizon for r in args.ranks):
        parser.error(f"--ranks must be between 1 and --horizon ({args.horizon}), got {args.ranks}")
    runs = [run_world(args, ranks) for ranks in args.ranks]
    text = render(args, runs)
    print(text)
    if args.out is not None:
        write_report(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
