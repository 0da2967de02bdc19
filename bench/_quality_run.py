"""bench/planning_quality.py's runs: per environment and horizon, the sweep on the tuning pairs, the chosen
settings on the held-out pairs, GRASP's ablations, the equal-time and the closed-loop tables (the tables are
described in planning_quality's docstring); under torchrun every rank plans its slice of the pairs."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import time
from pathlib import Path

from grasp_kernels.envs.tasks import make_pairs
from grasp_kernels.envs.sim import resolve_action_repeat
from grasp_kernels.models.zoo import default_path, load_world_model
from grasp_kernels.presets import PIXEL_GRASP_SWEEP
from grasp_kernels.quality import (
    PlannerFactory,
    ablation_factories,
    closed_loop,
    executed_open_loop,
    open_loop,
    pick_best,
    planner_settings,
)

from _quality_report import write

# per environment (PointMaze's for the PointMaze layouts), when --horizons / --mpc-horizons are not given: the
# horizons planned (from pixels: PIXEL_*) and the horizon with a closed-loop table
DEFAULT_HORIZONS = {"pusht": [10, 25, 50]}
POINTMAZE_HORIZONS = [25, 50, 100, 200]
PIXEL_HORIZONS = {"pusht": [10, 25, 50]}
PIXEL_POINTMAZE_HORIZONS = [25, 50, 100]
DEFAULT_MPC = {"pusht": 25}
POINTMAZE_MPC = 50
TUNE_SEED, TEST_SEED = 1000, 2000  # the seeds of the tuning and of the held-out pairs


RANK, RANKS = 0, 1  # this process in a torchrun launch (set by join_torchrun); only rank 0 prints and writes


def join_torchrun() -> tuple[int, int]:
    """Under torchrun (``RANK`` and ``WORLD_SIZE`` set): join the process group, so that every rank plans its
    slice of the pairs. Returns ``(rank, ranks)``, ``(0, 1)`` in a plain process."""
    global RANK, RANKS
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        from grasp_kernels.distributed import init

        RANK, RANKS = init()
    return RANK, RANKS


def log(line: str) -> None:
    """Print ``line`` on rank 0."""
    if RANK == 0:
        print(line, flush=True)


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
        return load_pixel_model(env_name, path, action_repeat=args.action_repeat), path
    except (FileNotFoundError, ValueError) as error:  # the loader's messages name the file and how to build it
        raise SystemExit(f"{flag}: no usable pixel world model of {env_name}: {error}") from None


def load_state_model(env_name: str, args: argparse.Namespace):
    """``(model, file)``: the state world model of ``env_name`` (``--weights DIR`` or the shipped one) at
    ``--action-repeat``; a missing or unusable file exits with one line naming the flag and the file."""
    shipped = default_path(env_name)
    path = shipped if args.weights is None else Path(args.weights) / shipped.name
    flag = "--weights" if args.weights is not None else ("--action-repeat" if args.action_repeat else "--env")
    try:
        return load_world_model(env_name, path, action_repeat=args.action_repeat), path
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"{flag}: no usable state world model of {env_name}: {error}") from None


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
    repeat = resolve_action_repeat(env_name, args.action_repeat)
    state_model, state_path = load_state_model(env_name, args)
    report: dict = {"env": env_name, "action_repeat": repeat, "protocol": args.protocol,
                    "state_model": model_record(state_path), "horizons": {}, "started": time.perf_counter()}
    with contextlib.ExitStack() as stack:
        if args.pixels:
            from grasp_kernels.pixel_tasks import PixelObservation, pixel_grasp_config, pixel_pairs

            pixel_model, path = load_pixels(env_name, args)
            report = {"env": env_name, "mode": "pixels", "model": model_record(path), **report}
            model = pixel_model.dynamics  # what the planners plan with: windows of latents, [B, h*E]
            observation = stack.enter_context(PixelObservation(pixel_model))
            horizons = args.horizons or PIXEL_HORIZONS.get(env_name, PIXEL_POINTMAZE_HORIZONS)
            # starts and goals in the picture (Push-T blocks can leave it)
            make = functools.partial(pixel_pairs, action_repeat=repeat, protocol=args.protocol)
            # plan in the latent from the encoded frames, execute in the simulator, judge the true final state
            evaluate = functools.partial(executed_open_loop, env_name, observation=observation, across_ranks=True)

            def settings_of(horizon: int) -> dict[str, dict[str, PlannerFactory]]:
                return planner_settings(model, model.action_dim, horizon, quick=args.quick, samples=args.samples,
                                        base=pixel_grasp_config(horizon), grasp_sweep=PIXEL_GRASP_SWEEP)
        else:
            model, observation, state_model = state_model, None, None
            horizons = args.horizons or DEFAULT_HORIZONS.get(env_name, POINTMAZE_HORIZONS)
            make = functools.partial(make_pairs, action_repeat=repeat, protocol=args.protocol)
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
                        env_name, planner, test, max_steps=args.mpc_steps or 2 * horizon, replan_every=args.replan_every or horizon,
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
            if RANK == 0:  # after every horizon, so that a cut run leaves what it measured
                write(report, args, header)
    return report
