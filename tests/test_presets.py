"""GraspConfig.preset: the quality sweep's chosen GRASP setting per shipped task and horizon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grasp_kernels import GraspConfig
from grasp_kernels.presets import CHOSEN
from grasp_kernels.presets import GRASP_SWEEP
from grasp_kernels.quality import grasp_base

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


@pytest.mark.parametrize("env", sorted(CHOSEN))
def test_presets_are_the_committed_sweep_choices(env):
    data = json.loads((RESULTS / f"planning_quality_{env}_cpu_2026-11-21.json").read_text())
    chosen = {int(h): v["held_out"]["GRASP"]["setting"] for h, v in data["horizons"].items()}
    assert CHOSEN[env] == chosen
    for horizon, setting in chosen.items():
        assert GraspConfig.preset(env, horizon) == grasp_base(horizon).replace(**GRASP_SWEEP[setting])


def test_preset_takes_the_nearest_swept_horizon_and_changes():
    config = GraspConfig.preset("pointmaze-umaze", horizon=55, seed=3)
    assert config.horizon == 55 and config.seed == 3 and config.anneal_noise  # 50's setting
    assert GraspConfig.preset("pointmaze-medium", horizon=50).particles == 8


@pytest.mark.parametrize("env, horizon, error, word", [
    ("cartpole", 50, ValueError, "env"),
    (None, 50, ValueError, "env"),
    ("pusht", 0, ValueError, "horizon"),
    ("pusht", 2.5, TypeError, "horizon"),
])
def test_preset_rejects_bad_arguments(env, horizon, error, word):
    with pytest.raises(error, match=word):
        GraspConfig.preset(env, horizon)


def test_preset_changes_override_the_settings_fields():
    """A change may name a field the chosen setting sets too (particles is 8 in every setting)."""
    config = GraspConfig.preset("pointmaze-medium", 25, particles=4, sync_steps=7)
    assert (config.particles, config.sync_steps, config.horizon) == (4, 7, 25)
    assert config.replace(particles=8, sync_steps=50) == GraspConfig.preset("pointmaze-medium", 25)
