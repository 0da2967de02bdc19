"""The planner-speed table: time per GRASP iteration and per full plan for every provider, against the
physical floor measured in the same run.

Providers (bench/_planner_providers.py): loop (per-timestep loop), eager (batched reference),
compiled (torch.compile), triton, cuda, graph (CUDA-graph replay), fused_mlp (fused MLP kernel).
Per plan = iters x (one iteration) + (iters / sync_every) x (one sync phase); the sync phase is measured
once per shape with the reference planner. Floor per iteration = max(FLOP floor, byte floor)
(bench/_planner_floors.py); "% floor" = floor / time. The markdown: bench/_planner_render.py.

    python bench/planner_speed.py --device cuda --out bench/results/planner_speed_mlp.md             # MLP grid
    python bench/planner_speed.py --device cuda --model transformer --out ...                         # DINO-WM shape
    python bench/planner_speed.py --quick                        # CPU smoke run (tiny shapes, interpreter)
    python bench/planner_speed.py                                # without CUDA: a small CPU grid (minutes)
    python bench/planner_speed.py --shapes 16,512,256,64 --providers loop eager triton fused_mlp   # MLP rows D,H,B,T
    python bench/planner_speed.py --model transformer --shapes 1,64 4,64                          # transformer rows B,T

Timing: triton.testing.do_bench medians on CUDA, torch.utils.benchmark medians on the CPU. Without a
CUDA device the Triton providers (triton, fused_mlp) run under the Triton interpreter: a smoke test of
the code path, never a speed.
"""

from __future__ import annotations

import _bench_env  # noqa: F401  (first: TRITON_INTERPRET before Triton is imported)

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

import torch

from _planner_floors import measure_rates, shape_floor
from _planner_providers import DTYPES, PROVIDERS, Row, describe_model, make_shapes, measure_row
from _planner_render import render

# MLP rows (D, H, B, T): state dims 4..64, hidden 256..1024, B*T from 1e3 to 1e6; T >= 64 but one row
GPU_MLP_SHAPES = [(4, 256, 16, 64), (16, 256, 64, 16), (16, 512, 256, 64), (64, 1024, 1024, 256),
                  (16, 512, 16384, 64), (64, 1024, 4096, 256)]
