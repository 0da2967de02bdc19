"""Smoke run of the op-speed script: ``bench/op_speed.py --quick`` (tiny shapes, a few seconds on CPU)."""

from __future__ import annotations

import os
import subprocess
import sys

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
