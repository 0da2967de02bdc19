"""Which planner at my budget? Success against wall time per plan for GRASP, GD, CEM and MPPI.

For one task (an environment, from states or ``--pixels``, and a horizon) every setting of every family plans
the same held-out pairs at several wall-time budgets, given as multiples of CEM's own time (CEM at its
default setting, ``var 1.0``, and DINO-WM's 30 iterations, timed on the same pairs in the same run), so the
table holds on any machine. A budget is reached by scaling the setting's work (:func:`grasp_kernels.quality.
grasp_factory`: GRASP's lifted iterations, sync steps and CEM start; the others' iterations): each setting's
time per unit of work is first timed on a few calibration pairs, and the scale for budget ``b`` is
``b / (its time / CEM's time)``; budgets run smallest first, and once two of them have run the time model is
affine, ``time = fixed + per_unit x work``, fitted to the points measured so far, work being the iterations a
point really ran relative to scale 1's (:func:`next_scale`: a setting with a fixed cost, such as GRASP's CEM
sync, is then scaled above its floor rather than collapsing to its least work). Every point records the wall
time it really took.

A family's frontier at budget ``b`` is its best success among the points that took at most ``b`` times CEM's
time (``--slack`` allows for timing noise); GRASP leads from the smallest budget from which its frontier is
at least every other family's at every larger budget. The success of a plan is judged as in
``bench/planning_quality.py`` (from states: the world model's rollout reaches the goal region; from pixels:
the planned actions executed in the simulator).

    python bench/anytime.py --env pointmaze-medium --pixels --horizons 25 --out-dir bench/results
    python bench/anytime.py --env pointmaze-medium --horizons 50 100 --grasp-settings "x8, sync 50 steps"
    python bench/anytime.py --quick          # smoke run: tiny budgets and pairs
    # profile some families now and others later: the later run's report holds both (ratios are per run)
    python bench/anytime.py --env pusht --horizons 25 --families GRASP --merge out/anytime_pusht_<tag>.json

Writes ``anytime_[pixels_]<env>_<tag>.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import json
import platform
import pprint
import sys
import time
from pathlib import Path

import _bench_env  # noqa: F401  (first: puts the repository on sys.path)
import torch

from grasp_kernels.envs.sim import check_env_name, resolve_action_repeat
from grasp_kernels.envs.tasks import make_pairs
from grasp_kernels.presets import GRASP_SWEEP, PIXEL_GRASP_SWEEP
from grasp_kernels.quality import FAMILIES, Score, executed_open_loop, open_loop, planner_settings, wilson_interval

from _quality_report import action_repeat as report_action_repeat
from _quality_run import TEST_SEED, load_pixels, load_state_model, log, model_record, restrict_grasp

BUDGETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
REFERENCE = ("CEM", "var 1.0")  # CEM's own time: DINO-WM's CEM defaults (var_scale 1, 30 iterations)


@dataclasses.dataclass
class Point:
    """One setting at one budget: the scale of its work, the wall time it took as a multiple of CEM's time,
    and its success on the held-out pairs."""

    family: str
    setting: str
    budget: float
    scale: float
    ratio: float
    successes: int
    trials: int
    wall_time: float
    iters: int


def frontier(points: list[Point], budgets: tuple[float, ...], slack: float) -> dict[str, dict[str, dict]]:
    """Per family and budget ``b``: its best point (most successes, then least time) among those that took at
    most ``b * slack`` times CEM's time; ``{}`` where none fits. Keys of the inner dict are ``str(b)``."""
    out: dict[str, dict[str, dict]] = {}
    for family in dict.fromkeys(p.family for p in points):
        out[family] = {}
        for budget in budgets:
            fits = [p for p in points if p.family == family and p.ratio <= budget * slack]
            if fits:
                best = min(fits, key=lambda p: (-p.successes, p.ratio))
                out[family][str(budget)] = dataclasses.asdict(best)
    return out


