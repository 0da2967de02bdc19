"""Pixel observations: frames rendered from planning states, the cached pixel data sets, bad inputs."""

from __future__ import annotations

import math
import os
import zipfile

import numpy as np
import pytest
from _render import skip_without_offscreen_gl

pytest.importorskip("mujoco")
pytest.importorskip("gymnasium_robotics")
pytest.importorskip("gym_pusht")

from grasp_kernels.envs import pixels  # noqa: E402
from grasp_kernels.envs import pixel_data  # noqa: E402
from grasp_kernels.envs.pixel_data import collect_pixels, load_dataset, save_dataset  # noqa: E402
from grasp_kernels.envs.pixels import (  # noqa: E402
    FrameRenderer,
    check_frames,
    goal_frame,
    pointmaze_world_to_pixel,
    render_states,
)
from grasp_kernels.envs.sim import PointMazeEnv, pusht_state  # noqa: E402

MAZE = "pointmaze-medium"


@pytest.fixture(scope="module", autouse=True)
def offscreen_gl():
    """Skip (with the reason) where MuJoCo cannot open an offscreen GL context at all."""
    skip_without_offscreen_gl(MAZE)


@pytest.fixture(scope="module")
def maze():
    env = PointMazeEnv("medium")
    yield env
    env.close()


def _ball_mask(frames: np.ndarray) -> np.ndarray:
    # The ball is PointMaze's green site; the walls are orange, the floor blue.
    f = frames.astype(np.int32)
    return (f[..., 1] > f[..., 0] + 40) & (f[..., 1] > f[..., 2] + 40)


def _centroid(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    assert len(rows), "nothing of the colour in the frame"
    return np.array([cols.mean(), rows.mean()])


# --------------------------------------------------------------------------------------------- render


@pytest.mark.parametrize("name", ["pointmaze-umaze", MAZE, "pointmaze-large", "pusht"])
def test_frames_shape_dtype_and_determinism(name):
    rng = np.random.default_rng(0)
    if name == "pusht":
        states = np.stack([pusht_state(rng.uniform(50, 450, 2), rng.uniform(150, 350, 2), rng.uniform(-3, 3))
                           for _ in range(3)])
    else:
        states = np.concatenate([rng.uniform(-1, 1, (3, 2)), np.zeros((3, 2))], axis=1).astype(np.float32)
    frames = render_states(name, states)
    assert frames.shape == (3, 64, 64, 3) and frames.dtype == np.uint8
    # Same states -> same bytes, through the cached renderer and through a fresh one.
    np.testing.assert_array_equal(render_states(name, states), frames)
    fresh = FrameRenderer(name)
    try:
        np.testing.assert_array_equal(fresh.render(states), frames)
    finally:
        fresh.close()
    # Different states -> different frames; an earlier render leaves no trace in a later one.
    assert not np.array_equal(frames[0], frames[1])
    np.testing.assert_array_equal(render_states(name, states[::-1])[::-1], frames)


def test_size_argument():
    frames = render_states("pusht", pusht_state((100, 100), (256, 256), 0.3)[None], size=32)
    assert frames.shape == (1, 32, 32, 3)
    assert render_states(MAZE, np.zeros((2, 4), np.float32), size=48).shape == (2, 48, 48, 3)


def test_maze_ball_appears_where_the_state_says(maze):
    cells = maze.free_cells()
    centers = np.array([maze.cell_center(r, c) for r, c in cells])
    states = np.concatenate([centers, np.zeros_like(centers)], axis=1).astype(np.float32)
    frames = render_states(MAZE, states)
    expected = pointmaze_world_to_pixel(MAZE, centers)
    for frame, where in zip(frames, expected):
        np.testing.assert_allclose(_centroid(_ball_mask(frame)), where - 0.5, atol=1.0)
    # x right -> column up; y up -> row down (rows grow downwards in the image).
    base = centers[0]
    moved = np.array([[*base, 0, 0], [base[0] + 0.3, base[1], 0, 0], [base[0], base[1] + 0.3, 0, 0]], np.float32)
    c0, cx, cy = (_centroid(_ball_mask(f)) for f in render_states(MAZE, moved))
    assert cx[0] > c0[0] + 1 and abs(cx[1] - c0[1]) < 0.5
    assert cy[1] < c0[1] - 1 and abs(cy[0] - c0[0]) < 0.5


def test_maze_frame_ignores_velocity():
    a = np.array([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 3.0, -2.0]], np.float32)
    frames = render_states(MAZE, a)
    np.testing.assert_array_equal(frames[0], frames[1])


