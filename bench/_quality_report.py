"""bench/planning_quality.py's reports: the markdown tables, the JSON beside them and the plot (written by
:func:`write`), and :func:`merge`, one report from the JSON reports of several runs of one environment."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from grasp_kernels.models.zoo import LEGACY_ACTION_REPEAT
from grasp_kernels.quality import Score

from _quality_plot import plot

# the arguments that change what a report measures: --merge only joins reports that agree on all of them
SETTINGS = ("trials", "tune_trials", "samples", "families", "replan_every", "mpc_iters_scale", "mpc_steps", "quick",
            "mpc_warm_start_states", "action_repeat", "weights", "protocol")
# --pixels runs record these too (a state run records SETTINGS alone, so that its reports merge with the state
# reports under bench/results); which model file a run read is in its report's "model" (with the file's hash)
PIXEL_SETTINGS = SETTINGS + ("pixels",)


def write(report: dict, args: argparse.Namespace, header: str, seconds: float | None = None) -> None:
    """The markdown table, the raw JSON and the plot of ``report`` under ``args.out_dir``; ``seconds``:
    the run time (default: since ``report["started"]``). Called on rank 0 only."""
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


def action_repeat(report: dict) -> int:
    """Simulator steps per model step of ``report``'s run (reports older than the field: the default then)."""
    return int(report.get("action_repeat") or LEGACY_ACTION_REPEAT[report["env"].split("-")[0]])


def horizon_label(report: dict, horizon) -> str:
    """``H=25 (50 sim)``: a horizon in model steps and in simulator steps."""
    return f"H={horizon} ({int(horizon) * action_repeat(report)} sim)"


def as_score(entry: dict) -> Score:
    """The Score of a report entry (which may carry more keys, e.g. the chosen setting)."""
    return Score(**{f.name: entry[f.name] for f in dataclasses.fields(Score)})


def markdown(report: dict, args: argparse.Namespace, header: str, plot_name: str | None = None) -> str:
    """The report's tables (see the module docstring); ``plot_name``: the plot's file, linked in a pixels report."""
    env = report["env"]
    pixels = report.get("mode") == "pixels"
    unit = "px (block position)" if env == "pusht" else "maze units (position)"
    horizons = list(report["horizons"])
    steps = (f"Horizons H in model steps of {action_repeat(report)} simulator steps each (sim: the same horizon in "
             "simulator steps).")
    if report.get("protocol") == "dino-wm":
        steps += (" Protocol `dino-wm` (`grasp_kernels.envs.tasks.dino_wm_pairs`, `dino_wm_reached`): DINO-WM's Push-T "
                  "evaluation. Goals: the state an exploratory trajectory reaches 25 simulator steps (rounded to model "
                  "steps) after its start, every trajectory kept; success, open and closed loop: DINO-WM's eval_state "
                  "(agent and block positions within 20 px in one norm, block angle within pi/9); a closed-loop "
                  "episode succeeds if it meets it after any model step.")
    if not pixels:
        lines = [f"# Planning quality: {env}", "", header, "", steps, "",
                 f"Error column: median final distance to the goal in {unit}. Wall time: seconds per batch of all pairs.", ""]
    else:
        lines = [f"# Planning quality from pixels: {env}", "", header, "", steps, ""] + pixel_preamble(report, unit, plot_name)

    def table(title: str, section: str, rows: list[str], note: str = "") -> None:
        present = [h for h in horizons if report["horizons"][h][section]]
        if not present:
            return
        lines.extend([f"## {title}", ""] + ([note, ""] if note else []))
        lines.append("| planner | " + " | ".join(horizon_label(report, h) for h in present) + " |")
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
    rule = "DINO-WM's eval_state, ever reached" if report.get("protocol") == "dino-wm" else "the environment's criterion"
    table(f"Closed loop: MPC in the simulator, success by {rule}", "closed_loop", families,
          f"Replanning every {args.replan_every or 'H (all planned actions executed)'} model steps, warm-started, "
          f"{args.mpc_iters_scale:g} x the "
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
        + ("(DINO-WM's eval_state, see above)" if report.get("protocol") == "dino-wm"
           else "(block within 20 px and pi/9 of the goal pose)" if env == "pusht" else "(within 0.45 of the goal position)")
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
             "| planner | " + " | ".join(f"{horizon_label(report, h)} pixels | H={h} state" for h in present) + " |",
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
    for path, r in reports:
        if not isinstance(r.get("settings"), dict) or not isinstance(r.get("horizons"), dict):
            raise SystemExit(f"--merge: {path} records no run settings or horizons (not a planning_quality report?)")
        r["settings"].setdefault("protocol", "region")  # reports older than the flag
    settings = reports[0][1]["settings"]
    for path, r in reports:
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
    report = {"env": envs.pop(), "horizons": {h: cells[h] for h in sorted(cells, key=int)}, "settings": settings,
              "action_repeat": reports[0][1].get("action_repeat"), "protocol": settings["protocol"]}
    if settings.get("pixels"):  # a pixels report: its file names, protocol and model section
        report = {"env": report["env"], "mode": "pixels", "model": reports[0][1].get("model", {})} | report
    write(report, args, header, seconds=sum(r.get("seconds", 0.0) for _, r in reports))
    return report
