"""Smoke runs of the benchmark scripts (``--quick``: tiny shapes, seconds on the CPU) and checks of their tables."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import planning_quality  # noqa: E402


def _bench(script: str, *args: str, timeout: int = 300, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs ``bench/<script>`` with this checkout's package first on PYTHONPATH (and ``extra_env`` set)."""
    env = dict(os.environ) | (extra_env or {})
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, os.path.join(ROOT, "bench", script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_op_speed_quick(tmp_path):
    out = tmp_path / "op_speed.md"
    proc = _bench("op_speed.py", "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "failed" not in proc.stderr, proc.stderr[-4000:]
    text = out.read_text()
    assert text.strip() == proc.stdout.strip()
    for needle in ("torch ", "triton ", "dtype:", "copy bandwidth", "date:"):
        assert needle in text
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from _op_cases import OPS  # every op of the op table but those timed in whole plans

    for op in OPS:
        assert f"## {op}\n" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "provider" not in line]
    providers = {row.split("|")[5].strip() for row in rows}
    assert {"triton", "triton 1-pass", "triton unfused"} <= providers
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert "n/a" not in cells[2:], row  # ref, compile, time, GB/s, speedups all measured
    assert "unfused / fused time" in text


def _table(text: str, title: str) -> list[list[str]]:
    """The body rows (cells stripped) of the markdown table under ``## title``."""
    section = text.split(f"## {title}\n")[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")][1:]  # minus the header row
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if not line.startswith("|---")]


def _close(a: float, b: float, rel: float = 3e-3) -> bool:
    """Equal up to the table's 4 significant digits (both sides rounded)."""
    return abs(a - b) <= rel * max(abs(a), abs(b)) + 1e-9


@pytest.mark.parametrize("model", ["mlp", "transformer"])
def test_planner_speed_quick(tmp_path, model):
    out = tmp_path / "planner_speed.md"
    proc = _bench("planner_speed.py", "--quick", "--model", model, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "failed" not in proc.stderr, proc.stderr[-4000:]
    text = out.read_text()
    assert text.strip() == proc.stdout.strip()
    assert "— CPU" in text
    for needle in ("torch ", "triton ", "dtype:", "date:", "shapes:", "matmul", "copy bandwidth", "per plan = "):
        assert needle in text, needle
    assert ("PatchTransformerDynamics" if model == "transformer" else "MLPDynamics") in text
    iters, syncs = (int(v) for v in re.search(r"= (\d+) x iteration \+ (\d+) x sync", text).groups())
    assert (iters, syncs) == (300, 6)
    assert "0 graph break(s)" in text  # compiled is one compiled graph per shape

    floors = {}
    for cells in _table(text, "Shapes and floors"):
        index, gflop, flop_ms, mb, byte_ms, floor, bound, sync, model_ms = (cells[0], *cells[5:])
        floors[index] = (float(floor), float(sync), float(model_ms))
        assert float(gflop) > 0 and float(mb) > 0 and float(sync) > 0 and float(model_ms) > 0
        assert _close(float(floor), max(float(flop_ms), float(byte_ms)))
        assert bound == ("FLOPs" if float(flop_ms) >= float(byte_ms) else "bytes")
    assert len(floors) == 2  # --quick: two shapes

    times = {}
    for cells in _table(text, "Time per iteration and per plan"):
        index, provider, iter_ms, plan_ms, pct_floor, vs_loop, outside = cells[0], *cells[3:]
        floor, sync, model_ms = floors[index]
        if iter_ms.startswith("n/a ("):
            assert plan_ms == pct_floor == vs_loop == outside == "n/a"
            times[index, provider] = None
            continue
        ms = float(iter_ms)
        times[index, provider] = ms
        assert ms > 0
        assert _close(float(plan_ms), iters * ms + syncs * sync)
        assert _close(float(pct_floor), 100 * floor / ms, 8e-3)
        assert _close(float(vs_loop), times[index, "loop"] / ms)
        if provider in ("eager", "triton", "cuda"):
            expected = 100 * (ms - model_ms) / ms  # percentage points; 3 digits printed, inputs rounded to 4
            assert abs(float(outside) - expected) <= 8e-3 * abs(expected) + 0.06, (cells, expected)
        else:
            assert outside == "n/a"
    for index in floors:
        for key in ("loop", "eager", "compiled", "triton"):  # Triton under the interpreter
            assert times[index, key] is not None, (index, key)
        assert times[index, "graph"] is None and f"| {index} | " in text and "| graph | n/a (CUDA graphs need a CUDA device)" in text
        if model == "mlp":
            assert times[index, "fused_mlp"] is not None  # the fused MLP kernel under the interpreter
        else:
            assert times[index, "fused_mlp"] is None and "| fused_mlp | n/a (MLP world models only)" in text

    targets = _table(text, "Targets")
    assert len(targets) == 2
    for cells in targets:
        index, best_name, best_ms, vs_loop, _, vs_compile, _, pct = cells[0], *cells[3:]
        engine = {k: times[index, k] for k in ("eager", "triton", "cuda", "graph", "fused_mlp") if times[index, k] is not None}
        best = min(engine.values())
        assert best_name == min(engine, key=engine.get) and _close(float(best_ms), best)
        assert _close(float(vs_loop), times[index, "loop"] / best)
        assert _close(float(vs_compile), times[index, "compiled"] / best)
        assert _close(float(pct), 100 * floors[index][0] / best, 8e-3)


def test_planner_speed_lists_only_the_selected_providers(tmp_path):
    out = tmp_path / "planner_speed.md"
    proc = _bench("planner_speed.py", "--quick", "--providers", "loop", "eager", "--shapes", "3,8,2,5",
                  "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text()
    rows = _table(text, "Time per iteration and per plan")
    assert [cells[3] for cells in rows] == ["loop", "eager"]
    assert all(not cells[4].startswith("n/a") for cells in rows)
    assert "interpreter" not in text and "compiled: torch.compile" not in text and "fused_mlp" not in text


def test_plan_speed_quick(tmp_path):
    out = tmp_path / "plan_speed.md"
    proc = _bench("plan_speed.py", "--quick", "--compile-backend", "aot_eager", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "BackendFallbackWarning" not in proc.stderr, proc.stderr[-4000:]  # the compiled path ran
    text = out.read_text()
    assert text.strip() == proc.stdout.strip()
    for needle in ("CPU", "torch ", "date:", "pointmaze-medium", "grasp_base(T)", "compile backend: aot_eager"):
        assert needle in text, needle
    lines = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| T ")]
    assert len(lines) == 1  # --quick: one horizon
    cells = [c.strip() for c in lines[0].strip().strip("|").split("|")]
    assert cells[0] == "4"
    assert all(float(c) > 0 for c in cells[1:4])  # three plan times
    assert cells[11].split(" / ") == ["2", "0", "0"]  # one graph each for the iteration and the sync step
    assert float(cells[12]) < 1e-4 and float(cells[13]) < 1e-4  # all three plan the same actions


def test_detour_quality_quick(tmp_path):
    out = tmp_path / "quality.md"
    proc = _bench("detour_quality.py", "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text()
    held_out = text.split("## Held-out set")[1]
    for planner in ("GRASP", "GRASP x2", "GD", "CEM", "MPPI", "GRASP x2 no_noise", "GRASP x2 no_stopgrad", "GRASP x2 no_sync"):
        assert f"| {planner} |" in held_out
    assert held_out.count("/3;") == 8  # every planner evaluated once on the 3 held-out pairs


def test_planning_quality_quick(tmp_path):
    pytest.importorskip("gymnasium_robotics")
    proc = _bench("planning_quality.py", "--quick", "--out-dir", str(tmp_path), "--tag", "smoke", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = (tmp_path / "planning_quality_pointmaze-medium_smoke.md").read_text()
    assert (tmp_path / "planning_quality_pointmaze-medium_smoke.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((tmp_path / "planning_quality_pointmaze-medium_smoke.json").read_text())
    cell = report["horizons"]["10"]
    assert set(cell["held_out"]) == set(cell["closed_loop"]) == {"GRASP", "GD", "CEM", "MPPI"}
    assert set(cell["equal_time"]) == {"GD", "CEM", "MPPI"}
    assert set(cell["ablations"]) == {"GRASP 1 chain", "GRASP no_noise", "GRASP no_stopgrad", "GRASP no_sync"}
    # horizons in model steps and in simulator steps (PointMaze: 10 simulator steps per model step)
    assert report["action_repeat"] == 10 and report["settings"]["action_repeat"] is None
    assert "| planner | H=10 (100 sim) |" in text and report["state_model"]["file"].endswith("pointmaze-medium.safetensors")
    for section in ("Open loop in the model", "GRASP with one chain", "Equal wall-clock budget", "Closed loop", "Sweep"):
        assert f"## {section}" in text
    held_out = text.split("## Open loop in the model")[1].split("##")[0]
    assert held_out.count("/3;") == 4  # every family once on the 3 held-out pairs
    for family, entry in cell["held_out"].items():
        assert entry["setting"] in cell["sweep"][family]
        best = min(cell["sweep"][family].values(), key=lambda e: (-e["successes"], e["median_error"]))
        assert cell["sweep"][family][entry["setting"]] == best  # the sweep's winner is what was held out


def test_planning_quality_closed_loop_only(tmp_path):
    pytest.importorskip("gymnasium_robotics")
    proc = _bench("planning_quality.py", "--quick", "--closed-loop-only", "--families", "GRASP", "GD",
                  "--mpc-warm-start-states", "--out-dir", str(tmp_path), "--tag", "mpc", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "planning_quality_pointmaze-medium_mpc.json").read_text())
    assert report["settings"]["mpc_warm_start_states"] is True and "GRASP's virtual states" in report["header"]
    cell = report["horizons"]["10"]
    assert set(cell["closed_loop"]) == set(cell["sweep"]) == {"GRASP", "GD"}
    assert not cell["held_out"] and not cell["ablations"] and not cell["equal_time"]
    assert not (tmp_path / "planning_quality_pointmaze-medium_mpc.png").exists()  # nothing to plot
    for family, entry in cell["closed_loop"].items():
        best = min(cell["sweep"][family], key=lambda k: (-cell["sweep"][family][k]["successes"], cell["sweep"][family][k]["median_error"]))
        assert entry["setting"] == best and entry["trials"] == 3


def test_planning_quality_dino_wm_protocol(tmp_path):
    """--protocol dino-wm: Push-T pairs 25 simulator steps apart, DINO-WM's rule in every table; the report
    records the protocol and the closed loop says how it judged."""
    pytest.importorskip("gym_pusht")
    proc = _bench("planning_quality.py", "--quick", "--protocol", "dino-wm", "--families", "GRASP", "CEM",
                  "--out-dir", str(tmp_path), "--tag", "dw", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "planning_quality_pusht_dw.json").read_text())
    assert report["protocol"] == report["settings"]["protocol"] == "dino-wm"
    assert set(report["horizons"]["10"]["closed_loop"]) == {"GRASP", "CEM"}
    text = (tmp_path / "planning_quality_pusht_dw.md").read_text()
    assert "Protocol `dino-wm`" in text and "## Closed loop: MPC in the simulator, success by DINO-WM's eval_state, ever reached" in text


@pytest.mark.parametrize("given, expected", [
    (dict(protocol="region"), dict(horizons=None, mpc_horizons=None, mpc_steps=None, replan_every=5, mpc_iters_scale=0.25)),
    (dict(protocol="region", replan_every=2, mpc_iters_scale=0.5),
     dict(horizons=None, mpc_horizons=None, mpc_steps=None, replan_every=2, mpc_iters_scale=0.5)),
    (dict(protocol="dino-wm", env=["pusht"]),
     dict(horizons=[12], mpc_horizons=[12], mpc_steps=25, replan_every=None, mpc_iters_scale=1.0)),
    (dict(protocol="dino-wm", env=["pusht"], action_repeat=5, horizons=[5, 8]),
     dict(horizons=[5, 8], mpc_horizons=[5, 8], mpc_steps=10, replan_every=None, mpc_iters_scale=1.0)),
    (dict(protocol="dino-wm", env=["pusht"], mpc_horizons=[], replan_every=4, mpc_steps=7, mpc_iters_scale=0.5),
     dict(horizons=[12], mpc_horizons=[], mpc_steps=7, replan_every=4, mpc_iters_scale=0.5)),
])
def test_planning_quality_protocol_defaults(given, expected):
    """--protocol's defaults: the region protocol's MPC as before (every 5 steps, 0.25x iterations); DINO-WM's
    horizon the goal's distance, MPC at every horizon over 50 simulator steps, the whole plan executed
    (replan_every None: the horizon) at the chosen iterations; given values are kept."""
    args = argparse.Namespace(**(dict(env=["pointmaze-medium"], action_repeat=None, horizons=None, mpc_horizons=None,
                                      mpc_steps=None, replan_every=None, mpc_iters_scale=None) | given))
    planning_quality.resolve_protocol_defaults(args)
    assert {k: getattr(args, k) for k in expected} == expected


def test_planning_quality_dino_wm_protocol_is_push_ts(tmp_path):
    proc = _bench("planning_quality.py", "--protocol", "dino-wm", "--env", "pointmaze-medium", "--out-dir", str(tmp_path))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--protocol dino-wm: Push-T's evaluation; --env must be pusht alone" in proc.stderr.strip().splitlines()[-1]


def _tiny_pixel_model(tmp_path) -> tuple:
    """A tiny PointMaze-Medium pixel model trained by the CLI into ``tmp_path/weights`` (seconds; too small to
    plan well), its frames cached under ``tmp_path/cache``; returns (weights dir, environment for the bench)."""
    pytest.importorskip("mujoco")
    pytest.importorskip("gymnasium_robotics")
    weights = tmp_path / "weights"
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))  # keep the rendered frames out of the home dir
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "grasp_kernels", "train-pixels", "--env", "pointmaze-medium", "--trajectories", "6",
         "--heldout-trajectories", "3", "--length", "12", "--encoder-steps", "20", "--encoder-batch", "16",
         "--predictor-steps", "30", "--batch-size", "64", "--probe-steps", "20", "--threads", "1",
         "--no-progress", "--out", str(weights)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0 and "cannot render offscreen" in proc.stderr:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return weights, {"XDG_CACHE_HOME": env["XDG_CACHE_HOME"]}


def _count(cell: str) -> tuple[int, int]:
    """``"33% (1/3; 6-79), ..."`` -> (1, 3)."""
    successes, trials = re.search(r"\((\d+)/(\d+);", cell).groups()
    return int(successes), int(trials)


def test_planning_quality_pixels_quick(tmp_path):
    """--pixels --quick on a tiny pixel model: every table from pixels, the state model beside it on the same
    pairs and protocol, the model and its card in the report, and the markdown agreeing with the JSON."""
    import hashlib

    from grasp_kernels.presets import GRASP_SWEEP, PIXEL_GRASP_SWEEP

    weights, env = _tiny_pixel_model(tmp_path)
    out = tmp_path / "out"
    proc = _bench("planning_quality.py", "--pixels", "--quick", "--pixel-weights", str(weights), "--threads", "1",
                  "--out-dir", str(out), "--tag", "smoke", timeout=600, extra_env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    stem = out / "planning_quality_pixels_pointmaze-medium_smoke"
    assert not (out / "planning_quality_pointmaze-medium_smoke.md").exists()  # the pixels report has its own name
    text = Path(f"{stem}.md").read_text()
    assert Path(f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads(Path(f"{stem}.json").read_text())

    model_file = weights / "pointmaze-medium-pixels.safetensors"
    assert report["mode"] == "pixels" and report["settings"]["pixels"] is True and report["settings"]["quick"] is True
    assert report["model"]["file"] == str(model_file)
    assert report["model"]["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    card = json.loads((weights / "pointmaze-medium-pixels.json").read_text())
    assert report["model"]["card"]["metrics"] == card["metrics"]
    for needle in ("TRUE final state", "executed_open_loop", str(model_file), "PSNR", "train-pixels",
                   f"![success vs horizon]({stem.name}.png)", "QUICK SMOKE RUN"):
        assert needle in text, needle

    families = {"GRASP", "GD", "CEM", "MPPI"}
    cell = report["horizons"]["10"]  # --quick: H=10 only
    assert list(report["horizons"]) == ["10"]
    assert set(cell["held_out"]) == set(cell["closed_loop"]) == set(cell["state"]["held_out"]) == families
    assert set(cell["equal_time"]) == families - {"GRASP"}
    assert set(cell["ablations"]) == {"GRASP 1 chain", "GRASP no_noise", "GRASP no_stopgrad", "GRASP no_sync"}
    assert list(cell["sweep"]["GRASP"]) == list(PIXEL_GRASP_SWEEP) and len(PIXEL_GRASP_SWEEP) >= 6
    assert list(cell["state"]["sweep"]["GRASP"]) == list(GRASP_SWEEP)  # the state model's own settings

    def entries():
        for section in ("held_out", "ablations", "equal_time", "closed_loop"):
            yield section, 3, cell[section].values()
        yield "state held_out", 3, cell["state"]["held_out"].values()
        for sweep in (cell["sweep"], cell["state"]["sweep"]):
            for settings in sweep.values():
                yield "sweep", 2, settings.values()

    for section, trials, values in entries():
        for entry in values:
            assert entry["trials"] == trials, (section, entry)
            assert isinstance(entry["successes"], int) and 0 <= entry["successes"] <= trials, (section, entry)
    for sweep, held_out in ((cell["sweep"], cell["held_out"]), (cell["state"]["sweep"], cell["state"]["held_out"])):
        for family, entry in held_out.items():  # the held-out setting is the sweep's winner
            best = min(sweep[family], key=lambda k: (-sweep[family][k]["successes"], sweep[family][k]["median_error"]))
            assert entry["setting"] == best

    rows = _table(text, "Pixels vs state model, held-out pairs (executed open loop, each model's chosen setting)")
    assert sorted(row[0] for row in rows) == sorted(families)  # one row per family
    for family, pixel_cell, state_cell in rows:
        assert _count(pixel_cell) == (cell["held_out"][family]["successes"], 3)
        assert _count(state_cell) == (cell["state"]["held_out"][family]["successes"], 3)
        assert pixel_cell.endswith(f"[{cell['held_out'][family]['setting']}]")
        assert state_cell.endswith(f"[{cell['state']['held_out'][family]['setting']}]")
    held_out = _table(text, "Executed open loop from pixels, held-out pairs (chosen setting per planner and horizon)")
    assert {row[0]: _count(row[1]) for row in held_out} == {f: (cell["held_out"][f]["successes"], 3) for f in families}
    assert "## Sweep of the state model on the tuning pairs" in text and "## Closed loop" in text


@pytest.mark.parametrize("args,message", [
    (["--pixels", "--pixel-weights", "{empty}"],
     r"--pixel-weights: .*{empty}/pointmaze-medium-pixels\.safetensors not found; build it with: "
     r"python -m grasp_kernels train-pixels --env pointmaze-medium"),
    (["--pixel-weights", "{empty}"], r"--pixel-weights: needs --pixels"),
    (["--pixels", "--pixel-weights", "{empty}/nowhere"], r"--pixel-weights: .*nowhere is not a directory"),
    (["--action-repeat", "5"],
     r"--action-repeat: no usable state world model of pointmaze-medium: .*trained with action_repeat=10 .* "
     r"the requested action_repeat is 5"),
    (["--action-repeat", "0"], r"--action-repeat: must be an int >= 1, got 0"),
    (["--replan-every", "0"], r"--replan-every: must be an int >= 1, got 0"),
    (["--weights", "{empty}"], r"--weights: no usable state world model of pointmaze-medium: .*{empty}/pointmaze-medium"
                               r"\.safetensors not found"),
    (["--weights", "{empty}/nowhere"], r"--weights: .*nowhere is not a directory"),
    (["--pixels", "--grasp-settings", "x8 particles", "x9"],
     r"--grasp-settings: unknown setting\(s\) \['x9'\]; the GRASP sweep has \['x8 particles', "),
])
def test_planning_quality_pixels_bad_arguments(tmp_path, args, message):
    """A missing pixel model (or a misused flag) stops the run before any planning, with one line naming the flag."""
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [a.replace("{empty}", str(empty)) for a in args]
    proc = _bench("planning_quality.py", "--quick", *args, "--out-dir", str(tmp_path / "out"))
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert re.search(message.replace("{empty}", re.escape(str(empty))), last), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_wilson_interval():
    from grasp_kernels.quality import wilson_interval

    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 25 < high < 35  # rule of three-ish upper bound
    low, high = wilson_interval(5, 10)
    assert 18 < low < 25 and 75 < high < 82


def _fake_report(env: str, horizons: list[int]) -> dict:
    entry = {"successes": 3, "trials": 5, "median_error": 0.5, "wall_time": 1.0, "iters": 10}
    cell = lambda h: {"sweep": {"GD": {"lr 0.1": entry}}, "held_out": {"GD": {"setting": "lr 0.1", **entry, "successes": h % 6}},
                      "ablations": {}, "equal_time": {}, "closed_loop": {}}
    settings = {"trials": 5, "tune_trials": 2, "samples": 100, "families": ["GD"], "replan_every": 5, "mpc_iters_scale": 0.25,
                "mpc_steps": None, "quick": False, "mpc_warm_start_states": False}
    return {"env": env, "horizons": {str(h): cell(h) for h in horizons}, "seconds": 100.0, "header": f"run of {horizons}",
            "settings": settings}


def _merge(tmp_path, *reports):
    paths = []
    for i, report in enumerate(reports):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(report))
    return _bench("planning_quality.py", "--merge", *map(str, paths), "--out-dir", str(tmp_path), "--tag", "merged")


def test_planning_quality_merge_orders_horizons(tmp_path):
    proc = _merge(tmp_path, _fake_report("pointmaze-medium", [50, 200]), _fake_report("pointmaze-medium", [25]))
    assert proc.returncode == 0, proc.stderr[-4000:]
    merged = json.loads((tmp_path / "planning_quality_pointmaze-medium_merged.json").read_text())
    assert list(merged["horizons"]) == ["25", "50", "200"]
    assert merged["seconds"] == 200.0
    assert [merged["horizons"][h]["held_out"]["GD"]["successes"] for h in ("25", "50", "200")] == [1, 2, 2]
    text = (tmp_path / "planning_quality_pointmaze-medium_merged.md").read_text()
    # the fake reports predate the action_repeat field: PointMaze's 10 simulator steps per model step then
    assert "| GD | H=25 " not in text and "| planner | H=25 (250 sim) | H=50 (500 sim) | H=200 (2000 sim) |" in text
    assert "Merged from 2 runs" in text and "run of [50, 200]" in text
    assert (tmp_path / "planning_quality_pointmaze-medium_merged.png").read_bytes()[:4] == b"\x89PNG"


def test_planning_quality_merge_names_a_restricted_grasp_sweep(tmp_path):
    """A run with --grasp-settings merges with full runs; the header names its restriction and the merged
    report records no run-wide restriction."""
    restricted = _fake_report("pointmaze-medium", [100])
    restricted["settings"]["grasp_settings"] = ["x8 particles", "x8, sync 50 steps"]
    proc = _merge(tmp_path, _fake_report("pointmaze-medium", [25]), restricted)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = (tmp_path / "planning_quality_pointmaze-medium_merged.md").read_text()
    assert "H=100 swept only these GRASP settings (--grasp-settings): 'x8 particles'; 'x8, sync 50 steps'." in text
    merged = json.loads((tmp_path / "planning_quality_pointmaze-medium_merged.json").read_text())
    assert "grasp_settings" not in merged["settings"] and list(merged["horizons"]) == ["25", "100"]


def _other_settings(report: dict, **changes) -> dict:
    report["settings"] = report["settings"] | changes
    return report


@pytest.mark.parametrize("second,message", [
    (_fake_report("pusht", [25]), "one environment"),
    (_fake_report("pointmaze-medium", [50]), "horizon 50"),
    (_other_settings(_fake_report("pointmaze-medium", [25]), trials=50, quick=True), "other settings than .*: quick, trials"),
    (_other_settings(_fake_report("pointmaze-medium", [25]), protocol="dino-wm"), "other settings than .*: protocol"),
    ({"env": "pointmaze-medium", "horizons": {}}, "records no run settings"),
])
def test_planning_quality_merge_rejects_mixed_reports(tmp_path, second, message):
    proc = _merge(tmp_path, _fake_report("pointmaze-medium", [50]), second)
    assert proc.returncode != 0 and re.search(message, proc.stderr), proc.stderr[-2000:]
    assert not (tmp_path / "planning_quality_pointmaze-medium_merged.md").exists()


def test_planning_quality_merge_notes_describe_the_runs(tmp_path):
    """The closed-loop note comes from the runs' recorded settings, not from the merge command's defaults."""
    first, second = (_other_settings(_fake_report("pointmaze-medium", [h]), replan_every=3, mpc_iters_scale=1.0) for h in (25, 50))
    for report in (first, second):
        for cell in report["horizons"].values():
            cell["closed_loop"] = {"GD": {"setting": "lr 0.1", "successes": 1, "trials": 5, "median_error": 0.5,
                                          "wall_time": 1.0, "iters": 10}}
    proc = _merge(tmp_path, first, second)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = (tmp_path / "planning_quality_pointmaze-medium_merged.md").read_text()
    assert "Replanning every 3 model steps, warm-started, 1 x the chosen iterations" in text


def _fake_pixels_report(horizons: list[int], sha: str = "ab" * 32) -> dict:
    report = _fake_report("pointmaze-medium", horizons)
    report["settings"]["pixels"] = True
    report["mode"] = "pixels"
    report["model"] = {"file": "/w/pointmaze-medium-pixels.safetensors", "sha256": sha,
                       "card": {"metrics": {"one_step": {"latent_rmse": 0.5, "constant": 1.0}, "reconstruction_psnr": 30.0},
                                "reproduce": "python -m grasp_kernels train-pixels --env pointmaze-medium --seed 0"}}
    for h, cell in report["horizons"].items():
        cell["state"] = {"sweep": cell["sweep"], "held_out": {"GD": dict(cell["held_out"]["GD"], successes=4)}}
    return report


def test_planning_quality_merge_pixels_reports(tmp_path):
    """Pixels reports merge into a pixels report (its own file name, the side-by-side table); runs of another
    pixel model, or a state run, are refused."""
    proc = _merge(tmp_path, _fake_pixels_report([50]), _fake_pixels_report([25]))
    assert proc.returncode == 0, proc.stderr[-4000:]
    merged = json.loads((tmp_path / "planning_quality_pixels_pointmaze-medium_merged.json").read_text())
    assert merged["mode"] == "pixels" and list(merged["horizons"]) == ["25", "50"]
    assert merged["model"]["sha256"] == "ab" * 32
    text = (tmp_path / "planning_quality_pixels_pointmaze-medium_merged.md").read_text()
    rows = _table(text, "Pixels vs state model, held-out pairs (executed open loop, each model's chosen setting)")
    assert [row[0] for row in rows] == ["GD"] and [_count(c) for c in rows[0][1:]] == [(1, 5), (4, 5), (2, 5), (4, 5)]
    assert "PSNR 30.0 dB" in text and "/w/pointmaze-medium-pixels.safetensors" in text
    assert not (tmp_path / "planning_quality_pointmaze-medium_merged.md").exists()

    proc = _merge(tmp_path, _fake_pixels_report([50]), _fake_pixels_report([25], sha="cd" * 32))
    assert proc.returncode != 0 and "another pixel world model" in proc.stderr, proc.stderr[-2000:]
    proc = _merge(tmp_path, _fake_pixels_report([50]), _fake_report("pointmaze-medium", [25]))
    assert proc.returncode != 0 and re.search(r"other settings than .*: pixels$", proc.stderr.strip()), proc.stderr[-2000:]


def test_long_run_quick(tmp_path):
    """bench/long_run.py --quick: samples memory and live tensors and reports the growth after warm-up."""
    out = tmp_path / "long_run.md"
    proc = _bench("long_run.py", "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text()
    rows = [line for line in text.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [int(row.split("|")[1]) for row in rows] == [5, 10, 15, 20]
    for row in rows:
        rss, tensors = float(row.split("|")[2]), int(row.split("|")[3])
        assert rss > 0 and tensors > 0
    assert re.search(r"growth after the warm-up \(5 plans\) to plan 20: resident memory [+-]\d+\.\d MiB, "
                     r"live tensors [+-]\d+", text), text


def test_distributed_speed_quick(tmp_path):
    """torchrun on 1 and 2 gloo ranks: both shardings and the one-process baseline are timed."""
    out = tmp_path / "distributed_speed.md"
    proc = _bench("distributed_speed.py", "--quick", "--out", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "sharding" not in line]
    labels = [tuple(cell.strip() for cell in row.strip("|").split("|")[:2]) for row in rows]
    assert labels == [("one process, `GraspPlanner.plan`", "1"), ("plans across ranks", "1"), ("plans across ranks", "2"),
                      ("one process, `GraspPlanner.plan`", "1"), ("time across ranks", "1"), ("time across ranks", "2")]
    for row in rows:
        median = float(row.strip("|").split("|")[2])
        assert 0 < median < 60, row


def test_distributed_model_tables(tmp_path):
    """The paper model renders from a measured cost: boundary bytes are B*K x 196 x 384 float32, one
    row per (T, B*K, ranks), and the exchange shrinks relative to compute as T grows."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        import distributed_model as dm
    finally:
        sys.path.pop(0)
    cost = dm.ModelCost(forward_gflop=8.5, forward_vjp_gflop=17.0, activation_mb=30.0, dtype="bfloat16")
    text = dm.render(cost)
    lifted = [line for line in dm.lifted_rows(cost)]
    assert len(lifted) == len(dm.HORIZONS) * len(dm.CHAINS) * len(dm.RANKS)
    row = next(line for line in lifted if line.startswith("| 64 | 64 | 2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "2048" and float(cells[7]) == round(64 * 196 * 384 * 4 / 1e6, 1)
    assert "nothing here ran on a GPU" in text and "8.50 GFLOP" in text


def test_memory_quick(tmp_path):
    """bench/memory.py --quick: peak and time per chunk size, the sync's checkpointing, and one plan in a
    quarter of the memory it needs, within it."""
    out = tmp_path / "memory.md"
    proc = _bench("memory.py", "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text()
    for title in ("MLP pointmaze-medium (shipped)", "transformer 4 x 8 (quick)",
                  "The sync phase: chunks of chains and activation checkpointing",
                  "One plan in a quarter of the memory it needs"):
        assert f"## {title}\n" in text, title
    rows = _table(text, "MLP pointmaze-medium (shipped)")
    chunks = [int(cells[0]) for cells in rows]
    peaks = [float(cells[5]) for cells in rows]
    assert chunks[0] == 32 and rows[0][4] == "—"  # unchunked first
    assert all(p > 0 for p in peaks) and peaks[chunks.index(4)] < peaks[0]  # smaller chunks, smaller peaks
    assert "Within the budget (peak <= 1.1 x budget): yes." in text


def test_time_step_plans_the_same_pairs_at_each_models_time_step(tmp_path):
    """Two Push-T models of different time steps plan the same pairs over the same simulated time."""
    pytest.importorskip("gym_pusht")
    from grasp_kernels.models import MLPDynamics
    from grasp_kernels.models.training import fit_normalisation
    from grasp_kernels.models.zoo import save_world_model
    from grasp_kernels.envs.exploration import collect

    coarse = tmp_path / "r4"
    model = MLPDynamics(6, 2, hidden=8, depth=1)
    fit_normalisation(model, *collect("pusht", 2, 3, seed=0, action_repeat=4))
    save_world_model(model, coarse / "pusht.safetensors", "pusht", {"data": {"action_repeat": 4}})
    proc = _bench("time_step.py", "--weights", os.path.join(ROOT, "grasp_kernels", "weights"), str(coarse),
                  "--sim-steps", "4", "--trials", "2", "--tune-trials", "1", "--samples", "8", "--out-dir", str(tmp_path),
                  "--tag", "t")
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "time_step_pusht_t.json").read_text())
    assert [(r["action_repeat"], r["horizon"], r["sim_steps"]) for r in report["rows"]] == [(2, 2, 4), (4, 1, 4)]
    for row in report["rows"]:
        assert set(row["families"]) == {"CEM", "MPPI"} and all(f["trials"] == 2 for f in row["families"].values())
    assert report["rows"][0]["card_h10"]["block_px"] > 0 and report["rows"][1]["card_h10"] == {}
    assert "| 4 | " in (tmp_path / "time_step_pusht_t.md").read_text()
    bad = _bench("time_step.py", "--weights", str(coarse), "--sim-steps", "6", "--out-dir", str(tmp_path))
    assert bad.returncode == 2 and "--sim-steps: 6 is not a positive multiple" in bad.stderr


def test_predictability_measures_the_model_beside_the_simulator(tmp_path):
    pytest.importorskip("gym_pusht")
    pytest.importorskip("safetensors")
    proc = _bench("predictability.py", "--policies", "pushes", "--trajectories", "6", "--length", "12", "--horizon",
                  "4", "--sigmas", "0.5", "--out-dir", str(tmp_path), "--tag", "t")
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "predictability_pusht_t.json").read_text())
    rows = report["policies"]["pushes"]
    assert rows["all"]["trajectories"] == 6 and 1 <= rows["exact"]["trajectories"] <= 6
    exact = rows["exact"]
    # the velocities recorded by the replay restore the agent exactly (it moves only by its own PD control) ...
    assert exact["simulator from the state and its velocities"]["agent_px"] < 1e-3
    # ... and its relative PD target keeps a start perturbation as it is: two restarts perturbed by N(0, s^2) px
    # per axis end sqrt(2) s apart in RMS per axis pair, a spread of s * sqrt(2) (18 windows: sampling noise)
    assert exact["spread: the state known to 0.5 px"]["agent_px"] == pytest.approx(0.5 * 2**0.5, rel=0.4)
    assert exact["world model"]["agent_px"] < exact["constant (s' = s)"]["agent_px"]
    assert "| simulator from the planning state, at rest |" in (tmp_path / "predictability_pusht_t.md").read_text()
    bad = _bench("predictability.py", "--horizon", "20", "--length", "12", "--out-dir", str(tmp_path))
    assert bad.returncode == 2 and "--horizon must be <= --length (12), got 20" in bad.stderr
