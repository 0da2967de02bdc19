"""Which time step (action repeat, DINO-WM's frame skip) should a world model use? Planning results decide.

Every model plans the SAME start/goal pairs over the same span of simulated time: the pairs are made once at
``--pairs-action-repeat`` (goal = where the pairs' exploratory push is after ``sim_steps`` simulator steps), and
a model of time step ``R`` plans ``H = sim_steps / R`` model steps to them. The protocol is the executed open
loop (:func:`grasp_kernels.quality.executed_open_loop`): plan once in the model from the true start state, run
all ``H`` actions in the simulator at the model's time step, success = the TRUE final state lies in the goal
region. Unlike the in-model open loop of ``bench/planning_quality.py`` this counts the model's errors. Each
family picks its best setting on ``--tune-trials`` tuning pairs and is scored on ``--trials`` held-out pairs
(the planning_quality seeds). The model files' cards give their held-out errors, shown beside.

    # models of two time steps (the train command records each one's action repeat in its file)
    python -m grasp_kernels train --env pusht --action-repeat 5 --out /tmp/pusht-r5
    python bench/time_step.py --env pusht --weights grasp_kernels/weights /tmp/pusht-r5 --sim-steps 20 50

Writes ``time_step_<env>_<tag>.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import sys
from pathlib import Path

import _bench_env  # noqa: F401  (first: puts the repository on sys.path)
import torch

from grasp_kernels.envs.sim import check_env_name, resolve_action_repeat
from grasp_kernels.envs.tasks import make_pairs
from grasp_kernels.models.model_files import card_path, read_weights
from grasp_kernels.models.zoo import default_path, file_action_repeat, load_world_model
from grasp_kernels.quality import executed_open_loop, pick_best, planner_settings

from _quality_run import TEST_SEED, TUNE_SEED, log

FAMILIES = ("CEM", "MPPI", "GD", "GRASP")


def model_repeat(env_name: str, directory: Path) -> tuple[Path, int]:
    """``(file, action repeat)`` of ``directory/<env>.safetensors`` (read from the file's metadata)."""
    path = directory / default_path(env_name).name
    metadata, _ = read_weights(path, path.name, f"python -m grasp_kernels train --env {env_name} --out {directory}")
    return path, file_action_repeat(metadata, env_name, path)


def card_errors(path: Path) -> dict:
    """The held-out 10-step errors of a model's card (RMSE, and medians where the card has them)."""
    try:
        card = json.loads(card_path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {k: v for k, v in card.get("metrics", {}).get("h10", {}).items() if k != "constant"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="pusht")
    parser.add_argument("--weights", nargs="+", type=Path, required=True, metavar="DIR",
                        help="directories holding <env>.safetensors, one model each (any time steps)")
    parser.add_argument("--sim-steps", nargs="+", type=int, default=[20, 50],
                        help="spans of simulated time to plan over (each a multiple of every model's action repeat)")
    parser.add_argument("--pairs-action-repeat", type=int, default=None,
                        help="the time step the pairs are made at (default: the environment's)")
    parser.add_argument("--families", nargs="+", default=["CEM", "MPPI"], choices=FAMILIES)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--tune-trials", type=int, default=16)
    parser.add_argument("--samples", type=int, default=100, help="CEM/MPPI samples per iteration")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=Path("out"))
    parser.add_argument("--tag", default=f"cpu_{datetime.date.today().isoformat()}")
    args = parser.parse_args(argv)
    env_name = check_env_name(args.env)
    try:
        pairs_repeat = resolve_action_repeat(env_name, args.pairs_action_repeat)
        models = [(directory, *model_repeat(env_name, directory)) for directory in args.weights]
    except (ValueError, TypeError, FileNotFoundError) as error:
        parser.error(str(error))
    for span in args.sim_steps:
        for directory, _, repeat in models:
            if span < 1 or span % repeat or span % pairs_repeat:
                parser.error(f"--sim-steps: {span} is not a positive multiple of {directory}'s action repeat "
                             f"{repeat} and of the pairs' {pairs_repeat}")
    torch.set_num_threads(args.threads)
    report: dict = {"env": env_name, "pairs_action_repeat": pairs_repeat, "command": " ".join(sys.argv[1:] if argv is None else argv),
                    "machine": f"{platform.machine()} CPU, {args.threads} thread(s), torch {torch.__version__}",
                    "date": datetime.date.today().isoformat(), "rows": []}
    stem = args.out_dir / f"time_step_{env_name}_{args.tag}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    for span in args.sim_steps:
        made = {seed: make_pairs(env_name, n, seed, span // pairs_repeat, action_repeat=pairs_repeat)
                for seed, n in ((TUNE_SEED, args.tune_trials), (TEST_SEED, args.trials))}
        for directory, path, repeat in models:
            model = load_world_model(env_name, path, action_repeat=repeat)
            horizon = span // repeat
            # the same pairs, executed by simulators at this model's time step
            tune, test = (dataclasses.replace(made[seed], action_repeat=repeat) for seed in (TUNE_SEED, TEST_SEED))
            settings = planner_settings(model, model.action_dim, horizon, samples=args.samples)
            row = {"weights": str(directory), "action_repeat": repeat, "sim_steps": span, "horizon": horizon,
                   "card_h10": card_errors(path), "families": {}}
            for family in args.families:
                scores = {name: executed_open_loop(env_name, factory(1.0), tune)[0]
                          for name, factory in settings[family].items()}
                best = pick_best(scores)
                score, _ = executed_open_loop(env_name, settings[family][best](1.0), test)
                row["families"][family] = {"setting": best, **dataclasses.asdict(score)}
                log(f"{directory} R={repeat} {span} sim steps (H={horizon}) {family:5s} [{best}] {score.cell()} "
                    f"err {score.median_error:.1f} {score.wall_time:.1f}s")
            report["rows"].append(row)
            stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
            stem.with_suffix(".md").write_text(markdown(report, args.families))
    return 0


def markdown(report: dict, families: list[str]) -> str:
    """The comparison table: per span of simulated time and model, each family's held-out success."""
    lines = [f"# Time step: {report['env']}", "",
             f"{report['date']}, {report['machine']}. Command: `python bench/time_step.py {report['command']}`.", "",
             f"Executed open loop on the same pairs per span (made at action repeat {report['pairs_action_repeat']}): "
             "plan once in the model, run all H actions in the simulator at the model's time step, success = the "
             "true final state in the goal region. Error: median final block distance (px). Wall: planning seconds "
             "for all pairs. Card: the model's held-out 10-step error (RMSE; median in brackets where recorded).", "",
             "| sim steps | model (action repeat) | H | card 10-step block px / deg | "
             + " | ".join(families) + " |", "|---|---|---|---|" + "---|" * len(families)]
    for row in report["rows"]:
        card = row["card_h10"]
        median = card.get("median", {})
        card_text = (f"{card['block_px']:.1f} / {card['block_angle_deg']:.1f}"
                     + (f" ({median['block_px']:.1f} / {median['block_angle_deg']:.1f})" if median else "")
                     if "block_px" in card else "-")
        cells = []
        for family in families:
            entry = row["families"].get(family)
            cells.append("-" if entry is None else
                         f"{100 * entry['successes'] / entry['trials']:.0f}% ({entry['successes']}/{entry['trials']}), "
                         f"err {entry['median_error']:.1f}, {entry['wall_time']:.1f}s [{entry['setting']}]")
        lines.append(f"| {row['sim_steps']} | {row['weights']} ({row['action_repeat']}) | {row['horizon']} | {card_text} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
