"""The pixel world model (grasp_kernels.models.pixel, .pixel_losses, .pixel_training, .pixel_zoo): the windowed
latent predictor against a reference, windows, encoding, saving/loading, bad inputs, a tiny training run, and
planning through an Observation in the MPC loop (grasp_kernels.mpc, grasp_kernels.quality.executed_open_loop)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _render import skip_without_offscreen_gl
import torch

from grasp_kernels.models.pixel import LatentDynamics, PixelWorldModel, latent_windows
from grasp_kernels.models.pixel_losses import JEPA_SCALE, JEPA_WEIGHTS, jepa_loss, vicreg_terms
from grasp_kernels.models.pixel_training import PixelTrainConfig, train_pixel_world_model
from grasp_kernels.models.pixel_zoo import load_pixel_model, save_pixel_model

MAZE = "pointmaze-medium"


def _randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter and buffer drawn afresh (buffers positive where they divide), so that a test sees
    the normalisation and scale buffers act."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            values = torch.randn(tensor.shape, generator=generator)
            if name.endswith(("std", "scale", "limit")):
                values = values.abs() + 0.5
            if name.endswith("background"):
                values = torch.rand(tensor.shape, generator=generator) * 255
            tensor.copy_(values)
    return model


@pytest.mark.parametrize("latent_dim, window, batch", [(5, 3, 7), (16, 1, 3), (3, 4, 1)])
def test_latent_dynamics_matches_the_reference(latent_dim, window, batch):
    dynamics = _randomised(LatentDynamics(latent_dim, window, 2, hidden=11, depth=2), seed=latent_dim + window)
    states = torch.randn(batch, window * latent_dim)
    actions = torch.rand(batch, 2) * 2 - 1
    out = torch.full((batch, window * latent_dim), float("nan"))
    out.copy_(dynamics(states, actions))

    # reference: the window split into its latents, shifted by one, the new latent appended
    latents = states.reshape(batch, window, latent_dim)
    normalised = (actions - dynamics.action_mean) / dynamics.action_std
    new = latents[:, -1] + dynamics.delta_scale * dynamics.net(torch.cat([states, normalised], dim=1))
    expected = torch.cat([latents[:, 1:], new[:, None]], dim=1).reshape(batch, -1)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert torch.equal(out[:, : (window - 1) * latent_dim], states[:, latent_dim:])  # the shift is exact


def test_spatial_soft_argmax_finds_the_peak_and_averages():
    from grasp_kernels.models.pixel import spatial_soft_argmax

    maps = torch.zeros(2, 3, 5, 7)
    maps[0, 0, 1, 6] = 50.0   # one sharp peak: row 1 of 5 (y = -0.5), column 6 of 7 (x = 1)
    maps[1, 2, 4, 0] = 50.0   # y = 1, x = -1
    out = torch.full((2, 6), float("nan"))
    out.copy_(spatial_soft_argmax(maps, torch.ones(3)))
    torch.testing.assert_close(out[0, 0:2], torch.tensor([1.0, -0.5]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1, 4:6], torch.tensor([-1.0, 1.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[0, 2:4], torch.zeros(2), atol=1e-6, rtol=0)  # flat map: the centre
    # reference on random maps and temperatures: explicit grid, explicit softmax
    maps = torch.randn(3, 4, 6, 5)
    temperature = torch.rand(4) * 3
    weights = torch.softmax((maps * temperature[:, None, None]).flatten(2), -1).reshape(maps.shape)
    grid_y, grid_x = torch.meshgrid(torch.linspace(-1, 1, 6), torch.linspace(-1, 1, 5), indexing="ij")
    expected = torch.stack([(weights * grid_x).sum((2, 3)), (weights * grid_y).sum((2, 3))], -1).reshape(3, 8)
    torch.testing.assert_close(spatial_soft_argmax(maps, temperature), expected, atol=1e-6, rtol=0)


def test_latent_windows_pad_with_the_first_latent():
    latents = torch.randn(2, 6, 4)
    windows = latent_windows(latents, 3)
    assert windows.shape == (2, 6, 12)
    for t in range(6):
        rows = [max(0, r) for r in range(t - 2, t + 1)]
        torch.testing.assert_close(windows[:, t], latents[:, rows].reshape(2, 12), rtol=0, atol=0)


def _model(window: int = 3, latent_dim: int = 6, seed: int = 0, env: str = MAZE) -> PixelWorldModel:
    model = PixelWorldModel(env, latent_dim=latent_dim, window=window, channels=(4, 8), hidden=16, depth=1, frame_size=16)
    return _randomised(model, seed).eval()


def test_observe_encodes_windows_oldest_first_and_pads():
    model = _model()
    frames = torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8)
    with torch.no_grad():
        latents = model.encode(frames)  # [2, 3, E]
    assert latents.shape == (2, 3, 6)
    # (another batch size may take another convolution algorithm: equal up to rounding)
    torch.testing.assert_close(model.observe(frames), latents.reshape(2, 18), rtol=0, atol=1e-4)
    # one frame (the start of an episode): repeated, as a ball at rest would look
    start = model.observe(frames[:, :1])
    torch.testing.assert_close(start, latents[:, :1].repeat(1, 3, 1).reshape(2, 18), rtol=0, atol=1e-4)
    # the newest latent of a state is the last frame's
    torch.testing.assert_close(model.last_latents(model.observe(frames)), latents[:, -1], rtol=0, atol=1e-4)


def test_decode_gives_frames():
    model = _model()
    frames = model.decode(torch.randn(2, 5, 6))
    assert frames.shape == (2, 5, 16, 16, 3) and frames.dtype == np.uint8


def test_goal_state_repeats_the_goal_latent_and_checks_the_scene():
    model = _model()
    with torch.no_grad():
        model.background.fill_(100.0)
        model.frame_distance_limit.fill_(10.0)
    goal = torch.full((2, 16, 16, 3), 100, dtype=torch.uint8)
    goal[0, 3:5, 3:5] = 255  # a small object on the empty scene: fine
    state = model.goal_state(goal)
    with torch.no_grad():
        torch.testing.assert_close(state, model.encode(goal).repeat(1, 3), rtol=0, atol=0)
    other = torch.full((1, 16, 16, 3), 20, dtype=torch.uint8)  # another scene entirely
    with pytest.raises(ValueError, match=r"goal_frames do not look like pointmaze-medium frames"):
        model.goal_state(other)


@pytest.mark.parametrize(
    "frames, error, match",
    [
        (np.zeros((1, 16, 16, 3), np.float32), TypeError, r"frames must have dtype uint8"),
        (np.zeros((1, 32, 32, 3), np.uint8), ValueError, r"frames must have shape \[\.\.\., 16, 16, 3\]"),
        (np.zeros((1, 16, 16), np.uint8), ValueError, r"frames must have shape"),
        ([[1, 2, 3]], TypeError, r"frames must be a uint8 numpy array or tensor"),
        (np.zeros((1, 5, 16, 16, 3), np.uint8), ValueError, r"1 <= k <= window = 3"),
    ],
)
def test_bad_frames(frames, error, match):
    with pytest.raises(error, match=match):
        _model().observe(frames)


def test_bad_goal_frames():
    model = _model()
    with pytest.raises(TypeError, match=r"goal_frames must have dtype uint8"):
        model.goal_state(np.zeros((1, 16, 16, 3), np.float64))
    with pytest.raises(ValueError, match=r"goal_frames must be \[B, S, S, 3\]"):
        model.goal_state(np.zeros((1, 1, 16, 16, 3), np.uint8))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="unknown PointMaze layout 'huge'"):
        PixelWorldModel("pointmaze-huge")
    with pytest.raises(ValueError, match=r"frame_size must be divisible by 4, got 18"):
        PixelWorldModel(MAZE, channels=(4, 8), frame_size=18)
    with pytest.raises(ValueError, match=r"latent_dim must be even \(an \(x, y\) pair per keypoint\), got 5"):
        PixelWorldModel(MAZE, latent_dim=5)
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        PixelWorldModel(MAZE, window=0)


def test_save_load_roundtrip(tmp_path):
    model = _model(seed=3)
    path = save_pixel_model(model, tmp_path / "m.safetensors", {"seed": 3, "one_step": {"latent_rmse": 0.1}})
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["env"] == MAZE and card["metrics"]["one_step"]["latent_rmse"] == 0.1
    loaded = load_pixel_model(MAZE, path)
    assert not any(p.requires_grad for p in loaded.parameters())
    frames = torch.randint(0, 256, (3, 2, 16, 16, 3), dtype=torch.uint8)
    actions = torch.randn(3, 2)
    with torch.no_grad():
        torch.testing.assert_close(loaded.observe(frames), model.observe(frames), rtol=0, atol=0)
        states = model.observe(frames)
        torch.testing.assert_close(loaded.dynamics(states, actions), model.dynamics(states, actions), rtol=0, atol=0)
    for name, buffer in model.named_buffers():
        torch.testing.assert_close(dict(loaded.named_buffers())[name], buffer, rtol=0, atol=0)


def test_bad_weights_files(tmp_path):
    from safetensors.torch import save_file

    from grasp_kernels.models.mlp import MLPDynamics
    from grasp_kernels.models.zoo import save_world_model

    path = save_pixel_model(_model(), tmp_path / "m.safetensors", {})
    with pytest.raises(ValueError, match=r"was trained for env 'pointmaze-medium', not for the requested env 'pusht'"):
        load_pixel_model("pusht", path)
    with pytest.raises(ValueError, match="unknown environment 'not-an-env'"):
        load_pixel_model("not-an-env", path)
    # a weights file of another model: the state MLP
    mlp = save_world_model(MLPDynamics(4, 2, hidden=8, depth=1), tmp_path / "mlp.safetensors", MAZE, {})
    with pytest.raises(ValueError, match=r"is not a pixel world model"):
        load_pixel_model(MAZE, mlp)
    # corrupt: truncated
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"broken\.safetensors is corrupt"):
        load_pixel_model(MAZE, broken)
    # tensors that do not fit the metadata's architecture
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    metadata["latent_dim"] = "8"
    save_file(tensors, str(tmp_path / "shapes.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match=r"tensors do not fit the architecture"):
        load_pixel_model(MAZE, tmp_path / "shapes.safetensors")
    save_file(tensors, str(tmp_path / "odd.safetensors"), metadata={**metadata, "latent_dim": "7"})
    with pytest.raises(ValueError, match=r"odd\.safetensors: its metadata describes no valid model \(latent_dim must be even"):
        load_pixel_model(MAZE, tmp_path / "odd.safetensors")
    tensors["latent_mean"] = torch.full_like(tensors["latent_mean"], float("nan"))
    save_file(tensors, str(tmp_path / "nan.safetensors"), metadata={**metadata, "latent_dim": "6"})
    with pytest.raises(ValueError, match=r"non-finite values in \['latent_mean'\]"):
        load_pixel_model(MAZE, tmp_path / "nan.safetensors")
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors not found; build it with: python -m grasp_kernels train-pixels"):
        load_pixel_model(MAZE, tmp_path / "missing.safetensors")
    # trained for another time step or frame size than the caller asks for
    with pytest.raises(ValueError, match=r"m\.safetensors was trained with action_repeat=10 .* the requested action_repeat is 5"):
        load_pixel_model(MAZE, path, action_repeat=5)
    with pytest.raises(ValueError, match=r"frame_size: .*m\.safetensors was trained on 16 x 16 frames, not the requested 64 x 64"):
        load_pixel_model(MAZE, path, frame_size=64)
    with pytest.raises(ValueError, match=r"frame_size must be a positive int, got 0"):
        load_pixel_model(MAZE, path, frame_size=0)
    assert load_pixel_model(MAZE, path, action_repeat=10, frame_size=16).frame_size == 16


def test_vicreg_terms_match_their_definition():
    latents = torch.randn(9, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * torch.tensor(
        [0.2, 1.5, 0.7, 3.0, 0.05], dtype=torch.float64)
    variance, covariance = vicreg_terms(latents)
    n, dim = latents.shape
    means = [sum(float(latents[i, e]) for i in range(n)) / n for e in range(dim)]
    cov = [[sum((float(latents[i, e]) - means[e]) * (float(latents[i, f]) - means[f]) for i in range(n)) / (n - 1)
            for f in range(dim)] for e in range(dim)]
    expected_variance = sum(max(0.0, 1.0 - (cov[e][e] + 1e-4) ** 0.5) for e in range(dim)) / dim
    expected_covariance = sum(cov[e][f] ** 2 for e in range(dim) for f in range(dim) if e != f) / dim
    assert float(variance) == pytest.approx(expected_variance, rel=1e-12)
    assert float(covariance) == pytest.approx(expected_covariance, rel=1e-12)
    collapsed = vicreg_terms(torch.ones(6, 4, dtype=torch.float64))  # a constant code: the hinge is at its largest
    assert float(collapsed[0]) == pytest.approx(1.0 - 1e-2) and float(collapsed[1]) == 0.0


def test_jepa_loss_matches_a_per_frame_reference_and_stops_the_targets_gradient():
    torch.manual_seed(0)
    model = PixelWorldModel(MAZE, latent_dim=4, window=2, channels=(4, 8))
    predictor = _randomised(LatentDynamics(4, 2, 2, hidden=8, depth=1), 5)
    generator = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (3, 5, 64, 64, 3), generator=generator, dtype=torch.uint8)
    actions = torch.randn(3, 4, 2, generator=generator)
    total, terms = jepa_loss(model, predictor, frames, actions, window=2)
    with torch.no_grad():
        z = [[model.encoder(model.frames_to_input(frames[b, j])) [0] / JEPA_SCALE for j in range(5)] for b in range(3)]
        forced, rolled = [], []
        for b in range(3):
            state = torch.cat([z[b][0], z[b][1]])
            for j in range(1, 4):  # windows ending at frames 1..3 predict frames 2..4
                window = torch.cat([z[b][j - 1], z[b][j]])
                forced.append(predictor(window[None], actions[b, j][None])[0, -4:] - z[b][j + 1])
                state = predictor(state[None], actions[b, j][None])[0]
                rolled.append(state[-4:] - z[b][j + 1])
        expected = (torch.stack(forced).pow(2).mean() + torch.stack(rolled).pow(2).mean()) / 2
        variance, covariance = vicreg_terms(torch.stack([zz for row in z for zz in row]))
    assert terms["prediction"] == pytest.approx(float(expected), rel=1e-5)
    assert terms["variance"] == pytest.approx(float(variance), rel=1e-5)
    assert terms["covariance"] == pytest.approx(float(covariance), rel=1e-4, abs=1e-9)
    weighted = sum(JEPA_WEIGHTS[name] * terms[name] for name in terms)
    assert float(total.detach()) == pytest.approx(weighted, rel=1e-5)
    # the targets are stop-gradient: a predictor that ignores its input gives the encoder gradients only
    # through the VICReg terms, whatever the prediction error
    class Constant(torch.nn.Module):
        def forward(self, states, actions):
            return torch.zeros_like(states) + 3.0

    only_prediction = jepa_loss(model, Constant(), frames, actions, window=2)[1]["prediction"]
    assert only_prediction > 0
    model.zero_grad()
    total = jepa_loss(model, Constant(), frames, actions, window=2)[0]
    total.backward()
    with_prediction = [p.grad.clone() for p in model.encoder.parameters()]
    model.zero_grad()
    latents = model.encoder(model.frames_to_input(frames)) / JEPA_SCALE
    regulariser = vicreg_terms(latents)
    (JEPA_WEIGHTS["variance"] * regulariser[0] + JEPA_WEIGHTS["covariance"] * regulariser[1]).backward()
    for grad, parameter in zip(with_prediction, model.encoder.parameters()):
        torch.testing.assert_close(grad, parameter.grad, rtol=1e-4, atol=1e-7)


def test_bad_objective_names_the_field():
    with pytest.raises(ValueError, match=r"objective must be one of \('reconstruction', 'jepa'\), got 'byol'"):
        PixelTrainConfig(objective="byol")


# ------------------------------------------------------------------------------- with the simulators


@pytest.fixture
def simulators(tmp_path, monkeypatch):
    pytest.importorskip("mujoco")
    pytest.importorskip("gymnasium_robotics")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    skip_without_offscreen_gl(MAZE)


TINY = PixelTrainConfig(trajectories=4, length=10, heldout_trajectories=2, latent_dim=4, channels=(4, 8),
                        encoder_steps=30, encoder_batch=16, hidden=16, depth=1, predictor_steps=40, batch_size=32,
                        rollout_steps=3, rollout_batch=8, probe_steps=20)


def test_tiny_training_run(simulators, tmp_path):
    torch.manual_seed(0)
    model, metrics = train_pixel_world_model(MAZE, seed=1, config=TINY, progress=False)
    assert model.state_dim == 3 * 4 and model.env_name == MAZE
    for key in ("one_step", "h10"):
        assert np.isfinite(metrics[key]["latent_rmse"]) and metrics[key]["constant"] > 0
    assert set(metrics["probe"]) == {"position", "velocity", "median"} and np.isfinite(metrics["reconstruction_psnr"])
    assert set(metrics["probe"]["median"]) == {"position", "velocity"}
    # the encoder was frozen before the predictor trained; the latents are standardised on the training frames
    from grasp_kernels.envs.pixel_data import collect_pixels
    from grasp_kernels.models.pixel_probes import encode_all

    data = collect_pixels(MAZE, TINY.trajectories, TINY.length, 1)
    latents = encode_all(model, data.frames).reshape(-1, 4)
    torch.testing.assert_close(latents.mean(0), torch.zeros(4), atol=1e-4, rtol=0)
    # one scale for all coordinates: their stds' RMS is 1, and their ratios are the raw keypoints' ratios
    torch.testing.assert_close(latents.std(0).pow(2).mean().sqrt(), torch.tensor(1.0), atol=1e-3, rtol=0)
    # every training frame passes the scene check; a Push-T frame does not
    model.check_scene(data.frames)
    pytest.importorskip("gym_pusht")
    from grasp_kernels.envs.pixels import render_states
    from grasp_kernels.envs.sim import pusht_state

    other = render_states("pusht", pusht_state((100, 100), (256, 256), 0.3)[None])
    with pytest.raises(ValueError, match="do not look like pointmaze-medium frames"):
        model.goal_state(other)


def test_tiny_jepa_training_run_through_the_cli(simulators, tmp_path):
    from grasp_kernels.cli import main_train_pixels

    flags = ["--env", MAZE, "--objective", "jepa", "--trajectories", "3", "--heldout-trajectories", "2", "--length", "10",
             "--encoder-steps", "6", "--jepa-batch", "4", "--jepa-steps", "2", "--decoder-steps", "4",
             "--encoder-batch", "8", "--predictor-steps", "5", "--batch-size", "16", "--probe-steps", "5",
             "--latent-dim", "4", "--threads", "1", "--no-progress", "--out", str(tmp_path)]
    assert main_train_pixels(flags) == 0
    card = json.loads((tmp_path / f"{MAZE}-pixels.json").read_text())
    assert card["training"]["config"]["objective"] == "jepa" and "--objective jepa" in card["reproduce"]
    assert card["architecture"]["objective"].startswith("encoder: trained jointly with a predictor (JEPA")
    assert np.isfinite(card["metrics"]["h10"]["latent_rmse"]) and np.isfinite(card["metrics"]["reconstruction_psnr"])
    assert load_pixel_model(MAZE, tmp_path / f"{MAZE}-pixels.safetensors").latent_dim == 4


class _IdentityObservation:
    """The simulator's own state as the planning state (window 1): run_mpc must behave as without one."""

    window = 1

    def __call__(self, states):
        return torch.as_tensor(states[:, -1], dtype=torch.float32)

    def goal(self, goals):
        return torch.as_tensor(goals, dtype=torch.float32)