QUICK_MLP_SHAPES = [(4, 32, 2, 8), (8, 64, 4, 16)]
CPU_MLP_SHAPES = [(4, 64, 1, 16), (16, 256, 1, 64), (16, 256, 16, 64), (16, 256, 16, 256)]  # no CUDA, no --quick
# transformer rows (B, T) for the DINO-WM-shaped predictor (196 tokens x 384, history 3)
GPU_TRANSFORMER_SHAPES = [(1, 16), (1, 64), (4, 64)]
QUICK_TRANSFORMER_SHAPES = [(1, 4), (2, 8)]
CPU_TRANSFORMER_SHAPES = [(1, 16), (1, 64), (4, 64)]
# transformer sizes (patches, embed, history, width, depth, heads): DINO-WM-like on CUDA, tiny on the CPU
GPU_TRANSFORMER = (196, 384, 3, 384, 6, 16)
CPU_TRANSFORMER = (16, 32, 3, 64, 2, 4)
QUICK_TRANSFORMER = (4, 8, 2, 16, 1, 2)


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r}: comma-separated ints expected") from None
    if len(values) not in (2, 4) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"shape {text!r}: D,H,B,T (mlp) or B,T (transformer), all >= 1")
    return values


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="mlp", choices=("mlp", "transformer"),
                        help="mlp: MLPDynamics rows D,H,B,T; transformer: PatchTransformerDynamics rows B,T "
                             "(its sizes default to DINO-WM-like 196 x 384 on CUDA, tiny on the CPU)")
    parser.add_argument("--shapes", type=parse_shape, nargs="+",
                        help="rows: D,H,B,T for mlp, B,T for transformer (default: the GPU grid, or tiny with --quick)")
    parser.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=list(PROVIDERS),
                        help="subset of the providers (default all)")
    parser.add_argument("--model-dtype", default="float32", choices=tuple(DTYPES),
                        help="world-model dtype (GraspConfig.model_dtype; states and moments stay float32)")
    parser.add_argument("--action-dim", type=int, default=4)
    parser.add_argument("--mlp-depth", type=int, default=2, help="mlp: hidden layers (1-3 for the fused kernel)")
    parser.add_argument("--patches", type=int, help="transformer: patch tokens P")
    parser.add_argument("--embed", type=int, help="transformer: token width E")
    parser.add_argument("--history", type=int, help="transformer: frames per input h")
    parser.add_argument("--width", type=int, help="transformer: model width")
    parser.add_argument("--depth", type=int, help="transformer: encoder layers")
    parser.add_argument("--heads", type=int, help="transformer: attention heads")
    parser.add_argument("--mlp-ratio", type=float, default=2.0, help="transformer: feed-forward width / width")
    parser.add_argument("--iters", type=int, default=300, help="iterations per plan (GraspConfig.iters)")
    parser.add_argument("--sync-every", type=int, default=50)
    parser.add_argument("--sync-steps", type=int, default=10)
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend of the compiled provider: default inductor (on the CPU when a C++ "
                             "compiler is found and not --quick, else aot_eager); none skips it")
    parser.add_argument("--min-run-time", type=float, default=None,
                        help="CPU: seconds of torch.utils.benchmark per cell (default 0.2, 0.02 with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and short timing (CPU smoke run)")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a selected provider failed (not merely unavailable here): the device check")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    size = "quick" if args.quick else ("gpu" if device.type == "cuda" else "cpu")
    sizes = {"quick": QUICK_TRANSFORMER, "gpu": GPU_TRANSFORMER, "cpu": CPU_TRANSFORMER}[size]
    for name, value in zip(("patches", "embed", "history", "width", "depth", "heads"), sizes):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.shapes is None:
        if args.model == "transformer":
            args.shapes = {"quick": QUICK_TRANSFORMER_SHAPES, "gpu": GPU_TRANSFORMER_SHAPES, "cpu": CPU_TRANSFORMER_SHAPES}[size]
        else:
            args.shapes = {"quick": QUICK_MLP_SHAPES, "gpu": GPU_MLP_SHAPES, "cpu": CPU_MLP_SHAPES}[size]
    want = 2 if args.model == "transformer" else 4
    if any(len(s) != want for s in args.shapes):
        parser.error(f"--model {args.model} takes {'B,T' if want == 2 else 'D,H,B,T'} shapes")
    if args.min_run_time is None:
        args.min_run_time = 0.02 if args.quick else 0.2
    if args.compile_backend is None:
        # inductor compiles C++ on the CPU: used there when a compiler is found, except in the --quick smoke run
        cpu_inductor = not args.quick and shutil.which(os.environ.get("CXX", "g++")) is not None
        args.compile_backend = "inductor" if device.type == "cuda" or cpu_inductor else "aot_eager"

    shapes = make_shapes(args, device)
    rates = measure_rates(device, DTYPES[args.model_dtype], args.quick)
    rows, floors = [], {}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    for index, shape in enumerate(shapes, 1):
        row = Row(shape, index)
        measure_row(row, args, device)
        rows.append(row)
        floors[index] = shape_floor(shape, args.action_dim, rates)
        print(f"# measured #{index} {shape.text} B={shape.batch} T={shape.horizon}", file=sys.stderr, flush=True)
        if args.out:  # the rows so far: a run cut off (the device check's budget) keeps what it measured
            args.out.write_text(render(rows, floors, args, device, rates, describe_model(args, shapes)) + "\n")
    table = render(rows, floors, args, device, rates, describe_model(args, shapes))
    print(table)
    failed = [f"#{row.index} {key}: {why}" for row in rows for key, why in row.reasons.items() if why.startswith("failed")]
    if args.strict and failed:
        print("providers failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
