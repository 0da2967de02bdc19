"""``python -m grasp_kernels demo --pixels`` end to end with a tiny pixel world model (trained here, in a
temporary folder, through the CLI): the table, the picture, and the error for a missing weights file."""

from __future__ import annotations

import re

import numpy as np
import pytest
from _render import skip_without_offscreen_gl
import torch

pytest.importorskip("mujoco")
pytest.importorskip("gymnasium_robotics")
pytest.importorskip("gym_pusht")
pytest.importorskip("matplotlib")

from grasp_kernels.cli import main  # noqa: E402
from grasp_kernels.envs.pixels import render_states  # noqa: E402
from grasp_kernels.envs.sim import pusht_state  # noqa: E402

MAZE = "pointmaze-medium"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for this module: the demo's planners make many small calls, which on a busy 2-core
    machine ran about ten times slower with two threads than with one (measured); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """A folder with a tiny PointMaze-Medium pixel model (about 15-40 s on 2 cores; it plans badly, which is
    all the wiring needs). Its pixel data is cached in a temporary XDG_CACHE_HOME, not in the user's cache."""
    skip_without_offscreen_gl(MAZE)
    folder = tmp_path_factory.mktemp("pixel-weights")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        # --threads 1: what one_thread set (train-pixels sets the process's thread count)
        assert main(["train-pixels", "--env", MAZE, "--trajectories", "6", "--heldout-trajectories", "3",
                     "--encoder-steps", "20", "--predictor-steps", "30", "--threads", "1", "--out", str(folder),
                     "--no-progress"]) == 0
    return folder


def _budget_rows(table: str) -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
    """budget -> ((GRASP successes, problems), (CEM successes, problems)) of the equal-time table."""
    rows = {}
    for line in table.splitlines():
        match = re.match(r"\| ([\d.]+)x \|", line)
        if match:
            cells = [tuple(int(x) for x in c) for c in re.findall(r"\((\d+)/(\d+);", line)]
            rows[match.group(1)] = tuple(cells)
    return rows


def _mpc_counts(table: str, planner: str) -> tuple[int, int]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {planner} |"))
    return tuple(int(x) for x in re.search(r"\((\d+)/(\d+);", line).groups())