class _RecordingObservation(_IdentityObservation):
    window = 3

    def __init__(self):
        self.seen = []

    def __call__(self, states):
        self.seen.append(np.array(states))
        return super().__call__(states)


def _point_mass_gd(horizon: int):
    from grasp_kernels.baselines import GDConfig, GDPlanner

    class PointMass(torch.nn.Module):
        def forward(self, states, actions):
            velocity = (states[:, 2:] + 2.4 * actions).clamp(-5, 5)
            return torch.cat([states[:, :2] + 0.05 * (states[:, 2:] + velocity), velocity], dim=1)

    return GDPlanner(PointMass(), 2, GDConfig(horizon=horizon, iters=15, lr=0.1, action_low=-1.0, action_high=1.0))


def test_run_mpc_with_an_observation(simulators):
    from grasp_kernels.envs.sim import SimBatch
    from grasp_kernels.envs.tasks import make_pairs
    from grasp_kernels.mpc import MPCConfig, run_mpc

    pairs = make_pairs("pointmaze-umaze", 2, seed=3)
    config = MPCConfig(max_steps=9, replan_every=4, stop_on_success=False)
    results, recorder = [], _RecordingObservation()
    for observation in (None, _IdentityObservation(), recorder):
        sims = SimBatch("pointmaze-umaze", 2)
        try:
            results.append(run_mpc(_point_mass_gd(6), sims, pairs.starts, pairs.goals, config, observation=observation))
        finally:
            sims.close()
    plain, identity, recorded = results
    for other in (identity, recorded):
        np.testing.assert_array_equal(other.executed, plain.executed)
        np.testing.assert_array_equal(other.actions, plain.actions)
    # the window observation saw the last 3 executed states before each replan (t = 0, 4, 8), the start repeated
    seen = recorder.seen
    assert [s.shape for s in seen] == [(2, 3, 4)] * 3
    np.testing.assert_array_equal(seen[0], plain.executed[:, [0, 0, 0]])
    np.testing.assert_array_equal(seen[1], plain.executed[:, [2, 3, 4]])
    np.testing.assert_array_equal(seen[2], plain.executed[:, [6, 7, 8]])


