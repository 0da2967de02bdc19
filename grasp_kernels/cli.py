"""Command line: ``python -m grasp_kernels demo | train | pixels | train-pixels`` (also the console script
``grasp-kernels``): the argument parsers; the work is done by the functions they call with the parsed values."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from ._checks import check_device
from .backends import BACKENDS
from . import demo as demos  # called through the module: tests replace its functions
from .envs.exploration import PUSHT_POLICIES
from .envs.pixel_data import cache_path, collect_pixels
from .envs.sim import ENV_NAMES, check_env_name
from .models.model_files import WEIGHTS_DIR
from .models import pixel_probes
from .models.pixel_training import OBJECTIVES, PIXEL_ENVS, PixelTrainConfig, train_pixel_world_model
from .models.pixel_zoo import default_path, remeasure, reproduce_command, save_pixel_model
from .models.training import format_metrics, train_world_model
from .models.zoo import save_world_model

DESCRIPTION = "GRASP planner engine: python -m grasp_kernels demo | train | pixels | train-pixels"


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an int >= ``minimum`` (argparse turns the ValueError into a one-line usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def fraction(text: str) -> float:
    """An argparse ``type``: a float in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {value}")
    return value


def device_arg(text: str) -> str:
    """An argparse ``type``: a device this torch can use (see :func:`grasp_kernels._checks.check_device`)."""
    try:
        check_device("--device", text)
    except (TypeError, ValueError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def main_train(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m grasp_kernels train --env NAME|all --seed S --out DIR``: train, save, print metrics."""
    parser = argparse.ArgumentParser(
        prog="python -m grasp_kernels train", description="Train MLP world models on simulator data."
    )
    parser.add_argument("--env", required=True, help=f"one of {list(ENV_NAMES)} or 'all'")
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--out", default=str(WEIGHTS_DIR),
                        help="output directory (default: the package's weights/)")
    positive = int_at_least(1)
    for flag, kind in (("trajectories", positive), ("length", positive), ("hidden", positive), ("depth", positive),
                       ("steps", positive), ("batch-size", positive), ("lr", float), ("rollout-steps", positive),
                       ("heldout-trajectories", positive), ("action-repeat", positive)):
        parser.add_argument(f"--{flag}", type=kind, default=None, help="default: per environment")
    parser.add_argument("--policy", default=None, choices=sorted(PUSHT_POLICIES),
                        help="Push-T's exploration policy (PointMaze has 'mixed' only; default: per environment)")
    parser.add_argument("--threads", type=int_at_least(1), default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    if args.env.strip().lower() == "all":
        names = list(ENV_NAMES)
    else:
        try:
            names = [check_env_name(args.env)]
        except ValueError as error:
            parser.error(str(error))
    torch.set_num_threads(max(1, args.threads))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = {
        "trajectories": args.trajectories, "length": args.length, "hidden": args.hidden, "depth": args.depth,
        "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "rollout_steps": args.rollout_steps,
        "heldout_trajectories": args.heldout_trajectories, "action_repeat": args.action_repeat, "policy": args.policy,
    }
    for name in names:
        model, metrics = train_world_model(name, seed=args.seed, progress=not args.no_progress, **overrides)
        # The reproduce command names every non-default flag so that the card alone rebuilds the file.
        command = ["python -m grasp_kernels.models.training", f"--env {name}", f"--seed {args.seed}", f"--out {out}"]
        command += [f"--{k.replace('_', '-')} {v}" for k, v in overrides.items() if v is not None]
        path = out / f"{name}.safetensors"
        save_world_model(model, path, name, metrics, reproduce=" ".join(command))
        print(format_metrics(name, metrics), f"-> {path} ({path.stat().st_size / 1e6:.2f} MB)", flush=True)
    return 0


def main_train_pixels(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m grasp_kernels train-pixels --env NAME --seed S --out DIR``: train, save, print metrics."""
    parser = argparse.ArgumentParser(prog="python -m grasp_kernels train-pixels",
                                     description="Train a pixel world model (encoder, decoder, latent predictor).")
    parser.add_argument("--env", required=True, choices=PIXEL_ENVS)
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="output directory (default: the package's weights/)")
    defaults = PixelTrainConfig()
    # every integer hyper-parameter is a flag (the model card's reproduce command names the changed ones)
    int_fields = [f.name for f in dataclasses.fields(PixelTrainConfig)
                  if isinstance(getattr(defaults, f.name), int) and not isinstance(getattr(defaults, f.name), bool)]
    for field in int_fields:
        parser.add_argument(f"--{field.replace('_', '-')}", type=int_at_least(1), default=getattr(defaults, field))
    parser.add_argument("--no-balance-colours", dest="balance_colours", action="store_false",
                        help="plain foreground weights (every foreground pixel alike)")
    parser.add_argument("--objective", choices=OBJECTIVES, default=defaults.objective,
                        help="the encoder's objective: reconstruction (default) or jepa (trained jointly with a predictor)")
    parser.add_argument("--action-repeat", type=int_at_least(1), default=None,
                        help="simulator steps per model step, the frame skip (default: the environment's)")
    parser.add_argument("--policy", choices=sorted(PUSHT_POLICIES), default=defaults.policy,
                        help="Push-T's exploration policy (PointMaze has 'mixed' only)")
    parser.add_argument("--threads", type=int_at_least(1), default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = {f: getattr(args, f) for f in int_fields}
    overrides.update(action_repeat=args.action_repeat, policy=args.policy)
    try:  # a value the model cannot take (a frame size not divisible by 4) stops here, before any data is collected
        config = dataclasses.replace(defaults, balance_colours=args.balance_colours, objective=args.objective, **overrides)
    except ValueError as error:
        parser.error(str(error))
    model, metrics = train_pixel_world_model(args.env, args.seed, config, progress=not args.no_progress)
    command = [reproduce_command(args.env, args.seed, args.out)]
    command += [f"--{k.replace('_', '-')} {v}" for k, v in overrides.items() if v != getattr(defaults, k)]
    command += [] if config.balance_colours else ["--no-balance-colours"]
    command += [] if config.objective == defaults.objective else [f"--objective {config.objective}"]
    path = save_pixel_model(model, args.out / default_path(args.env).name, metrics, reproduce=" ".join(command))
    print(pixel_probes.format_metrics(args.env, metrics), f"-> {path} ({path.stat().st_size / 1e6:.2f} MB)", flush=True)
    return 0


def main_measure_pixels(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m grasp_kernels measure-pixels --env NAME [--weights DIR]``: measure a pixel model again."""
    parser = argparse.ArgumentParser(
        prog="python -m grasp_kernels measure-pixels",
        description="Measure a pixel world model again on the data its card names, with today's probe; the card's "
                    "metrics are rewritten and the old ones kept under superseded_metrics (the weights are not touched).")
    parser.add_argument("--env", required=True, choices=PIXEL_ENVS)
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="directory of <env>-pixels.safetensors")
    parser.add_argument("--probe-steps", type=int_at_least(1), default=None, help="default: PixelTrainConfig's")
    parser.add_argument("--threads", type=int_at_least(1), default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = args.weights / default_path(args.env).name
    previous, metrics = remeasure(path, args.env, args.probe_steps, progress=not args.no_progress)
    print("before:", pixel_probes.format_metrics(args.env, previous))
    print("now:   ", pixel_probes.format_metrics(args.env, metrics), f"({metrics['probe_spec']}) -> {path.with_suffix('.json')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grasp-kernels", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="plan across PointMaze with GRASP and CEM through the shipped world model and execute by MPC in the "
        "simulator (or, with --task detour|open, the synthetic navigation task with GRASP, GD, CEM and MPPI; with "
        "--pixels, PointMaze or Push-T from frames through a pixel world model)",
    )
    demo.add_argument("--task", default="pointmaze-medium",
                      choices=("pointmaze-umaze", "pointmaze-medium", "pointmaze-large", "pusht", "detour", "open"),
                      help="pusht: with --pixels only")
    demo.add_argument("--horizon", type=int_at_least(1),
                      help="default: 25 (PointMaze, --pixels), 60 (synthetic)")
    demo.add_argument("--problems", type=int_at_least(1),
                      help="start/goal pairs, planned as one batch; default 8 (PointMaze), 16 (--pixels), 16")
    demo.add_argument("--pixels", action="store_true",
                      help="plan from the encoded start frame to the encoded goal image through the pixel world "
                      "model, execute the plans open loop in the simulator, draw the plans' decoded frames")
    demo.add_argument("--pixel-weights", type=Path, metavar="DIR",
                      help="with --pixels: read DIR/<task>-pixels.safetensors (default: the package's weights)")
    demo.add_argument("--mpc", action="store_true",
                      help="with --pixels: also execute by MPC (the state PointMaze demo always does)")
    demo.add_argument("--replan-every", type=int_at_least(1), default=10,
                      help="MPC replanning period (PointMaze; --pixels with --mpc)")
    demo.add_argument("--replan-iters", type=fraction, default=0.5,
                      help="the fraction of each planner's iterations a warm-started MPC replan runs (PointMaze; "
                      "--pixels with --mpc)")
    demo.add_argument("--particles", type=int_at_least(1), default=16,
                      help="synthetic task: chains of the multi-chain GRASP row")
    demo.add_argument("--seed", type=int_at_least(0), default=0)
    demo.add_argument("--threads", type=int_at_least(1), default=1,
                      help="torch CPU threads (default 1, as the anytime profiles: the planners' many small model "
                      "calls gain nothing from more)")
    demo.add_argument("--device", type=device_arg, default="cpu")
    demo.add_argument("--backend", default="auto", choices=BACKENDS)
    demo.add_argument("--out", type=Path,
                      help="PNG of the plans; default out/demo.png (out/pixel_demo.png with --pixels)")
    demo.add_argument("--no-progress", action="store_true")
    pixels = commands.add_parser(
        "pixels", help="collect exploratory trajectories with 64x64 frames of their states into a cached .npz"
    )
    pixels.add_argument("--env", default="pointmaze-medium",
                        choices=("pointmaze-umaze", "pointmaze-medium", "pointmaze-large", "pusht"))
    pixels.add_argument("--trajectories", type=int_at_least(1), default=200)
    pixels.add_argument("--length", type=int_at_least(1), default=50, help="model steps per trajectory")
    pixels.add_argument("--seed", type=int_at_least(0), default=0)
    pixels.add_argument("--size", type=int_at_least(1), default=64, help="frame side in pixels")
    pixels.add_argument("--action-repeat", type=int_at_least(1), default=None,
                        help="simulator steps per model step, the frame skip (default: the environment's)")
    pixels.add_argument("--policy", choices=sorted(PUSHT_POLICIES), default="mixed",
                        help="Push-T's exploration policy (PointMaze has 'mixed' only)")
    pixels.add_argument("--out", type=Path, help="the .npz; default ~/.cache/grasp_kernels/pixels/<env>-s<seed>-...")
    pixels.add_argument("--no-progress", action="store_true")
    train = commands.add_parser(
        "train", add_help=False, help="train the shipped world models from a seed (see --help of the subcommand)"
    )
    commands.add_parser(
        "train-pixels", add_help=False,
        help="train a pixel world model (encoder, decoder, latent predictor; see --help of the subcommand)",
    )
    commands.add_parser(
        "measure-pixels", add_help=False,
        help="measure a pixel world model again with today's probe and rewrite its card's metrics (see --help)",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; a user error (the package's ValueError/TypeError, a missing file) exits with
    status 2 and one line on stderr, no traceback."""
    parser = build_parser()
    try:
        return _run(parser, argv)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2


def _run(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> int:
    # The train subcommand's options belong to its own parser (argparse.REMAINDER does not capture a
    # leading "--flag" after a subcommand), so they are collected as unknown arguments and handed over.
    args, rest = parser.parse_known_args(argv)
    if args.command == "train":
        return main_train(rest)
    if args.command == "train-pixels":
        return main_train_pixels(rest)
    if args.command == "measure-pixels":
        return main_measure_pixels(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "pixels":
        sampling = dict(action_repeat=args.action_repeat, policy=args.policy)
        out = args.out or cache_path(args.env, args.trajectories, args.length, args.seed, args.size, **sampling)
        data = collect_pixels(args.env, args.trajectories, args.length, args.seed, size=args.size, path=out,
                              progress=not args.no_progress, **sampling)
        print(f"{data.env_name}: frames {data.frames.shape} uint8, actions {data.actions.shape} -> {out}")
        return 0
    if args.command == "demo":
        pixel_only = [flag for flag, given in (("--pixel-weights", args.pixel_weights is not None), ("--mpc", args.mpc),
                                               ("--task pusht", args.task == "pusht")) if given]
        if pixel_only and not args.pixels:
            parser.error(f"{pixel_only[0]} needs --pixels")
        if args.pixels and args.task in ("detour", "open"):
            parser.error(f"--pixels plans the simulated tasks (PointMaze, Push-T), not --task {args.task}")
        out = args.out or Path("out/pixel_demo.png" if args.pixels else "out/demo.png")
        threads = torch.get_num_threads()
        torch.set_num_threads(args.threads)
        try:
            common = dict(seed=args.seed, device=args.device, backend=args.backend, out=out, progress=not args.no_progress)
            if args.pixels:
                table, _ = demos.run_pixel_demo(env_name=args.task, horizon=args.horizon, problems=args.problems or 16,
                                          weights_dir=args.pixel_weights, mpc=args.mpc, replan_every=args.replan_every,
                                          replan_iters_scale=args.replan_iters, **common)
            elif args.task.startswith("pointmaze"):
                table, _ = demos.run_maze_demo(env_name=args.task, horizon=25 if args.horizon is None else args.horizon, problems=8 if args.problems is None else args.problems,
                                         replan_every=args.replan_every, replan_iters_scale=args.replan_iters, **common)
            else:
                table, _ = demos.run_demo(task_name=args.task, horizon=60 if args.horizon is None else args.horizon, problems=16 if args.problems is None else args.problems,
                                    particles=args.particles, **common)
        finally:
            torch.set_num_threads(threads)  # a caller in the same process (a test) keeps its own
        print(table)
        print(f"\nwrote {out}")
    return 0
