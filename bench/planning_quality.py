"""Planning quality on the real tasks (PointMaze, Push-T) with the shipped world models.

For every environment and horizon:

1. sweep: every setting of every planner family (GRASP, GD, CEM, MPPI; ``grasp_kernels.quality``) plans
   the tuning pairs (seed 1000) open loop; the best setting per family (most successes, then smallest
   median error) is chosen per horizon, as the paper tunes per horizon;
2. held out: the chosen setting plans the held-out pairs (seed 2000) once; so do GRASP with one chain
   at its chosen setting and that chain's ablations (no noise, no stop-gradient, no sync);
3. equal wall-clock budget (horizons in ``--equal-time-horizons``): every family re-plans the held-out pairs with its iteration count scaled so
   that its wall time matches GRASP's (a separate configuration, evaluated once);
4. closed loop (horizons in ``--mpc-horizons``): MPC in the simulator with each family's chosen setting
   (``--mpc-iters-scale`` of its iterations per replan, warm-started), success by the environment.

Open-loop success: the model rollout's final state lies in the goal region (PointMaze: within 0.45 of the
goal position; Push-T: block within 20 px and pi/9 of the goal pose). Writes
``planning_quality_<env>_<tag>.md``, ``.json`` and ``.png`` (success vs horizon) under ``--out-dir``.

    python bench/planning_quality.py --env pointmaze-medium pusht --out-dir bench/results   # full run
    python bench/planning_quality.py --quick --out-dir out                                   # smoke (CI)
    python bench/planning_quality.py --merge a.json b.json --tag T --out-dir bench/results    # one table from runs of one env

``--merge`` renders the tables and the plot of several runs of one environment (e.g. a horizon run
separately) as one report; the runs must not share a horizon.

Planning from pixels (``--pixels``): every planner plans in the latent of the environment's pixel
world model (:class:`grasp_kernels.models.pixel.PixelWorldModel`, ``grasp_kernels/weights/<env>-pixels.safetensors``
or ``--pixel-weights DIR``) from the encoded start frames to the encoded goal image
(:class:`grasp_kernels.pixel_tasks.PixelObservation`); the open-loop tables use DINO-WM's protocol instead
(:func:`grasp_kernels.quality.executed_open_loop`: plan once, execute all H actions in the simulator, success
= the TRUE final state lies in the goal region), on pairs whose starts and goals are in the picture
(:func:`grasp_kernels.pixel_tasks.pixel_pairs`), GRASP swept over ``PIXEL_GRASP_SWEEP`` on
``pixel_grasp_config``. Beside the held-out table: the shipped state model, its own sweep of the state
settings on the same tuning pairs, on the same held-out pairs and protocol. Writes
``planning_quality_pixels_<env>_<tag>.{md,json,png}``; default horizons PointMaze 25 50 100, Push-T 10 25 50.

    python bench/planning_quality.py --pixels --env pointmaze-medium pusht --out-dir bench/results
    python bench/planning_quality.py --pixels --quick --pixel-weights /tmp/tiny-pm --out-dir out   # smoke

Sharded over processes (``torchrun --nproc-per-node 4 bench/planning_quality.py ...``): every rank plans
its contiguous slice of every pair set (open loop, and the MPC episodes in its own simulators) with
the randomness those pairs get in one process, the outcomes are gathered, and rank 0 writes the same
tables as one process; wall times are the slowest rank's.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# the runs, the reports (markdown, JSON, --merge) and the plot: bench/_quality_run.py, _quality_report.py,
# _quality_plot.py; this file is the command line
from grasp_kernels.envs.sim import check_env_name, resolve_action_repeat  # noqa: E402
from grasp_kernels.envs.tasks import PROTOCOLS, dino_wm_budget_steps, dino_wm_goal_steps  # noqa: E402
from grasp_kernels.presets import GRASP_SWEEP, PIXEL_GRASP_SWEEP  # noqa: E402
from grasp_kernels.quality import FAMILIES  # noqa: E402

from _quality_report import merge, report_name  # noqa: E402
from _quality_run import TEST_SEED, TUNE_SEED, join_torchrun, load_pixels, load_state_model, log, run_env  # noqa: E402


def resolve_protocol_defaults(args: argparse.Namespace) -> None:
    """The defaults that depend on ``--protocol``, set in ``args``. ``region``: MPC replans every 5 model steps
    with 0.25 x the chosen iterations. ``dino-wm`` (Push-T alone, else ``SystemExit``): DINO-WM's evaluation,
    horizon the goal's distance (:func:`dino_wm_goal_steps`), an MPC table at every horizon, episodes of
    :func:`dino_wm_budget_steps`, and its MPC's shape: every planned action executed before the next plan
    (``replan_every`` None: each MPC horizon's own) with the chosen iterations. A terminal cost replanned every
    few steps keeps putting the arrival off (bench/results/README.md, "DINO-WM's protocol on Push-T")."""
    if args.protocol != "dino-wm":
        args.replan_every = args.replan_every or 5
        args.mpc_iters_scale = 0.25 if args.mpc_iters_scale is None else args.mpc_iters_scale
        return
    if args.env != ["pusht"]:
        raise SystemExit(f"--protocol dino-wm: Push-T's evaluation; --env must be pusht alone, got {args.env}")
    repeat = resolve_action_repeat("pusht", args.action_repeat)
    args.horizons = args.horizons or [dino_wm_goal_steps(repeat)]
    args.mpc_horizons = list(args.horizons) if args.mpc_horizons is None else args.mpc_horizons
    args.mpc_steps = args.mpc_steps or dino_wm_budget_steps(repeat)
    args.mpc_iters_scale = 1.0 if args.mpc_iters_scale is None else args.mpc_iters_scale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", nargs="+", default=["pointmaze-medium", "pusht"])
    parser.add_argument("--horizons", nargs="+", type=int, help="default: PointMaze 25 50 100 200 (--pixels: 25 50 100), Push-T 10 25 50")
    parser.add_argument("--mpc-horizons", nargs="*", type=int, help="horizons with a closed-loop table (default: PointMaze 50, Push-T 25)")
    parser.add_argument("--equal-time-horizons", nargs="*", type=int, help="horizons with an equal-time table (default: the MPC horizons)")
    parser.add_argument("--trials", type=int, default=50, help="held-out pairs per horizon")
    parser.add_argument("--tune-trials", type=int, default=16, help="tuning pairs per horizon")
    parser.add_argument("--samples", type=int, default=100, help="CEM/MPPI samples per iteration")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--replan-every", type=int, default=None,
                        help="closed loop: model steps executed per plan (default 5; --protocol dino-wm: the horizon, "
                             "DINO-WM's MPC executes every planned action)")
    parser.add_argument("--mpc-iters-scale", type=float, default=None,
                        help="closed loop: the chosen iterations per replan x this (default 0.25; --protocol dino-wm: 1)")
    parser.add_argument("--mpc-steps", type=int, help="model steps per MPC episode (default 2 x H)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--closed-loop-only", action="store_true",
                        help="sweep on the tuning pairs, then only the closed-loop table (no held-out open loop, ablations, equal time)")
    parser.add_argument("--mpc-warm-start-states", action="store_true",
                        help="closed loop: also warm-start GRASP's virtual states (MPCConfig.warm_start_states)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: PointMaze-Medium (Push-T with --protocol dino-wm), H=10, 3 pairs, tiny budgets")
    parser.add_argument("--out-dir", type=Path, default=Path("out"))
    parser.add_argument("--tag", default=f"cpu_{datetime.date.today().isoformat()}")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON", help="render these reports of one env as one (no planning)")
    parser.add_argument("--pixels", action="store_true",
                        help="plan in the pixel world model's latent from the encoded frames, executed open loop in the "
                             "simulator, beside the state model under the same protocol (default horizons: PointMaze 25 50 100, "
                             "Push-T 10 25 50)")
    parser.add_argument("--pixel-weights", type=Path, metavar="DIR",
                        help="with --pixels: read DIR/<env>-pixels.safetensors instead of the shipped pixel model")
    parser.add_argument("--action-repeat", type=int, default=None, metavar="R",
                        help="simulator steps per model step, the frame skip (default: the environment's); the pairs, "
                             "the simulators and the models must all be of this time step (a model file of another "
                             "one is refused)")
    parser.add_argument("--weights", default=None, metavar="DIR",
                        help="read the state world model DIR/<env>.safetensors instead of the shipped one")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="region",
                        help="success rule and pairs (grasp_kernels.envs.tasks): 'region' (default), or Push-T's "
                             "'dino-wm': goals 25 simulator steps (rounded to model steps) along an exploratory "
                             "trajectory, DINO-WM's eval_state rule open and closed loop (met after any model step), "
                             "default horizon the goal's distance, MPC at every horizon, episodes of 50 simulator steps")
    parser.add_argument("--grasp-settings", nargs="+", metavar="NAME",
                        help="sweep only these GRASP settings (names of the GRASP sweep; with --pixels the state model's "
                             "sweep beside keeps those of them it has; e.g. a probe of new variants with --families GRASP "
                             "--closed-loop-only --mpc-horizons, or a horizon too slow for the CEM sync)")
    args = parser.parse_args(argv)
    if args.pixel_weights is not None and not args.pixels:
        raise SystemExit("--pixel-weights: needs --pixels (it names the pixel world models' directory)")
    if args.pixel_weights is not None and not args.pixel_weights.is_dir():
        raise SystemExit(f"--pixel-weights: {args.pixel_weights} is not a directory (it holds <env>-pixels.safetensors)")
    for flag in ("replan_every", "mpc_steps"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise SystemExit(f"--{flag.replace('_', '-')}: must be an int >= 1, got {getattr(args, flag)}")
    if args.action_repeat is not None and args.action_repeat < 1:
        raise SystemExit(f"--action-repeat: must be an int >= 1, got {args.action_repeat}")
    if args.weights is not None and not Path(args.weights).is_dir():
        raise SystemExit(f"--weights: {args.weights} is not a directory (it holds <env>.safetensors)")
    if args.grasp_settings:
        known = PIXEL_GRASP_SWEEP if args.pixels else GRASP_SWEEP
        unknown = [name for name in args.grasp_settings if name not in known]
        if unknown:
            raise SystemExit(f"--grasp-settings: unknown setting(s) {unknown}; the GRASP sweep has {list(known)}")
    if args.merge and args.pixels:
        raise SystemExit("--merge: --pixels does not apply (a report records whether it planned from pixels)")
    rank, ranks = join_torchrun()  # launched by torchrun: shard the pairs
    if args.merge:
        if rank != 0:  # no planning to share
            return 0
        report = merge(args.merge, args)
        log(Path(f"{args.out_dir}/{report_name(report, args.tag)}.md").read_text())
        return 0
    if args.quick:
        args.env = ["pusht" if args.protocol == "dino-wm" else "pointmaze-medium"]
        args.horizons, args.mpc_horizons = [10], [10]
        args.trials, args.tune_trials, args.mpc_steps, args.replan_every, args.mpc_iters_scale = 3, 2, 6, 3, 1.0
    if args.threads:
        torch.set_num_threads(args.threads)
    args.env = [check_env_name(name) for name in args.env]
    resolve_protocol_defaults(args)
    if args.pixels:
        for env_name in args.env:  # every model file before the first plan, not after the first environment's hours
            load_pixels(env_name, args)
    for env_name in args.env:
        load_state_model(env_name, args)
    state_words = "shipped MLPDynamics" if args.weights is None else f"MLPDynamics ({args.weights}/<env>.safetensors)"
    model_words = (f"pixel world model (planning in its latent; file below) beside the {state_words} state model"
                   if args.pixels else f"{state_words} world model")
    header = (
        f"{datetime.date.today().isoformat()}, CPU {platform.machine()} ({torch.get_num_threads()} threads), "
        f"torch {torch.__version__}, {model_words}; tuning pairs: {args.tune_trials} (seed {TUNE_SEED}), "
        f"held-out pairs: {args.trials} (seed {TEST_SEED}); CEM/MPPI {args.samples if not args.quick else 16} samples; "
        f"every planner plans all pairs as one batch; MPC warm-starts the actions"
        f"{' and GRASP' + chr(39) + 's virtual states' if args.mpc_warm_start_states else ''} (shifted previous plan)."
        + (f" Pairs sharded over {ranks} processes (torchrun); wall times are the slowest rank's." if ranks > 1 else "")
        + (" QUICK SMOKE RUN: budgets too small to mean anything." if args.quick else "")
    )
    for env_name in args.env:
        report = run_env(env_name, args, header)
        if rank == 0:
            log(Path(f"{args.out_dir}/{report_name(report, args.tag)}.md").read_text())
    if ranks > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
