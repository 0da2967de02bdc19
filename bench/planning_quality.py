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

Sharded over processes (``torchrun --nproc-per-node 4 bench/planning_quality.py ...``): every rank plans
its contiguous slice of every pair set (open loop, and the MPC episodes in its own simulators) with
the randomness those pairs get in one process, the outcomes are gathered, and rank 0 writes the same
tables as one process; wall times are the slowest rank's.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from grasp_kernels.envs.sim import check_env_name  # noqa: E402
from grasp_kernels.envs.tasks import make_pairs  # noqa: E402
from grasp_kernels.models.zoo import load_world_model  # noqa: E402
from grasp_kernels.quality import (  # noqa: E402
    FAMILIES,
    Score,
    ablation_factories,
    closed_loop,
    open_loop,
    pick_best,
    planner_settings,
)

DEFAULT_HORIZONS = {"pusht": [10, 25, 50]}
POINTMAZE_HORIZONS = [25, 50, 100, 200]
DEFAULT_MPC = {"pusht": 25}
POINTMAZE_MPC = 50
TUNE_SEED, TEST_SEED = 1000, 2000
# the arguments that change what a report measures: --merge only joins reports that agree on all of them
SETTINGS = ("trials", "tune_trials", "samples", "families", "replan_every", "mpc_iters_scale", "mpc_steps", "quick",
            "mpc_warm_start_states")


RANK, RANKS = 0, 1  # this process in a torchrun launch (set by main); only rank 0 prints and writes


def log(line: str) -> None:
    if RANK == 0:
        print(line, flush=True)


def write(report: dict, args: argparse.Namespace, header: str, seconds: float | None = None) -> None:
    """The markdown table, the raw JSON and the plot of ``report`` under ``args.out_dir``; ``seconds``:
    the run time (default: since ``report["started"]``). Rank 0 only."""
    if RANK != 0:
        return
    stem = args.out_dir / f"planning_quality_{report['env']}_{args.tag}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    if seconds is None:
        seconds = time.perf_counter() - report["started"]
    Path(f"{stem}.md").write_text(markdown(report, args, header + f" Run time {seconds:.0f} s."))
    saved = {k: v for k, v in report.items() if k != "started"} | {"seconds": seconds, "header": header}
    saved.setdefault("settings", {name: getattr(args, name) for name in SETTINGS})
    Path(f"{stem}.json").write_text(json.dumps(saved, indent=1))
    if any(cell["held_out"] for cell in report["horizons"].values()):  # not for --closed-loop-only
        plot(report, Path(f"{stem}.png"))


