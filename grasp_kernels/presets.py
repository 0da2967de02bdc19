"""GRASP settings for the shipped tasks, as plain field values (no GraspConfig here: config imports this).

:func:`grasp_base_fields` is GRASP on the real tasks; :data:`GRASP_SWEEP` and :data:`PIXEL_GRASP_SWEEP` are
the settings ``bench/planning_quality.py`` sweeps around it on 16 tuning pairs per environment and horizon;
:data:`CHOSEN` is the sweep's choice per task and horizon, copied from the committed results
(``bench/results/planning_quality_<env>_cpu_2026-11-21.json``, ``held_out.GRASP.setting``);
``GraspConfig.preset`` builds a config from :func:`preset_fields`.
"""

from __future__ import annotations

import math

from ._checks import check_int


def grasp_base_fields(horizon: int, seed: int = 0, backend: str = "auto") -> dict[str, object]:
    """GRASP on the real tasks: states move up to ~0.5 per model step, so the virtual states take Adam
    steps of 0.02 (the authors' 0.1 is sized for latent features and makes the chain oscillate here);
    the dense goal term is weighted 0.1 (gamma 1 pulls the chain off feasible paths: docs/design.md, section 6),
    small noise, a sync phase every 50 iterations with rate 0.1 (probed on the PointMaze tuning pairs)."""
    return dict(
        horizon=horizon, iters=300, lr_states=0.02, lr_actions=0.05, state_noise=0.01, init_noise=0.01,
        goal_weight=0.1, sync_every=50, sync_steps=10, sync_lr=0.1, seed=seed, backend=backend,
    )


def pixel_grasp_base_fields(horizon: int, seed: int = 0, backend: str = "auto") -> dict[str, object]:
    """GRASP in a pixel model's standardised latent (every component O(1), one step moves it by about
    ``delta_scale``, 0.1-0.5): the paper's state step size for latent features (0.1... here 0.05), a dense goal
    term of weight 0.1, small state noise, a sync phase every 50 iterations (the state tasks' settings,
    :func:`grasp_base_fields`, with the state step scaled to the latent's units)."""
    return {**grasp_base_fields(horizon, seed, backend), "lr_states": 0.05}


AUTHORS_NEWEST: dict[str, object] = {"particles": 8, "iters": 750, "lr_actions": 0.005, "state_noise": 0.005,
                                     "sync_every": 50, "sync_lr": 0.05}
GRASP_SWEEP: dict[str, dict[str, object]] = {
    # 8-chain settings only: one chain never won a sweep cell (bench/results/README.md); the one-chain GRASP
    # and its ablations are still measured on the held-out pairs at the chosen setting.
    "x8 particles": {"particles": 8},
    "x8, sync 50 steps": {"particles": 8, "sync_steps": 50},
    "x8, noise 0.05 annealed": {"particles": 8, "state_noise": 0.05, "anneal_noise": True},
    # the paper group's solver's two variants
    "x8, CEM sync": {"particles": 8, "sync": "cem"},
    "x8, goal weight annealed to 0.01": {"particles": 8, "goal_weight_final": 0.01},
    # the authors' newest published setting (750 iterations, a sync phase every 50 at rate 0.05), and its
    # CEM-sync variant (64 samples, top 8), on 8 chains like the rest of the sweep
    "x8, authors' newest": AUTHORS_NEWEST,
    "x8, authors' newest, CEM sync": {**AUTHORS_NEWEST, "sync": "cem", "cem_sync_samples": 64, "cem_sync_elites": 8},
    # the anytime levers (bench/anytime.py): fewer chains cost proportionally less at small budgets; a plan
    # whose energy stopped falling (under 1 % over a phase) stops
    "x2, sync 50 steps": {"particles": 2, "sync_steps": 50},
    "x8, sync 50 steps, stop when flat": {"particles": 8, "sync_steps": 50, "stop_tolerance": 0.01},
}
PIXEL_GRASP_SWEEP: dict[str, dict[str, object]] = {
    # GRASP in a pixel model's latent (on :func:`grasp_kernels.pixel_tasks.pixel_grasp_config`): the state
    # tasks' settings, plus the paper's state step size and goal weight, sized for latent features
    **GRASP_SWEEP,
    "x8, lr_states 0.1 (paper)": {"particles": 8, "lr_states": 0.1},
    "x8, goal weight 1.0 (paper)": {"particles": 8, "goal_weight": 1.0},
    # on the best state-task setting: every chain starts from its own 5-step CEM; gamma decays over the
    # whole plan rather than restarting each phase
    "x8, sync 50 steps, chains from a 5-step CEM": {"particles": 8, "sync_steps": 50, "init_cem_steps": 5},
    "x8, sync 50 steps, goal weight to 0.01 across phases": {
        "particles": 8, "sync_steps": 50, "goal_weight_final": 0.01, "goal_weight_schedule": "plan"},
}