def test_executed_open_loop_executes_the_whole_plan(simulators):
    from grasp_kernels.envs.tasks import goal_error, make_pairs, reached
    from grasp_kernels.quality import executed_open_loop

    pairs = make_pairs("pointmaze-umaze", 3, seed=4)
    planner = _point_mass_gd(7)
    score, result = executed_open_loop("pointmaze-umaze", planner, pairs)
    assert result.plans == 1 and result.executed.shape == (3, 8, 4)
    np.testing.assert_array_equal(result.actions, result.first_plan.actions.numpy())
    final = result.executed[:, -1]
    assert score.successes == int(reached("pointmaze-umaze", final, pairs.goals).sum())
    assert score.median_error == pytest.approx(float(np.median(goal_error("pointmaze-umaze", final, pairs.goals))))


def test_pixel_observation_renders_encodes_and_windows(simulators):
    from grasp_kernels.envs.pixels import render_states
    from grasp_kernels.pixel_tasks import PixelObservation, pixel_pairs

    model = PixelWorldModel(MAZE, latent_dim=6, window=2, channels=(4, 8), hidden=8, depth=1, frame_size=64)
    _randomised(model, 5)
    pairs = pixel_pairs(MAZE, 2, seed=7)
    frames = render_states(MAZE, np.concatenate([pairs.starts, pairs.goals]))
    with torch.no_grad():
        model.background.copy_(torch.from_numpy(frames[0]).float())
        model.frame_distance_limit.fill_(255.0)
    with PixelObservation(model) as observation:
        window = np.stack([pairs.starts, pairs.goals], axis=1)  # [B, 2, D]
        torch.testing.assert_close(observation(window), model.observe(frames.reshape(2, 2, 64, 64, 3).transpose(1, 0, 2, 3, 4)),
                                   rtol=0, atol=0)
        torch.testing.assert_close(observation.goal(pairs.goals), model.goal_state(frames[2:]), rtol=0, atol=0)


