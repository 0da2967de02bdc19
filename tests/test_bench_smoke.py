"""Smoke run of the op-speed script: ``bench/op_speed.py --quick`` (tiny shapes, a few seconds on CPU)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_op_speed_quick(tmp_path):
    out = tmp_path / "op_speed.md"
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "op_speed.py"), "--quick", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "failed" not in proc.stderr, proc.stderr[-4000:]
    text = out.read_text()
    assert text.strip() == proc.stdout.strip()
    for needle in ("torch ", "triton ", "dtype:", "copy bandwidth", "date:"):
        assert needle in text
    for op in ("lifted_energy", "state_step_", "action_step_", "lifted_energy_state_step_"):
        assert f"## {op}\n" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "provider" not in line]
    providers = {row.split("|")[5].strip() for row in rows}
    assert {"triton", "triton 1-pass", "triton unfused"} <= providers
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert "n/a" not in cells[2:], row  # ref, compile, time, GB/s, speedups all measured
    assert "unfused / fused time" in text


@pytest.mark.parametrize("model", ["mlp", "transformer"])
def test_planner_speed_quick(tmp_path, model):
    out = tmp_path / "planner_speed.md"
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "planner_speed.py"), "--quick", "--model", model,
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text()
    assert "device CPU" in text and "torch " in text
    assert ("PatchTransformerDynamics" if model == "transformer" else "MLPDynamics") in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| B ")]
    assert len(rows) == 4  # --quick: B in {1, 4} x T in {4, 8}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        batched, looped, ratio = float(cells[2]), float(cells[3]), float(cells[4].rstrip("x"))
        assert batched > 0 and looped > 0 and abs(ratio - looped / batched) < 0.05 + 0.01 * ratio


def test_detour_quality_quick(tmp_path):
    out = tmp_path / "quality.md"
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "detour_quality.py"), "--quick", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text()
    held_out = text.split("## Held-out set")[1]
    for planner in ("GRASP", "GRASP x2", "GD", "CEM", "MPPI", "GRASP x2 no_noise", "GRASP x2 no_stopgrad", "GRASP x2 no_sync"):
        assert f"| {planner} |" in held_out
    assert held_out.count("/3;") == 8  # every planner evaluated once on the 3 held-out pairs


def test_wilson_interval():
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from detour_quality import wilson_interval

    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 25 < high < 35  # rule of three-ish upper bound
    low, high = wilson_interval(5, 10)
    assert 18 < low < 25 and 75 < high < 82
