"""bench/anytime.py: the frontier and the budget from which GRASP leads (hand-made points), and a smoke run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import anytime  # noqa: E402
from anytime import Point, frontier, grasp_leads_from  # noqa: E402

BUDGETS = (0.1, 0.5, 1.0, 4.0)


def _point(family: str, setting: str, budget: float, ratio: float, successes: int) -> Point:
    return Point(family, setting, budget, budget, ratio, successes, 10, ratio * 3.0, 10)


def test_frontier_takes_the_best_point_within_each_budget():
    points = [
        _point("CEM", "a", 0.1, 0.12, 2), _point("CEM", "a", 1.0, 1.0, 5), _point("CEM", "b", 1.0, 0.9, 5),
        _point("CEM", "a", 4.0, 4.4, 6),
        _point("GRASP", "x", 0.1, 0.3, 9),  # took 3x its budget: it counts from 0.5 on
        _point("GRASP", "x", 1.0, 1.1, 7), _point("GRASP", "x", 4.0, 6.0, 10),  # 6.0 > 4 * 1.25: never within
    ]
    front = frontier(points, BUDGETS, slack=1.25)
    assert front["CEM"]["0.1"]["successes"] == 2
    assert front["CEM"]["1.0"]["setting"] == "b"  # a tie on successes goes to the faster point
    assert front["CEM"]["4.0"]["successes"] == 6
    assert "0.1" not in front["GRASP"]
    assert front["GRASP"]["0.5"]["successes"] == 9 and front["GRASP"]["4.0"]["successes"] == 9


def test_next_scale_follows_an_affine_time_model():
    # no point yet: the calibrated ratio at scale 1; one point: proportional to it
    assert anytime.next_scale(0.5, [], unit=2.0) == pytest.approx(0.25)
    assert anytime.next_scale(1.0, [(0.1, 0.4)], unit=2.0) == pytest.approx(0.25)
    # a setting that costs 1.2 CEM times before any work plus 0.5 per unit of scale: two points recover the line,
    # and the next budget gets its scale above the floor (a proportional update would have given 4 / 2.7 x 3)
    line = [(s, 1.2 + 0.5 * s) for s in (0.2, 3.0)]
    assert anytime.next_scale(4.0, line, unit=9.0) == pytest.approx((4.0 - 1.2) / 0.5)
    # a budget below the floor: the fixed part is clamped below the budget, the scale stays positive
    assert anytime.next_scale(1.0, line, unit=9.0) > 0
    # one scale measured, at a floor over the next budget: the work doubles (proportional would shrink it)
    assert anytime.next_scale(0.25, [(0.008, 1.28)], unit=13.0) == pytest.approx(0.016)
    # timing noise (time falling with work): proportional to the last point
    assert anytime.next_scale(2.0, [(1.0, 1.0), (2.0, 0.9)], unit=1.0) == pytest.approx(2.0 * 2.0 / 0.9)


def test_grasp_leads_from_the_smallest_budget_of_an_unbroken_lead():
    def front(grasp: list[int], cem: list[int]) -> dict:
        return {family: {str(b): {"successes": s} for b, s in zip(BUDGETS, row)}
                for family, row in (("GRASP", grasp), ("CEM", cem))}

    assert grasp_leads_from(front([1, 5, 6, 8], [3, 4, 6, 7]), BUDGETS) == 0.5  # a tie counts as a lead
    assert grasp_leads_from(front([4, 3, 6, 8], [3, 4, 6, 7]), BUDGETS) == 1.0  # the lead at 0.1 is broken at 0.5
    assert grasp_leads_from(front([9, 9, 9, 6], [3, 4, 6, 7]), BUDGETS) is None  # behind at the largest budget
    partial = front([5, 5, 5, 5], [3, 4, 6, 7])
    del partial["CEM"]["0.1"]  # CEM has no point within 0.1x: it counts as 0 there
    assert grasp_leads_from(partial, BUDGETS) is None


def _run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), MUJOCO_GL="egl")
    return subprocess.run([sys.executable, os.path.join(ROOT, "bench", "anytime.py"), *args, "--out-dir", str(tmp_path),
                           "--tag", "t"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_anytime_quick_writes_the_profile(tmp_path):
    proc = _run(tmp_path, "--quick", "--families", "GRASP", "CEM", "--grasp-settings", "x8 particles")
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "anytime_pointmaze-medium_t.json").read_text())
    cell = report["horizons"]["10"]
    assert cell["budgets"] == [0.5, 1.0, 2.0] and cell["cem_time"] > 0
    # every setting of the two families at every budget, each with the time it really took
    assert {(p["family"], p["setting"]) for p in cell["points"]} == {("GRASP", "x8 particles"), ("CEM", "var 0.5"),
                                                                     ("CEM", "var 1.0")}
    assert len(cell["points"]) == 3 * 3 and all(p["ratio"] > 0 and p["trials"] == 3 for p in cell["points"])
    assert cell["frontier"] == frontier([Point(**p) for p in cell["points"]], tuple(cell["budgets"]), report["slack"])
    text = (tmp_path / "anytime_pointmaze-medium_t.md").read_text()
    assert "| family | 0.5x | 1x | 2x |" in text and "CEM's own time" in text
    assert (tmp_path / "anytime_pointmaze-medium_t.png").stat().st_size > 1000
    # the frontier as presets.GRASP_FRONTIER holds it, and the summary
    printed = anytime.main(["--print-presets", str(tmp_path / "anytime_pointmaze-medium_t.json")])
    table = anytime.grasp_frontier_table(report)
    rows = table[("pointmaze-medium", "states")][10]
    assert [b for b, _, _ in rows] == [b for b in cell["budgets"] if str(b) in cell["frontier"]["GRASP"]]
    assert all(setting == "x8 particles" for _, setting, _ in rows) and printed == 0


def test_a_later_run_merges_an_earlier_runs_families(tmp_path):
    first = _run(tmp_path / "a", "--quick", "--families", "CEM", "MPPI", "--baseline-settings", "var 1.0")
    assert first.returncode == 0, first.stderr[-4000:]
    earlier = tmp_path / "a" / "anytime_pointmaze-medium_t.json"
    # --baseline-settings keeps only the named settings (MPPI has none of them)
    assert {(p["family"], p["setting"]) for p in json.loads(earlier.read_text())["horizons"]["10"]["points"]} == {
        ("CEM", "var 1.0")}
    proc = _run(tmp_path, "--quick", "--families", "GRASP", "--grasp-settings", "x8 particles", "--merge", str(earlier))
    assert proc.returncode == 0, proc.stderr[-4000:]
    cell = json.loads((tmp_path / "anytime_pointmaze-medium_t.json").read_text())["horizons"]["10"]
    old = json.loads(earlier.read_text())["horizons"]["10"]
    assert [p for p in cell["points"] if p["family"] == "CEM"] == old["points"]
    assert {p["setting"] for p in cell["points"] if p["family"] == "GRASP"} == {"x8 particles"}
    assert [run["cem_time"] for run in cell["runs"]] == [cell["cem_time"], old["cem_time"]]
    assert cell["frontier"] == frontier([Point(**p) for p in cell["points"]], tuple(cell["budgets"]), 1.25)


def test_summary_names_the_leading_family_per_budget():
    report = {"env": "pusht", "pixels": True, "horizons": {"25": {"budgets": [0.5, 1.0], "grasp_leads_from": 1.0,
              "frontier": {"GRASP": {"0.5": {"successes": 2, "trials": 10}, "1.0": {"successes": 5, "trials": 10}},
                           "CEM": {"0.5": {"successes": 4, "trials": 10}, "1.0": {"successes": 5, "trials": 10}},
                           "GD": {"1.0": {"successes": 1, "trials": 10}}}}}}
    lines = anytime.summary([report]).splitlines()
    assert lines[0] == "| task | H | 0.5x | 1x | GRASP leads from |"
    assert lines[2] == "| pusht (pixels) | 25 | CEM 40% (GRASP 20%) | GRASP/CEM 50% | 1x |"


def test_merge_refuses_another_task_or_other_pairs():
    def report(env: str, pairs: int) -> dict:
        return {"env": env, "pixels": False, "header": "h", "slack": 1.25, "horizons": {"10": {
            "budgets": [1.0], "pairs": pairs, "cem_time": 1.0, "points": [], "frontier": {}, "grasp_leads_from": None}}}

    with pytest.raises(ValueError, match="cannot join"):
        anytime.merge_points(report("pusht", 3), [report("pointmaze-medium", 3)])
    with pytest.raises(ValueError, match="profiled on 5 pairs there, 3 here"):
        anytime.merge_points(report("pusht", 3), [report("pusht", 5)])
    # another time step: a report without the field was made at the default of its time (Push-T: 2)
    with pytest.raises(ValueError, match="a report at action_repeat 5 cannot join one at 2"):
        anytime.merge_points(report("pusht", 3), [{**report("pusht", 3), "action_repeat": 5}])
    anytime.merge_points({**report("pusht", 3), "action_repeat": 2}, [report("pusht", 3)])


@pytest.mark.parametrize("args, message", [
    (("--budgets", "0", "1"), "--budgets must be > 0"),
    (("--slack", "0.5"), "--slack must be >= 1"),
    (("--merge", "no/such/report.json"), "--merge: cannot read"),
    (("--grasp-settings", "no such setting"), "--grasp-settings: unknown"),
    (("--baseline-settings", "var 9"), "--baseline-settings: unknown ['var 9']"),
])
def test_anytime_rejects_bad_arguments(tmp_path, args, message):
    proc = _run(tmp_path, "--quick", *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]


def test_reference_is_a_cem_setting_of_the_sweep():
    from grasp_kernels.models import MLPDynamics
    from grasp_kernels.quality import planner_settings

    settings = planner_settings(MLPDynamics(4, 2, hidden=8, depth=1), 2, 10)
    family, name = anytime.REFERENCE
    assert settings[family][name](1.0).config.var_scale == 1.0 and settings[family][name](1.0).config.iters == 30