def run_env(env_name: str, args: argparse.Namespace, header: str) -> dict:
    """All tables of one environment, as a JSON-able dict."""
    model = load_world_model(env_name)
    horizons = args.horizons or DEFAULT_HORIZONS.get(env_name, POINTMAZE_HORIZONS)
    mpc_horizons = args.mpc_horizons if args.mpc_horizons is not None else [DEFAULT_MPC.get(env_name, POINTMAZE_MPC)]
    equal_time_horizons = args.equal_time_horizons if args.equal_time_horizons is not None else mpc_horizons
    report: dict = {"env": env_name, "horizons": {}, "started": time.perf_counter()}
    for horizon in horizons:
        log(f"== {env_name} horizon {horizon}")
        tune = make_pairs(env_name, args.tune_trials, TUNE_SEED, horizon)
        test = make_pairs(env_name, args.trials, TEST_SEED, horizon)
        settings = planner_settings(model, model.action_dim, horizon, quick=args.quick, samples=args.samples)
        cell: dict = {"sweep": {}, "held_out": {}, "ablations": {}, "equal_time": {}, "closed_loop": {}}
        chosen = {}
        for family in args.families:
            scores = {}
            for setting, factory in settings[family].items():
                scores[setting], _ = open_loop(env_name, factory(1.0), tune, across_ranks=True)
                cell["sweep"].setdefault(family, {})[setting] = dataclasses.asdict(scores[setting])
                log(f"  sweep {family:5s} {setting:24s} {scores[setting].cell()}  err {scores[setting].median_error:.3f}  {scores[setting].wall_time:.1f}s")
            best = pick_best(scores)
            chosen[family] = (best, settings[family][best])
            if args.closed_loop_only:
                continue
            score, _ = open_loop(env_name, chosen[family][1](1.0), test, across_ranks=True)
            cell["held_out"][family] = {"setting": best, **dataclasses.asdict(score)}
            log(f"  held-out {family:5s} [{best}] {score.cell()}  err {score.median_error:.3f}  {score.wall_time:.1f}s")
        if "GRASP" in chosen and not args.closed_loop_only:
            for name, factory in ablation_factories(model, model.action_dim, chosen["GRASP"][1]).items():
                score, _ = open_loop(env_name, factory(1.0), test, across_ranks=True)
                cell["ablations"][name] = dataclasses.asdict(score)
                log(f"  ablation {name:18s} {score.cell()}  err {score.median_error:.3f}  {score.wall_time:.1f}s")
        if "GRASP" in chosen and horizon in equal_time_horizons and not args.closed_loop_only:
            budget = cell["held_out"]["GRASP"]["wall_time"]
            for family in args.families:
                if family == "GRASP":
                    continue
                scale = budget / max(cell["held_out"][family]["wall_time"], 1e-9)
                score, _ = open_loop(env_name, chosen[family][1](scale), test, across_ranks=True)
                cell["equal_time"][family] = {"scale": scale, **dataclasses.asdict(score)}
                log(f"  equal-time {family:5s} x{scale:.2f} iters {score.iters}: {score.cell()}  {score.wall_time:.1f}s")
        if horizon in mpc_horizons:
            for family in args.families:
                planner = chosen[family][1](args.mpc_iters_scale)
                score, _ = closed_loop(
                    env_name, planner, test, max_steps=args.mpc_steps or 2 * horizon, replan_every=args.replan_every,
                    warm_start_states=args.mpc_warm_start_states, across_ranks=True,
                )
                cell["closed_loop"][family] = {"setting": chosen[family][0], **dataclasses.asdict(score)}
                log(f"  closed-loop {family:5s} {score.cell()}  err {score.median_error:.3f}  {score.wall_time:.1f}s")
        report["horizons"][str(horizon)] = cell
        write(report, args, header)  # after every horizon, so that a cut run leaves what it measured
    return report


def as_score(entry: dict) -> Score:
    """The Score of a report entry (which may carry more keys, e.g. the chosen setting)."""
    return Score(**{f.name: entry[f.name] for f in dataclasses.fields(Score)})


