"""bench/device_check.sh end to end on the CPU, in its dry-run mode: the step order, the per-step
timeouts, the total budget and its default from the call's limit, the logs streamed while a step runs,
compute-sanitizer's refusal of a GPU kind, the summary and the files (nothing is launched)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "device_check.sh"
DEFAULT_STEPS = ["env", "build", "gpu_tests", "planner_speed", "memcheck"]

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
    assert "GRASP_KERNELS_CUDA_ARCHS=90 " in log  # the build: sm_90 only
    rc, summary = run(tmp_path, "--full")
    assert [step for _, step in verdicts(summary)][-5:] == ["racecheck", "initcheck", "synccheck", "planner_speed_full",
                                                            "op_speed_full"]


def budget_of(summary: list[str]) -> int:
    return int(re.search(r"budget (\d+)s", summary[0]).group(1))


def test_the_default_budget_fits_the_call_and_the_timeouts_fit_the_budget(tmp_path):
    """The budget is the call's limit (timeout_s = 570) less a margin: at most 480 s of the 8-minute call.
    The default steps' timeouts add up to no more, so each step gets all of its own."""
    rc, summary = run(tmp_path)
    assert rc == 0 and budget_of(summary) <= 480
    log = (tmp_path / "out" / "device_check.log").read_text()
    timeouts = {name: int(seconds) for name, seconds in re.findall(r"step (\w+) \(timeout (\d+)s\)", log)}
    assert list(timeouts) == DEFAULT_STEPS
    assert sum(timeouts.values()) <= budget_of(summary)
    assert timeouts["env"] == 30 and timeouts["planner_speed"] >= 120
    rc, summary = run(tmp_path, CALL_LIMIT="300", MARGIN="60")
    assert budget_of(summary) == 240


def test_a_steps_output_is_in_the_log_while_the_step_runs(tmp_path):
    """Streamed, not copied at the end: a call cut off mid-step still returns what the step printed."""
    out = tmp_path / "out"
    proc = subprocess.Popen(["bash", str(SCRIPT), "--dry-run"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OUT": str(out), "DRY_SLEEP": "gpu_tests:8"})
    try:
        log = out / "device_check.log"
        deadline = time.monotonic() + 60
        seen = False
        while time.monotonic() < deadline and proc.poll() is None:
            text = log.read_text() if log.exists() else ""
            if "dry run: " in text.split("step gpu_tests", 1)[-1] and "step gpu_tests" in text:
                seen = True
                break
            time.sleep(0.2)
        assert seen, "the gpu_tests step's first line never reached the log while it ran"
        assert proc.poll() is None  # still sleeping in gpu_tests
        summary = (out / "summary.txt").read_text().splitlines()
        assert verdicts(summary)[-1] == ("PASS", "build")  # the summary grows step by step
    finally:
        proc.kill()
        proc.wait()


def test_a_refused_sanitizer_is_one_skip_line_not_a_failure(tmp_path):
    """compute-sanitizer refuses the nvidia-h200 kind: a known other GPU skips without a launch, and a
    refusal printed by a run (on any GPU) is a SKIP too; the overall verdict stays PASS."""
    rc, summary = run(tmp_path, DRY_GPU="NVIDIA H200")
    assert rc == 0 and summary[-1].startswith("overall: PASS")
    assert [line for line in summary if line.startswith(("PASS", "FAIL", "SKIP")) and "memcheck" in line] == [
        "SKIP memcheck (compute-sanitizer needs the nvidia-h100-x1 kind; this is NVIDIA H200)"]
    assert "step memcheck" not in (tmp_path / "out" / "device_check.log").read_text()
    rc, summary = run(tmp_path, DRY_REFUSED="memcheck")
    lines = [line for line in summary if line.startswith(("PASS", "FAIL", "SKIP")) and "memcheck" in line]
    assert rc == 0 and len(lines) == 1 and lines[0].startswith("SKIP memcheck (compute-sanitizer needs the "
                                                               "nvidia-h100-x1 kind; this is NVIDIA H100")
    assert "refused" in lines[0] and summary[-1].startswith("overall: PASS")
    rc, summary = run(tmp_path, "--full", DRY_GPU="NVIDIA H200", STEPS="memcheck,racecheck,initcheck,synccheck")
    assert rc == 0 and verdicts(summary) == [("SKIP", t) for t in ("memcheck", "racecheck", "initcheck", "synccheck")]


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
    assert [got[step] for step in DEFAULT_STEPS[2:]] == ["SKIP"] * 3


def test_steps_subset_and_unknown_step(tmp_path):
    rc, summary = run(tmp_path, STEPS="build,memcheck")
    assert rc == 0 and verdicts(summary) == [("PASS", "build"), ("PASS", "memcheck")]
    rc, _ = run(tmp_path, STEPS="build,nonsense")
    assert rc == 2