def test_colour_weights_give_every_object_colour_the_same_total_weight():
    from grasp_kernels.models.pixel_losses import MIN_COLOUR_SHARE, _colour_bins, colour_weights

    model = _model()  # 16x16 frames
    with torch.no_grad():
        model.background.fill_(255.0)  # white empty scene
    frames = np.full((50, 16, 16, 3), 255, np.uint8)
    frames[:, 0:6, 0:6] = (120, 136, 150)  # a large grey object: 36 px
    frames[:, 10:12, 10:12] = (60, 100, 230)  # a small blue one: 4 px
    frames[0, 15, 15] = (200, 200, 60)  # one stray pixel of a third colour: far below MIN_COLOUR_SHARE
    weights = colour_weights(model, frames, torch.Generator().manual_seed(0))
    grey, blue, stray = (int(_colour_bins(torch.tensor(c, dtype=torch.uint8))) for c in
                         ((120, 136, 150), (60, 100, 230), (200, 200, 60)))
    n = 50 * (36 + 4) + 1
    assert 1 / n < MIN_COLOUR_SHARE
    # equal totals for the two objects, the stray colour at the unnormalised weight 1, mean 1 over foreground pixels
    torch.testing.assert_close(weights[grey] * 36, weights[blue] * 4, rtol=1e-5, atol=0)
    total = weights[grey] * 36 * 50 + weights[blue] * 4 * 50 + weights[stray]
    torch.testing.assert_close(total / n, torch.tensor(1.0), rtol=1e-5, atol=0)
    torch.testing.assert_close(weights[stray] / weights[grey], torch.tensor(36 * 50 * 2 / n), rtol=1e-5, atol=0)


