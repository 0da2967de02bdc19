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

Planning from pixels (``--pixels``, issue 14): every planner plans in the latent of the environment's pixel
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
import contextlib
import dataclasses
import datetime
import functools
import hashlib
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
    GRASP_SWEEP,
    PIXEL_GRASP_SWEEP,
    PlannerFactory,
    Score,
    ablation_factories,
    closed_loop,
    executed_open_loop,
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
# --pixels runs record these too (a state run's settings stay as they were, so that its reports still merge
# with the earlier ones); which model file a run read is in its report's "model" (with the file's hash)
PIXEL_SETTINGS = SETTINGS + ("pixels",)
PIXEL_HORIZONS = {"pusht": [10, 25, 50]}
PIXEL_POINTMAZE_HORIZONS = [25, 50, 100]


RANK, RANKS = 0, 1  # this process in a torchrun launch (set by main); only rank 0 prints and writes


def log(line: str) -> None:
    if RANK == 0:
        print(line, flush=True)


def write(report: dict, args: argparse.Namespace, header: str, seconds: float | None = None) -> None:
    """The markdown table, the raw JSON and the plot of ``report`` under ``args.out_dir``; ``seconds``:
    the run time (default: since ``report["started"]``). Rank 0 only."""
    if RANK != 0:
        return
    stem = args.out_dir / report_name(report, args.tag)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if seconds is None:
        seconds = time.perf_counter() - report["started"]
    plotted = any(cell["held_out"] for cell in report["horizons"].values())  # not for --closed-loop-only
    Path(f"{stem}.md").write_text(markdown(report, args, header + f" Run time {seconds:.0f} s.",
                                           plot_name=f"{stem.name}.png" if plotted else None))
    saved = {k: v for k, v in report.items() if k != "started"} | {"seconds": seconds, "header": header}
    names = PIXEL_SETTINGS if report.get("mode") == "pixels" else SETTINGS
    if getattr(args, "grasp_settings", None):  # a restricted sweep: recorded, so that it never merges with a full one
        names = names + ("grasp_settings",)
    saved.setdefault("settings", {name: getattr(args, name) for name in names})
    Path(f"{stem}.json").write_text(json.dumps(saved, indent=1))
    if plotted:
        plot(report, Path(f"{stem}.png"))


def report_name(report: dict, tag: str) -> str:
    """The reports' file stem: ``planning_quality_<env>_<tag>``, ``planning_quality_pixels_<env>_<tag>`` from pixels."""
    prefix = "planning_quality_pixels" if report.get("mode") == "pixels" else "planning_quality"
    return f"{prefix}_{report['env']}_{tag}"


def pixel_model_file(env_name: str, args: argparse.Namespace) -> Path:
    """The pixel world model ``--pixels`` reads: ``<--pixel-weights>/<env>-pixels.safetensors``, or the shipped one."""
    from grasp_kernels.models.pixel_zoo import default_path

    shipped = default_path(env_name)
    return shipped if args.pixel_weights is None else args.pixel_weights / shipped.name


def load_pixels(env_name: str, args: argparse.Namespace):
    """``(model, file)``: the pixel world model of ``env_name``; a missing or unreadable file exits with one line
    naming the flag, the file and the command that builds it."""
    from grasp_kernels.models.pixel_zoo import load_pixel_model

    path = pixel_model_file(env_name, args)
    flag = "--pixels" if args.pixel_weights is None else "--pixel-weights"
    try:
        return load_pixel_model(env_name, path), path
    except (FileNotFoundError, ValueError) as error:  # the loader's messages name the file and how to build it
        raise SystemExit(f"{flag}: no usable pixel world model of {env_name}: {error}") from None


