"""GRASP settings for the shipped tasks: what the quality sweep chose (``GraspConfig.preset``).

``bench/planning_quality.py`` sweeps the GRASP settings of :data:`grasp_kernels.quality.GRASP_SWEEP`
around :func:`grasp_kernels.quality.grasp_base` on 16 tuning pairs per environment and horizon, and
keeps the best one; :data:`CHOSEN` copies those choices from the committed results
(``bench/results/planning_quality_<env>_cpu_2026-11-21.json``, ``held_out.GRASP.setting``).
"""

from __future__ import annotations

from .config import GraspConfig

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


def preset(env: str, horizon: int, **changes: object) -> GraspConfig:
    """The sweep's chosen GRASP setting for ``env`` at ``horizon`` (the nearest swept horizon's
    setting where ``horizon`` was not swept), with ``changes`` applied (e.g. ``seed=``, ``backend=``).

    Raises:
        ValueError: an unknown environment, naming the known ones.
        TypeError/ValueError: a ``horizon`` that is not an int >= 1.
    """
    from ._checks import check_int
    from .quality import GRASP_SWEEP, grasp_base

    if not isinstance(env, str) or env.strip().lower() not in CHOSEN:
        raise ValueError(f"env must be one of the shipped tasks {sorted(CHOSEN)} for a preset, got {env!r}")
    horizon = check_int("horizon", horizon, minimum=1)
    chosen = CHOSEN[env.strip().lower()]
    nearest = min(chosen, key=lambda swept: (abs(swept - horizon), swept))
    return grasp_base(horizon).replace(**GRASP_SWEEP[chosen[nearest]], **changes)
