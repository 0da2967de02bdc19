"""bench/device_check.sh end to end on the CPU, in its dry-run mode: the step order, the per-step
timeouts, the total budget, the summary and the files (nothing is launched)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "device_check.sh"
DEFAULT_STEPS = ["env", "build", "gpu_tests", "memcheck", "planner_speed", "op_speed"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def run(tmp_path: Path, *args: str, **env: str) -> tuple[int, list[str]]:
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OUT": str(out), **env}, timeout=120)
    summary = (out / "summary.txt").read_text().splitlines() if (out / "summary.txt").exists() else []
    return proc.returncode, summary


def verdicts(summary: list[str]) -> list[tuple[str, str]]:
    return [(line.split()[0], line.split()[1]) for line in summary if line.split()[0] in ("PASS", "FAIL", "SKIP")]


def test_dry_run_runs_every_step_in_order_and_writes_its_files(tmp_path):
    rc, summary = run(tmp_path)
    assert rc == 0
    assert verdicts(summary) == [("PASS", step) for step in DEFAULT_STEPS]
    assert summary[-1].startswith("overall: PASS")
    for name in ("summary.txt", "device_check.log", "env.txt"):
        assert (tmp_path / "out" / name).is_file()
    log = (tmp_path / "out" / "device_check.log").read_text()
    assert "pytest -q -rs -m gpu -n 8" in log and "compute-sanitizer --tool memcheck" not in log  # echoed, not run
    rc, summary = run(tmp_path, "--full")
    assert [step for _, step in verdicts(summary)][-5:] == ["racecheck", "initcheck", "synccheck", "planner_speed_full",
                                                            "op_speed_full"]


def test_a_step_over_its_timeout_fails_and_the_rest_still_run(tmp_path):
    rc, summary = run(tmp_path, DRY_SLEEP="gpu_tests:30", STEP_TIMEOUTS="gpu_tests:2")
    assert rc == 1
    assert verdicts(summary) == [("FAIL" if step == "gpu_tests" else "PASS", step) for step in DEFAULT_STEPS]
    assert any("gpu_tests" in line and "timed out after 2s" in line for line in summary)
    assert summary[-1].startswith("overall: FAIL")


def test_the_budget_skips_what_no_longer_fits(tmp_path):
    rc, summary = run(tmp_path, DRY_SLEEP="build:4", BUDGET="6", MIN_STEP="3")
    assert rc == 0
    got = dict((step, verdict) for verdict, step in verdicts(summary))
    assert got["env"] == "PASS" and got["build"] == "PASS"
    assert [got[step] for step in DEFAULT_STEPS[2:]] == ["SKIP"] * 4


def test_steps_subset_and_unknown_step(tmp_path):
    rc, summary = run(tmp_path, STEPS="build,memcheck")
    assert rc == 0 and verdicts(summary) == [("PASS", "build"), ("PASS", "memcheck")]
    rc, _ = run(tmp_path, STEPS="build,nonsense")
    assert rc == 2