def grasp_leads_from(front: dict[str, dict[str, dict]], budgets: tuple[float, ...]) -> float | None:
    """The smallest budget from which GRASP's frontier success is >= every other family's at every larger budget
    (a family with no point within a budget counts as 0 there); None if GRASP does not lead at the largest."""
    def successes(family: str, budget: float) -> int:
        entry = front.get(family, {}).get(str(budget))
        return entry["successes"] if entry else 0

    leads_from = None
    for budget in reversed(budgets):
        others = max((successes(f, budget) for f in front if f != "GRASP"), default=0)
        if successes("GRASP", budget) >= others and "GRASP" in front:
            leads_from = budget
        else:
            break
    return leads_from


def merge_points(report: dict, earlier: list[dict]) -> None:
    """Add to each horizon of ``report`` the points of ``earlier`` reports of the same task (same environment,
    observation, horizon and pairs) whose family and setting it did not profile itself, then recompute the
    frontier and the lead. A point's ratio is to its own run's CEM time, so runs made apart combine; each
    run's CEM time is kept in ``runs``."""
    for other in earlier:
        if (other["env"], other["pixels"]) != (report["env"], report["pixels"]):
            raise ValueError(f"--merge: a report of {other['env']}{' (pixels)' * other['pixels']} cannot join "
                             f"{report['env']}{' (pixels)' * report['pixels']}")
        theirs, ours = report_action_repeat(other), report_action_repeat(report)
        if theirs != ours:
            raise ValueError(f"--merge: a report at action_repeat {theirs} cannot join one at {ours}")
    for horizon, cell in report["horizons"].items():
        cell.setdefault("runs", [{"header": report["header"], "cem_time": cell["cem_time"]}])
        for other in earlier:
            theirs = other["horizons"].get(horizon)
            if theirs is None:
                continue
            if theirs["pairs"] != cell["pairs"]:
                raise ValueError(f"--merge: H={horizon} was profiled on {theirs['pairs']} pairs there, "
                                 f"{cell['pairs']} here")
            have = {(p["family"], p["setting"]) for p in cell["points"]}
            new = [p for p in theirs["points"] if (p["family"], p["setting"]) not in have]
            if new:
                cell["points"] += new
                cell["runs"] += theirs.get("runs", [{"header": other["header"], "cem_time": theirs["cem_time"]}])
        budgets = tuple(cell["budgets"])
        cell["frontier"] = frontier([Point(**p) for p in cell["points"]], budgets, report["slack"])
        cell["grasp_leads_from"] = grasp_leads_from(cell["frontier"], budgets)


def grasp_frontier_table(report: dict) -> dict[tuple[str, str], dict[int, tuple[tuple[float, str, float], ...]]]:
    """The report's GRASP frontier as :data:`grasp_kernels.presets.GRASP_FRONTIER` holds it:
    ``{(env, observation): {horizon: ((budget, setting, scale), ...)}}``, budgets where GRASP has a point."""
    rows = {}
    for horizon, cell in report["horizons"].items():
        front = cell["frontier"].get("GRASP", {})
        rows[int(horizon)] = tuple((b, front[str(b)]["setting"], round(front[str(b)]["scale"], 4))
                                   for b in cell["budgets"] if str(b) in front)
    return {(report["env"], "pixels" if report["pixels"] else "states"): rows}


def grasp_frontier_tables(paths: list[Path]) -> dict[tuple[str, str], dict[int, tuple[tuple[float, str, float], ...]]]:
    """:func:`grasp_frontier_table` of several report files, joined per task (as presets.GRASP_FRONTIER holds them)."""
    table: dict = {}
    for path in paths:
        for task, rows in grasp_frontier_table(json.loads(Path(path).read_text())).items():
            table.setdefault(task, {}).update(rows)
    return table