def model_record(path: Path) -> dict:
    """What a pixels report says about its model: the file, its sha256 (so that --merge joins runs of one
    model only) and its model card (``model_files.card_path``: the JSON beside the weights) if there is one."""
    from grasp_kernels.models.model_files import card_path

    record: dict = {"file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    try:
        card = json.loads(card_path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return record  # the markdown says there is no card
    record["card"] = {k: card[k] for k in ("metrics", "reproduce", "data", "created") if k in card}
    return record


def sweep_and_hold_out(
    evaluate, settings: dict[str, dict[str, PlannerFactory]], families: list[str], tune, test, cell: dict,
    hold_out: bool = True, label: str = "",
) -> dict[str, tuple[str, PlannerFactory]]:
    """Per family: every setting of ``settings`` plans the tuning pairs (``evaluate(planner, pairs) -> (Score,
    _)``), the best (:func:`pick_best`) is chosen and (``hold_out``) plans the held-out pairs; fills
    ``cell["sweep"]`` and ``cell["held_out"]`` and returns ``{family: (setting, factory)}``. ``label``
    prefixes the log lines (e.g. the state model's sweep beside the pixel one)."""
    chosen = {}
    for family in families:
        scores = {}
        for setting, factory in settings[family].items():
            scores[setting], _ = evaluate(factory(1.0), tune)
            cell["sweep"].setdefault(family, {})[setting] = dataclasses.asdict(scores[setting])
            log(f"  {label}sweep {family:5s} {setting:24s} {scores[setting].cell()}  err {scores[setting].median_error:.3f}  {scores[setting].wall_time:.1f}s")
        best = pick_best(scores)
        chosen[family] = (best, settings[family][best])
        if not hold_out:
            continue
        score, _ = evaluate(chosen[family][1](1.0), test)
        cell["held_out"][family] = {"setting": best, **dataclasses.asdict(score)}
        log(f"  {label}held-out {family:5s} [{best}] {score.cell()}  err {score.median_error:.3f}  {score.wall_time:.1f}s")
    return chosen


def restrict_grasp(settings: dict[str, dict[str, PlannerFactory]], names: list[str] | None) -> dict:
    """``settings`` with its GRASP sweep cut to ``names`` (``--grasp-settings``; None: all), in the sweep's
    order; a sweep without some of them (the state model's has no pixel-only settings) keeps those it has."""
    if names:
        settings["GRASP"] = {name: factory for name, factory in settings["GRASP"].items() if name in names}
    return settings


def run_env(env_name: str, args: argparse.Namespace, header: str) -> dict:
    """All tables of one environment, as a JSON-able dict.

    ``args.pixels``: the planners plan in the pixel model's latent and the open-loop tables execute the plans
    in the simulator (see the module docstring); every horizon's cell also holds, under ``"state"``, the
    sweep and held-out scores of the shipped state model on the same pairs under the same protocol."""
    report: dict = {"env": env_name, "horizons": {}, "started": time.perf_counter()}
    with contextlib.ExitStack() as stack:
        if args.pixels:
            from grasp_kernels.pixel_tasks import PixelObservation, pixel_grasp_config, pixel_pairs

            pixel_model, path = load_pixels(env_name, args)
            report = {"env": env_name, "mode": "pixels", "model": model_record(path), **report}
            model = pixel_model.dynamics  # what the planners plan with: windows of latents, [B, h*E]
            observation = stack.enter_context(PixelObservation(pixel_model))
            state_model = load_world_model(env_name)
            horizons = args.horizons or PIXEL_HORIZONS.get(env_name, PIXEL_POINTMAZE_HORIZONS)
            make = pixel_pairs  # starts and goals in the picture (Push-T blocks can leave it)
            # plan in the latent from the encoded frames, execute in the simulator, judge the true final state
            evaluate = functools.partial(executed_open_loop, env_name, observation=observation, across_ranks=True)

            def settings_of(horizon: int) -> dict[str, dict[str, PlannerFactory]]:
                return planner_settings(model, model.action_dim, horizon, quick=args.quick, samples=args.samples,
                                        base=pixel_grasp_config(horizon), grasp_sweep=PIXEL_GRASP_SWEEP)
        else:
            model, observation, state_model = load_world_model(env_name), None, None
            horizons = args.horizons or DEFAULT_HORIZONS.get(env_name, POINTMAZE_HORIZONS)
            make = make_pairs
            evaluate = functools.partial(open_loop, env_name, across_ranks=True)

            def settings_of(horizon: int) -> dict[str, dict[str, PlannerFactory]]:
                return planner_settings(model, model.action_dim, horizon, quick=args.quick, samples=args.samples)

        mpc_horizons = args.mpc_horizons if args.mpc_horizons is not None else [DEFAULT_MPC.get(env_name, POINTMAZE_MPC)]
        equal_time_horizons = args.equal_time_horizons if args.equal_time_horizons is not None else mpc_horizons
        for horizon in horizons:
            log(f"== {env_name} horizon {horizon}")
            tune = make(env_name, args.tune_trials, TUNE_SEED, horizon)
            test = make(env_name, args.trials, TEST_SEED, horizon)
            cell: dict = {"sweep": {}, "held_out": {}, "ablations": {}, "equal_time": {}, "closed_loop": {}}
            settings = restrict_grasp(settings_of(horizon), args.grasp_settings)
            chosen = sweep_and_hold_out(evaluate, settings, args.families, tune, test, cell,
                                        hold_out=not args.closed_loop_only)
            if "GRASP" in chosen and not args.closed_loop_only:
                for name, factory in ablation_factories(model, model.action_dim, chosen["GRASP"][1]).items():
                    score, _ = evaluate(factory(1.0), test)
                    cell["ablations"][name] = dataclasses.asdict(score)
                    log(f"  ablation {name:18s} {score.cell()}  err {score.median_error:.3f}  {score.wall_time:.1f}s")
            if "GRASP" in chosen and horizon in equal_time_horizons and not args.closed_loop_only:
                budget = cell["held_out"]["GRASP"]["wall_time"]
                for family in args.families:
                    if family == "GRASP":
                        continue
                    scale = budget / max(cell["held_out"][family]["wall_time"], 1e-9)
                    score, _ = evaluate(chosen[family][1](scale), test)
                    cell["equal_time"][family] = {"scale": scale, **dataclasses.asdict(score)}
                    log(f"  equal-time {family:5s} x{scale:.2f} iters {score.iters}: {score.cell()}  {score.wall_time:.1f}s")
            if horizon in mpc_horizons:
                for family in args.families:
                    planner = chosen[family][1](args.mpc_iters_scale)
                    score, _ = closed_loop(
                        env_name, planner, test, max_steps=args.mpc_steps or 2 * horizon, replan_every=args.replan_every,
                        warm_start_states=args.mpc_warm_start_states, across_ranks=True, observation=observation,
                    )
                    cell["closed_loop"][family] = {"setting": chosen[family][0], **dataclasses.asdict(score)}
                    log(f"  closed-loop {family:5s} {score.cell()}  err {score.median_error:.3f}  {score.wall_time:.1f}s")
            if state_model is not None and not args.closed_loop_only:
                # the state model beside the pixel one: the same pairs and protocol, planning from the true
                # state, its own sweep of the state settings on the same tuning pairs
                cell["state"] = {"sweep": {}, "held_out": {}}
                settings = restrict_grasp(planner_settings(state_model, state_model.action_dim, horizon,
                                                           quick=args.quick, samples=args.samples), args.grasp_settings)
                sweep_and_hold_out(functools.partial(executed_open_loop, env_name, across_ranks=True), settings,
                                   args.families, tune, test, cell["state"], label="state model ")
            report["horizons"][str(horizon)] = cell
            write(report, args, header)  # after every horizon, so that a cut run leaves what it measured
    return report


def as_score(entry: dict) -> Score:
    """The Score of a report entry (which may carry more keys, e.g. the chosen setting)."""
    return Score(**{f.name: entry[f.name] for f in dataclasses.fields(Score)})


def markdown(report: dict, args: argparse.Namespace, header: str, plot_name: str | None = None) -> str:
    """The report's tables (see the module docstring); ``plot_name``: the plot's file, linked in a pixels report."""
    env = report["env"]
    pixels = report.get("mode") == "pixels"
    unit = "px (block position)" if env == "pusht" else "maze units (position)"
    horizons = list(report["horizons"])
    if not pixels:
        lines = [f"# Planning quality: {env}", "", header, "",
                 f"Error column: median final distance to the goal in {unit}. Wall time: seconds per batch of all pairs.", ""]
    else:
        lines = [f"# Planning quality from pixels: {env}", "", header, ""] + pixel_preamble(report, unit, plot_name)

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
    if pixels:
        table("Executed open loop from pixels, held-out pairs (chosen setting per planner and horizon)", "held_out",
              families, "Planned once in the pixel model's latent, all H actions executed in the simulator; "
              "success and error of the true final state.")
        lines.extend(pixels_vs_state(report, families))
    else:
        table("Open loop in the model, held-out pairs (chosen setting per planner and horizon)", "held_out",
              families)
    table("GRASP with one chain (chosen setting) and its ablations, held-out pairs", "ablations", ablations)
    table("Equal wall-clock budget (iterations scaled to GRASP's wall time), held-out pairs", "equal_time",
          [f for f in families if f != "GRASP"])
    table("Closed loop: MPC in the simulator, success by the environment's criterion", "closed_loop", families,
          f"Replanning every {args.replan_every} model steps, warm-started, {args.mpc_iters_scale:g} x the "
          f"chosen iterations per replan, at most {args.mpc_steps or '2 x H'} model steps."
          + (" Every replan plans from the encoded last frames to the encoded goal image." if pixels else ""))

    def sweep(title: str, cells: dict) -> None:
        nonlocal lines
        lines += [f"## {title}", "", "| H | planner | setting | success | median error | wall (s) |",
                  "|---|---|---|---|---|---|"]
        for h, cell in cells.items():
            for family, settings in cell["sweep"].items():
                for setting, entry in settings.items():
                    s = as_score(entry)
                    lines.append(f"| {h} | {family} | {setting} | {s.cell()} | {s.median_error:.3g} | {s.wall_time:.1f} |")

    sweep("Sweep on the tuning pairs", report["horizons"])
    state_cells = {h: cell["state"] for h, cell in report["horizons"].items() if cell.get("state")}
    if state_cells:
        lines.append("")
        sweep("Sweep of the state model on the tuning pairs (same executed open-loop protocol)", state_cells)
    return "\n".join(lines) + "\n"


def pixel_preamble(report: dict, unit: str, plot_name: str | None) -> list[str]:
    """A pixels report's protocol, model (file, hash, card metrics) and plot link, as markdown lines."""
    from grasp_kernels.models.pixel_probes import format_metrics

    env, model = report["env"], report.get("model", {})
    card = model.get("card")
    lines = [
        "Protocol (DINO-WM's open loop, `grasp_kernels.quality.executed_open_loop`): every planner plans once in the "
        "latent of the pixel world model, from the encoded start frame (the window of h latents, the start frame "
        "repeated) to the encoded goal image (`grasp_kernels.pixel_tasks.PixelObservation`); all H planned actions "
        "are executed in the simulator; success = the TRUE final state lies in the goal region "
        + ("(block within 20 px and pi/9 of the goal pose)" if env == "pusht" else "(within 0.45 of the goal position)")
        + ". Pairs: `pixel_pairs` (starts and goals in the picture). The state-model columns: the shipped state MLP "
        "world model planning from the true start state to the goal state, on the same pairs, same protocol, each "
        "family's setting chosen by its own sweep of the state settings on the same tuning pairs.",
        "",
        f"Pixel world model: `{model.get('file', '?')}` (sha256 {model.get('sha256', '?')[:16]}...).",
        "",
    ]
    if card:
        lines += [f"Model card (held-out metrics, latent RMSE in latent standard deviations): "
                  f"{format_metrics(env, card.get('metrics', {})) if card.get('metrics') else '(no metrics)'}. "
                  f"Built by: `{card.get('reproduce', '?')}`; data: {json.dumps(card.get('data', {}))}.", ""]
    else:
        lines += ["Model card: none beside the model file (its metrics are unknown).", ""]
    if plot_name:
        lines += [f"![success vs horizon]({plot_name})", ""]
    lines += [f"Error column: median final distance of the true executed state to the goal in {unit}. Wall time: "
              "open loop, the seconds of planning per batch of all pairs (rendering, encoding and simulation not "
              "counted); closed loop, the whole episodes.", ""]
    return lines


def pixels_vs_state(report: dict, families: list[str]) -> list[str]:
    """The side-by-side table: per planner and horizon, the pixel model's held-out success beside the state
    model's (same pairs, same executed open-loop protocol, each with its own chosen setting)."""
    present = [h for h, cell in report["horizons"].items() if cell["held_out"] or cell.get("state", {}).get("held_out")]
    if not present:
        return []
    lines = ["## Pixels vs state model, held-out pairs (executed open loop, each model's chosen setting)", "",
             "| planner | " + " | ".join(f"H={h} pixels | H={h} state" for h in present) + " |",
             "|---|" + "---|---|" * len(present)]
    for family in families:
        cells = []
        for h in present:
            cell = report["horizons"][h]
            for entry in (cell["held_out"].get(family), cell.get("state", {}).get("held_out", {}).get(family)):
                if entry is None:
                    cells.append("-")
                    continue
                s = as_score(entry)
                cells.append(f"{s.cell()}, err {s.median_error:.3g} [{entry['setting']}]")
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    return lines + [""]


def plot(report: dict, path: Path) -> None:
    """Held-out success vs horizon with 95% intervals: every family (solid), the GRASP ablations (dashed) and,
    in a pixels report, the state model's families under the same protocol (dotted)."""
    from grasp_kernels.plotting import pyplot, save_figure
    from grasp_kernels.quality import wilson_interval

    plt = pyplot()

    pixels = report.get("mode") == "pixels"
    horizons = [int(h) for h in report["horizons"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    # (label, the cell's entry of each horizon, line style, the family whose colour it takes)
    series = [(family, lambda cell, f=family: cell["held_out"].get(f), "-", None) for family in FAMILIES]
    series += [(name, lambda cell, n=name: cell["ablations"].get(n), "--", None)
               for name in dict.fromkeys(name for h in report["horizons"].values() for name in h["ablations"])]
    if pixels:  # the state model's line in its pixel family's colour, dotted, hollow markers
        series += [(f"{family} (state model)", lambda cell, f=family: cell.get("state", {}).get("held_out", {}).get(f),
                    ":", family) for family in FAMILIES]
    colours: dict[str, str] = {}
    for label, entry_of, style, colour_of in series:
        points = [(int(h), entry_of(cell)) for h, cell in report["horizons"].items()]
        points = [(h, e) for h, e in points if e]
        if not points:
            continue
        xs = [h for h, _ in points]
        ys = [100 * e["successes"] / e["trials"] for _, e in points]
        ci = [wilson_interval(e["successes"], e["trials"]) for _, e in points]
        err = [[y - lo for y, (lo, _) in zip(ys, ci)], [hi - y for y, (_, hi) in zip(ys, ci)]]
        if colour_of is None:
            line = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label, linestyle=style)
            colours[label] = line[0].get_color()
        else:
            ax.errorbar(xs, ys, yerr=err, marker="s", capsize=3, label=label, linestyle=style, mfc="none",
                        **({"color": colours[colour_of]} if colour_of in colours else {}))
    ax.set_xscale("log")
    ax.minorticks_off()  # the horizons are the only ticks
    ax.set_xticks(horizons, [str(h) for h in horizons])
    ax.set_xlabel("horizon H (model steps)")
    ax.set_ylabel("executed open-loop success % (95% CI)" if pixels else "open-loop success % (95% CI)")
    ax.set_title(f"{report['env']} from pixels vs state (held-out pairs)" if pixels
                 else f"{report['env']}: success vs horizon (held-out pairs)")
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
        # a restricted GRASP sweep (--grasp-settings) is a per-horizon choice: the merged sweep tables list
        # what each horizon swept, and the header names the restriction
        differ = sorted(k for k in set(settings) | set(r["settings"])
                        if k != "grasp_settings" and settings.get(k) != r["settings"].get(k))
        if differ:
            raise SystemExit(f"--merge: {path} was run with other settings than {reports[0][0]}: {', '.join(differ)}")
        if r.get("model", {}).get("sha256") != reports[0][1].get("model", {}).get("sha256"):
            raise SystemExit(f"--merge: {path} planned with another pixel world model than {reports[0][0]} (model sha256 differs)")
    settings = {k: v for k, v in settings.items() if k != "grasp_settings"}  # per run: named in the header
    args.grasp_settings = None
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
    restricted = "".join(
        f" H={', '.join(r['horizons'])} swept only these GRASP settings (--grasp-settings): {'; '.join(map(repr, r['settings']['grasp_settings']))}."
        for _, r in reports if r["settings"].get("grasp_settings")
    )
    header = f"Merged from {len(reports)} runs: {sources}.{restricted} Runs' setting: {first_header}"
    report = {"env": envs.pop(), "horizons": {h: cells[h] for h in sorted(cells, key=int)}, "settings": settings}
    if settings.get("pixels"):  # a pixels report: its file names, protocol and model section
        report = {"env": report["env"], "mode": "pixels", "model": reports[0][1].get("model", {})} | report
    write(report, args, header, seconds=sum(r.get("seconds", 0.0) for _, r in reports))
    return report


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
    parser.add_argument("--pixels", action="store_true",
                        help="plan in the pixel world model's latent from the encoded frames, executed open loop in the "
                             "simulator, beside the state model under the same protocol (default horizons: PointMaze 25 50 100, "
                             "Push-T 10 25 50)")
    parser.add_argument("--pixel-weights", type=Path, metavar="DIR",
                        help="with --pixels: read DIR/<env>-pixels.safetensors instead of the shipped pixel model")
    parser.add_argument("--grasp-settings", nargs="+", metavar="NAME",
                        help="sweep only these GRASP settings (names of the GRASP sweep; with --pixels the state model's "
                             "sweep beside keeps those of them it has; e.g. a probe of new variants with --families GRASP "
                             "--closed-loop-only --mpc-horizons, or a horizon too slow for the CEM sync)")
    args = parser.parse_args(argv)
    if args.pixel_weights is not None and not args.pixels:
        raise SystemExit("--pixel-weights: needs --pixels (it names the pixel world models' directory)")
    if args.pixel_weights is not None and not args.pixel_weights.is_dir():
        raise SystemExit(f"--pixel-weights: {args.pixel_weights} is not a directory (it holds <env>-pixels.safetensors)")
    if args.grasp_settings:
        known = PIXEL_GRASP_SWEEP if args.pixels else GRASP_SWEEP
        unknown = [name for name in args.grasp_settings if name not in known]
        if unknown:
            raise SystemExit(f"--grasp-settings: unknown setting(s) {unknown}; the GRASP sweep has {list(known)}")
    if args.merge and args.pixels:
        raise SystemExit("--merge: --pixels does not apply (a report records whether it planned from pixels)")
    global RANK, RANKS
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # launched by torchrun: shard the pairs
        from grasp_kernels.distributed import init

        RANK, RANKS = init()
    if args.merge:
        if RANK != 0:  # no planning to share
            return 0
        report = merge(args.merge, args)
        log(Path(f"{args.out_dir}/{report_name(report, args.tag)}.md").read_text())
        return 0
    if args.quick:
        args.env, args.horizons, args.mpc_horizons = ["pointmaze-medium"], [10], [10]
        args.trials, args.tune_trials, args.mpc_steps, args.replan_every, args.mpc_iters_scale = 3, 2, 6, 3, 1.0
    if args.threads:
        torch.set_num_threads(args.threads)
    args.env = [check_env_name(name) for name in args.env]
    if args.pixels:
        for env_name in args.env:  # every model file before the first plan, not after the first environment's hours
            load_pixels(env_name, args)
    model_words = ("pixel world model (planning in its latent; file below) beside the shipped MLPDynamics state model"
                   if args.pixels else "shipped MLPDynamics world model")
    header = (
        f"{datetime.date.today().isoformat()}, CPU {platform.machine()} ({torch.get_num_threads()} threads), "
        f"torch {torch.__version__}, {model_words}; tuning pairs: {args.tune_trials} (seed {TUNE_SEED}), "
        f"held-out pairs: {args.trials} (seed {TEST_SEED}); CEM/MPPI {args.samples if not args.quick else 16} samples; "
        f"every planner plans all pairs as one batch; MPC warm-starts the actions"
        f"{' and GRASP' + chr(39) + 's virtual states' if args.mpc_warm_start_states else ''} (shifted previous plan)."
        + (f" Pairs sharded over {RANKS} processes (torchrun); wall times are the slowest rank's." if RANKS > 1 else "")
        + (" QUICK SMOKE RUN: budgets too small to mean anything." if args.quick else "")
    )
    for env_name in args.env:
        report = run_env(env_name, args, header)
        if RANK == 0:
            log(Path(f"{args.out_dir}/{report_name(report, args.tag)}.md").read_text())
    if RANKS > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