# env -> {swept horizon: the GRASP_SWEEP setting the sweep chose}
CHOSEN: dict[str, dict[int, str]] = {
    "pointmaze-umaze": {25: "x8, sync 50 steps", 50: "x8, noise 0.05 annealed", 100: "x8, sync 50 steps",
                        200: "x8, sync 50 steps"},
    "pointmaze-medium": {25: "x8, sync 50 steps", 50: "x8 particles", 100: "x8, sync 50 steps",
                         200: "x8, sync 50 steps"},
    "pointmaze-large": {25: "x8, sync 50 steps", 50: "x8, sync 50 steps", 100: "x8, sync 50 steps",
                        200: "x8, sync 50 steps"},
    "pusht": {10: "x8, sync 50 steps", 25: "x8, sync 50 steps", 50: "x8, sync 50 steps"},
}


def scaled_iters(iters: int, scale: float) -> int:
    """``iters`` scaled by ``scale``, at least 1 (the iteration counts of a scaled planner setting)."""
    return max(1, int(round(iters * scale)))


def scaled_work(fields: dict[str, object], scale: float) -> dict[str, object]:
    """A GRASP setting's fields with its work scaled by ``scale`` (the budgets of ``bench/anytime.py``): the
    interval between sync phases, each phase's rollout steps and the CEM start's iterations, each at least 1
    where it was on, and the lifted iterations as the same number of phases (a plan that ended with a sync phase
    still does: lifted iterations after the last phase move the actions unchecked by any rollout, which cost
    the scaled settings up to 36 points of success from pixels); a scaled GRASP costs about ``scale`` times as
    much."""
    iters, sync_every = fields["iters"], fields["sync_every"]
    if sync_every and fields["sync_steps"] and iters >= sync_every:
        phases, rest = divmod(iters, sync_every)
        sync_every = scaled_iters(sync_every, scale)
        iters = phases * sync_every + (round(rest * scale) if rest else 0)
    else:
        iters = scaled_iters(iters, scale)
        sync_every = 0 if sync_every == 0 else max(1, min(iters, scaled_iters(sync_every, scale)))
    sync_steps = scaled_iters(fields["sync_steps"], scale) if fields["sync_steps"] else 0
    init_cem_steps = fields.get("init_cem_steps", 0)
    init_cem_steps = scaled_iters(init_cem_steps, scale) if init_cem_steps else 0
    return {**fields, "iters": iters, "sync_every": sync_every, "sync_steps": sync_steps,
            "init_cem_steps": init_cem_steps}


OBSERVATIONS = ("states", "pixels")

# (env, observation) -> {horizon: ((budget, GRASP setting, scale), ...)}: GRASP's frontier in the committed anytime
# profiles (bench/results/anytime_*_cpu_2026-12-07*.json, budgets in multiples of CEM's own time on the task): at
# each profiled budget, the sweep setting (GRASP_SWEEP / PIXEL_GRASP_SWEEP) and the scale of its work that reached
# the most goals within it; a file later in name order replaces an earlier one's horizons (Push-T: the `_new`
# profiles of the models shipped from 2026-12-07); tests/test_presets.py checks it against the files
GRASP_FRONTIER: dict[tuple[str, str], dict[int, tuple[tuple[float, str, float], ...]]] = {
    ("pointmaze-medium", "pixels"): {
        25: (
            (0.1, "x2, sync 50 steps", 0.0554),
            (0.25, "x2, sync 50 steps", 0.2729),
            (0.5, "x8, sync 50 steps, chains from a 5-step CEM", 0.072),
            (1.0, "x8, sync 50 steps", 0.3264),
            (2.0, "x8, sync 50 steps", 0.3264),
            (4.0, "x8, sync 50 steps", 0.3264),
        ),
        50: (
            (0.1, "x2, sync 50 steps", 0.0371),
            (0.25, "x8, sync 50 steps", 0.0622),
            (0.5, "x2, sync 50 steps", 0.4517),
            (1.0, "x2, sync 50 steps", 0.4517),
            (2.0, "x2, sync 50 steps", 0.4517),
            (4.0, "x2, sync 50 steps", 0.4517),
        ),
        100: (
            (0.1, "x2, sync 50 steps", 0.0594),
            (0.25, "x2, sync 50 steps", 0.0594),
            (0.5, "x2, sync 50 steps", 0.4132),
            (1.0, "x2, sync 50 steps", 0.4132),
            (2.0, "x2, sync 50 steps", 0.4132),
            (4.0, "x2, sync 50 steps", 0.4132),
        ),
    },
    ("pointmaze-medium", "states"): {
        25: (
            (0.1, "x2, sync 50 steps", 0.0409),
            (0.25, "x2, sync 50 steps", 0.0409),
            (0.5, "x2, sync 50 steps", 0.4805),
            (1.0, "x2, sync 50 steps", 0.4805),
            (2.0, "x8, sync 50 steps, stop when flat", 1.2832),
            (4.0, "x8, sync 50 steps, stop when flat", 2.4693),
        ),
        50: (
            (0.1, "x2, sync 50 steps", 0.0532),
            (0.25, "x8, sync 50 steps, stop when flat", 0.2686),
            (0.5, "x8, sync 50 steps, stop when flat", 0.2686),
            (1.0, "x8, sync 50 steps, stop when flat", 0.2686),
            (2.0, "x8, sync 50 steps, stop when flat", 1.7953),
            (4.0, "x8, sync 50 steps, stop when flat", 3.3756),
        ),
        100: (
            (0.1, "x2, sync 50 steps", 0.0459),
            (0.25, "x8, sync 50 steps, stop when flat", 0.0636),
            (0.5, "x8, sync 50 steps, stop when flat", 0.1359),
            (1.0, "x8, sync 50 steps, stop when flat", 0.2363),
            (2.0, "x2, sync 50 steps", 1.7495),
            (4.0, "x2, sync 50 steps", 3.8631),
        ),
    },
    ("pusht", "pixels"): {
        10: (
            (0.1, "x2, sync 50 steps", 0.0556),
            (0.25, "x8, sync 50 steps", 0.0877),
            (0.5, "x8, sync 50 steps", 0.0877),
            (1.0, "x8, sync 50 steps", 0.0877),
            (2.0, "x8, sync 50 steps", 0.9282),
            (4.0, "x8, sync 50 steps", 0.9282),
        ),
        25: (
            (0.1, "x2, sync 50 steps", 0.0769),
            (0.25, "x8, sync 50 steps", 0.0598),
            (0.5, "x8, sync 50 steps", 0.0598),
            (1.0, "x8, sync 50 steps", 0.0598),
            (2.0, "x8, CEM sync", 0.2662),
            (4.0, "x8, CEM sync", 0.2662),
        ),
    },
    ("pusht", "states"): {
        25: (
            (0.1, "x2, sync 50 steps", 0.0403),
            (0.25, "x2, sync 50 steps", 0.2259),
            (0.5, "x2, sync 50 steps", 0.4569),
            (1.0, "x2, sync 50 steps", 0.9186),
            (2.0, "x2, sync 50 steps", 1.7424),
            (4.0, "x8, sync 50 steps", 1.0549),
        ),
    },
}


