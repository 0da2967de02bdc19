"""How predictable is Push-T ten model steps ahead? The world model beside the simulator itself.

On held-out exploration data (the training command's held-out seed) every ``H``-step window is predicted by:

* the world model (the shipped one, or ``--weights DIR``), rolled from the recorded start state;
* the simulator restarted exactly from the recorded planning state, at rest (:func:`grasp_kernels.models.
  training.simulator_replay`): the exact physics, told what a world model of that state is told;
* the simulator restarted from the planning state AND the velocities it leaves out (only the contact
  solver's cached impulses are lost);
* two such restarts whose positions are perturbed by ``sigma`` px each (independent draws): ``rms(Y1 - Y2) /
  sqrt(2)`` is the spread of the outcome over a ``sigma`` px uncertainty of the state, an estimate of the error
  of the conditional mean of a predictor that knew the state (and velocities) to ``sigma``.

None of these is a bound on a learned model's error; they say how much the outcome depends on what the planning
state leaves out and on sub-pixel differences. The velocities come from replaying each trajectory from its
start (restored at rest, as its recording began after a reset); the trajectories whose replay does not
reproduce the recording are counted and left out of the ``exact`` tables, which hold the rows that need the
velocities.

    python bench/predictability.py --out-dir bench/results --tag cpu_2026-12-07

Writes ``predictability_pusht_<tag>.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
from pathlib import Path

import _bench_env  # noqa: F401  (first: puts the repository on sys.path)
import numpy as np
import torch

from grasp_kernels.envs.exploration import PUSHT_POLICIES, collect
from grasp_kernels.envs.sim import PUSHT_POSITION_SCALE
from grasp_kernels.models.training import (
    HELDOUT_SEED_OFFSET, _error_summary, _group_distances, evaluate, replay_velocities, replay_windows,
)
from grasp_kernels.models.zoo import default_path, load_world_model

from time_step import model_repeat

GROUPS = ("block_px", "block_angle_deg", "agent_px")
def perturbed(states: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``states`` with the agent's and the block's positions moved by ``N(0, sigma^2)`` px each."""
    out = states.astype(np.float64).copy()
    out[..., :4] += sigma * rng.standard_normal(out[..., :4].shape) / PUSHT_POSITION_SCALE
    return out


def measure(policy: str, args, model, action_repeat: int) -> dict:
    h = args.horizon
    states, actions = collect("pusht", args.trajectories, args.length, HELDOUT_SEED_OFFSET, policy=policy,
                              action_repeat=action_repeat)
    velocities, exact = replay_velocities(states, actions, action_repeat)
    rows: dict[str, dict] = {}
    for subset, keep in (("all", np.ones(len(exact), dtype=bool)), ("exact", exact)):
        row: dict = {"trajectories": int(keep.sum())}
        rows[subset] = row
        if not keep.any():
            continue
        s, a, v = states[keep], actions[keep], velocities[keep]
        metrics = evaluate(model, "pusht", s, a, horizons=(h,), action_repeat=action_repeat, replay=True)[f"h{h}"]
        row["world model"] = {k: metrics[k] for k in (*GROUPS, "median")}
        row["constant (s' = s)"] = metrics["constant"]
        row["simulator from the planning state, at rest"] = metrics["simulator"]
        if subset == "all":
            continue
        row["simulator from the state and its velocities"] = _error_summary(
            "pusht", *replay_windows("pusht", s, a, h, action_repeat, velocities=v))
        rng = np.random.default_rng(0)
        for sigma in args.sigmas:
            first, _ = replay_windows("pusht", perturbed(s, sigma, rng), a, h, action_repeat, velocities=v)
            second, _ = replay_windows("pusht", perturbed(s, sigma, rng), a, h, action_repeat, velocities=v)
            spread = _group_distances("pusht", first, second)
            row[f"spread: the state known to {sigma:g} px"] = {
                k: float(np.sqrt(np.mean(spread[k] ** 2) / 2)) for k in GROUPS
            }
    return rows


def markdown(report: dict) -> str:
    h = report["horizon"]
    lines = [
        f"# How predictable is Push-T {h} model steps ahead? ({h * report['action_repeat']} simulator steps)", "",
        f"{report['machine']}; date: {report['date']}; command: `{report['command']}`", "",
        f"Held-out exploration data (seed {HELDOUT_SEED_OFFSET}, {report['trajectories']} trajectories of "
        f"{report['length']} steps per policy), every {h}-step window. Error of the block's position (px) and "
        "angle (deg) and of the agent (px) at the window's end, RMSE (median in brackets). `all`: every "
        "trajectory; `exact`: those whose replay from their start reproduces the recording (the rows that need "
        "the velocities are measured on these only). A spread is rms(Y1 - Y2) / sqrt(2) of two restarts from the "
        "state and velocities with positions perturbed by N(0, sigma^2) px each.", "",
    ]
    for policy, rows in report["policies"].items():
        for subset, row in rows.items():
            lines += [f"## `{policy}`, {subset} ({row['trajectories']} trajectories)", "",
                      "| predictor | block px | block deg | agent px |", "|---|---|---|---|"]
            for name, errors in row.items():
                if name == "trajectories":
                    continue
                med = errors.get("median")
                cells = [f"{errors[k]:.1f}" + (f" ({med[k]:.2f})" if med else "") for k in GROUPS]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=None, help="read DIR/pusht.safetensors, not the shipped model")
    parser.add_argument("--policies", nargs="+", default=["mixed", "mixed+pushes"], choices=sorted(PUSHT_POLICIES))
    parser.add_argument("--trajectories", type=int, default=200)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 1.0], help="position perturbations, px")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=Path("bench/results"))
    parser.add_argument("--tag", default=datetime.date.today().isoformat())
    args = parser.parse_args(argv)
    for name in ("trajectories", "length", "horizon"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.horizon > args.length:
        parser.error(f"--horizon must be <= --length ({args.length}), got {args.horizon}")
    if any(not (math.isfinite(s) and s > 0) for s in args.sigmas):
        parser.error(f"--sigmas must be positive px, got {args.sigmas}")
    torch.set_num_threads(args.threads)
    path, action_repeat = model_repeat("pusht", default_path("pusht").parent if args.weights is None else args.weights)
    model = load_world_model("pusht", path=path, action_repeat=action_repeat)
    report = {
        "machine": f"{platform.machine()}, CPU, torch {torch.__version__}, {args.threads} thread(s)",
        "date": datetime.date.today().isoformat(),
        "command": "python bench/predictability.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "weights": str(path), "action_repeat": action_repeat, "horizon": args.horizon,
        "trajectories": args.trajectories, "length": args.length, "sigmas": args.sigmas,
        "policies": {p: measure(p, args, model, action_repeat) for p in args.policies},
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"predictability_pusht_{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