def next_scale(budget: float, measured: list[tuple[float, float]], unit: float) -> float:
    """The work scale that should take ``budget`` CEM times, from the ``(scale, ratio)`` points a setting has
    measured on the held-out pairs (``unit``: its calibrated ratio at scale 1, used until one point exists).

    One scale measured: proportional (``ratio / scale`` per unit), or twice the work where that point already
    spent the budget. Two or more at distinct scales: the least-squares line ``ratio = fixed + per_unit x scale``
    (``fixed`` clamped to ``[0, 0.9 x budget]``; a line that falls with the work is noise, and the last point's
    proportional estimate is used), so that a fixed cost is not mistaken for work: a proportional update at a
    point dominated by its floor would shrink the scale of every later budget."""
    if not measured:
        return budget / unit
    scales = [s for s, _ in measured]
    if len(set(scales)) < 2:
        scale, ratio = measured[-1]
        if ratio < budget:
            return budget * scale / ratio
        # the budget is already spent at the work measured (a floor, e.g. a setting's least work): a proportional
        # update would never do more work; double it, so that the next point measures what work costs
        return 2 * scale
    n = len(measured)
    mean_s = sum(scales) / n
    mean_r = sum(r for _, r in measured) / n
    spread = sum((s - mean_s) ** 2 for s in scales)
    per_unit = sum((s - mean_s) * (r - mean_r) for s, r in measured) / spread
    fixed = mean_r - per_unit * mean_s
    if per_unit <= 0:  # timing noise swamps the work: fall back to the proportional estimate of the last point
        scale, ratio = measured[-1]
        return budget * scale / max(ratio, 1e-9)
    fixed = min(max(fixed, 0.0), 0.9 * budget)
    return (budget - fixed) / per_unit


def profile(evaluate, settings: dict, reference, pairs, calibration, budgets: tuple[float, ...],
            after_setting=None) -> tuple[list[Point], float]:
    """Every setting at every budget on ``pairs`` (module docstring), ``reference``: the factory of CEM's own
    setting (timed first, whether or not CEM is profiled); returns the points and CEM's own time.
    ``after_setting(points, cem_time)`` is called after each setting's budgets (a long run keeps its points)."""
    ref_score, _ = evaluate(reference(1.0), pairs)
    cem_time = ref_score.wall_time
    cal_ref, _ = evaluate(reference(1.0), calibration)
    log(f"  CEM's own time {cem_time:.2f} s ({ref_score.cell()}); on the calibration pairs {cal_ref.wall_time:.2f} s")
    points = []
    for family, family_settings in settings.items():
        for name, factory in family_settings.items():
            cal, _ = evaluate(factory(1.0), calibration)
            unit = cal.wall_time / max(cal_ref.wall_time, 1e-9)  # this setting's time at scale 1, in CEM times
            # (scale, ratio) on the held-out pairs, the scale being the work actually done (iterations relative to
            # scale 1's): a setting's least work (whole sync phases, one iteration) is more than a tiny nominal scale
            measured: list[tuple[float, float]] = []
            for budget in budgets:
                # the calibration pairs' estimate is off where a planner's time is not linear in the batch: the
                # points measured on these pairs take over as soon as there is one
                scale = next_scale(budget, measured, unit)
                score: Score
                if (family, name) == REFERENCE and budget == 1.0:
                    score, scale = ref_score, 1.0
                else:
                    score, _ = evaluate(factory(scale), pairs)
                point = Point(family, name, budget, scale, score.wall_time / cem_time, score.successes, score.trials,
                              score.wall_time, score.iters)
                points.append(point)
                measured.append((point.iters / cal.iters if cal.iters else scale, point.ratio))
                log(f"  {family:5s} {name:40s} b={budget:<5g} x{scale:.3g} ({point.iters} iters): "
                    f"{score.cell()} in {point.ratio:.2f} CEM times")
            if after_setting is not None:
                after_setting(points, cem_time)
    return points, cem_time


