"""Time one GRASP iteration: batched over time (one world-model call over B*T rows) versus the
per-timestep loop that public GRASP ports run (T calls over B rows each).

Prints a markdown table of medians (torch.utils.benchmark, which synchronises CUDA) and the ratio
loop / batched, both measured in the same run, with the device and versions in the header.

    python bench/planner_speed.py                 # B in {1, 16}, T in {16, 64, 256}
    python bench/planner_speed.py --quick         # a smoke run for CI
    python bench/planner_speed.py --device cuda --backend triton --out bench/results/planner_speed.md
    python bench/planner_speed.py --model transformer --patches 196 --embed 384 --history 3   # DINO-WM-shaped
    python bench/planner_speed.py --device cuda --backend triton --fused-mlp --hidden 512 --depth 2   # + (c)

``--fused-mlp`` (MLP world model only) adds column (c): the whole iteration as ONE fused Triton kernel
(GraspConfig(fused_mlp=True)), and the ratio (a)/(c).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from pathlib import Path

import torch
from torch.utils import benchmark

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from grasp_kernels import GraspConfig, GraspPlanner  # noqa: E402
from grasp_kernels.config import BACKENDS  # noqa: E402
from grasp_kernels.models import MLPDynamics, PatchTransformerDynamics  # noqa: E402


def make_model(args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, tuple[int, ...], int, str]:
    """``(model, state shape S, history h, description)`` for ``--model mlp | transformer``."""
    torch.manual_seed(0)
    if args.model == "transformer":
        model = PatchTransformerDynamics(
            args.patches, args.embed, args.action_dim, history=args.history, width=args.hidden, depth=args.depth, heads=args.heads
        )
        text = (f"PatchTransformerDynamics(patches={args.patches}, embed={args.embed}, action_dim={args.action_dim}, "
                f"history={args.history}, width={args.hidden}, depth={args.depth}, heads={args.heads})")
        return model.to(device), (args.patches, args.embed), args.history, text
    depth = args.mlp_depth
    model = MLPDynamics(args.state_dim, args.action_dim, hidden=args.hidden, depth=depth)
    text = f"MLPDynamics(state_dim={args.state_dim}, action_dim={args.action_dim}, hidden={args.hidden}, depth={depth})"
    return model.to(device), (args.state_dim,), 1, text


def time_iteration(planner: GraspPlanner, s0: torch.Tensor, goal: torch.Tensor, per_timestep: bool, min_run_time: float) -> float:
    """Median seconds of one lifted iteration (the plan state is rewound so it never runs out)."""
    state = planner.start(s0, goal)
    planner.iteration(state, per_timestep=per_timestep)  # warm-up (allocator, kernels, autotune)
    state.iteration = 0
    timer = benchmark.Timer(
        stmt="planner.iteration(state, per_timestep=per_timestep); state.iteration = 0",
        globals={"planner": planner, "state": state, "per_timestep": per_timestep},
        num_threads=torch.get_num_threads(),
    )
    return timer.blocked_autorange(min_run_time=min_run_time).median


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run(
    batches: list[int],
    horizons: list[int],
    device: torch.device,
    backend: str,
    model: torch.nn.Module,
    state_shape: tuple[int, ...],
    history: int,
    action_dim: int,
    model_text: str,
    min_run_time: float,
    fused_mlp: bool = False,
) -> str:
    lines = [
        f"GRASP iteration time, {datetime.date.today().isoformat()}, device {device_name(device)}, torch {torch.__version__}, "
        f"backend {backend}, float32",
        f"World model: {model_text}. "
        "(a) batched: one model call over B*T rows; (b) loop: T calls over B rows, as public ports do. "
        "Medians of torch.utils.benchmark.",
        "",
        "| B | T | (a) batched (ms) | (b) per-timestep loop (ms) | (b)/(a) |",
        "|---|---|---|---|---|",
    ]
    if fused_mlp:
        lines[1] += " (c) fused: the whole iteration as one Triton kernel (GraspConfig(fused_mlp=True))."
        lines[3] = lines[3] + " (c) fused MLP kernel (ms) | (a)/(c) |"
        lines[4] = lines[4] + "---|---|"
    for batch in batches:
        for horizon in horizons:
            config = GraspConfig(horizon=horizon, iters=1, sync_every=0, backend=backend, history=history)
            planner = GraspPlanner(model, action_dim, config, state_shape=state_shape)
            frames = (history,) if history > 1 else ()
            s0 = torch.randn(batch, *frames, *state_shape, device=device)
            goal = torch.randn(batch, *state_shape, device=device)
            batched = time_iteration(planner, s0, goal, False, min_run_time)
            looped = time_iteration(planner, s0, goal, True, min_run_time)
            row = f"| {batch} | {horizon} | {batched * 1e3:.3f} | {looped * 1e3:.3f} | {looped / batched:.1f}x |"
            if fused_mlp:
                fused_planner = GraspPlanner(model, action_dim, config.replace(fused_mlp=True), state_shape=state_shape)
                fused = time_iteration(fused_planner, s0, goal, False, min_run_time)
                row += f" {fused * 1e3:.3f} | {batched / fused:.1f}x |"
            lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--horizons", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--model", default="mlp", choices=("mlp", "transformer"),
                        help="mlp: MLPDynamics on [D] states; transformer: PatchTransformerDynamics on [P, E] tokens")
    parser.add_argument("--state-dim", type=int, default=16)
    parser.add_argument("--patches", type=int, default=16, help="transformer: patch tokens P")
    parser.add_argument("--embed", type=int, default=32, help="transformer: token width E")
    parser.add_argument("--history", type=int, default=3, help="transformer: frames per input h")
    parser.add_argument("--depth", type=int, default=2, help="transformer: layers")
    parser.add_argument("--heads", type=int, default=4, help="transformer: attention heads")
    parser.add_argument("--action-dim", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256, help="MLP hidden width / transformer width")
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds of timing per cell")
    parser.add_argument("--mlp-depth", type=int, default=2, help="mlp: hidden layers (1-3 for --fused-mlp)")
    parser.add_argument("--fused-mlp", action="store_true",
                        help="mlp: add column (c), the fused MLP iteration kernel (triton backend, float32)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and short timing (CI smoke run)")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.horizons, args.hidden, args.min_run_time = [1, 4], [4, 8], 32, 0.02
        args.patches, args.embed, args.depth, args.heads = 4, 8, 1, 2
    if args.fused_mlp and args.model != "mlp":
        parser.error("--fused-mlp needs --model mlp")
    device = torch.device(args.device)
    model, state_shape, history, text = make_model(args, device)
    table = run(
        args.batches, args.horizons, device, args.backend, model, state_shape, history, args.action_dim, text,
        args.min_run_time, args.fused_mlp,
    )
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
