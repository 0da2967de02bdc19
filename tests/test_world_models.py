"""Shipped world models, exploratory data collection, training and the model zoo's error handling (CPU, fast)."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium_robotics")
pytest.importorskip("gym_pusht")
pytest.importorskip("safetensors")

from grasp_kernels.envs.exploration import (  # noqa: E402
    collect,
    contact_fraction,
    pusht_block_distance,
    random_start_states,
)
from grasp_kernels.envs.sim import ENV_NAMES, make_env  # noqa: E402
from grasp_kernels.models import MLPDynamics  # noqa: E402
from grasp_kernels.models.training import (  # noqa: E402
    evaluate, fit_normalisation, replay_velocities, replay_windows, simulator_replay, train_world_model,
)
from grasp_kernels.models.zoo import (  # noqa: E402
    default_path,
    load_world_model,
    recorded_metrics,
    save_world_model,
)


@pytest.fixture(autouse=True)
def _threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


# ------------------------------------------------------------------------------------------ shipped models


SHIPPED = ("pointmaze-umaze", "pointmaze-medium", "pointmaze-large", "pusht")


def test_every_environment_has_a_shipped_model():
    assert set(SHIPPED) == set(ENV_NAMES)


def test_missing_model_file_names_the_reproduce_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="--env pointmaze-large"):
        load_world_model("pointmaze-large", tmp_path / "missing.safetensors")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_matches_its_card(name):
    model = load_world_model(name)
    card = recorded_metrics(name)
    assert card["env"] == name
    assert default_path(name).stat().st_size < 2_000_000
    # A fresh batch from a seed the model never saw, shorter than the training trajectories: the one-step
    # error may differ by sampling noise but not by a factor 2.
    states, actions = collect(name, trajectories=16, length=20, seed=987_654)
    metrics = evaluate(model, name, states, actions, horizons=(10,))
    recorded = card["metrics"]["one_step_normalised_rmse"]
    assert math.isfinite(metrics["one_step_normalised_rmse"])
    assert metrics["one_step_normalised_rmse"] < 2 * recorded + 0.05, (metrics, recorded)
    # Open loop, the model beats predicting "nothing moves" by a clear margin.
    group = "block_px" if name == "pusht" else "position"
    assert metrics["h10"][group] < metrics["h10"]["constant"][group]


# ----------------------------------------------------------------------------------------------- collect


@pytest.mark.parametrize("name", ["pointmaze-umaze", "pusht"])
def test_collect_shapes_determinism_bounds(name):
    states, actions = collect(name, trajectories=5, length=12, seed=3)
    dim = 6 if name == "pusht" else 4
    assert states.shape == (5, 13, dim) and states.dtype == np.float32
    assert actions.shape == (5, 12, 2) and actions.dtype == np.float32
    assert np.all(np.abs(actions) <= 1.0)
    again_states, again_actions = collect(name, trajectories=3, length=12, seed=3)
    np.testing.assert_array_equal(again_states, states[:3])  # deterministic, and prefix-stable
    np.testing.assert_array_equal(again_actions, actions[:3])
    other, _ = collect(name, trajectories=3, length=12, seed=4)
    assert not np.array_equal(other, states[:3])
    if name == "pusht":
        assert np.all((states[..., :2] >= 0) & (states[..., :2] <= 5.12))
        np.testing.assert_allclose(np.hypot(states[..., 4], states[..., 5]), 1.0, atol=1e-5)
    else:
        env = make_env(name)
        walls = env.maze_map.shape[0] / 2 * env.scaling
        assert np.all(np.abs(states[..., :2]) < walls)
        assert np.all(np.abs(states[..., 2:]) <= 5.5)  # the env clips velocities to 5 before each sim step


def test_pusht_pushes_policy_is_contact_heavy_and_deterministic():
    mixed, _ = collect("pusht", trajectories=12, length=30, seed=7)
    pushes, actions = collect("pusht", trajectories=12, length=30, seed=7, policy="pushes")
    assert pushes.shape == mixed.shape and np.all(np.abs(actions) <= 1.0)
    assert np.all((pushes[..., :2] >= 0) & (pushes[..., :2] <= 5.12))
    # The reason the policy exists: most transitions move the block (measured 0.76 on 100 trajectories,
    # the stage-and-push mix 0.52).
    assert contact_fraction("pusht", pushes) > max(0.6, contact_fraction("pusht", mixed) + 0.1)
    again, _ = collect("pusht", trajectories=5, length=30, seed=7, policy="pushes")
    np.testing.assert_array_equal(again, pushes[:5])
    # the alternation: trajectory i of either policy, as that policy collects it
    both, both_actions = collect("pusht", trajectories=5, length=30, seed=7, policy="mixed+pushes")
    np.testing.assert_array_equal(both[0::2], mixed[0:5:2])
    np.testing.assert_array_equal(both[1::2], pushes[1:5:2])
    np.testing.assert_array_equal(both_actions[1::2], actions[1:5:2])
    with pytest.raises(ValueError, match=r"policy must be one of \['mixed', 'mixed\+pushes', 'pushes'\] for pusht, got 'pull'"):
        collect("pusht", 2, 2, seed=0, policy="pull")
    with pytest.raises(ValueError, match=r"policy must be one of \['mixed'\] for pointmaze-umaze"):
        collect("pointmaze-umaze", 2, 2, seed=0, policy="pushes")


def test_action_repeat_sets_the_model_time_step():
    short, _ = collect("pusht", trajectories=3, length=6, seed=2, action_repeat=1)
    long_, _ = collect("pusht", trajectories=3, length=6, seed=2, action_repeat=4)
    short_actions_first = collect("pusht", trajectories=3, length=1, seed=2, action_repeat=1)[1][:, 0]
    np.testing.assert_array_equal(short[:, 0], long_[:, 0])  # same starts and first actions, longer first step
    np.testing.assert_array_equal(short_actions_first, collect("pusht", 3, 1, seed=2, action_repeat=4)[1][:, 0])
    first = lambda s: np.linalg.norm(s[:, 1, :2] - s[:, 0, :2], axis=-1)  # noqa: E731
    assert np.all(first(long_) > 1.2 * first(short)), (first(long_), first(short))
    with pytest.raises(ValueError, match="action_repeat must be >= 1, got 0"):
        collect("pusht", 2, 2, seed=0, action_repeat=0)


def test_random_start_states_are_valid():
    starts = random_start_states("pointmaze-medium", 20, seed=1)
    assert starts.shape == (20, 4) and np.all(starts[:, 2:] == 0)
    env = make_env("pointmaze-medium")
    for state in starts:
        np.testing.assert_allclose(env.reset_to(state, state), state, atol=1e-6)
        cell = np.round(env.maze_map.shape[0] / 2 - 0.5 - state[1]), np.round(state[0] + env.maze_map.shape[1] / 2 - 0.5)
        assert env.maze_map[int(cell[0]), int(cell[1])] != 1
    np.testing.assert_array_equal(random_start_states("pointmaze-medium", 20, seed=1), starts)
    pusht = random_start_states("pusht", 10, seed=1)
    assert pusht.shape == (10, 6)
    distance = pusht_block_distance(pusht[:, :2] * 100, pusht[:, 2:4] * 100, np.arctan2(pusht[:, 5], pusht[:, 4]))
    assert np.all(distance > 15.0)  # the agent (radius 15 px) starts clear of the block


# -------------------------------------------------------------------------------------------- bad inputs


def test_unknown_env_and_layout():
    with pytest.raises(ValueError, match="unknown environment"):
        load_world_model("cartpole")
    with pytest.raises(ValueError, match="unknown PointMaze layout"):
        load_world_model("pointmaze-huge")
    with pytest.raises(ValueError, match="unknown PointMaze layout"):
        collect("pointmaze-huge", 2, 2, seed=0)
    with pytest.raises(ValueError, match="trajectories"):
        collect("pusht", 0, 2, seed=0)


def test_model_file_for_another_env(tmp_path):
    copy = tmp_path / "pusht-copy.safetensors"
    shutil.copy(default_path("pusht"), copy)
    with pytest.raises(ValueError, match=r"'pusht'.*'pointmaze-medium'"):
        load_world_model("pointmaze-medium", path=copy)


def test_dimension_mismatch_with_env(tmp_path):
    from safetensors.torch import load_file, save_file

    path = tmp_path / "lying.safetensors"
    tensors = load_file(str(default_path("pusht")))
    metadata = {"format": "grasp_kernels.mlp_dynamics", "format_version": "1", "env": "pointmaze-umaze",
                "state_dim": "6", "action_dim": "2", "hidden": "256", "depth": "3", "activation": "SiLU"}
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ValueError, match=r"\(6, 2\).*pointmaze-umaze.*\(4, 2\)"):
        load_world_model("pointmaze-umaze", path=path)


def test_tensor_shapes_must_fit_metadata(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(default_path("pusht")), framework="pt") as handle:
        metadata = dict(handle.metadata())
    metadata["hidden"] = "128"
    path = tmp_path / "shapes.safetensors"
    save_file(load_file(str(default_path("pusht"))), str(path), metadata=metadata)
    with pytest.raises(ValueError, match="do not fit the architecture"):
        load_world_model("pusht", path=path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file(tmp_path, damage):
    path = tmp_path / "broken.safetensors"
    data = default_path("pointmaze-medium").read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00not a model" * 50, "empty": b""}[damage])
    with pytest.raises(ValueError, match=r"broken\.safetensors.*corrupt"):
        load_world_model("pointmaze-umaze", path=path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors.*python -m grasp_kernels train"):
        load_world_model("pusht", path=tmp_path / "missing.safetensors")


# ------------------------------------------------------------------------------------------------ training


def test_tiny_training_round_trip(tmp_path):
    model, metrics = train_world_model(
        "pointmaze-umaze", seed=5, trajectories=6, length=12, heldout_trajectories=3, hidden=32, depth=2,
        steps=15, batch_size=32, rollout_steps=4, progress=False,
    )
    for key in ("one_step", "h10"):
        assert all(math.isfinite(v) for v in metrics[key].values() if isinstance(v, float)), metrics[key]
    assert "h50" not in metrics  # longer than the trajectories
    assert math.isfinite(metrics["final_loss"])
    path = save_world_model(model, tmp_path / "tiny.safetensors", "pointmaze-umaze", metrics)
    card = recorded_metrics("pointmaze-umaze", path=path)
    assert card["architecture"]["hidden"] == 32 and card["training"]["seed"] == 5
    assert "--env pointmaze-umaze" in card["reproduce"]
    loaded = load_world_model("pointmaze-umaze", path=path)
    assert isinstance(loaded, MLPDynamics)
    states = torch.randn(7, 4)
    actions = torch.rand(7, 2) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(states, actions), model(states, actions), rtol=0, atol=0)
    with pytest.raises(ValueError, match="state_dim"):
        save_world_model(model, tmp_path / "wrong.safetensors", "pusht", metrics)


def test_model_files_record_their_action_repeat(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    model = MLPDynamics(6, 2, hidden=8, depth=1)
    metrics = {"seed": 0, "data": {"action_repeat": 5}}
    path = save_world_model(model, tmp_path / "r5.safetensors", "pusht", metrics)
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata()["action_repeat"] == "5"
    load_world_model("pusht", path=path, action_repeat=5)
    with pytest.raises(ValueError, match=r"trained with action_repeat=5 .* pusht's default action_repeat is 2"):
        load_world_model("pusht", path=path)
    with pytest.raises(ValueError, match=r"trained with action_repeat=5 .* the requested action_repeat is 3"):
        load_world_model("pusht", path=path, action_repeat=3)
    with pytest.raises(ValueError, match=r"action_repeat must be >= 1, got 0"):
        load_world_model("pusht", path=path, action_repeat=0)
    # A file written before the field existed was trained at the defaults of that time (Push-T: 2).
    with safe_open(str(path), "pt") as handle:
        old = {k: v for k, v in handle.metadata().items() if k != "action_repeat"}
    legacy = tmp_path / "legacy.safetensors"
    save_file(load_file(str(path)), str(legacy), metadata=old)
    load_world_model("pusht", path=legacy)
    with pytest.raises(ValueError, match=r"trained with action_repeat=2"):
        load_world_model("pusht", path=legacy, action_repeat=5)


def test_errors_report_the_median_beside_the_rmse():
    from grasp_kernels.models.training import _group_errors, _group_medians

    true = np.tile(np.array([1.0, 1.0, 2.0, 2.0, 1.0, 0.0], dtype=np.float32), (3, 1))
    predicted = true.copy()
    predicted[:, 2] += np.array([0.0, 0.1, 0.4])  # block off by 0, 10 and 40 px
    assert _group_medians("pusht", predicted, true)["block_px"] == pytest.approx(10.0, rel=1e-5)
    assert _group_errors("pusht", predicted, true)["block_px"] == pytest.approx(math.sqrt(1700 / 3), rel=1e-5)
    assert _group_medians("pusht", predicted, true)["agent_px"] == 0.0


# ------------------------------------------------------------------------------------- simulator replay


def test_simulator_replay_of_a_complete_state_is_exact():
    # PointMaze's planning state (position, velocity) is the simulator's whole state: restarted from any recorded
    # state, the simulator replays the recorded actions to the recorded states. A window misaligned by one step
    # would show the motion of one step (the data moves: checked below).
    states, actions = collect("pointmaze-umaze", trajectories=6, length=12, seed=5)
    replay = simulator_replay("pointmaze-umaze", states, actions, horizons=(4, 12, 13))
    assert set(replay) == {"h4", "h12"}  # 13 does not fit
    for errors in replay.values():
        assert errors["position"] < 1e-4 and errors["velocity"] < 1e-4, errors
    assert np.linalg.norm(states[:, 4] - states[:, 3], axis=-1).mean() > 1e-2


def test_simulator_replay_of_pusht_shows_what_its_state_leaves_out():
    # From a trajectory's start (at rest after a reset, as the recording began) the replay is exact; from
    # mid-trajectory states the velocities and the contact solver's state are lost and contacts amplify that:
    # the median stays sub-pixel while the RMSE is carried by a few diverging pushes.
    states, actions = collect("pusht", trajectories=12, length=30, seed=7, policy="pushes")
    replay = simulator_replay("pusht", states, actions, horizons=(30, 10))
    assert replay["h30"]["block_px"] < 1e-3 and replay["h30"]["block_angle_deg"] < 1e-3
    assert replay["h10"]["median"]["block_px"] < 5.0
    assert replay["h10"]["block_px"] > 5 * replay["h10"]["median"]["block_px"]


def test_replay_with_the_velocities_restores_the_agent_exactly():
    # Push-T's agent is kinematic (PD control, unmoved by contacts): its velocity is all a restart needs, so a
    # restart with the velocities recorded along the way reproduces the agent's path; the block's contacts
    # also depend on the solver's cached impulses, which no restart restores.
    states, actions = collect("pusht", trajectories=6, length=20, seed=3, policy="pushes")
    velocities, _ = replay_velocities(states, actions)
    final, target = replay_windows("pusht", states, actions, 5, velocities=velocities)
    assert final.shape == target.shape == (6 * 4, 6)
    np.testing.assert_allclose(final[:, :2], target[:, :2], atol=1e-5)
    at_rest, _ = replay_windows("pusht", states, actions, 5)
    assert np.abs(at_rest[:, :2] - target[:, :2]).max() > 0.01  # the velocities matter


def test_evaluate_reports_the_simulator_beside_the_model():
    states, actions = collect("pointmaze-umaze", trajectories=4, length=10, seed=2)
    model = MLPDynamics(4, 2, hidden=8, depth=1)  # untrained: far off
    fit_normalisation(model, states, actions)
    metrics = evaluate(model, "pointmaze-umaze", states, actions, horizons=(10,), replay=True)
    assert metrics["h10"]["simulator"]["position"] < 1e-4 < metrics["h10"]["position"]
    assert "simulator" not in evaluate(model, "pointmaze-umaze", states, actions, horizons=(10,))["h10"]


def test_simulator_replay_checks_its_arguments():
    states, actions = collect("pointmaze-umaze", trajectories=2, length=5, seed=1)
    with pytest.raises(ValueError, match=r"states must be \[N, L\+1, D\] and actions \[N, L, A\]"):
        simulator_replay("pointmaze-umaze", states[:, :-1], actions)
    with pytest.raises(ValueError, match="states must be"):
        simulator_replay("pointmaze-umaze", states[0], actions[0])
    with pytest.raises(ValueError, match="states must be"):
        simulator_replay("pointmaze-umaze", states[:0], actions[:0])
    with pytest.raises(ValueError, match="horizons must be >= 1, got 0"):
        simulator_replay("pointmaze-umaze", states, actions, horizons=(0,))
    with pytest.raises(ValueError, match="horizon must be <= the trajectories' 5 steps, got 6"):
        replay_windows("pointmaze-umaze", states, actions, 6)
    with pytest.raises(ValueError, match=r"velocities must be \[N, L\+1, V\]"):
        replay_windows("pusht", np.zeros((2, 6, 6)), actions, 2, velocities=np.zeros((2, 5, 5)))
    with pytest.raises(ValueError, match="velocities must be None"):
        replay_windows("pointmaze-umaze", states, actions, 2, velocities=np.zeros((2, 6, 4)))
