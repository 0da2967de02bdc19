"""Adapters: stable-worldmodel ``GraspSolver``, TorchRL ``GraspMPCPlanner``, DINO-WM-style planner.

stable-worldmodel and TorchRL are optional: their tests skip cleanly when the package is absent
(install: ``make integrations``). The DINO-WM adapter is tested with a stand-in model of DINO-WM's
interface (DINO-WM itself is not a package).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from grasp_kernels import GraspConfig
from grasp_kernels.actions import to_env_actions
from grasp_kernels.models import PatchTransformerDynamics
from grasp_kernels.rollouts import rollout

FAST = dict(iters=40, sync_every=20, sync_steps=3, lr_states=0.01, lr_actions=0.05, goal_weight=0.1, state_noise=0.0)


# ---- stable-worldmodel ---------------------------------------------------------------------------


def _swm_solver_module():
    """The real ``stable_worldmodel.solver`` package. Its top-level ``__init__`` imports the data,
    env and policy stacks (lancedb, pyarrow, torchvision); where those are missing the installed
    ``solver`` subpackage is loaded under a bare parent package (the solver code itself needs only
    torch, numpy, gymnasium and loguru)."""
    if importlib.util.find_spec("stable_worldmodel") is None:
        pytest.skip("stable-worldmodel is not installed (make integrations)")
    try:
        return importlib.import_module("stable_worldmodel.solver")
    except ImportError:
        for name in [m for m in sys.modules if m == "stable_worldmodel" or m.startswith("stable_worldmodel.")]:
            del sys.modules[name]
    spec = importlib.util.find_spec("stable_worldmodel")
    parent = types.ModuleType("stable_worldmodel")
    parent.__path__ = list(spec.submodule_search_locations)
    parent.__spec__ = spec
    sys.modules["stable_worldmodel"] = parent
    try:
        return importlib.import_module("stable_worldmodel.solver")
    except ImportError as exc:
        del sys.modules["stable_worldmodel"]
        pytest.skip(f"stable_worldmodel.solver cannot be imported: {exc}")


@dataclasses.dataclass(frozen=True)
class PlanConfig:
    """stable-worldmodel's ``PlanConfig`` (``stable_worldmodel.policy``, which needs torchvision); the
    same fields."""

    horizon: int
    receding_horizon: int
    history_len: int = 1
    action_block: int = 1
    warm_start: bool = True


class LatentCostModel(torch.nn.Module):
    """A ``Costable`` world model for their solvers: ``get_cost`` rolls candidates out in latent space."""

    def __init__(self, dynamics, history):
        super().__init__()
        self.dynamics, self.history = dynamics, history

    def get_cost(self, info_dict, candidates):  # candidates [B, N, T, A]
        b, n, t, a = candidates.shape
        s0 = info_dict["state"][:, :, -self.history:].reshape(b * n, self.history, *info_dict["state"].shape[3:])
        goal = info_dict["goal_state"][:, :, -1].reshape(b * n, -1)
        final = rollout(self.dynamics, s0, candidates.reshape(b * n, t, a), self.history)[:, -1]
        return (final.reshape(b * n, -1) - goal).square().sum(-1).view(b, n)


def _policy_step(solver, info, cfg, init=None):
    """What stable-worldmodel's ``WorldModelPolicy.get_action`` does with a solver's output: call it
    with ``init_action``, keep ``receding_horizon`` steps, reshape them to env actions, keep the rest as
    the next warm start. (A copy of that code path: their ``stable_worldmodel.policy`` module needs
    torchvision, which is not installed here.)"""
    outputs = solver(info, init_action=init)
    actions = outputs["actions"]
    plan, rest = actions[:, : cfg.receding_horizon], actions[:, cfg.receding_horizon :]
    env_actions = plan.reshape(actions.shape[0], cfg.receding_horizon * cfg.action_block, -1)
    return outputs, env_actions, rest


def test_grasp_solver_is_a_stable_worldmodel_solver_and_replaces_cem():
    """The real ``stable_worldmodel.solver`` (its ``Solver`` protocol and ``CEMSolver``) with an imitation
    of ``WorldModelPolicy`` (``_policy_step``) and a stand-in ``PlanConfig`` of the same fields: their
    ``stable_worldmodel.policy`` module, where both live, imports torchvision, which is not installed."""
    solver_mod = _swm_solver_module()
    gym = pytest.importorskip("gymnasium")
    from grasp_kernels.integrations.stable_worldmodel import GraspSolver

    n_envs, env_action_dim, block, history = 3, 2, 2, 3
    torch.manual_seed(0)
    dynamics = PatchTransformerDynamics(4, 5, env_action_dim * block, history=history, width=16, heads=2, depth=1)
    cfg = PlanConfig(horizon=6, receding_horizon=2, history_len=history, action_block=block)
    space = gym.spaces.Box(-1.0, 1.0, shape=(n_envs, env_action_dim), dtype=np.float32)
    g = torch.Generator().manual_seed(1)
    info = {
        "state": torch.randn(n_envs, history, 4, 5, generator=g),  # [n_envs, T_obs, P, E]
        "goal_state": torch.randn(n_envs, 1, 4, 5, generator=g),
    }
    grasp = GraspSolver(dynamics, config=GraspConfig(history=history, **{**FAST, "iters": 12, "sync_every": 6, "sync_steps": 2}),
                        state_shape=(4, 5))
    cem = solver_mod.CEMSolver(LatentCostModel(dynamics, history), num_samples=16, n_steps=2, topk=4, batch_size=n_envs)
    for solver in (grasp, cem):  # the same evaluation-loop code drives both
        solver.configure(action_space=space, n_envs=n_envs, config=cfg)
        assert isinstance(solver, solver_mod.Solver)  # WorldModelPolicy.set_env asserts this
        assert solver.action_dim == env_action_dim * block and solver.horizon == 6 and solver.n_envs == n_envs
        outputs, env_actions, rest = _policy_step(solver, dict(info), cfg)
        assert outputs["actions"].shape == (n_envs, 6, env_action_dim * block)
        assert isinstance(outputs["costs"], list) and len(outputs["costs"]) == n_envs  # one cost per env
        assert outputs["actions"].device.type == "cpu"
        assert env_actions.shape == (n_envs, cfg.receding_horizon * block, env_action_dim)
        _policy_step(solver, dict(info), cfg, init=rest)  # warm start [n, 4, A] is zero-padded
    outputs, grasp_env_actions, _ = _policy_step(grasp, dict(info), cfg)
    torch.testing.assert_close(grasp_env_actions, to_env_actions(grasp.last_result.actions, block)[:, : cfg.receding_horizon * block])
    actions = grasp.last_result.actions
    # the plan's cost is the true rollout's distance through the history windows; "costs" is its square
    final = rollout(dynamics, info["state"], actions, history)[:, -1]
    distance = (final - info["goal_state"][:, -1]).flatten(1).norm(dim=1)
    torch.testing.assert_close(grasp.last_result.final_distance, distance)
    torch.testing.assert_close(torch.tensor(outputs["costs"]), distance.square())


def _swm_policy_module():
    """stable-worldmodel's real ``stable_worldmodel.policy`` (``WorldModelPolicy``, ``PlanConfig``), or a
    skip naming what blocks its import. On the CPU machines of this project it is blocked by torchvision:
    the only torchvision 0.28 wheel reachable (PyPI's manylinux build, the one matching torch 2.13) is
    the CUDA build, whose ``_C.so`` links ``libtorch_cuda.so``; with a CPU torch that library cannot
    load and ``import torchvision`` fails ("operator torchvision::nms does not exist")."""
    if importlib.util.find_spec("stable_worldmodel") is None:
        pytest.skip("stable-worldmodel is not installed (make integrations)")
    try:
        return importlib.import_module("stable_worldmodel.policy")
    except Exception as exc:  # noqa: BLE001 - a torchvision built for another torch fails with RuntimeError
        pytest.skip(f"stable_worldmodel.policy cannot be imported here ({type(exc).__name__}: {exc}); "
                    "it needs torchvision built for this torch, and lancedb/pyarrow")


class _VectorEnvSpaces:
    """The attributes ``WorldModelPolicy`` reads from its (vector) environment."""

    def __init__(self, gym, n_envs: int, action_dim: int):
        self.num_envs = n_envs
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, shape=(action_dim,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(n_envs, action_dim), dtype=np.float32)


def test_grasp_solver_drives_the_real_world_model_policy():
    """stable-worldmodel's own ``WorldModelPolicy`` and ``PlanConfig`` (not an imitation) run the
    adapter through their MPC loop: ``set_env`` configures it and checks the ``Solver`` protocol, the
    first ``get_action`` plans, the next ``receding_horizon * action_block - 1`` calls pop the buffered
    plan without planning, and the call after replans warm-started from the unexecuted rest."""
    policy_mod = _swm_policy_module()
    gym = pytest.importorskip("gymnasium")
    from grasp_kernels.integrations.stable_worldmodel import GraspSolver

    n_envs, env_action_dim, block, history = 2, 2, 2, 3
    torch.manual_seed(0)
    dynamics = PatchTransformerDynamics(4, 5, env_action_dim * block, history=history, width=16, heads=2, depth=1)
    config = GraspConfig(history=history, **{**FAST, "iters": 12, "sync_every": 6, "sync_steps": 2})
    solver = GraspSolver(dynamics, config=config, state_shape=(4, 5))
    calls = []
    solve = solver.solve
    solver.solve = lambda info, init_action=None: calls.append(init_action) or solve(info, init_action=init_action)
    plan_config = policy_mod.PlanConfig(horizon=5, receding_horizon=2, history_len=history, action_block=block)
    policy = policy_mod.WorldModelPolicy(solver=solver, config=plan_config)
    policy.set_env(_VectorEnvSpaces(gym, n_envs, env_action_dim))
    assert solver.horizon == 5 and solver.action_dim == env_action_dim * block
    g = torch.Generator().manual_seed(2)
    info = {"state": torch.randn(n_envs, history, 4, 5, generator=g), "goal_state": torch.randn(n_envs, 1, 4, 5, generator=g)}

    executed = [policy.get_action(dict(info)) for _ in range(plan_config.receding_horizon * block)]
    assert len(calls) == 1 and calls[0] is None  # one plan serves receding_horizon * action_block env steps
    first_plan = solver.last_result.actions  # [n_envs, 5, A_env * block]
    expected = to_env_actions(first_plan, block)[:, : plan_config.receding_horizon * block]
    for step, action in enumerate(executed):
        assert isinstance(action, np.ndarray) and action.shape == (n_envs, env_action_dim)
        np.testing.assert_allclose(action, expected[:, step].numpy(), rtol=0, atol=0)
    policy.get_action(dict(info))  # the buffer is empty: replan, warm-started from the rest of the plan
    assert len(calls) == 2
    torch.testing.assert_close(calls[1], first_plan[:, plan_config.receding_horizon:])


def test_grasp_solver_action_bounds_are_off_unless_passed():
    """Their policy inverse-transforms the solver's (normalised) actions, so the raw Box bounds are not
    the solver's bounds: none unless passed to the adapter (A_env values tiled over the block); a
    config's bounds are replaced."""
    gym = pytest.importorskip("gymnasium")
    from grasp_kernels.integrations.stable_worldmodel import GraspSolver

    n_envs, history = 2, 3
    torch.manual_seed(0)
    dynamics = PatchTransformerDynamics(4, 5, 4, history=history, width=16, heads=2, depth=1)
    space = gym.spaces.Box(-0.1, 0.1, shape=(n_envs, 2), dtype=np.float32)  # raw env bounds: not used
    cfg = PlanConfig(horizon=4, receding_horizon=1, action_block=2)
    g = torch.Generator().manual_seed(4)
    info = {"state": torch.randn(n_envs, history, 4, 5, generator=g), "goal_state": 3 * torch.randn(n_envs, 1, 4, 5, generator=g)}
    config = GraspConfig(history=history, **{**FAST, "lr_actions": 0.5, "iters": 10, "sync_every": 5})
    free = GraspSolver(dynamics, config=config)  # GraspConfig's +-1 default is not inherited
    free.configure(action_space=space, n_envs=n_envs, config=cfg)
    assert free._plan_config().action_low is None and free._plan_config().action_high is None
    assert free(dict(info))["actions"].abs().max() > 0.1
    bounded = GraspSolver(dynamics, config=config, action_low=[-0.05, -0.2], action_high=0.2)
    bounded.configure(action_space=space, n_envs=n_envs, config=cfg)
    assert bounded._plan_config().action_low == [-0.05, -0.2, -0.05, -0.2]  # tiled over action_block = 2
    actions = bounded(dict(info))["actions"]
    assert actions[..., 0::2].min() >= -0.05 and actions[..., 1::2].min() >= -0.2 and actions.max() <= 0.2
    replaced = GraspSolver(dynamics, config=config.replace(action_low=-0.3, action_high=0.3))  # the adapter owns bounds
    replaced.configure(action_space=space, n_envs=n_envs, config=cfg)
    assert replaced._plan_config().action_low is None and replaced._plan_config().action_high is None


def test_grasp_solver_errors():
    gym = pytest.importorskip("gymnasium")
    from grasp_kernels.integrations.stable_worldmodel import GraspSolver

    dynamics = PatchTransformerDynamics(4, 5, 2, history=3, width=16, heads=2)
    space = gym.spaces.Box(-1.0, 1.0, shape=(2, 2), dtype=np.float32)
    solver = GraspSolver(dynamics, config=GraspConfig(history=3, **FAST), state_shape=(4, 5))
    with pytest.raises(RuntimeError, match="configure"):
        solver.solve({})
    solver.configure(action_space=space, n_envs=2, config=PlanConfig(horizon=4, receding_horizon=1))
    with pytest.raises(ValueError, match=r"state shape mismatch: the encoder returned states of shape \[4, 6\]"):
        solver.solve({"state": torch.zeros(2, 3, 4, 6), "goal_state": torch.zeros(2, 1, 4, 6)})
    with pytest.raises(ValueError, match="history mismatch: .* history = 3 frames but the encoded observations carry only 1"):
        solver.solve({"state": torch.zeros(2, 1, 4, 5), "goal_state": torch.zeros(2, 1, 4, 5)})
    with pytest.raises(ValueError, match="history mismatch: the world model declares history = 3"):
        GraspSolver(dynamics, config=GraspConfig(**FAST))
    with pytest.raises(AttributeError, match="configure"):
        GraspSolver(dynamics, config=GraspConfig(history=3)).horizon
    with pytest.raises(ValueError, match=r"init_action must have shape \[2, t <= 4, 2\]"):
        solver.solve({"state": torch.zeros(2, 3, 4, 5), "goal_state": torch.zeros(2, 1, 4, 5)}, init_action=torch.zeros(2, 3, 5))
    with pytest.raises(TypeError, match="world_model must be callable"):
        GraspSolver(object())


# ---- TorchRL -------------------------------------------------------------------------------------


def _torchrl_env(state_dim=3, action_dim=2, batch=(), low=-1.0, high=1.0):
    for name in ("tensordict", "torchrl"):
        try:  # a torchrl built for another torch can fail with more than ImportError: skip, naming why
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001
            pytest.skip(f"{name} is not usable here ({type(exc).__name__}: {exc}); make integrations")
    from torchrl.data import Bounded, Composite, Unbounded
    from torchrl.envs.model_based import ModelBasedEnvBase
    from torchrl.modules import SafeModule, WorldModelWrapper

    class Transition(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mix = torch.nn.Linear(action_dim, state_dim)

        def forward(self, state, action):
            return state + 0.2 * torch.tanh(self.mix(action))

    class GoalEnv(ModelBasedEnvBase):
        def __init__(self, world_model):
            super().__init__(world_model, batch_size=torch.Size(batch))
            self.observation_spec = Composite(
                hidden_observation=Unbounded((*batch, state_dim)), goal=Unbounded((*batch, state_dim)), shape=batch
            )
            self.state_spec = self.observation_spec.clone()
            self.action_spec = Bounded(low, high, (*batch, action_dim))
            self.reward_spec = Unbounded((*batch, 1))

        def _reset(self, tensordict=None):
            td = self.full_observation_spec.rand()
            return td.update(self.full_done_spec.zero())

    torch.manual_seed(0)
    world_model = WorldModelWrapper(
        SafeModule(Transition(), in_keys=["hidden_observation", "action"], out_keys=["hidden_observation"]),
        SafeModule(torch.nn.Linear(state_dim, 1), in_keys=["hidden_observation"], out_keys=["reward"]),
    )
    env = GoalEnv(world_model)
    env.transition = world_model[0].module  # the raw F(s, a), for the tests
    return env


def test_grasp_mpc_planner_runs_where_cem_planner_does():
    env = _torchrl_env()
    from tensordict import TensorDict
    from torchrl.modules.planners import CEMPlanner

    from grasp_kernels.integrations.torchrl import GraspMPCPlanner

    grasp = GraspMPCPlanner(env, planning_horizon=8, optim_steps=40, config=GraspConfig(**{**FAST, "iters": 40}))
    cem = CEMPlanner(env, planning_horizon=8, optim_steps=2, num_candidates=8, top_k=3)
    for planner in (grasp, cem):
        rollout = env.rollout(3, planner)
        assert rollout["action"].shape == (3, 2)
        assert rollout["action"].abs().max() <= 1.0
    # batched call: the first planned action per row, and the plan reaches a reachable goal
    g = torch.Generator().manual_seed(3)
    s0 = torch.randn(4, 3, generator=g)
    with torch.no_grad():
        target = s0.clone()
        for _ in range(8):
            target = env.transition(target, torch.full((4, 2), 0.5))
    td = TensorDict({"hidden_observation": s0, "goal": target}, batch_size=[4])
    out = grasp(td)
    assert out["action"].shape == (4, 2)
    torch.testing.assert_close(out["action"], grasp.last_result.actions[:, 0])
    start = (s0 - target).norm(dim=1)
    assert torch.all(grasp.last_result.final_distance < 0.5 * start)


def test_grasp_mpc_planner_errors():
    env = _torchrl_env()
    from tensordict import TensorDict

    from grasp_kernels.integrations.torchrl import GraspMPCPlanner

    planner = GraspMPCPlanner(env, planning_horizon=4, optim_steps=2)
    with pytest.raises(ValueError, match=r"state shape mismatch: goal 'goal' has shape \(2, 4\)"):
        planner(TensorDict({"hidden_observation": torch.zeros(2, 3), "goal": torch.zeros(2, 4)}, batch_size=[2]))
    with pytest.raises(KeyError, match="no goal"):
        planner(TensorDict({"hidden_observation": torch.zeros(2, 3)}, batch_size=[2]))
    with pytest.raises(ValueError, match=r"one state per step \(history = 1\).*config.history = 3"):
        GraspMPCPlanner(env, planning_horizon=4, config=GraspConfig(history=3))
    rows = torch.tensor([[-1.0, -1.0], [-2.0, -1.0]])
    with pytest.raises(ValueError, match="different bounds across its batch entries"):
        GraspMPCPlanner(_torchrl_env(batch=(2,), low=rows, high=1.0), planning_horizon=4)
    GraspMPCPlanner(_torchrl_env(batch=(2,), low=rows, high=1.0), planning_horizon=4, action_low=-1.0)  # the user's win


def test_grasp_mpc_planner_action_bounds():
    """Per-action bounds from a batched spec ``[B, A]``; bounds passed to the adapter win over the
    spec's (a config's bounds are replaced); an unbounded side stays unbounded."""
    from grasp_kernels.integrations.torchrl import GraspMPCPlanner

    low, high = torch.tensor([-1.0, -0.5]), torch.tensor([1.0, 0.5])
    batched = _torchrl_env(batch=(4,), low=low.expand(4, 2), high=high.expand(4, 2))
    planner = GraspMPCPlanner(batched, planning_horizon=4, optim_steps=2)
    assert planner.grasp.config.action_low == [-1.0, -0.5] and planner.grasp.config.action_high == [1.0, 0.5]
    env = _torchrl_env()
    explicit = GraspMPCPlanner(env, planning_horizon=4, optim_steps=2, action_low=-0.25, action_high=None)
    assert explicit.grasp.config.action_low == -0.25 and explicit.grasp.config.action_high is None
    configured = GraspMPCPlanner(env, planning_horizon=4, optim_steps=2, config=GraspConfig(action_low=-0.3, action_high=0.3))
    assert configured.grasp.config.action_low == [-1.0, -1.0]  # the spec's: the adapter owns the bounds
    spec = GraspMPCPlanner(env, planning_horizon=4, optim_steps=2)
    assert spec.grasp.config.action_low == [-1.0, -1.0]
    unbounded = GraspMPCPlanner(_torchrl_env(low=-float("inf"), high=float("inf")), planning_horizon=4, optim_steps=2)
    assert unbounded.grasp.config.action_low is None and unbounded.grasp.config.action_high is None


def test_grasp_mpc_planner_keeps_float64_states():
    from tensordict import TensorDict

    from grasp_kernels.integrations.torchrl import GraspMPCPlanner

    env = _torchrl_env()
    env.world_model.double()
    planner = GraspMPCPlanner(env, planning_horizon=4, optim_steps=3, config=GraspConfig(**{**FAST, "backend": "reference"}))
    g = torch.Generator().manual_seed(2)
    td = TensorDict({"hidden_observation": torch.randn(2, 3, generator=g, dtype=torch.float64),
                     "goal": torch.randn(2, 3, generator=g, dtype=torch.float64)}, batch_size=[2])
    out = planner(td)
    assert planner.last_result.actions.dtype == torch.float64 and planner.last_result.rollout.dtype == torch.float64
    assert out["action"].shape == (2, 2) and out["action"].dtype == env.action_spec.dtype


# ---- DINO-WM-style -------------------------------------------------------------------------------


class StandInDinoWM(torch.nn.Module):
    """DINO-WM's interface at toy size: images [B, T, H, W, C] -> patch tokens [B, T, P, E] (4x4 patches
    of an 8x8 image, linear patch embedding), proprio [B, T, 2] -> [B, T, E_p]; ``num_hist`` frames;
    ``predict_next`` a patch transformer on the visual tokens plus an MLP on proprio."""

    def __init__(self, num_hist=3, action_dim=4, embed=6, proprio_embed=3):
        super().__init__()
        self.num_hist = num_hist
        self.patch = torch.nn.Linear(4 * 4 * 3, embed)
        self.proprio_enc = torch.nn.Linear(2, proprio_embed)
        self.visual_dyn = PatchTransformerDynamics(4, embed, action_dim, history=num_hist, width=16, heads=2)
        self.proprio_dyn = torch.nn.Linear(num_hist * proprio_embed + action_dim, proprio_embed)

    def encode_obs(self, obs):
        visual = obs["visual"]  # [B, T, 8, 8, 3]
        b, t = visual.shape[:2]
        patches = visual.reshape(b, t, 2, 4, 2, 4, 3).permute(0, 1, 2, 4, 3, 5, 6).reshape(b, t, 4, 48)
        return {"visual": self.patch(patches), "proprio": self.proprio_enc(obs["proprio"])}

    def predict_next(self, z, action):
        visual = self.visual_dyn(z["visual"], action)
        proprio = z["proprio"][:, -1] + 0.1 * torch.tanh(self.proprio_dyn(torch.cat([z["proprio"].flatten(1), action], 1)))
        return {"visual": visual, "proprio": proprio}


def _obs(batch, frames, seed):
    g = torch.Generator().manual_seed(seed)
    return {"visual": np.asarray(torch.rand(batch, frames, 8, 8, 3, generator=g)), "proprio": torch.randn(batch, frames, 2, generator=g)}


def test_dino_wm_adapter_plans_with_dino_objective():
    from grasp_kernels.integrations.dino_wm import DinoWMGraspPlanner

    torch.manual_seed(0)
    wm = StandInDinoWM()
    planner = DinoWMGraspPlanner(wm, action_dim=4, config=GraspConfig(horizon=5, **FAST), alpha=0.5)
    assert planner.config.history == 3  # from wm.num_hist
    obs_0, obs_g = _obs(2, 3, 1), _obs(2, 1, 2)
    actions, losses = planner.plan(obs_0, obs_g)
    assert actions.shape == (2, 5, 4) and isinstance(actions, torch.Tensor)
    assert isinstance(losses, np.ndarray) and losses.shape == (2,) and np.all(np.isinf(losses))
    # the planner's (weighted) final distance is DINO-WM's objective mse(visual) + alpha * mse(proprio)
    with torch.no_grad():
        z = wm.encode_obs({"visual": torch.as_tensor(obs_0["visual"]), "proprio": obs_0["proprio"]})
        zg = wm.encode_obs({"visual": torch.as_tensor(obs_g["visual"]), "proprio": obs_g["proprio"]})
        window = {k: v for k, v in z.items()}
        for t in range(5):
            nxt = wm.predict_next({k: v[:, -3:] for k, v in window.items()}, actions[:, t])
            window = {k: torch.cat([window[k], nxt[k].unsqueeze(1)], 1) for k in window}
        objective = ((window["visual"][:, -1] - zg["visual"][:, -1]) ** 2).mean((1, 2)) + 0.5 * (
            (window["proprio"][:, -1] - zg["proprio"][:, -1]) ** 2).mean(1)
    # the weights are DINO-WM's, divided by the largest: final_distance^2 * objective_scale is the objective
    p_e, e_p = 4 * 6, 3
    assert planner.objective_scale == pytest.approx(max(1 / p_e, 0.5 / e_p))
    weights = planner._weights()
    assert weights.max() == 1.0
    torch.testing.assert_close(weights, torch.cat([torch.full((p_e,), 1 / p_e), torch.full((e_p,), 0.5 / e_p)]) / planner.objective_scale)
    torch.testing.assert_close(planner.last_result.final_distance ** 2 * planner.objective_scale, objective, rtol=1e-4, atol=1e-6)
    warm, _ = planner.plan(obs_0, obs_g, actions=actions[:, :3])
    assert warm.shape == (2, 5, 4)


def test_dino_wm_adapter_action_bounds_are_off_unless_passed():
    """DINO-WM plans z-scored actions and never clips: no bounds unless passed to the adapter (a
    config's bounds are replaced)."""
    from grasp_kernels.integrations.dino_wm import DinoWMGraspPlanner

    torch.manual_seed(0)
    wm = StandInDinoWM()
    free = DinoWMGraspPlanner(wm, 4, GraspConfig(horizon=3, **FAST))  # GraspConfig's +-1 is not inherited
    assert free.config.action_low is None and free.config.action_high is None
    fast = GraspConfig(horizon=3, **{**FAST, "iters": 5, "lr_actions": 1.0})
    unbounded, _ = DinoWMGraspPlanner(wm, 4, fast).plan(_obs(2, 3, 1), _obs(2, 1, 2))
    actions, _ = DinoWMGraspPlanner(wm, 4, fast, action_low=-0.05, action_high=0.05).plan(_obs(2, 3, 1), _obs(2, 1, 2))
    assert unbounded.abs().max() > 0.05 and actions.abs().max() <= 0.05
    replaced = DinoWMGraspPlanner(wm, 4, GraspConfig(horizon=3, action_low=-2.0, action_high=2.0))
    assert replaced.config.action_low is None and replaced.config.action_high is None  # the adapter owns bounds


def test_dino_wm_adapter_errors():
    from grasp_kernels.integrations.dino_wm import DinoWMGraspPlanner

    wm = StandInDinoWM()
    with pytest.raises(ValueError, match=r"history mismatch: the world model declares num_hist = 3 .* history = 2"):
        DinoWMGraspPlanner(wm, 4, GraspConfig(horizon=4, history=2))
    for alpha in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="alpha must be a finite float > 0.*unconstrained"):
            DinoWMGraspPlanner(wm, 4, GraspConfig(horizon=4), alpha=alpha)
    planner = DinoWMGraspPlanner(wm, 4, GraspConfig(horizon=4, iters=2, sync_every=0))
    with pytest.raises(ValueError, match="history mismatch: .* takes history = 3 frames but the frames of obs_0 carry only 1"):
        planner.plan(_obs(2, 1, 0), _obs(2, 1, 1))
    planner.plan(_obs(2, 3, 0), _obs(2, 1, 1))
    with pytest.raises(ValueError, match=r"actions must have shape \[2, t <= 4, 4\]"):  # DINO-WM's argument name
        planner.plan(_obs(2, 3, 0), _obs(2, 1, 1), actions=torch.zeros(2, 2, 3))
    small_goal = {"visual": np.zeros((2, 1, 8, 8, 3), np.float32), "proprio": torch.zeros(2, 1, 2)}
    wm.proprio_enc = torch.nn.Linear(2, 5)  # the encoder now disagrees with the planner's latent layout
    with pytest.raises(ValueError, match="state shape mismatch"):
        planner.plan(_obs(2, 3, 0), small_goal)
    with pytest.raises(TypeError, match="predict_next"):
        DinoWMGraspPlanner(types.SimpleNamespace(encode_obs=lambda o: o), 4)