def test_maze_walls_match_the_maze_map(maze):
    # The ball parked in the first free cell; every other cell's centre pixel is wall-orange iff a wall.
    ball_cell = maze.free_cells()[0]
    state = np.array([[*maze.cell_center(*ball_cell), 0, 0]], np.float32)
    frame = render_states(MAZE, state)[0].astype(np.int32)
    rows, cols = maze.maze_map.shape
    for r in range(rows):
        for c in range(cols):
            if (r, c) == ball_cell:
                continue
            col, row = np.floor(pointmaze_world_to_pixel(MAZE, maze.cell_center(r, c))).astype(int)
            red, _, blue = frame[row, col]
            assert (red > blue + 60) == (maze.maze_map[r, c] == 1), f"cell {(r, c)}: pixel {frame[row, col]}"


def test_pusht_agent_and_block_appear_where_the_state_says():
    def agent_mask(f):  # royal blue
        f = f.astype(np.int32)
        return (f[..., 2] > f[..., 0] + 80) & (f[..., 2] > 150)

    def block_mask(f):  # light slate grey: greyish blue, darker than the background and the walls
        f = f.astype(np.int32)
        return (f.sum(-1) < 600) & (f[..., 2] - f[..., 0] < 60) & ~agent_mask(f)

    base = pusht_state((100, 100), (256, 256), 0.0)
    states = np.stack([
        base,
        pusht_state((200, 100), (256, 256), 0.0),   # agent right
        pusht_state((100, 200), (256, 256), 0.0),   # agent down
        pusht_state((100, 100), (320, 256), 0.0),   # block right
        pusht_state((100, 100), (256, 256), 1.0),   # block turned
    ])
    f = render_states("pusht", states)
    a0, ax, ay = (_centroid(agent_mask(f[i])) for i in range(3))
    # 100 px of the 512 px table is 12.5 px of a 64 px frame.
    np.testing.assert_allclose(ax - a0, [12.5, 0.0], atol=1.0)
    np.testing.assert_allclose(ay - a0, [0.0, 12.5], atol=1.0)
    np.testing.assert_allclose(a0, [100 / 8 - 0.5, 100 / 8 - 0.5], atol=1.0)
    b0, bx = _centroid(block_mask(f[0])), _centroid(block_mask(f[3]))
    np.testing.assert_allclose(bx - b0, [8.0, 0.0], atol=1.0)
    # The agent does not change the block's pixels; turning the block does.
    np.testing.assert_array_equal(block_mask(f[0]), block_mask(f[1]))
    assert (block_mask(f[0]) != block_mask(f[4])).sum() > 20
    assert not np.array_equal(f[0], f[4])


def test_goal_frame_is_the_frame_of_the_goal_state():
    goal = pusht_state((300, 120), (256, 256), math.pi / 4)
    np.testing.assert_array_equal(goal_frame("pusht", goal), render_states("pusht", goal[None])[0])
    maze_goal = np.array([1.5, -0.5, 0.0, 0.0], np.float64)
    np.testing.assert_array_equal(goal_frame(MAZE, maze_goal), render_states(MAZE, maze_goal[None])[0])


# ----------------------------------------------------------------------------------------------- data


