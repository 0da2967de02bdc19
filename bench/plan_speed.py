"""Time per whole GRASP plan on the shipped PointMaze-Medium world model, with GRASP's settings for the
real tasks (:func:`grasp_kernels.quality.grasp_base`: 300 iterations, a sync phase of 10 steps every 50):

  (i)   eager     the planner, reference backend (one batched world-model call over B*T rows per iteration)
  (ii)  compiled  the same planner with GraspConfig(compile=True) (torch.compile of the lifted iteration
                  and of one sync step); compilation is timed separately (first plan minus the median)
  (iii) loop      GRASP written the way public ports write it (:func:`loop_grasp_plan`): one
                  ``model(s_t, a_t)`` call per time step in a Python loop over plans, the energy summed in
                  Python, autograd, torch.optim.Adam, the same sync phase (grasp_kernels.sync.gd_sync)

All three draw the same noise from the same seed, so short plans agree to float rounding (the --quick
check); over 300 iterations the rounding differences grow into different plans (the table's max |da|).

    OMP_NUM_THREADS=1 python bench/plan_speed.py --out bench/results/plan_speed_cpu_<date>.md
    python bench/plan_speed.py --quick --compile-backend aot_eager        # smoke run (seconds)
"""

from __future__ import annotations

import _bench_env  # noqa: F401  (first: TRITON_INTERPRET before Triton is imported)

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch._dynamo
from torch._dynamo.utils import counters

from _timing import device_name, versions
from grasp_kernels import GraspConfig, GraspPlanner, compiled
from grasp_kernels.rollouts import rollout
from grasp_kernels.sync import gd_sync
from grasp_kernels.models.zoo import load_world_model
from grasp_kernels.randomness import per_plan_normal, plan_generators
from grasp_kernels.quality import grasp_base

ENV = "pointmaze-medium"
PlanFn = Callable[[dict], torch.Tensor]  # runs one plan, adds its sync seconds to the dict; returns the actions


