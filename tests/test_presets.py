"""GraspConfig.preset: GRASP's frontier setting at a time budget (the committed anytime profiles), and the quality
sweep's chosen setting per shipped task and horizon (budget=None)."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest

from grasp_kernels import GraspConfig, presets
from grasp_kernels.pixel_tasks import pixel_grasp_config
from grasp_kernels.presets import CHOSEN, GRASP_FRONTIER, GRASP_SWEEP, PIXEL_GRASP_SWEEP, scaled_work
from grasp_kernels.quality import grasp_base

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


@pytest.mark.parametrize("env", sorted(CHOSEN))
def test_presets_are_the_committed_sweep_choices(env):
    data = json.loads((RESULTS / f"planning_quality_{env}_cpu_2026-11-21.json").read_text())
    chosen = {int(h): v["held_out"]["GRASP"]["setting"] for h, v in data["horizons"].items()}
    assert CHOSEN[env] == chosen
    for horizon, setting in chosen.items():
        assert GraspConfig.preset(env, horizon, budget=None) == grasp_base(horizon).replace(**GRASP_SWEEP[setting])


def test_preset_takes_the_nearest_swept_horizon_and_changes():
    config = GraspConfig.preset("pointmaze-umaze", horizon=55, budget=None, seed=3)
    assert config.horizon == 55 and config.seed == 3 and config.anneal_noise  # 50's setting
    assert GraspConfig.preset("pointmaze-medium", horizon=50, budget=None).particles == 8


@pytest.mark.parametrize("env, horizon, error, word", [
    ("cartpole", 50, ValueError, "env"),
    (None, 50, ValueError, "env"),
    ("pusht", 0, ValueError, "horizon"),
    ("pusht", 2.5, TypeError, "horizon"),
])
def test_preset_rejects_bad_arguments(env, horizon, error, word):
    with pytest.raises(error, match=word):
        GraspConfig.preset(env, horizon)
    with pytest.raises(error, match=word):
        GraspConfig.preset(env, horizon, budget=None)


def test_preset_changes_override_the_settings_fields():
    """A change may name a field the chosen setting sets too (particles is 8 in every setting)."""
    config = GraspConfig.preset("pointmaze-medium", 25, particles=4, sync_steps=7)
    assert (config.particles, config.sync_steps, config.horizon) == (4, 7, 25)
    plain = GraspConfig.preset("pointmaze-medium", 25)
    assert config.replace(particles=plain.particles, sync_steps=plain.sync_steps) == plain
    chosen = GraspConfig.preset("pointmaze-medium", 25, budget=None, particles=4, sync_steps=7)
    assert chosen.replace(particles=8, sync_steps=50) == GraspConfig.preset("pointmaze-medium", 25, budget=None)


def test_the_frontier_table_is_the_committed_profiles():
    sys.path.insert(0, str(RESULTS.parent))
    import anytime

    assert GRASP_FRONTIER == anytime.grasp_frontier_tables(sorted(RESULTS.glob("anytime_*_cpu_2026-12-07*.json")))
    assert {("pointmaze-medium", "pixels"), ("pointmaze-medium", "states"), ("pusht", "states")} <= set(GRASP_FRONTIER)


@pytest.mark.parametrize("task", sorted(GRASP_FRONTIER))
def test_a_budget_preset_is_the_frontier_setting_at_the_largest_profiled_budget_below(task):
    env, observation = task
    for horizon, rows in GRASP_FRONTIER[task].items():
        base = (pixel_grasp_config if observation == "pixels" else grasp_base)(horizon)
        sweep = PIXEL_GRASP_SWEEP if observation == "pixels" else GRASP_SWEEP
        for i, (budget, setting, scale) in enumerate(rows):
            expected = GraspConfig(**scaled_work({**dataclasses.asdict(base), **sweep[setting]}, scale))
            assert GraspConfig.preset(env, horizon, budget=budget, observation=observation) == expected
            between = budget if i + 1 == len(rows) else (budget + rows[i + 1][0]) / 2
            assert GraspConfig.preset(env, horizon, budget=between, observation=observation, seed=5) == \
                expected.replace(seed=5)


FAKE = {("pusht", "states"): {25: ((0.25, "x2, sync 50 steps", 0.5), (1.0, "x8, sync 50 steps", 0.3),
                                   (4.0, "x8, sync 50 steps", 1.2))}}


def test_the_lookup_scales_the_settings_work(monkeypatch):
    monkeypatch.setattr(presets, "GRASP_FRONTIER", FAKE)
    small = GraspConfig.preset("pusht", 25, budget=0.5)
    assert (small.particles, small.iters, small.sync_every, small.sync_steps) == (2, 150, 25, 25)
    assert GraspConfig.preset("pusht", 25).iters == 90 and GraspConfig.preset("pusht", 25, budget=3.9).iters == 90
    assert GraspConfig.preset("pusht", 25, budget=4).iters == 360


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(budget=0.0), ValueError, r"budget must be a finite number > 0"),
    (dict(budget=-1), ValueError, r"budget must be a finite number > 0"),
    (dict(budget=math.nan), ValueError, r"budget must be a finite number > 0"),
    (dict(budget=math.inf), ValueError, r"budget must be a finite number > 0"),
    (dict(budget="1x"), TypeError, r"budget must be a number"),
    (dict(budget=True), TypeError, r"budget must be a number"),
    (dict(budget=0.1), ValueError, r"budget 0.1 is outside the profiled range \[0.25, 4\]"),
    (dict(budget=8.0), ValueError, r"outside the profiled range \[0.25, 4\]"),
    (dict(horizon=10), ValueError, r"at horizon 10; profiled horizons: \[25\]"),
    (dict(observation="pixels"), ValueError, r"no anytime profile of pusht from pixels; profiled: \[\('pusht', 'states'\)\]"),
    (dict(observation="video"), ValueError, r"observation must be one of \('states', 'pixels'\)"),
    (dict(budget=None, observation="pixels"), ValueError, r"budget=None .* exists for observation='states' only"),
])
def test_budget_preset_bad_input_names_what_exists(monkeypatch, kwargs, error, match):
    monkeypatch.setattr(presets, "GRASP_FRONTIER", FAKE)
    kwargs = {"horizon": 25, **kwargs}
    with pytest.raises(error, match=match):
        GraspConfig.preset("pusht", **kwargs)
