"""``GraspConfig(compile=True)``: compiled plans equal eager plans, one graph per function serves every
iteration, a failing torch.compile falls back with one warning, and the field is validated.

The tests compile with ``aot_eager`` (seconds on a CPU, no C++ compiler); inductor, the default, runs the
same graphs through code generation (bench/plan_speed.py measures it).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from grasp_kernels import GraspConfig, GraspPlanner, backends, compiled
from grasp_kernels.backends import BackendFallbackWarning
from grasp_kernels.models import MLPDynamics

SMALL = dict(horizon=6, iters=12, sync_every=4, sync_steps=3, lr_states=0.05, lr_actions=0.05, state_noise=0.02,
             goal_weight=0.3, seed=3, backend="reference")


@pytest.fixture(autouse=True)
def fresh_compile(monkeypatch):
    """aot_eager, an empty dynamo cache and counters, and warn_once's memory cleared for each test."""
    monkeypatch.setattr(compiled, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    counters.clear()
    backends._warned.clear()
    yield
    backends._warned.clear()
    torch._dynamo.reset()


class WindowMLP(torch.nn.Module):
    """A world model on history windows ``[N, h, D]``: an MLP over the flattened window."""

    def __init__(self, dim: int, action_dim: int, history: int):
        super().__init__()
        self.history = history
        self.inner = MLPDynamics(dim * history, action_dim, hidden=16, depth=1)
        self.dim = dim

    def forward(self, windows: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return windows[:, -1] + 0.1 * self.inner(windows.flatten(1), actions)[:, : self.dim]


def _inputs(batch: int, dim: int, history: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    frames = (history,) if history > 1 else ()
    return torch.randn(batch, *frames, dim, generator=g), torch.randn(batch, dim, generator=g)


def _plan_both(model, config: GraspConfig, s0, goal, **planner_kwargs):
    eager = GraspPlanner(model, 2, config, **planner_kwargs).plan(s0, goal)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendFallbackWarning)  # no fallback: the compiled path must run
        fast = GraspPlanner(model, 2, config.replace(compile=True), **planner_kwargs).plan(s0, goal)
    return eager, fast


def _assert_same_plan(eager, fast):
    for name in ("actions", "states", "rollout", "final_distance", "energy_history"):
        torch.testing.assert_close(getattr(fast, name), getattr(eager, name), rtol=1e-4, atol=1e-5, msg=name)
    torch.testing.assert_close(fast.info["sync_loss"], eager.info["sync_loss"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("changes", [{}, {"anneal_noise": True, "particles": 2}, {"state_weights": True}])
def test_compiled_plan_equals_the_eager_plan_with_one_graph_per_function(changes):
    torch.manual_seed(0)
    model = MLPDynamics(3, 2, hidden=32, depth=2)
    changes = dict(changes)
    extra = {"state_weights": torch.tensor([0.5, 1.0, 2.0])} if changes.pop("state_weights", False) else {}
    eager, fast = _plan_both(model, GraspConfig(**SMALL, **changes), *_inputs(3, 3), **extra)
    _assert_same_plan(eager, fast)
    # the per-iteration step, sigma and noise are tensors: one graph for the iteration, one for the sync step,
    # whatever the step count, and no graph breaks
    assert counters["stats"]["unique_graphs"] == 2
    assert sum(counters["graph_break"].values()) == 0


def test_compiled_plan_with_history_windows_equals_the_eager_plan():
    torch.manual_seed(1)
    model = WindowMLP(3, 2, history=2)
    eager, fast = _plan_both(model, GraspConfig(**SMALL, history=2), *_inputs(2, 3, history=2))
    _assert_same_plan(eager, fast)
    assert counters["stats"]["unique_graphs"] == 2


def test_failing_torch_compile_warns_once_and_plans_eagerly(monkeypatch):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken_compile)
    torch.manual_seed(0)
    model = MLPDynamics(3, 2, hidden=32, depth=2)
    s0, goal = _inputs(2, 3)
    config = GraspConfig(**SMALL)
    eager = GraspPlanner(model, 2, config).plan(s0, goal)
    planner = GraspPlanner(model, 2, config.replace(compile=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = planner.plan(s0, goal)
        second = planner.plan(s0, goal)
    messages = [str(w.message) for w in caught if issubclass(w.category, BackendFallbackWarning)]
    assert len(messages) == 1, messages
    assert "compile=True runs eagerly" in messages[0] and "the lifted iteration" in messages[0]
    assert "no C++ compiler found" in messages[0]
    _assert_same_plan(eager, first)
    torch.testing.assert_close(second.actions, eager.actions, rtol=0, atol=0)  # eager from then on: bitwise


def test_compile_with_cuda_graph_warns_once_and_compiles_nothing():
    model = MLPDynamics(3, 2, hidden=8, depth=1)
    with pytest.warns(BackendFallbackWarning, match="not combined with cuda_graph"):
        planner = GraspPlanner(model, 2, GraspConfig(**SMALL, compile=True, cuda_graph=True))
    assert planner._compiled_iteration is None and planner._compiled_sync is None


@pytest.mark.parametrize("value", [1, "yes", None])
def test_compile_must_be_a_bool(value):
    assert GraspConfig().compile is False
    with pytest.raises(TypeError, match="compile must be a bool"):
        GraspConfig(compile=value)
    with pytest.raises(TypeError, match="compile must be a bool"):
        GraspConfig().replace(compile=value)