@pytest.mark.parametrize("name", [MAZE, "pusht"])
def test_dataset_reproducible_and_matches_rendering(tmp_path, name):
    first = collect_pixels(name, trajectories=2, length=4, seed=5, path=tmp_path / "a.npz")
    second = collect_pixels(name, trajectories=2, length=4, seed=5, path=tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert first.frames.shape == (2, 5, 64, 64, 3) and first.frames.dtype == np.uint8
    assert first.states.shape == (2, 5, pixels.STATE_DIMS[name]) and first.actions.shape == (2, 4, 2)
    np.testing.assert_array_equal(first.frames, second.frames)
    flat = first.states.reshape(-1, first.states.shape[-1])
    np.testing.assert_array_equal(first.frames.reshape(-1, 64, 64, 3), render_states(name, flat))
    # A second call loads the cache (same arrays), and another seed gives other data.
    cached = collect_pixels(name, trajectories=2, length=4, seed=5, path=tmp_path / "a.npz")
    np.testing.assert_array_equal(cached.frames, first.frames)
    np.testing.assert_array_equal(cached.actions, first.actions)
    other = collect_pixels(name, trajectories=2, length=4, seed=6, path=False)
    assert not np.array_equal(other.states, first.states)


def test_default_cache_path_is_outside_the_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    data = collect_pixels("pusht", trajectories=1, length=2, seed=1, size=16)
    path = pixel_data.cache_path("pusht", 1, 2, 1, 16)
    assert path == tmp_path / "grasp_kernels" / "pixels" / "pusht-s1-n1-l2-16px-r2-mixed.npz" and path.is_file()
    np.testing.assert_array_equal(load_dataset(path).frames, data.frames)


# ------------------------------------------------------------------------------------------ bad input


def test_bad_render_arguments():
    good = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="unknown environment 'cartpole'"):
        render_states("cartpole", good)
    with pytest.raises(ValueError, match=r"states must have shape \[N, 4\]"):
        render_states(MAZE, np.zeros((2, 6), np.float32))
    with pytest.raises(ValueError, match=r"states must have shape \[N, 6\]"):
        render_states("pusht", np.zeros(6, np.float32))
    with pytest.raises(TypeError, match="states must have a floating dtype"):
        render_states(MAZE, np.zeros((2, 4), np.int64))
    with pytest.raises(TypeError, match="states must be a numpy array"):
        render_states(MAZE, [[0.0, 0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="states contains 1 NaN"):
        render_states(MAZE, np.array([[np.nan, 0, 0, 0]], np.float32))
    with pytest.raises(ValueError, match=r"cos, sin"):
        render_states("pusht", np.zeros((1, 6), np.float32))
    with pytest.raises(ValueError, match=r"goal must have shape \[4\]"):
        goal_frame(MAZE, good)
    for size, error in ((0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError), ("64", TypeError)):
        with pytest.raises(error, match="size must be a positive int"):
            render_states(MAZE, good, size=size)
    with pytest.raises(ValueError, match="trajectories must be an int >= 1"):
        collect_pixels(MAZE, trajectories=0, length=3, seed=0, path=False)


def test_check_frames():
    check_frames(np.zeros((2, 64, 64, 3), np.uint8), size=64)
    with pytest.raises(TypeError, match="goal_image must have dtype uint8"):
        check_frames(np.zeros((64, 64, 3), np.float32), name="goal_image")
    with pytest.raises(ValueError, match=r"frames must have shape \[..., 64, 64, 3\]"):
        check_frames(np.zeros((2, 32, 32, 3), np.uint8), size=64)
    with pytest.raises(ValueError, match=r"square RGB"):
        check_frames(np.zeros((64, 64), np.uint8))


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_bad_cache_files(tmp_path):
    data = collect_pixels("pusht", trajectories=1, length=2, seed=0, size=16, path=tmp_path / "good.npz")
    good = dict(np.load(tmp_path / "good.npz", allow_pickle=False))

    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="corrupt.npz' is not a readable .npz"):
        load_dataset(corrupt)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes((tmp_path / "good.npz").read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.npz' is not a readable .npz"):
        load_dataset(truncated)
    with pytest.raises(ValueError, match="missing.npz'.*expected exactly"):
        load_dataset(_write(tmp_path / "missing.npz", **{k: v for k, v in good.items() if k != "actions"}))
    with pytest.raises(ValueError, match="dtype.npz'.*frames must have shape .* and dtype uint8"):
        load_dataset(_write(tmp_path / "dtype.npz", **{**good, "frames": good["frames"].astype(np.float32)}))
    with pytest.raises(ValueError, match="shape.npz'.*states must have shape \\(1, 3, 6\\)"):
        load_dataset(_write(tmp_path / "shape.npz", **{**good, "states": good["states"][:, :2]}))
    with pytest.raises(ValueError, match="objects.npz'.*allow_pickle=False"):
        np.savez(tmp_path / "objects.npz", **{**good, "env_name": np.array(["pusht", 1], dtype=object)})
        load_dataset(tmp_path / "objects.npz")
    path = tmp_path / "good.npz"
    with pytest.raises(ValueError, match="good.npz'.*holds 'pusht' frames, expected 'pointmaze-medium'"):
        load_dataset(path, env_name=MAZE)
    with pytest.raises(ValueError, match="good.npz'.*seed 0, expected seed 3"):
        load_dataset(path, seed=3)
    with pytest.raises(ValueError, match=r"good.npz'.*frames must have shape \(1, 3, 64, 64, 3\)"):
        load_dataset(path, size=64)
    with pytest.raises(ValueError, match=r"good.npz'.*action_repeat 2, expected action_repeat 5"):
        load_dataset(path, action_repeat=5)
    with pytest.raises(ValueError, match=r"good.npz'.*exploration policy 'mixed', expected policy 'pushes'"):
        load_dataset(path, policy="pushes")
    with pytest.raises(ValueError, match=r"good.npz'.*action_repeat 2, expected action_repeat 3"):
        collect_pixels("pusht", trajectories=1, length=2, seed=0, size=16, path=path, action_repeat=3)
    with pytest.raises(ValueError, match=r"action_repeat must be >= 1, got 0"):
        collect_pixels("pusht", trajectories=1, length=2, seed=0, size=16, path=False, action_repeat=0)
    with pytest.raises(ValueError, match=r"policy must be one of \['mixed'\] for pointmaze-medium"):
        collect_pixels(MAZE, trajectories=1, length=2, seed=0, size=16, path=False, policy="pushes")
    # collect_pixels checks a cache file it finds against its own arguments.
    with pytest.raises(ValueError, match=r"good.npz'.*frames must have shape \(1, 5, 16, 16, 3\)"):
        collect_pixels("pusht", trajectories=1, length=4, seed=0, size=16, path=path)
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        load_dataset(tmp_path / "nowhere.npz")
    assert zipfile.is_zipfile(path) and data.frames.shape == (1, 3, 16, 16, 3)


def test_save_dataset_round_trip(tmp_path):
    data = collect_pixels(MAZE, trajectories=1, length=2, seed=2, size=16, path=False)
    loaded = load_dataset(save_dataset(data, tmp_path / "x.npz"), env_name=MAZE, trajectories=1, length=2, size=16,
                          seed=2, action_repeat=10, policy="mixed")
    assert loaded.env_name == MAZE and loaded.seed == 2 and loaded.size == 16
    assert (loaded.action_repeat, loaded.policy) == (data.action_repeat, data.policy) == (10, "mixed")
    for key in ("frames", "states", "actions"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(data, key))


def test_cli_pixels(tmp_path, capsys):
    from grasp_kernels.cli import main

    out = tmp_path / "cli.npz"
    argv = ["pixels", "--env", "pusht", "--trajectories", "1", "--length", "2", "--size", "16", "--seed", "4",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert "frames (1, 3, 16, 16, 3)" in capsys.readouterr().out
    np.testing.assert_array_equal(load_dataset(out, seed=4).frames,
                                  collect_pixels("pusht", 1, 2, seed=4, size=16, path=False).frames)
    # the time step and the exploration policy are flags, and the data set records them
    pushes = tmp_path / "pushes.npz"
    assert main([*argv[:-3], "--out", str(pushes), "--no-progress", "--action-repeat", "3", "--policy", "pushes"]) == 0
    data = load_dataset(pushes, action_repeat=3, policy="pushes")
    np.testing.assert_array_equal(
        data.states, collect_pixels("pusht", 1, 2, seed=4, size=16, path=False, action_repeat=3, policy="pushes").states)
    with pytest.raises(SystemExit):
        main(["pixels", "--env", "cartpole"])


def test_triton_imports_after_maze_rendering():
    """Mesa's EGL driver loads its own LLVM; a Triton imported after it crashed the process (segfault).
    The renderer imports Triton first: render a maze frame, then import Triton and torch._dynamo, in a
    fresh process (the crash would kill pytest itself)."""
    pytest.importorskip("triton")
    pytest.importorskip("gymnasium_robotics")
    import subprocess
    import sys

    code = (
        "from grasp_kernels.envs.pixels import render_states\n"
        "from grasp_kernels.envs.exploration import random_start_states\n"
        "frames = render_states('pointmaze-umaze', random_start_states('pointmaze-umaze', 2, 0))\n"
        "import triton, torch._dynamo\n"
        "print('imported after rendering', frames.shape)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "imported after rendering (2, 64, 64, 3)" in proc.stdout
