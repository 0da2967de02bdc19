"""Peak memory and time per lifted iteration against the chunk size (``GraspConfig(max_transitions=N)``),
activation checkpointing of the sync, and a plan in a memory budget four times smaller than it needs
(issue 27; docs/design.md, "Bounded memory").

Models: the shipped MLP world models (PointMaze-Medium, Push-T), a reduced DINO-WM-shaped transformer
(``PatchTransformerDynamics``, the same shape family at 49 tokens x 96) and the full one (196 x 384, history
3, width 384, depth 6) at a few transitions. For each chunk size one iteration is timed (median of wall
clock repetitions after a warm-up, one thread) and its peak measured two ways:

- ``tensors``: the tensor storages alive at once above the plan's own (:class:`grasp_kernels.memory.LiveTensorPeak`,
  what ``memory_budget`` measures on a CPU);
- ``RSS``: the growth of the process's resident set high-water mark (``/proc/self/status`` VmHWM, reset
  through ``/proc/self/clear_refs`` after ``malloc_trim``), which also sees the allocator and oneDNN/MKL
  workspaces.

    OMP_NUM_THREADS=1 python bench/memory.py --out bench/results/memory_cpu_<date>.md
    python bench/memory.py --quick          # smoke run (seconds)

On a GPU the same script measures ``torch.cuda.max_memory_allocated`` (the ``tensors`` column; no RSS).
"""

from __future__ import annotations

import _bench_env  # noqa: F401  (first: TRITON_INTERPRET before Triton is imported)

import argparse
import ctypes
import dataclasses
import datetime
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from _timing import device_name, versions, write_report
from grasp_kernels import GraspConfig, GraspPlanner
from grasp_kernels.memory import format_bytes, measure_peak
from grasp_kernels.models import MLPDynamics, PatchTransformerDynamics
from grasp_kernels.ops import AdamHyper
from grasp_kernels.models.zoo import load_world_model
from grasp_kernels.sync import sync_step

MiB = 2**20


@dataclasses.dataclass
class Case:
    """One world model and a lifted batch to chunk."""

    name: str
    model: nn.Module
    state_shape: tuple[int, ...]
    action_dim: int
    batch: int
    particles: int
    horizon: int
    history: int
    chunks: list[Optional[int]]  # max_transitions values (None: unchunked)
    reps: int


def _rss(key: str = "VmRSS") -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_rss_peak() -> int:
    """Trim the allocator, reset the high-water mark; returns the resident set size now."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass
    return _rss()


def rss_peak(fn: Callable[[], object]) -> int:
    """The growth of the resident set's high-water mark while ``fn()`` runs (bytes; 0 where unavailable)."""
    before = _reset_rss_peak()
    fn()
    return max(0, _rss("VmHWM") - before)