def test_pixel_demo_cli_prints_the_equal_time_table_and_writes_the_png(weights_dir, tmp_path, capsys):
    out = tmp_path / "pixels.png"
    # a short horizon keeps the planners' full iteration counts cheap
    assert main(["demo", "--pixels", "--pixel-weights", str(weights_dir), "--problems", "2", "--horizon", "6",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"{MAZE} from pixels, horizon 6, 2 start/goal pairs" in printed
    rows = _budget_rows(printed)
    assert list(rows) == ["0.5", "1", "2"]  # the default budgets, in multiples of CEM's own time
    assert all(len(cells) == 2 and all(n == 2 and 0 <= k <= 2 for k, n in cells) for cells in rows.values())
    assert "CEM's own time here:" in printed
    assert f"wrote {out}" in printed
    assert out.read_bytes()[:8] == PNG


def test_pixel_demo_plans_executes_open_loop_and_by_mpc(weights_dir, tmp_path):
    from grasp_kernels.demo import run_pixel_demo
    from grasp_kernels.pixel_tasks import pixel_pairs

    out = tmp_path / "demo.png"
    table, results = run_pixel_demo(MAZE, horizon=8, problems=2, weights_dir=weights_dir, mpc=True, replan_every=4,
                                    iters_scale=0.05, budgets=(1.0, 0.5), out=out, progress=False)
    assert set(results) == {"GRASP", "CEM", "GRASP MPC", "CEM MPC", "GRASP 0.5x", "GRASP 1x", "CEM 0.5x", "CEM 1x"}
    assert results["GRASP"] is results["GRASP 1x"] and results["CEM"] is results["CEM 1x"]
    starts = pixel_pairs(MAZE, 2, 0, 8).starts
    for name, result in results.items():
        assert result.executed.shape == ((2, 17, 4) if name.endswith("MPC") else (2, 9, 4))
        np.testing.assert_allclose(result.executed[:, 0, :2], starts[:, :2], atol=1e-5)
        assert result.first_plan.states.shape == (2, 9, 48)  # windows of 3 encoded frames, 16 latents each
    rows = _budget_rows(table)
    assert list(rows) == ["0.5", "1"]
    assert all(len(cells) == 2 and all(n == 2 and 0 <= k <= 2 for k, n in cells) for cells in rows.values())
    for planner in ("GRASP", "CEM"):
        successes, problems = _mpc_counts(table, planner)
        assert problems == 2 and 0 <= successes <= 2
    assert "0.05 x the iterations" in table
    assert out.read_bytes()[:8] == PNG


def test_grasp_at_budget_takes_the_profiles_setting_or_says_there_is_none(monkeypatch):
    from grasp_kernels import GraspConfig, presets
    from grasp_kernels.demo import grasp_at_budget

    frontier = {(MAZE, "pixels"): {25: ((0.25, "x2, sync 50 steps", 0.5), (1.0, "x8, sync 50 steps", 0.3))}}
    monkeypatch.setattr(presets, "GRASP_FRONTIER", frontier)
    config, how = grasp_at_budget(MAZE, 25, 0.5, "pixels", seed=3)
    assert config == GraspConfig.preset(MAZE, 25, budget=0.5, observation="pixels", seed=3)
    assert config.particles == 2 and how == "the anytime profile's frontier setting"
    config, how = grasp_at_budget(MAZE, 10, 1.0, "pixels")
    assert config == GraspConfig.preset(MAZE, 25, budget=1.0, observation="pixels").replace(horizon=10)
    assert "H=25's" in how
    config, how = grasp_at_budget("pointmaze-large", 10, 2.0, "pixels")
    assert (config.particles, config.iters, config.sync_steps) == (8, 600, 20) and how.startswith("no anytime profile")
    with pytest.raises(ValueError, match="outside the profiled range"):
        grasp_at_budget(MAZE, 25, 8.0, "pixels")
    # from states with no profile of the task: the quality sweep's choice, its work scaled by the budget
    config, how = grasp_at_budget("pointmaze-large", 50, 0.5, "states", seed=2)
    chosen = GraspConfig.preset("pointmaze-large", 50, budget=None, seed=2)
    assert config == chosen.replace(iters=150, sync_every=25, sync_steps=25) and "the sweep's choice" in how


@pytest.mark.parametrize("kwargs, match", [(dict(iters_scale=0.0), "iters_scale"), (dict(budgets=(1.0, 0.0)), "budgets"),
                                           (dict(budgets=()), "budgets")])
def test_bad_scale_or_budgets_are_refused_before_anything_runs(kwargs, match):
    from grasp_kernels.demo import run_pixel_demo

    with pytest.raises(ValueError, match=match):
        run_pixel_demo(out=None, progress=False, **kwargs)


def test_missing_pixel_weights_exit_2_naming_the_file(tmp_path, capsys):
    assert main(["demo", "--pixels", "--pixel-weights", str(tmp_path), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1
    assert str(tmp_path / f"{MAZE}-pixels.safetensors") in error and "train-pixels" in error


@pytest.mark.parametrize("argv", [["--task", "pusht"], ["--mpc"], ["--pixel-weights", "w"],
                                  ["--pixels", "--task", "detour"]])
def test_pixel_only_options_need_pixels(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", *argv])
    assert exit_info.value.code == 2
    assert "--pixels" in capsys.readouterr().err


def test_pusht_positions_land_on_the_frame():
    from grasp_kernels.plotting import frame_xy

    state = pusht_state((120, 380), (256, 256), 0.0)
    frame = render_states("pusht", state[None])[0].astype(np.int32)
    agent = (frame[..., 2] > frame[..., 0] + 80) & (frame[..., 2] > 150)  # royal blue
    rows, cols = np.nonzero(agent)
    # frame_xy puts pixel edges at integers: pixel i's centre is i + 0.5
    np.testing.assert_allclose(frame_xy("pusht", state[:2], 64), [cols.mean() + 0.5, rows.mean() + 0.5], atol=1.0)


def test_pusht_picture_draws_without_a_model(tmp_path):
    from grasp_kernels.plotting import PixelPlanRows, plot_pixel_plans

    states = np.stack([pusht_state((100 + 10 * t, 300), (256, 256 - 2 * t), 0.1 * t) for t in range(5)])[None]
    frames = render_states("pusht", states[0])
    rows = PixelPlanRows(executed=states, success=np.array([False]), error=np.array([8.0]),
                         plan_frames=frames[None, [0, 2, 4]], plan_source="predicted rollout",
                         final_frames=frames[-1:], mpc_executed=states)
    out = plot_pixel_plans("pusht", frames[:1], frames[-1:], states[:, -1], {"CEM": rows}, [0, 2, 4],
                           tmp_path / "p.png")
    assert out.read_bytes()[:8] == PNG