def plan_inputs(model: torch.nn.Module, batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Start states and goals drawn around the world model's state statistics (``[B, D]`` each)."""
    g = torch.Generator().manual_seed(seed)
    mean, std = model.state_mean, model.state_std
    s0 = mean + std * torch.randn(batch, mean.numel(), generator=g)
    goal = mean + std * torch.randn(batch, mean.numel(), generator=g)
    return s0, goal


def loop_grasp_plan(model: torch.nn.Module, s0: torch.Tensor, goal: torch.Tensor, config: GraspConfig,
                    action_dim: int, sync_seconds: Optional[dict] = None) -> torch.Tensor:
    """GRASP as public ports write it: ``T`` world-model calls per iteration in a Python loop (batched over
    plans), the energy summed in Python, autograd, ``torch.optim.Adam`` (fresh after each sync phase, as the
    engine resets its moments), the engine's sync phase, and the final rollout. Draws the engine's noise in
    the engine's order, so it plans what the engine plans. Returns the actions ``[B, T, A]``.
    ``sync_seconds["sync"]`` accumulates the time of the sync phases."""
    cfg = config
    batch, dim = s0.shape
    horizon = cfg.horizon
    generators = plan_generators(cfg.seed, 0, batch, s0.device)  # the engine's per-chain streams (one chain)
    frac = torch.arange(horizon + 1, dtype=s0.dtype).div_(horizon).view(1, -1, 1)
    line = s0.unsqueeze(1) + frac * (goal - s0).unsqueeze(1)
    virtual = line[:, 1:-1] + cfg.init_noise * per_plan_normal(generators, (horizon - 1, dim), s0.device, s0.dtype)
    virtual.requires_grad_(True)
    actions = torch.zeros(batch, horizon, action_dim).clamp_(cfg.action_low, cfg.action_high).requires_grad_(True)

    def adam() -> torch.optim.Adam:
        return torch.optim.Adam([{"params": [virtual], "lr": cfg.lr_states}, {"params": [actions], "lr": cfg.lr_actions}],
                                betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)

    optimizer = adam()
    energy_history = torch.empty(cfg.iters, batch)
    for k in range(cfg.iters):
        optimizer.zero_grad(set_to_none=True)
        rows = [s0, *virtual.unbind(1), goal]
        energy = torch.zeros(batch)
        for t in range(horizon):
            pred = model(rows[t].detach(), actions[:, t])  # stop-gradient on the state input
            energy = energy + (pred - rows[t + 1]).square().sum(-1) + cfg.goal_weight * (pred - goal).square().sum(-1)
        energy.sum().backward()
        optimizer.step()
        with torch.no_grad():
            if cfg.state_noise > 0 and horizon > 1:
                virtual.add_(per_plan_normal(generators, virtual.shape[1:], s0.device, s0.dtype), alpha=cfg.state_noise)
            actions.clamp_(cfg.action_low, cfg.action_high)
        energy_history[k] = energy.detach()
        if cfg.sync_every and cfg.sync_steps and (k + 1) % cfg.sync_every == 0:
            start = time.perf_counter()
            with torch.no_grad():
                gd_sync(model, s0, goal, actions.data, cfg.sync_steps, cfg.adam(cfg.sync_lr), cfg.action_low,
                        cfg.action_high)
            optimizer = adam()
            if sync_seconds is not None:
                sync_seconds["sync"] = sync_seconds.get("sync", 0.0) + time.perf_counter() - start
    with torch.no_grad():
        rollout(model, s0, actions.detach())
    return actions.detach()


def planner_plan_fn(model: torch.nn.Module, config: GraspConfig, action_dim: int, s0: torch.Tensor,
                    goal: torch.Tensor) -> PlanFn:
    """One ``GraspPlanner.plan`` per call (one planner, so a compiled planner compiles once); the time of
    its sync phases is added to the dict it is given."""
    planner = GraspPlanner(model, action_dim, config)
    sync = planner.sync

    def plan(times: dict) -> torch.Tensor:
        def timed_sync(state):
            start = time.perf_counter()
            loss = sync(state)
            times["sync"] = times.get("sync", 0.0) + time.perf_counter() - start
            return loss

        planner.sync = timed_sync  # run_iterations looks it up on the instance
        return planner.plan(s0, goal).actions

    return plan


def measure(plan: PlanFn, reps: int) -> dict:
    """The first plan's seconds, then the median of ``reps`` plans and their sync share (sum of sync time
    over sum of plan time); returns also the last plan's actions."""
    start = time.perf_counter()
    plan({})
    first = time.perf_counter() - start
    samples, sync_total = [], 0.0
    actions = None
    for _ in range(reps):
        times: dict = {}
        start = time.perf_counter()
        actions = plan(times)
        samples.append(time.perf_counter() - start)
        sync_total += times.get("sync", 0.0)
    return dict(first=first, median=statistics.median(samples), sync_share=sync_total / sum(samples), actions=actions)


def run_horizon(model: torch.nn.Module, action_dim: int, horizon: int, args: argparse.Namespace) -> dict:
    """(i), (ii), (iii) at one horizon."""
    config = grasp_base(horizon, backend="reference")
    if args.quick:
        config = config.replace(iters=6, sync_every=3, sync_steps=2)
    s0, goal = plan_inputs(model, args.batch)
    row: dict = {"T": horizon}
    row["eager"] = measure(planner_plan_fn(model, config, action_dim, s0, goal), args.reps)
    torch._dynamo.reset()
    counters.clear()
    row["compiled"] = measure(planner_plan_fn(model, config.replace(compile=True), action_dim, s0, goal), args.reps)
    row["graphs"] = counters["stats"].get("unique_graphs", 0)
    row["breaks"] = sum(counters["graph_break"].values())
    row["recompiles"] = sum(counters["recompiles"].values()) if "recompiles" in counters else 0

    def loop(times: dict) -> torch.Tensor:
        return loop_grasp_plan(model, s0, goal, config, action_dim, times)

    row["loop"] = measure(loop, args.reps)
    reference = row["eager"]["actions"]
    for key in ("compiled", "loop"):
        row[key]["diff"] = float((row[key]["actions"] - reference).abs().max())
    return row


def render(rows: list[dict], args: argparse.Namespace, model: torch.nn.Module) -> str:
    config = grasp_base(rows[0]["T"])
    if args.quick:
        config = config.replace(iters=6, sync_every=3, sync_steps=2)
    settings = ", ".join(f"{k}={getattr(config, k)}" for k in ("iters", "sync_every", "sync_steps", "lr_states",
                                                                  "lr_actions", "state_noise", "goal_weight", "sync_lr"))
    lines = [
        f"# Time per GRASP plan — {device_name(torch.device('cpu'), interpreter_note=False)}",
        "",
        f"- date: {datetime.date.today().isoformat()}",
        f"- {versions()}, compile backend: {args.compile_backend}",
        f"- world model: {ENV} shipped MLPDynamics (D={model.state_mean.numel()}, A={args.action_dim}, "
        f"hidden={model.net[0].out_features}, depth={len(model.net) // 2}), float32",
        f"- settings: grasp_base(T) ({settings}), B = {args.batch} plans, 1 chain, backend reference",
        f"- timing: wall clock, median of {args.reps} plans after one untimed plan; compile = first compiled "
        "plan minus the median (dynamo tracing and code generation)",
        "- (i) eager planner; (ii) GraspConfig(compile=True); (iii) loop-over-time GRASP as public ports write "
        "it (one model call per time step, Python-summed energy, autograd, torch.optim.Adam, same sync phase)",
        "- speedup a over b = time b / time a; sync % = share of the plan spent in the sync phases; "
        "max |da| = largest action difference to (i) (same seed, same noise; rounding differences grow over 300 "
        "iterations of this chaotic optimisation into different plans, actions in [-1, 1]; the short plans of "
        "tests/test_compile.py and --quick agree to ~1e-7)",
        "",
        "| T | (i) eager s | (ii) compiled s | (iii) loop s | compile s | (ii) over (i) | (ii) over (iii) "
        "| (i) over (iii) | sync % (i) | sync % (ii) | sync % (iii) | graphs / breaks / recompiles (ii) "
        "| max \\|da\\| (ii) | max \\|da\\| (iii) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        e, c, lp = row["eager"], row["compiled"], row["loop"]
        lines.append(
            f"| {row['T']} | {e['median']:.3f} | {c['median']:.3f} | {lp['median']:.3f} "
            f"| {c['first'] - c['median']:.1f} | {e['median'] / c['median']:.2f}x | {lp['median'] / c['median']:.2f}x "
            f"| {lp['median'] / e['median']:.2f}x | {100 * e['sync_share']:.0f}% | {100 * c['sync_share']:.0f}% "
            f"| {100 * lp['sync_share']:.0f}% | {row['graphs']} / {row['breaks']} / {row['recompiles']} "
            f"| {c['diff']:.1e} | {lp['diff']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: T=4, B=2, 6 iterations, 1 timed plan")
    parser.add_argument("--horizons", type=int, nargs="+", default=None, help="default 50 25 100 (--quick: 4)")
    parser.add_argument("--batch", type=int, default=None, help="plans per call B (default 32; --quick: 2)")
    parser.add_argument("--reps", type=int, default=None, help="timed plans per provider (default 5; --quick: 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--compile-backend", default=compiled.COMPILE_BACKEND,
                        help=f"torch.compile backend of (ii) (default {compiled.COMPILE_BACKEND})")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args(argv)
    args.horizons = args.horizons or ([4] if args.quick else [50, 25, 100])
    args.batch = args.batch or (2 if args.quick else 32)
    args.reps = args.reps or (1 if args.quick else 5)
    torch.set_num_threads(args.threads)
    compiled.COMPILE_BACKEND = args.compile_backend
    model = load_world_model(ENV)
    args.action_dim = model.action_dim
    rows = []
    for horizon in args.horizons:
        rows.append(run_horizon(model, args.action_dim, horizon, args))
        print(f"T={horizon} done", flush=True, file=sys.stderr)
    text = render(rows, args, model)
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
