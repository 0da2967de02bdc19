"""Bad inputs through the public API and the CLI: each one raises the documented exception type with a
message that names the argument (docs/design.md, section 2: "An error names the argument").

Each case is ``(id, call, exception type, words the message must contain)``; the calls are lazy so a
case builds only what it needs. Cases on the simulators skip where the ``envs`` extra is missing.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

import pytest
import torch

from grasp_kernels import GraspConfig, GraspPlanner, ops
from grasp_kernels.baselines import CEMConfig, CEMPlanner, GDConfig, GDPlanner, MPPIConfig, MPPIPlanner
from grasp_kernels.cli import main as cli_main
from grasp_kernels.envs.sim import SimBatch
from grasp_kernels.integrations.dino_wm import DinoWMGraspPlanner
from grasp_kernels.integrations.stable_worldmodel import GraspSolver
from grasp_kernels.rollouts import rollout
from grasp_kernels.models.zoo import default_path, load_world_model
from grasp_kernels.mpc import MPCConfig, run_mpc
from grasp_kernels.ops import AdamHyper
from grasp_kernels.reference import action_step_ref, lifted_energy_ref, state_step_ref

CPU_ONLY = not torch.cuda.is_available()


def linear(states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    return states + 0.1 * actions


def small() -> GraspConfig:
    return GraspConfig(horizon=4, iters=2, sync_every=0)


def plan(model: Callable = linear, action_dim: int = 2, s0=None, goal=None, **plan_kwargs) -> object:
    s0 = torch.zeros(2, 2) if s0 is None else s0
    goal = torch.ones(2, 2) if goal is None else goal
    return GraspPlanner(model, action_dim=action_dim, config=small()).plan(s0, goal, **plan_kwargs)


def step_args(low=-1.0, high=1.0, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, **changes) -> dict:
    """Arguments of ``action_step_`` on ``[1, 3, 2]`` actions, with ``changes`` applied (the Adam constants
    built into the ``adam`` argument, which checks them)."""
    args = dict(
        actions=torch.zeros(1, 3, 2), grad=torch.ones(1, 3, 2), exp_avg=torch.zeros(1, 3, 2),
        exp_avg_sq=torch.zeros(1, 3, 2), step=1, adam=AdamHyper(lr, beta1, beta2, eps), low=low, high=high,
    )
    args.update(changes)
    return args


def action_step(backend: str = "reference", **changes) -> None:
    args = step_args(**changes)
    ops.action_step_(*args.values(), backend=backend)


def state_step(**changes) -> None:
    states = torch.rand(1, 4, 3)
    args = dict(states=states, grad=torch.rand(1, 4, 3), exp_avg=torch.zeros(1, 4, 3), exp_avg_sq=torch.zeros(1, 4, 3),
                step=1, adam=AdamHyper(0.1), noise_std=0.0)
    args.update(changes)
    ops.state_step_(*args.values(), backend="reference")


def maze(name: str = "pointmaze-medium", **kwargs) -> object:
    pytest.importorskip("gymnasium_robotics")
    from grasp_kernels.envs.sim import make_env

    return make_env(name, **kwargs)


def mpc_with_other_env_model() -> None:
    pytest.importorskip("gymnasium_robotics")
    planner = GraspPlanner(load_world_model("pusht"), action_dim=2, config=small())
    sims = SimBatch("pointmaze-umaze", batch=1)
    run_mpc(planner, sims, [[1.0, 1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]], MPCConfig(max_steps=2, replan_every=1))


def zoo(**kwargs) -> object:
    return load_world_model(kwargs.pop("env", "pointmaze-medium"), **kwargs)


def corrupt_file(tmp_path) -> str:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"not a safetensors file at all")
    return str(path)


def sampling(cls, config) -> object:
    return cls(linear, action_dim=2, config=config).plan(torch.zeros(2, 2), torch.ones(2, 2))


# (id, call(tmp_path), exception type, words the message must contain)
CASES: list[tuple[str, Callable, type, tuple[str, ...]]] = [
    # the "silently wrong"
    ("op-low-above-high", lambda p: action_step(low=1.0, high=-1.0), ValueError, ("low", "high")),
    ("op-low-above-high-triton", lambda p: action_step("triton", low=1.0, high=-1.0), ValueError, ("low", "high")),
    ("ref-low-above-high", lambda p: action_step_ref(*step_args(low=1.0, high=-1.0).values()), ValueError, ("low", "high")),
    ("ref-tensor-low-above-high", lambda p: action_step_ref(*step_args(low=torch.ones(2), high=0.0).values()),
     ValueError, ("low", "high")),
    ("make-env-action-repeat-0", lambda p: maze(action_repeat=0), ValueError, ("action_repeat", ">= 1")),
    # the "crashes"
    ("zoo-cuda-without-cuda", lambda p: zoo(device="cuda") if CPU_ONLY else pytest.skip("CUDA present"),
     ValueError, ("device", "cuda")),
    # the "unclear"
    ("detached-world-model", lambda p: plan(lambda s, a: linear(s, a).detach()), ValueError, ("world_model", "gradient")),
    ("action-dim-not-the-model's", lambda p: plan(action_dim=3), ValueError, ("action_dim", "world_model")),
    ("s0-on-meta", lambda p: plan(s0=torch.zeros(2, 2, device="meta"), goal=torch.ones(2, 2, device="meta")),
     ValueError, ("s0", "meta")),
    ("op-bound-bad-list", lambda p: action_step(low=["a", "b"]), TypeError, ("low",)),
    ("op-bound-wrong-length", lambda p: action_step(low=[-1.0, -1.0, -1.0]), ValueError, ("low", "action dimension")),
    ("rollout-2d-actions", lambda p: rollout(linear, torch.zeros(2, 2), torch.zeros(4, 2)), ValueError, ("actions", "3-D")),
    ("rollout-batch-mismatch", lambda p: rollout(linear, torch.zeros(2, 2), torch.zeros(3, 4, 2)), ValueError, ("s0", "B = 3")),
    ("zoo-path-is-directory", lambda p: zoo(path=str(p)), ValueError, ("path", "directory")),
    ("mpc-other-env-model", lambda p: mpc_with_other_env_model(), ValueError, ("state_dim", "planner")),
    # GraspPlanner
    ("planner-model-not-callable", lambda p: GraspPlanner(3, action_dim=2), TypeError, ("world_model",)),
    ("planner-action-dim-0", lambda p: GraspPlanner(linear, action_dim=0), ValueError, ("action_dim",)),
    ("planner-config-dict", lambda p: GraspPlanner(linear, 2, config={"horizon": 4}), TypeError, ("config",)),
    ("planner-s0-int", lambda p: plan(s0=torch.zeros(2, 2, dtype=torch.int64)), TypeError, ("s0", "dtype")),
    ("planner-s0-list", lambda p: plan(s0=[[0.0, 0.0]]), TypeError, ("s0", "torch.Tensor")),
    ("planner-goal-shape", lambda p: plan(goal=torch.ones(2, 3)), ValueError, ("goal", "shape")),
    ("planner-goal-dtype", lambda p: plan(goal=torch.ones(2, 2, dtype=torch.float64)), TypeError, ("goal", "dtype")),
    ("planner-s0-nan", lambda p: plan(s0=torch.full((2, 2), float("nan"))), ValueError, ("s0", "NaN")),
    ("planner-init-actions-shape", lambda p: plan(init_actions=torch.zeros(2, 5, 2)), ValueError, ("init_actions",)),
    ("planner-model-returns-list", lambda p: plan(lambda s, a: [s]), TypeError, ("world_model", "torch.Tensor")),
    ("planner-model-wrong-shape", lambda p: plan(lambda s, a: s[:, :1] + a[:, :1]), ValueError, ("world_model", "shape")),
    # GraspConfig
    ("config-horizon-0", lambda p: GraspConfig(horizon=0), ValueError, ("horizon", ">= 1")),
    ("config-horizon-float", lambda p: GraspConfig(horizon=5.0), TypeError, ("horizon", "int")),
    ("config-lr-negative", lambda p: GraspConfig(lr_states=-0.1), ValueError, ("lr_states",)),
    ("config-beta1-one", lambda p: GraspConfig(beta1=1.0), ValueError, ("beta1", "[0, 1)")),
    ("config-backend", lambda p: GraspConfig(backend="gpu"), ValueError, ("backend",)),
    ("config-bound-nan", lambda p: GraspConfig(action_low=float("nan")), ValueError, ("action_low", "NaN")),
    ("config-bool-field", lambda p: GraspConfig(fused_mlp="yes"), TypeError, ("fused_mlp", "bool")),
    ("config-particles-0", lambda p: GraspConfig(particles=0), ValueError, ("particles",)),
    ("planner-bounds-crossed", lambda p: GraspPlanner(linear, 2, GraspConfig(horizon=4, iters=1, action_low=1.0,
                                                                            action_high=0.0)).plan(torch.zeros(2), torch.ones(2)),
     ValueError, ("action_low", "action_high")),
    # ops and the reference
    ("op-step-0", lambda p: action_step(step=0), ValueError, ("step",)),
    ("op-lr-nan", lambda p: action_step(lr=float("nan")), ValueError, ("lr",)),
    ("op-beta2-one-triton", lambda p: action_step("triton", beta2=1.0), ValueError, ("beta2",)),
    ("op-grad-shape-triton", lambda p: action_step("triton", grad=torch.ones(1, 3, 3)), ValueError, ("grad", "shape")),
    ("op-float64-triton", lambda p: action_step("triton", actions=torch.zeros(1, 3, 2, dtype=torch.float64)),
     TypeError, ("actions", "float64")),
    ("op-overlap-triton", lambda p: (lambda a: ops.action_step_(a, a, torch.zeros_like(a), torch.zeros_like(a), 1,
                                                                 AdamHyper(0.1), None, None, backend="triton"))(
        torch.zeros(1, 3, 2)), ValueError, ("actions", "grad", "overlap")),
    ("op-energy-pred-shape", lambda p: ops.lifted_energy(torch.rand(1, 3, 2), torch.rand(1, 4, 3), 0.1, backend="triton"),
     ValueError, ("pred",)),
    ("op-state-step-noise-std-negative", lambda p: state_step(noise_std=-1.0), ValueError, ("noise_std",)),
    ("ref-energy-states-1d", lambda p: lifted_energy_ref(torch.rand(1, 3, 2), torch.rand(8), 0.1), ValueError, ("states",)),
    ("ref-state-step-eps-str", lambda p: state_step_ref(torch.rand(1, 4, 3), torch.rand(1, 4, 3), torch.zeros(1, 4, 3),
                                                        torch.zeros(1, 4, 3), 1, AdamHyper(0.1, 0.9, 0.999, "tiny"), 0.0),
     TypeError, ("eps",)),
    # the baselines
    ("gd-lr-0", lambda p: GDConfig(lr=0.0), ValueError, ("lr",)),
    ("cem-topk-above-samples", lambda p: CEMConfig(samples=4, topk=8), ValueError, ("topk",)),
    ("mppi-horizon-0", lambda p: MPPIConfig(horizon=0), ValueError, ("horizon",)),
    ("gd-action-dim-str", lambda p: GDPlanner(linear, action_dim="2"), ValueError, ("action_dim",)),
    ("cem-goal-shape", lambda p: CEMPlanner(linear, 2, CEMConfig(horizon=3, iters=1)).plan(torch.zeros(2, 2), torch.ones(3, 2)),
     ValueError, ("goal",)),
    ("gd-detached-model", lambda p: GDPlanner(lambda s, a: linear(s, a).detach(), 2,
                                                              GDConfig(horizon=3, iters=1)).plan(torch.zeros(2), torch.ones(2)),
     ValueError, ("world_model", "gradient")),
    ("mppi-config-type", lambda p: MPPIPlanner(linear, 2, config=GraspConfig()), TypeError, ("config",)),
    # run_mpc
    ("mpc-config-type", lambda p: run_mpc(
        GraspPlanner(linear, 2, small()), SimpleNamespace(), [[0.0]], [[0.0]], {"max_steps": 1}), TypeError, ("config",)),
    ("mpc-planner-without-plan", lambda p: run_mpc(
        object(), SimpleNamespace(), [[0.0]], [[0.0]], MPCConfig(max_steps=2)),
     TypeError, ("planner",)),
    # the zoo
    ("zoo-missing-file", lambda p: zoo(path=str(p / "none.safetensors")), FileNotFoundError, ("none.safetensors", "train")),
    ("zoo-file-of-another-model", lambda p: zoo(path=str(default_path(
        "pusht"))), ValueError, ("pusht", "pointmaze-medium")),
    ("zoo-corrupt-file", lambda p: zoo(path=corrupt_file(p)), ValueError, ("corrupt",)),
    ("zoo-unknown-env", lambda p: zoo(env="pointmaze-huge"), ValueError, ("huge",)),
    ("zoo-bad-device", lambda p: zoo(device="tpu9"), ValueError, ("device",)),
    # the simulators
    ("make-env-unknown", lambda p: maze("cartpole"), ValueError, ("cartpole",)),
    ("make-env-action-repeat-float", lambda p: maze(action_repeat=2.5), TypeError, ("action_repeat", "int")),
    ("simbatch-batch-0", lambda p: SimBatch("pusht", 0), ValueError, ("batch",)),
    # the adapters
    ("dino-wm-action-dim-0", lambda p: DinoWMGraspPlanner(
        SimpleNamespace(encode_obs=lambda o: o, predict_next=linear), action_dim=0), ValueError, ("action_dim",)),
    ("dino-wm-no-encoder", lambda p: DinoWMGraspPlanner(
        object(), action_dim=2), TypeError, ("encode_obs",)),
    ("dino-wm-alpha-0", lambda p: DinoWMGraspPlanner(
        SimpleNamespace(encode_obs=lambda o: o, predict_next=linear), action_dim=2, alpha=0.0), ValueError, ("alpha",)),
    ("swm-encode-not-callable", lambda p: GraspSolver(
        linear, encode=3), TypeError, ("encode",)),
    ("swm-bad-device", lambda p: GraspSolver(
        linear, device="gpu"), ValueError, ("device",)),
]


@pytest.mark.parametrize("call, error, words", [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_bad_input_names_the_argument(call, error, words, tmp_path):
    with pytest.raises(error) as info:
        call(tmp_path)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"


CLI_CASES = [
    (["demo", "--horizon", "0"], "--horizon"),
    (["demo", "--horizon", "-5"], "--horizon"),
    (["demo", "--problems", "0"], "--problems"),
    (["demo", "--replan-every", "0"], "--replan-every"),
    (["demo", "--replan-iters", "0"], "--replan-iters"),
    (["demo", "--replan-iters", "1.5"], "--replan-iters"),
    (["demo", "--particles", "two"], "--particles"),
    (["demo", "--seed", "-1"], "--seed"),
    (["demo", "--device", "quantum"], "--device"),
    (["demo", "--backend", "gpu"], "--backend"),
    (["demo", "--task", "cartpole"], "--task"),
    (["train", "--env", "pusht", "--steps", "0"], "--steps"),
    (["train", "--env", "pusht", "--action-repeat", "0"], "--action-repeat"),
    (["train", "--env", "pusht", "--policy", "pull"], "--policy"),
    (["train-pixels", "--env", "pusht", "--frame-size", "0"], "--frame-size"),
    (["train-pixels", "--env", "pusht", "--frame-size", "66"], "frame_size must be divisible by 4, got 66"),
    (["train-pixels", "--env", "pusht", "--action-repeat", "0"], "--action-repeat"),
    (["pixels", "--env", "pusht", "--action-repeat", "0"], "--action-repeat"),
] + ([(["demo", "--device", "cuda"], "--device")] if CPU_ONLY else [])


@pytest.mark.parametrize("argv, named", CLI_CASES, ids=[" ".join(argv) for argv, _ in CLI_CASES])
def test_cli_user_error_is_one_line(argv, named, capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert named in err[-1], err


def test_cli_package_error_is_one_line_with_status_2(capsys, monkeypatch):
    """A ValueError raised by the package below the CLI ends as one line and exit status 2."""
    import grasp_kernels.demo as demo

    def fail(**kwargs):
        raise ValueError("env_name must be one of the mazes")

    monkeypatch.setattr(demo, "run_maze_demo", fail)
    assert cli_main(["demo", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["grasp-kernels: error: env_name must be one of the mazes"]


def test_a_tensor_low_with_a_float_high_clamps():
    """Both documented bound forms mix: a tensor ``low`` and a float ``high``."""
    for backend in ("reference", "triton"):
        args = step_args(low=torch.tensor([-0.05, -1.0]), high=0.02, grad=torch.tensor([1.0, -1.0]).expand(1, 3, 2).contiguous())
        ops.action_step_(*args.values(), backend=backend)
        assert torch.allclose(args["actions"][..., 0], torch.tensor(-0.05)), backend
        assert torch.allclose(args["actions"][..., 1], torch.tensor(0.02)), backend


def test_a_list_bound_is_accepted_by_every_backend():
    for backend in ("reference", "triton"):
        args = step_args(low=[-0.05, -0.01], high=[0.05, 0.01], grad=-torch.ones(1, 3, 2))
        ops.action_step_(*args.values(), backend=backend)
        assert torch.allclose(args["actions"], torch.tensor([0.05, 0.01]).expand(1, 3, 2)), backend