def _inputs(case: Case, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    frames = (case.history,) if case.history > 1 else ()
    s0 = 0.5 * torch.randn(case.batch, *frames, *case.state_shape, generator=g)
    goal = 0.5 * torch.randn(case.batch, *case.state_shape, generator=g)
    device = next(case.model.parameters()).device
    return s0.to(device), goal.to(device)


def _config(case: Case, **changes: object) -> GraspConfig:
    return GraspConfig(horizon=case.horizon, iters=10_000, particles=case.particles, history=case.history,
                       sync_every=0, backend="reference", state_noise=0.01, init_noise=0.05, goal_weight=0.1,
                       **changes)


def _started(case: Case, max_transitions: Optional[int]):
    planner = GraspPlanner(case.model, case.action_dim, _config(case, max_transitions=max_transitions),
                           state_shape=case.state_shape)
    state = planner.start(*_inputs(case))
    return planner, state


def _interleaved_ms(steps: list[Callable[[], object]], reps: int, device: torch.device) -> list[float]:
    """Median milliseconds of each of ``steps``, timed in interleaved rounds (one call of each per round,
    after one warm-up call of each), so that a changing background load shifts every column alike."""
    for step in steps:
        step()
    samples: list[list[float]] = [[] for _ in steps]
    for _ in range(reps):
        for i, step in enumerate(steps):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            samples[i].append(time.perf_counter() - start)
    return [1e3 * statistics.median(times) for times in samples]


def iteration_rows(case: Case) -> list[dict]:
    """Time and peaks of one lifted iteration at each of ``case.chunks``."""
    started = [_started(case, chunk) for chunk in case.chunks]
    steps = [lambda planner=planner, state=state: planner.iteration(state) for planner, state in started]
    device = started[0][1].states.device
    rows = []
    for ms, step, (_, state) in zip(_interleaved_ms(steps, case.reps, device), steps, started):
        tensors, _ = measure_peak(step, device)
        rss = rss_peak(step) if device.type == "cpu" else 0
        rows.append({"ms": ms, "tensors": tensors, "rss": rss, "state": state.nbytes,
                     "chunks": 1 if state.memory is None else state.memory.chunks_per_iteration})
    return rows


def sync_rows(case: Case, settings: list[tuple[Optional[int], bool]]) -> list[dict]:
    """Time and tensor peak of one GD sync step (the differentiated ``T``-step rollout) over all chains, for
    each ``(chains a chunk, checkpoint)`` of ``settings``."""
    _, state = _started(case, None)
    problem = state.chains
    start_frames = problem.frames()
    steps = []
    for chains, checkpoint in settings:
        actions = state.actions.clone()
        moments = (torch.zeros_like(actions), torch.zeros_like(actions))
        steps.append(lambda actions=actions, moments=moments, chains=chains, checkpoint=checkpoint: sync_step(
            case.model, start_frames, problem.goal, actions, *moments, 1, AdamHyper(0.05), None, None,
            problem.history, None, chains, checkpoint))
    device = state.states.device
    return [{"ms": ms, "tensors": measure_peak(step, device)[0]}
            for ms, step in zip(_interleaved_ms(steps, case.reps, device), steps)]


def budget_plan(case: Case, iters: int, factor: int) -> dict:
    """One plan of ``iters`` iterations (a sync phase included) unchunked, then in a budget ``factor`` times
    smaller than its measured peak: the chosen chunk, the sizing's measurement and the whole plan's peak."""
    config = _config(case).replace(iters=iters, sync_every=iters // 2, sync_steps=2)
    s0, goal = _inputs(case)

    def plan(cfg: GraspConfig):
        return GraspPlanner(case.model, case.action_dim, cfg, state_shape=case.state_shape).plan(s0, goal)

    results = {}
    device = s0.device
    unchunked = measure_peak(lambda: results.update(unchunked=plan(config)), device)[0]
    budget = unchunked // factor
    bounded = GraspPlanner(case.model, case.action_dim, config.replace(memory_budget=budget),
                           state_shape=case.state_shape)
    # the first plan of the shape sizes the chunks (measuring inside: on CUDA its peak statistics are reset
    # by the sizing, so the plan's own peak is the second plan's, which reuses the sizes)
    start = time.perf_counter()
    first_peak = measure_peak(lambda: results.update(bounded=bounded.plan(s0, goal)), device)[0]
    seconds = time.perf_counter() - start
    plan_peak = measure_peak(lambda: bounded.plan(s0, goal), device)[0]
    if device.type == "cpu":  # the dispatch-mode count nests: the first plan's peak includes its sizing
        plan_peak = max(plan_peak, first_peak)
    rss = rss_peak(lambda: bounded.plan(s0, goal)) if device.type == "cpu" else 0
    memory = results["bounded"].info["memory"]
    diff = max((getattr(results["bounded"], f) - getattr(results["unchunked"], f)).abs().max().item()
               for f in ("actions", "states", "rollout"))
    return {"unchunked": unchunked, "budget": budget, "plan_peak": plan_peak, "rss": rss, "memory": memory,
            "seconds": seconds, "max_diff": diff, "iters": iters}


def _mlp_case(env: str, quick: bool, device: torch.device) -> Case:
    model = load_world_model(env).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    batch, particles, horizon = (2, 2, 8) if quick else (8, 8, 50)
    total = batch * particles * horizon
    chunks = [None, total // 2, total // 4, total // 8, total // 16, horizon, horizon // 2]
    return Case(f"MLP {env} (shipped)", model, (model.state_dim,), model.action_dim, batch, particles, horizon, 1,
                [c for c in chunks if c is None or c >= 1], 3 if quick else 15)


def _transformer(tokens: int, dim: int, width: int, depth: int, heads: int,
                 device: torch.device) -> PatchTransformerDynamics:
    torch.manual_seed(0)
    model = PatchTransformerDynamics(tokens, dim, action_dim=2, history=3, width=width, depth=depth, heads=heads)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval().to(device)


def cases(quick: bool, device: torch.device) -> list[Case]:
    """The benchmark's models and lifted batches (``quick``: tiny ones)."""
    if quick:
        tiny = _transformer(4, 8, 16, 1, 2, device)
        return [
            _mlp_case("pointmaze-medium", quick, device),
            Case("transformer 4 x 8 (quick)", tiny, (4, 8), 2, 1, 2, 4, 3, [None, 4, 2, 1], 2),
        ]
    reduced = _transformer(49, 96, 96, 2, 4, device)
    full = _transformer(196, 384, 384, 6, 16, device)
    return [
        _mlp_case("pointmaze-medium", quick, device),
        _mlp_case("pusht", quick, device),
        Case("transformer 49 x 96, width 96, depth 2 (reduced)", reduced, (49, 96), 2, 2, 2, 16, 3,
             [None, 32, 16, 8, 4, 2], 7),
        Case("transformer 196 x 384, width 384, depth 6 (DINO-WM-shaped)", full, (196, 384), 2, 1, 2, 4, 3,
             [None, 4, 2, 1], 5),
    ]


def _mb(size: float) -> str:
    return f"{size / MiB:.2f}"


def render(device: torch.device, quick: bool) -> str:
    lines = [
        f"# Bounded memory: chunked lifted iterations — {'GPU' if device.type == 'cuda' else 'CPU'} "
        f"({datetime.date.today().isoformat()})",
        "",
        f"Generated by `python bench/memory.py{' --quick' if quick else ''}`. Device: {device_name(device)}; "
        f"{versions()}; date: {datetime.date.today().isoformat()}. One lifted iteration of GRASP (reference "
        "backend, float32) per row; time = median wall clock. Peak = memory above the plan's own tensors "
        "(`state`, which a budget also holds). `tensors`: storages alive at once (what `memory_budget` measures "
        "on a CPU); `RSS`: growth of the resident set's high-water mark (allocator, oneDNN/MKL workspaces too).",
        "",
    ]
    for case in cases(quick, device):
        total = case.batch * case.particles * case.horizon
        lines += [
            f"## {case.name}",
            "",
            f"B = {case.batch} plans x K = {case.particles} chains x T = {case.horizon} steps = {total} transitions "
            f"per iteration; state {list(case.state_shape)}, history {case.history}.",
            "",
            "| max_transitions | chunks | of the batch | time / iteration (ms) | vs unchunked | peak tensors (MiB) | "
            "peak RSS (MiB) | RSS / tensors | state (MiB) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        base = None
        for chunk, row in zip(case.chunks, iteration_rows(case)):
            base = row if chunk is None else base
            share = "all" if chunk is None else f"1/{total / chunk:.3g}"
            over = "—" if chunk is None else f"{100 * (row['ms'] / base['ms'] - 1):+.1f} %"
            ratio = f"{row['rss'] / row['tensors']:.2f}" if row["tensors"] and row["rss"] else "n/a"
            lines.append(
                f"| {chunk or total} | {row['chunks']} | {share} | {row['ms']:.1f} | {over} | {_mb(row['tensors'])} | "
                f"{_mb(row['rss'])} | {ratio} | {_mb(row['state'])} |"
            )
        lines.append("")
    lines += _checkpoint_section(quick, device)
    lines += _budget_section(quick, device)
    return "\n".join(lines) + "\n"


def _checkpoint_section(quick: bool, device: torch.device) -> list[str]:
    out = [
        "## The sync phase: chunks of chains and activation checkpointing",
        "",
        "One GD sync step (the shooting loss through the unrolled T-step rollout and its gradient) over all "
        "chains. Backpropagating through T steps keeps T steps' activations per chain: `chains a chunk` "
        "differentiates that many chains at a time; `checkpoint` recomputes each step's forward in the "
        "backward (`torch.utils.checkpoint`), keeping only each step's input.",
        "",
        "| model | chains | chains a chunk | checkpoint | time / step (ms) | vs one pass | peak tensors (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    chosen = cases(quick, device)
    for case in (chosen[0], chosen[2] if len(chosen) > 2 else chosen[1]):
        chains = case.batch * case.particles
        settings = [(None, False), (max(1, chains // 8), False), (None, True), (max(1, chains // 8), True)]
        rows = sync_rows(case, settings)
        base = rows[0]
        for (per_chunk, checkpoint), row in zip(settings, rows):
            over = "—" if row is base else f"{100 * (row['ms'] / base['ms'] - 1):+.1f} %"
            out.append(f"| {case.name} | {chains} | {per_chunk or chains} | {'yes' if checkpoint else 'no'} | "
                       f"{row['ms']:.1f} | {over} | {_mb(row['tensors'])} |")
    return out + [""]


def _budget_section(quick: bool, device: torch.device) -> list[str]:
    case = cases(quick, device)[-1 if quick else 2]
    result = budget_plan(case, iters=4 if quick else 6, factor=4)
    memory = result["memory"]
    within = result["plan_peak"] <= 1.1 * result["budget"]
    return [
        "## One plan in a quarter of the memory it needs",
        "",
        f"{case.name}: {result['iters']} iterations and 2 sync phases. The unchunked plan peaks at "
        f"{format_bytes(result['unchunked'])} of tensors; `GraspConfig(memory_budget={result['budget']})` "
        f"({format_bytes(result['budget'])}, a quarter) sized the chunks by measuring ({memory['method']}):",
        "",
        "| budget | max_transitions (largest chunk) | chunks / iteration | sync chains a chunk | checkpoint | "
        "sizing's measured peak | "
        "whole plan's peak (tensors) | peak / budget | whole plan's RSS growth | plan time (s) | max diff to unchunked |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {format_bytes(result['budget'])} | {memory['max_transitions']} ({memory['largest_chunk']}) | "
        f"{memory['chunks_per_iteration']} | "
        f"{memory['sync_chains_per_chunk']} | {'yes' if memory['activation_checkpointing'] else 'no'} | "
        f"{format_bytes(memory['measured_peak'])} | {format_bytes(result['plan_peak'])} | "
        f"{result['plan_peak'] / result['budget']:.2f} | {format_bytes(result['rss'])} | {result['seconds']:.1f} | "
        f"{result['max_diff']:.2g} |",
        "",
        f"Within the budget (peak <= 1.1 x budget): {'yes' if within else 'NO'}.",
        "",
    ]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes (smoke test, seconds)")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = render(device, args.quick)
    print(text)
    if args.out is not None:
        write_report(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