def preset_fields(env: str, horizon: int, budget: float | None = 1.0, observation: str = "states",
                  **changes: object) -> dict[str, object]:
    """The GraspConfig fields of GRASP's setting for a shipped task, with ``changes`` applied last (any field,
    also one the setting sets, e.g. ``particles=4``).

    ``budget`` (a multiple of CEM's own time on the task, default 1): GRASP's frontier setting in the committed
    anytime profiles (:data:`GRASP_FRONTIER`) at the largest profiled budget <= ``budget``, its work scaled as
    profiled (:func:`scaled_work`); ``observation`` "states" or "pixels" (planning in the shipped pixel model's
    latent). ``budget=None``: the setting the quality sweep chose (:data:`CHOSEN`, states only) at the nearest
    swept horizon.

    Raises:
        ValueError: an unknown environment or observation, a task or horizon with no profile, a budget <= 0,
            NaN or outside the profiled range (each naming what exists).
        TypeError/ValueError: a ``horizon`` that is not an int >= 1, a ``budget`` that is not a number.
    """
    if not isinstance(env, str) or env.strip().lower() not in CHOSEN:
        raise ValueError(f"env must be one of the shipped tasks {sorted(CHOSEN)} for a preset, got {env!r}")
    env = env.strip().lower()
    horizon = check_int("horizon", horizon, minimum=1)
    if observation not in OBSERVATIONS:
        raise ValueError(f"observation must be one of {OBSERVATIONS}, got {observation!r}")
    if budget is None:
        if observation != "states":
            raise ValueError("budget=None (the quality sweep's choice) exists for observation='states' only")
        chosen = CHOSEN[env]
        nearest = min(chosen, key=lambda swept: (abs(swept - horizon), swept))
        return {**grasp_base_fields(horizon), **GRASP_SWEEP[chosen[nearest]], **changes}
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise TypeError(f"budget must be a number (a multiple of CEM's own time) or None, got {type(budget).__name__}")
    if not math.isfinite(budget) or budget <= 0:
        raise ValueError(f"budget must be a finite number > 0 (a multiple of CEM's own time), got {budget}")
    task = GRASP_FRONTIER.get((env, observation))
    if task is None:
        raise ValueError(f"no anytime profile of {env} from {observation}; profiled: {sorted(GRASP_FRONTIER)} "
                         f"(budget=None: the quality sweep's choice)")
    if horizon not in task:
        raise ValueError(f"no anytime profile of {env} from {observation} at horizon {horizon}; profiled horizons: "
                         f"{sorted(task)} (budget=None: the quality sweep's choice at the nearest swept horizon)")
    profiled = task[horizon]
    low, high = profiled[0][0], profiled[-1][0]
    if not low <= budget <= high:
        raise ValueError(f"budget {budget} is outside the profiled range [{low:g}, {high:g}] (multiples of CEM's "
                         f"own time on {env} from {observation}, H={horizon})")
    _, setting, scale = [entry for entry in profiled if entry[0] <= budget][-1]
    if observation == "pixels":
        fields = {**pixel_grasp_base_fields(horizon), **PIXEL_GRASP_SWEEP[setting]}
    else:
        fields = {**grasp_base_fields(horizon), **GRASP_SWEEP[setting]}
    return {**scaled_work(fields, scale), **changes}