def markdown(report: dict) -> str:
    """The report: per horizon, the frontier table and where GRASP leads, then every point."""
    lines = [f"# Anytime profile: {report['env']}{' from pixels' if report['pixels'] else ' from states'}", "",
             report["header"], ""]
    for horizon, cell in report["horizons"].items():
        budgets = cell["budgets"]
        times = ", ".join(f"{run['cem_time']:.2f} s" for run in cell.get("runs", [])[1:])
        lines += [f"## H = {horizon} ({int(horizon) * report_action_repeat(report)} simulator steps)", "",
                  f"CEM's own time (the unit): {cell['cem_time']:.2f} s for {cell['pairs']} pairs"
                  f"{f' (in the merged runs: {times})' if times else ''}. "
                  f"Success % (95% interval) of each family's best setting within the budget "
                  f"(points that took at most {report['slack']:g} x the budget).", "",
                  "| family | " + " | ".join(f"{b:g}x" for b in budgets) + " |",
                  "|---|" + "---|" * len(budgets)]
        for family, row in cell["frontier"].items():
            cells = []
            for b in budgets:
                entry = row.get(str(b))
                if entry is None:
                    cells.append("-")
                    continue
                low, high = wilson_interval(entry["successes"], entry["trials"])
                cells.append(f"{100 * entry['successes'] / entry['trials']:.0f}% ({low:.0f}-{high:.0f})")
            lines.append(f"| {family} | " + " | ".join(cells) + " |")
        lead = cell["grasp_leads_from"]
        if len(cell.get("runs", [])) > 1:
            lines += ["", "The points come from these runs (each point's time is a multiple of its own run's CEM time):",
                      ""] + [f"- CEM's own time {run['cem_time']:.2f} s; {run['header']}" for run in cell["runs"][1:]]
        lines += ["", f"GRASP leads (frontier >= every other family's) from {lead:g}x CEM's time on." if lead is not None
                  else "GRASP does not lead at the largest budget.", "", "| family | setting | budget | scale | "
                  "time / CEM's | success |", "|---|---|---|---|---|---|"]
        for p in cell["points"]:
            lines.append(f"| {p['family']} | {p['setting']} | {p['budget']:g}x | {p['scale']:.3g} | {p['ratio']:.2f} | "
                         f"{p['successes']}/{p['trials']} |")
        lines.append("")
    return "\n".join(lines)