def test_train_pixels_cli_writes_a_model_whose_card_reproduces_it(simulators, tmp_path):
    from grasp_kernels.cli import main_train_pixels

    flags = ["--env", MAZE, "--trajectories", "3", "--heldout-trajectories", "2", "--length", "10", "--encoder-steps", "5",
             "--encoder-batch", "8", "--predictor-steps", "5", "--batch-size", "16", "--probe-steps", "5",
             "--latent-dim", "4", "--no-balance-colours", "--threads", "1", "--no-progress", "--out", str(tmp_path),
             "--frame-size", "32", "--action-repeat", "5"]
    assert main_train_pixels(flags) == 0
    card = json.loads((tmp_path / f"{MAZE}-pixels.json").read_text())
    assert card["training"]["config"]["balance_colours"] is False and card["training"]["config"]["latent_dim"] == 4
    assert card["data"]["frame_size"] == 32 and card["data"]["action_repeat"] == 5
    for flag in ("--latent-dim 4", "--encoder-steps 5", "--no-balance-colours", f"--out {tmp_path}", "--frame-size 32",
                 "--action-repeat 5"):
        assert flag in card["reproduce"]
    path = tmp_path / f"{MAZE}-pixels.safetensors"
    assert load_pixel_model(MAZE, path, action_repeat=5).frame_size == 32
    assert card["metrics"]["probe_spec"] == "MLP 3 x 256 (SiLU), 5 Adam steps of 512 windows, lr 1e-3 cosine"
    # measured again with another probe on the same (cached) data: the card's metrics change, the old ones are
    # kept, the weights are untouched
    from grasp_kernels.cli import main_measure_pixels

    weights = path.read_bytes()
    assert main_measure_pixels(["--env", MAZE, "--weights", str(tmp_path), "--probe-steps", "7", "--threads", "1",
                                "--no-progress"]) == 0
    again = json.loads((tmp_path / f"{MAZE}-pixels.json").read_text())
    assert again["metrics"]["probe_spec"].startswith("MLP 3 x 256 (SiLU), 7 Adam steps")
    assert again["superseded_metrics"][0]["metrics"] == card["metrics"] and path.read_bytes() == weights
    assert again["metrics"]["one_step"] == card["metrics"]["one_step"]  # the model's own errors do not change
    assert again["metrics"]["probe"] != card["metrics"]["probe"]
    assert (again["data"]["action_repeat"], again["data"]["policy"]) == (5, "mixed")
    with pytest.raises(ValueError, match=r"trained with action_repeat=5 .* pointmaze-medium's default action_repeat is 10"):
        load_pixel_model(MAZE, path)