def markdown(report: dict, args: argparse.Namespace, header: str) -> str:
    env = report["env"]
    unit = "px (block position)" if env == "pusht" else "maze units (position)"
    horizons = list(report["horizons"])
    lines = [f"# Planning quality: {env}", "", header, "",
             f"Error column: median final distance to the goal in {unit}. Wall time: seconds per batch of all pairs.", ""]

    def table(title: str, section: str, rows: list[str], note: str = "") -> None:
        present = [h for h in horizons if report["horizons"][h][section]]
        if not present:
            return
        lines.extend([f"## {title}", ""] + ([note, ""] if note else []))
        lines.append("| planner | " + " | ".join(f"H={h}" for h in present) + " |")
        lines.append("|---|" + "---|" * len(present))
        for row in rows:
            cells = []
            for h in present:
                entry = report["horizons"][h][section].get(row)
                if entry is None:
                    cells.append("-")
                    continue
                s = as_score(entry)
                extra = f" [{entry['setting']}]" if "setting" in entry and section == "held_out" else ""
                extra += f" x{entry['scale']:.2f} ({s.iters} it)" if "scale" in entry else ""
                cells.append(f"{s.cell()}, err {s.median_error:.3g}, {s.wall_time:.1f}s{extra}")
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        lines.append("")

    families = list(args.families)
    ablations = sorted({name for h in horizons for name in report["horizons"][h]["ablations"]})
    table("Open loop in the model, held-out pairs (chosen setting per planner and horizon)", "held_out",
          families)
    table("GRASP with one chain (chosen setting) and its ablations, held-out pairs", "ablations", ablations)
    table("Equal wall-clock budget (iterations scaled to GRASP's wall time), held-out pairs", "equal_time",
          [f for f in families if f != "GRASP"])
    table("Closed loop: MPC in the simulator, success by the environment's criterion", "closed_loop", families,
          f"Replanning every {args.replan_every} model steps, warm-started, {args.mpc_iters_scale:g} x the "
          f"chosen iterations per replan, at most {args.mpc_steps or '2 x H'} model steps.")
    lines += ["## Sweep on the tuning pairs", "", "| H | planner | setting | success | median error | wall (s) |",
              "|---|---|---|---|---|---|"]
    for h in horizons:
        for family, settings in report["horizons"][h]["sweep"].items():
            for setting, entry in settings.items():
                s = as_score(entry)
                lines.append(f"| {h} | {family} | {setting} | {s.cell()} | {s.median_error:.3g} | {s.wall_time:.1f} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    from grasp_kernels.plotting import pyplot, save_figure
    from grasp_kernels.quality import wilson_interval

    plt = pyplot()

    horizons = [int(h) for h in report["horizons"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    rows = {family: "held_out" for family in FAMILIES} | {name: "ablations" for h in report["horizons"].values() for name in h["ablations"]}
    for row, section in rows.items():
        points = [(int(h), report["horizons"][h][section].get(row)) for h in report["horizons"]]
        points = [(h, e) for h, e in points if e]
        if not points:
            continue
        xs = [h for h, _ in points]
        ys = [100 * e["successes"] / e["trials"] for _, e in points]
        ci = [wilson_interval(e["successes"], e["trials"]) for _, e in points]
        err = [[y - lo for y, (lo, _) in zip(ys, ci)], [hi - y for y, (_, hi) in zip(ys, ci)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=row, linestyle="--" if section == "ablations" else "-")
    ax.set_xscale("log")
    ax.minorticks_off()  # the horizons are the only ticks
    ax.set_xticks(horizons, [str(h) for h in horizons])
    ax.set_xlabel("horizon H (model steps)")
    ax.set_ylabel("open-loop success % (95% CI)")
    ax.set_title(f"{report['env']}: success vs horizon (held-out pairs)")
    ax.set_ylim(-5, 105)
    ax.legend(fontsize=7)
    save_figure(fig, path, dpi=120)


def merge(paths: list[Path], args: argparse.Namespace) -> dict:
    """One report (horizons in increasing order) from the JSON reports of several runs of one env;
    written like a run's report, its header naming the sources."""
    reports = []
    for path in paths:
        try:
            reports.append((path, json.loads(Path(path).read_text())))
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"--merge: cannot read the report {path}: {exc}") from None
    envs = {r.get("env") for _, r in reports}
    if len(envs) != 1:
        raise SystemExit(f"--merge: the reports must be of one environment, got {sorted(map(str, envs))}")
    settings = reports[0][1].get("settings")
    for path, r in reports:
        if not isinstance(r.get("settings"), dict) or not isinstance(r.get("horizons"), dict):
            raise SystemExit(f"--merge: {path} records no run settings or horizons (not a planning_quality report?)")
        differ = sorted(k for k in set(settings) | set(r["settings"]) if settings.get(k) != r["settings"].get(k))
        if differ:
            raise SystemExit(f"--merge: {path} was run with other settings than {reports[0][0]}: {', '.join(differ)}")
    for name, value in settings.items():  # the tables' notes (replanning, budgets) describe the runs
        setattr(args, name, value)
    cells: dict = {}
    for path, r in reports:
        for horizon, cell in r["horizons"].items():
            if horizon in cells:
                raise SystemExit(f"--merge: horizon {horizon} is in more than one report (second: {path})")
            cells[horizon] = cell
    sources = "; ".join(
        f"{Path(p).name} (H={', '.join(r['horizons'])}; run time {r.get('seconds', float('nan')):.0f} s)" for p, r in reports
    )
    first_header = reports[0][1].get("header", "(header not recorded)")
    header = f"Merged from {len(reports)} runs: {sources}. Runs' setting: {first_header}"
    report = {"env": envs.pop(), "horizons": {h: cells[h] for h in sorted(cells, key=int)}, "settings": settings}
    write(report, args, header, seconds=sum(r.get("seconds", 0.0) for _, r in reports))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", nargs="+", default=["pointmaze-medium", "pusht"])
    parser.add_argument("--horizons", nargs="+", type=int, help="default: PointMaze 25 50 100 200, Push-T 10 25 50")
    parser.add_argument("--mpc-horizons", nargs="*", type=int, help="horizons with a closed-loop table (default: PointMaze 50, Push-T 25)")
    parser.add_argument("--equal-time-horizons", nargs="*", type=int, help="horizons with an equal-time table (default: the MPC horizons)")
    parser.add_argument("--trials", type=int, default=50, help="held-out pairs per horizon")
    parser.add_argument("--tune-trials", type=int, default=16, help="tuning pairs per horizon")
    parser.add_argument("--samples", type=int, default=100, help="CEM/MPPI samples per iteration")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--replan-every", type=int, default=5)
    parser.add_argument("--mpc-iters-scale", type=float, default=0.25)
    parser.add_argument("--mpc-steps", type=int, help="model steps per MPC episode (default 2 x H)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--closed-loop-only", action="store_true",
                        help="sweep on the tuning pairs, then only the closed-loop table (no held-out open loop, ablations, equal time)")
    parser.add_argument("--mpc-warm-start-states", action="store_true",
                        help="closed loop: also warm-start GRASP's virtual states (MPCConfig.warm_start_states)")
    parser.add_argument("--quick", action="store_true", help="smoke run: PointMaze-Medium, H=10, 3 pairs, tiny budgets")
    parser.add_argument("--out-dir", type=Path, default=Path("out"))
    parser.add_argument("--tag", default=f"cpu_{datetime.date.today().isoformat()}")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON", help="render these reports of one env as one (no planning)")
    args = parser.parse_args(argv)
    global RANK, RANKS
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # launched by torchrun: shard the pairs
        from grasp_kernels.distributed import init

        RANK, RANKS = init()
    if args.merge:
        if RANK != 0:  # no planning to share
            return 0
        report = merge(args.merge, args)
        log(Path(f"{args.out_dir}/planning_quality_{report['env']}_{args.tag}.md").read_text())
        return 0
    if args.quick:
        args.env, args.horizons, args.mpc_horizons = ["pointmaze-medium"], [10], [10]
        args.trials, args.tune_trials, args.mpc_steps, args.replan_every, args.mpc_iters_scale = 3, 2, 6, 3, 1.0
    if args.threads:
        torch.set_num_threads(args.threads)
    args.env = [check_env_name(name) for name in args.env]
    header = (
        f"{datetime.date.today().isoformat()}, CPU {platform.machine()} ({torch.get_num_threads()} threads), "
        f"torch {torch.__version__}, shipped MLPDynamics world model; tuning pairs: {args.tune_trials} (seed {TUNE_SEED}), "
        f"held-out pairs: {args.trials} (seed {TEST_SEED}); CEM/MPPI {args.samples if not args.quick else 16} samples; "
        f"every planner plans all pairs as one batch; MPC warm-starts the actions"
        f"{' and GRASP' + chr(39) + 's virtual states' if args.mpc_warm_start_states else ''} (shifted previous plan)."
        + (f" Pairs sharded over {RANKS} processes (torchrun); wall times are the slowest rank's." if RANKS > 1 else "")
        + (" QUICK SMOKE RUN: budgets too small to mean anything." if args.quick else "")
    )
    for env_name in args.env:
        run_env(env_name, args, header)
        if RANK == 0:
            log(Path(f"{args.out_dir}/planning_quality_{env_name}_{args.tag}.md").read_text())
    if RANKS > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
