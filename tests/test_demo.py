"""The main job end to end on a tiny budget: table printed, picture written."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grasp_kernels import demo
from grasp_kernels.cli import main
from grasp_kernels.demo import PlannerRow, format_table, run_demo
from grasp_kernels.envs import DETOUR_WALLS, PointNavigation, make_task


def test_demo_cli_prints_the_table_and_writes_the_png(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo.png"
    seen = []
    real = demo.run_demo

    def run_and_record(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(demo, "run_demo", run_and_record)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["demo", "--task", "detour", "--problems", "2", "--horizon", "12", "--particles", "2", "--out",
                     str(out), "--no-progress", "--threads", "1"]) == 0
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert seen == [1] and after == 2  # the demo ran on its --threads; the caller's came back
    printed = capsys.readouterr().out
    for planner in ("GRASP", "GRASP x2", "GD", "CEM", "MPPI"):
        assert f"| {planner} |" in printed
    assert "success" in printed and "wall time" in printed
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_maze_demo_cli_plans_executes_and_draws(tmp_path, capsys):
    pytest.importorskip("gymnasium_robotics")
    out = tmp_path / "maze.png"
    assert main(["demo", "--problems", "2", "--horizon", "10", "--replan-every", "5", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "pointmaze-medium" in printed
    rows = [line for line in printed.splitlines() if line.startswith("| GRASP |") or line.startswith("| CEM |")]
    assert len(rows) == 2 and all(line.count("/2)") == 2 for line in rows)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_maze_demo_executes_in_the_simulator():
    pytest.importorskip("gymnasium_robotics")
    from grasp_kernels.demo import run_maze_demo
    from grasp_kernels.envs.tasks import make_pairs

    table, results = run_maze_demo(problems=2, horizon=8, replan_every=4, out=None, progress=False)
    pairs = make_pairs("pointmaze-medium", 2, 0)
    assert set(results) == {"GRASP", "CEM"}
    for result in results.values():
        assert result.executed.shape == (2, 17, 4)
        assert result.first_plan.actions.shape == (2, 8, 2)
        np.testing.assert_allclose(result.executed[:, 0, :2], pairs.starts[:, :2], atol=1e-5)
        assert np.abs(result.executed[:, -1, :2] - result.executed[:, 0, :2]).max() > 0.1  # it moved
    assert table.count("\n| ") == 3  # header and two planners


def test_run_demo_results_cover_every_planner():
    table, results = run_demo("detour", problems=2, horizon=10, particles=2, out=None, progress=False)
    assert set(results) == {"GRASP", "GRASP x2", "GD", "CEM", "MPPI"}
    for result in results.values():
        assert result.actions.shape == (2, 10, 2)
    assert table.count("\n| ") == 6  # header + 5 planners


def test_format_table():
    text = format_table([PlannerRow("X", 3, 4, 0.1234, 1.5)], "title")
    assert text.splitlines()[0] == "title"
    assert "| X | 75% (3/4) | 0.123 | 1.50 |" in text


def test_detour_walls_block_the_straight_line():
    task = make_task("detour")
    s0, goal = task.sample(8, seed=0)
    state = s0
    towards_goal = (goal - s0) / (goal - s0).norm(dim=1, keepdim=True)
    for _ in range(40):  # greedy: full speed straight at the goal
        state = task.world_model(state, towards_goal)
    assert torch.all((state - goal).norm(dim=1) > 0.5)  # stuck at the bottom of the cup
    assert torch.all(task.world_model.distance_to_walls(state) > -0.01)  # pushed out, not through


def test_walls_cannot_be_tunnelled_and_bad_settings_are_refused():
    model = PointNavigation(DETOUR_WALLS)
    state = torch.tensor([[-0.26, 0.0]])
    for _ in range(30):
        state = model(state, torch.tensor([[1.0, 0.0]]))
    assert state[0, 0] < -0.2
    with pytest.raises(ValueError, match="tunnel"):
        PointNavigation(DETOUR_WALLS, substeps=1)
    with pytest.raises(ValueError, match="unknown task"):
        make_task("maze")