def summary(reports: list[dict]) -> str:
    """Which planner at my budget: one row per task and horizon, one column per budget, each cell the family with
    the most successes within that budget (ties: every tied family) and its success, GRASP's beside it."""
    budgets = sorted({b for r in reports for cell in r["horizons"].values() for b in cell["budgets"]})
    lines = ["| task | H | " + " | ".join(f"{b:g}x" for b in budgets) + " | GRASP leads from |",
             "|---|---|" + "---|" * (len(budgets) + 1)]
    for report in reports:
        task = f"{report['env']} ({'pixels' if report['pixels'] else 'states'})"
        for horizon, cell in report["horizons"].items():
            cells = []
            for b in budgets:
                scores = {f: row[str(b)]["successes"] / row[str(b)]["trials"] for f, row in cell["frontier"].items()
                          if str(b) in row}
                if not scores:
                    cells.append("-")
                    continue
                best = max(scores.values())
                leaders = "/".join(f for f, v in scores.items() if v == best)
                grasp = f" (GRASP {100 * scores['GRASP']:.0f}%)" if "GRASP" in scores and scores["GRASP"] < best else ""
                cells.append(f"{leaders} {100 * best:.0f}%{grasp}")
            lead = cell["grasp_leads_from"]
            lines.append(f"| {task} | {horizon} | " + " | ".join(cells) + f" | {'-' if lead is None else f'{lead:g}x'} |")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """One panel per horizon: each family's frontier success against budget (log axis) with 95% bands."""
    from grasp_kernels.plotting import pyplot, save_figure

    plt = pyplot()
    horizons = list(report["horizons"])
    fig, axes = plt.subplots(1, len(horizons), figsize=(5.5 * len(horizons), 4), squeeze=False)
    for ax, horizon in zip(axes[0], horizons):
        cell = report["horizons"][horizon]
        for family, row in cell["frontier"].items():
            xs = [b for b in cell["budgets"] if str(b) in row]
            entries = [row[str(b)] for b in xs]
            ys = [100 * e["successes"] / e["trials"] for e in entries]
            bands = [wilson_interval(e["successes"], e["trials"]) for e in entries]
            line = ax.plot(xs, ys, marker="o", label=family)[0]
            ax.fill_between(xs, [lo for lo, _ in bands], [hi for _, hi in bands], color=line.get_color(), alpha=0.15)
        ax.set_xscale("log")
        ax.set_xlabel("wall time per plan batch / CEM's own time")
        ax.set_ylabel("success % (95% band)")
        ax.set_title(f"{report['env']}{' (pixels)' if report['pixels'] else ''}, H={horizon}")
        ax.set_ylim(-5, 105)
        ax.legend(fontsize=7)
    save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="pointmaze-medium")
    parser.add_argument("--pixels", action="store_true", help="plan in the shipped pixel model's latent, executed in "
                        "the simulator")
    parser.add_argument("--pixel-weights", type=Path, metavar="DIR", help="with --pixels: DIR/<env>-pixels.safetensors")
    parser.add_argument("--action-repeat", type=int, default=None, metavar="R",
                        help="simulator steps per model step (default: the environment's); pairs, simulators and models")
    parser.add_argument("--weights", default=None, metavar="DIR",
                        help="read the state world model DIR/<env>.safetensors instead of the shipped one")
    parser.add_argument("--horizons", nargs="+", type=int, default=[25])
    parser.add_argument("--pairs", type=int, default=50, help="held-out pairs (the planning_quality test seed)")
    parser.add_argument("--calibration-pairs", type=int, default=8, help="pairs each setting is timed on first")
    parser.add_argument("--budgets", nargs="+", type=float, default=list(BUDGETS), help="multiples of CEM's own time")
    parser.add_argument("--slack", type=float, default=1.25, help="a point counts within budget b if it took <= b x this")
    parser.add_argument("--samples", type=int, default=100, help="CEM/MPPI samples per iteration")
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=FAMILIES,
                        help="the families to profile (none: only CEM's own time, for --merge's reports)")
    parser.add_argument("--grasp-settings", nargs="+", metavar="NAME", help="profile only these GRASP settings")
    parser.add_argument("--baseline-settings", nargs="+", metavar="NAME",
                        help="profile only these settings of GD, CEM and MPPI (e.g. 'var 1.0' 'lr 0.1')")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke run: H=10, 3 pairs, budgets 0.5 1 2, tiny sweeps")
    parser.add_argument("--merge", nargs="+", type=Path, default=[], metavar="JSON",
                        help="earlier reports of the same task whose other settings' points join this one's")
    parser.add_argument("--out-dir", type=Path, default=Path("out"))
    parser.add_argument("--tag", default=f"cpu_{datetime.date.today().isoformat()}")
    parser.add_argument("--print-presets", nargs="+", type=Path, metavar="JSON",
                        help="print GRASP's frontier of these reports as presets.GRASP_FRONTIER holds it, and exit")
    parser.add_argument("--summary", nargs="+", type=Path, metavar="JSON",
                        help="print the which-planner-at-my-budget table of these reports, and exit")
    args = parser.parse_args(argv)
    if args.summary:
        print(summary([json.loads(path.read_text()) for path in args.summary]))
        return 0
    if args.print_presets:
        print(pprint.pformat(grasp_frontier_tables(args.print_presets), width=118, sort_dicts=True))
        return 0
    env_name = check_env_name(args.env)
    if any(not b > 0 for b in args.budgets):
        parser.error(f"--budgets must be > 0, got {args.budgets}")
    if not args.slack >= 1:
        parser.error(f"--slack must be >= 1, got {args.slack}")
    if args.quick:
        args.horizons, args.pairs, args.calibration_pairs, args.budgets = [10], 3, 2, [0.5, 1.0, 2.0]
    earlier = []
    for path in args.merge:
        try:
            earlier.append(json.loads(path.read_text()))
        except (OSError, ValueError) as err:
            parser.error(f"--merge: cannot read {path}: {err}")
    budgets = tuple(sorted(args.budgets))
    torch.set_num_threads(args.threads)
    header = (f"Machine: {platform.processor() or platform.machine()}, CPU, torch {torch.__version__}, "
              f"{args.threads} thread(s); date: {datetime.date.today().isoformat()}; command: "
              f"`python bench/anytime.py {' '.join(sys.argv[1:] if argv is None else argv)}`")
    if args.action_repeat is not None and args.action_repeat < 1:
        parser.error(f"--action-repeat: must be an int >= 1, got {args.action_repeat}")
    repeat = resolve_action_repeat(env_name, args.action_repeat)
    report: dict = {"env": env_name, "pixels": args.pixels, "header": header, "slack": args.slack,
                    "action_repeat": repeat, "horizons": {}}
    known = PIXEL_GRASP_SWEEP if args.pixels else GRASP_SWEEP
    unknown = [n for n in args.grasp_settings or [] if n not in known]
    if unknown:
        parser.error(f"--grasp-settings: unknown {unknown}; known: {list(known)}")
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.pixels:
            from grasp_kernels.pixel_tasks import PixelObservation, pixel_grasp_config, pixel_pairs

            pixel_model, path = load_pixels(env_name, args)
            report["model"] = model_record(path)
            model = pixel_model.dynamics
            observation = stack.enter_context(PixelObservation(pixel_model))
            make = functools.partial(pixel_pairs, action_repeat=repeat)
            evaluate = functools.partial(executed_open_loop, env_name, observation=observation)

            def settings_of(horizon: int) -> dict:
                return planner_settings(model, model.action_dim, horizon, quick=args.quick, samples=args.samples,
                                        base=pixel_grasp_config(horizon), grasp_sweep=PIXEL_GRASP_SWEEP)
        else:
            model, path = load_state_model(env_name, args)
            report["state_model"] = model_record(path)
            make = functools.partial(make_pairs, action_repeat=repeat)
            evaluate = functools.partial(open_loop, env_name)

            def settings_of(horizon: int) -> dict:
                return planner_settings(model, model.action_dim, horizon, quick=args.quick, samples=args.samples)

        for horizon in args.horizons:
            log(f"== {env_name}{' (pixels)' if args.pixels else ''} H={horizon}")
            pairs = make(env_name, args.pairs, TEST_SEED, horizon)
            calibration = make(env_name, args.calibration_pairs, TEST_SEED + 1, horizon)
            swept = restrict_grasp(settings_of(horizon), args.grasp_settings)
            reference = swept[REFERENCE[0]][REFERENCE[1]]
            settings = {family: swept[family] for family in args.families}
            if args.baseline_settings:
                known_baselines = {name for family in ("GD", "CEM", "MPPI") for name in swept[family]}
                unknown = sorted(set(args.baseline_settings) - known_baselines)
                if unknown:
                    parser.error(f"--baseline-settings: unknown {unknown}; known: {sorted(known_baselines)}")
                settings = {family: {name: factory for name, factory in found.items()
                                     if family == "GRASP" or name in args.baseline_settings}
                            for family, found in settings.items()}

            def keep(points: list[Point], cem_time: float, horizon: int = horizon) -> None:
                front = frontier(points, budgets, args.slack)
                report["horizons"][str(horizon)] = {
                    "budgets": list(budgets), "pairs": len(pairs), "cem_time": cem_time,
                    "points": [dataclasses.asdict(p) for p in points], "frontier": front,
                    "grasp_leads_from": grasp_leads_from(front, budgets),
                }
                merge_points(report, earlier)
                report["seconds"] = time.perf_counter() - started
                write(report, args.out_dir / f"anytime_{'pixels_' if args.pixels else ''}{env_name}_{args.tag}")

            points, cem_time = profile(evaluate, settings, reference, pairs, calibration, budgets, after_setting=keep)
            keep(points, cem_time)
    return 0


def write(report: dict, stem: Path) -> None:
    """``stem``.json/.md/.png (after every setting: a long run keeps what it measured)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    stem.with_suffix(".md").write_text(markdown(report) + f"\n![profile]({stem.name}.png)\n")
    plot(report, stem.with_suffix(".png"))
    log(f"wrote {stem}.json/.md/.png ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
