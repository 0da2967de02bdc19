"""How predictable is Push-T ten model steps ahead? The world model beside the simulator itself.

On held-out exploration data (the training command's held-out seed) every ``H``-step window is predicted by:

* the world model (the shipped one, or ``--weights DIR``), rolled from the recorded start state;
* the simulator restarted from the recorded planning state (:func:`grasp_kernels.models.training.
  simulator_replay`): the exact physics, told what a world model of that state is told;
* the simulator restarted from the planning state AND the velocities the planning state leaves out;
* two such restarts whose positions are perturbed by ``sigma`` px each (independent draws): half their
  mean squared difference is the variance a predictor that knew the state to ``sigma`` could not remove, so
  ``rms(Y1 - Y2) / sqrt(2)`` is that predictor's RMSE floor (the conditional mean's error, if the two are
  draws of the outcome's distribution).

The velocities come from replaying each trajectory from its start (a reset, as its recording began); the
trajectories whose replay does not reproduce the recording (a reset that does not read back its own state:
a start in contact) are counted and left out of every row of the ``exact`` columns.

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
from grasp_kernels.envs.sim import PUSHT_POSITION_SCALE, make_env
from grasp_kernels.models.training import HELDOUT_SEED_OFFSET, _group_distances, evaluate, simulator_replay
from grasp_kernels.models.zoo import default_path, load_world_model

from time_step import model_repeat

GROUPS = ("block_px", "block_angle_deg", "agent_px")
EXACT_PX = 1e-3  # a replayed trajectory reproduces its recording to this (px, every step)


def _summary(distances: dict[str, np.ndarray]) -> dict:
    return {
        **{k: float(np.sqrt(np.mean(distances[k] ** 2))) for k in GROUPS},
        "median": {k: float(np.median(distances[k])) for k in GROUPS},
    }


def recorded_velocities(env, states: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replay every trajectory from its start: ``velocities [N, L+1, 5]`` along it and ``exact [N]``, whether the
    replay reproduced the recorded states (to :data:`EXACT_PX` px at every step)."""
    n, length = actions.shape[:2]
    velocities = np.zeros((n, length + 1, 5))
    exact = np.ones(n, dtype=bool)
    for i in range(n):
        state = env.reset_to(states[i, 0], states[i, 0])
        velocities[i, 0] = env.velocities()
        for t in range(length):
            if np.max(np.abs(state - states[i, t])) * PUSHT_POSITION_SCALE > EXACT_PX:
                exact[i] = False
                break
            state = env.step(actions[i, t])
            velocities[i, t + 1] = env.velocities()
        exact[i] &= bool(np.max(np.abs(state - states[i, -1])) * PUSHT_POSITION_SCALE <= EXACT_PX)
    return velocities, exact


def restarts(env, states, actions, velocities, horizon, sigma, rng) -> np.ndarray:
    """The end state of every ``horizon``-step window (``evaluate``'s windows) restarted from the recorded
    state and velocities, agent and block positions perturbed by ``N(0, sigma^2)`` px (``sigma = 0``: none)."""
    n, length = actions.shape[:2]
    out = []
    for i in range(n):
        for t in range(0, length - horizon + 1, horizon):
            start = states[i, t].astype(np.float64).copy()
            if sigma > 0:
                start[:4] += sigma * rng.standard_normal(4) / PUSHT_POSITION_SCALE
            state = env.reset_to(start, start)
            env.set_velocities(velocities[i, t])
            for k in range(horizon):
                state = env.step(actions[i, t + k])
            out.append(state)
    return np.stack(out)


def window_targets(states: np.ndarray, horizon: int) -> np.ndarray:
    length = states.shape[1] - 1
    return np.stack([states[i, t + horizon] for i in range(states.shape[0]) for t in range(0, length - horizon + 1, horizon)])


def measure(policy: str, args, model, action_repeat: int) -> dict:
    h = args.horizon
    states, actions = collect("pusht", args.trajectories, args.length, HELDOUT_SEED_OFFSET, policy=policy,
                              action_repeat=action_repeat)
    env = make_env("pusht", action_repeat=action_repeat)
    try:
        velocities, exact = recorded_velocities(env, states, actions)
        rows: dict[str, dict] = {}
        for subset, keep in (("all", np.ones(len(exact), dtype=bool)), ("exact", exact)):
            s, a = states[keep], actions[keep]
            row = {"trajectories": int(keep.sum())}
            metrics = evaluate(model, "pusht", s, a, horizons=(h,), action_repeat=action_repeat, replay=True)[f"h{h}"]
            row["world model"] = {k: metrics[k] for k in GROUPS} | {"median": metrics["median"]}
            row["constant (s' = s)"] = metrics["constant"]
            row["simulator from the planning state"] = metrics["simulator"]
            if subset == "exact":
                target = window_targets(s, h)
                v = velocities[keep]
                rng = np.random.default_rng(0)
                same = restarts(env, s, a, v, h, 0.0, rng)
                row["simulator from the state and velocities"] = _summary(_group_distances("pusht", same, target))
                for sigma in args.sigmas:
                    first = restarts(env, s, a, v, h, sigma, rng)
                    second = restarts(env, s, a, v, h, sigma, rng)
                    spread = _group_distances("pusht", first, second)
                    row[f"floor: the state known to {sigma:g} px"] = {
                        k: float(np.sqrt(np.mean(spread[k] ** 2) / 2)) for k in GROUPS
                    }
            rows[subset] = row
    finally:
        env.close()
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
        "the velocities are measured on these only).", "",
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
