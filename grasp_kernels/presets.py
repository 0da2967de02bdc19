"""GRASP settings for the shipped tasks, as plain field values (no GraspConfig here: config imports this).

:func:`grasp_base_fields` is GRASP on the real tasks; :data:`GRASP_SWEEP` and :data:`PIXEL_GRASP_SWEEP` are
the settings ``bench/planning_quality.py`` sweeps around it on 16 tuning pairs per environment and horizon;
:data:`CHOSEN` is the sweep's choice per task and horizon, copied from the committed results
(``bench/results/planning_quality_<env>_cpu_2026-11-21.json``, ``held_out.GRASP.setting``);
``GraspConfig.preset`` builds a config from :func:`preset_fields`.
"""

from __future__ import annotations

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


def preset_fields(env: str, horizon: int, **changes: object) -> dict[str, object]:
    """The GraspConfig fields of the sweep's chosen GRASP setting for ``env`` at ``horizon`` (the nearest
    swept horizon's setting where ``horizon`` was not swept), with ``changes`` applied last (any field,
    also one the setting sets, e.g. ``particles=4``).

    Raises:
        ValueError: an unknown environment, naming the known ones.
        TypeError/ValueError: a ``horizon`` that is not an int >= 1.
    """
    if not isinstance(env, str) or env.strip().lower() not in CHOSEN:
        raise ValueError(f"env must be one of the shipped tasks {sorted(CHOSEN)} for a preset, got {env!r}")
    horizon = check_int("horizon", horizon, minimum=1)
    chosen = CHOSEN[env.strip().lower()]
    nearest = min(chosen, key=lambda swept: (abs(swept - horizon), swept))
    return {**grasp_base_fields(horizon), **GRASP_SWEEP[chosen[nearest]], **changes}
