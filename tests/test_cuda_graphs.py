"""``GraspConfig(cuda_graph=True)``: plans captured as CUDA graphs (:mod:`grasp_kernels.graphs`): one graph
per run of lifted iterations, one sync-phase graph replayed for every phase.

CPU: the configuration, the fallbacks (CPU states, the reference backend, a capture that fails) warn once
and plan exactly like the eager loop, the graph's input buffers never alias the plan's tensors, and the
capture's structure (which graphs, what each replay runs) is checked with stand-ins for torch.cuda's graphs.
GPU (``-m gpu``): graph replay gives the same plans as the eager loop for the same seeds, on every kernel
backend and planner feature, across repeated calls with new inputs (replay, no re-capture).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from grasp_kernels import GraspConfig, GraspPlanner
from grasp_kernels import backends
from grasp_kernels import graphs as graphs_module
from grasp_kernels.backends import BackendFallbackWarning, backend_unavailable_reason
from grasp_kernels.models import MLPDynamics
from grasp_kernels.plan_state import PlanState

from _kernels import plan_close_tol

FAST = dict(horizon=6, iters=12, sync_every=4, sync_steps=3, lr_states=0.05, lr_actions=0.05, state_noise=0.02,
            goal_weight=0.3, seed=7)


@pytest.fixture(autouse=True)
def fresh_warnings():
    """warn_once remembers messages per process: each test sees its own first warning."""
    backends._warned.clear()
    yield
    backends._warned.clear()


def make_model(D=3, A=2, hidden=32, depth=2, device="cpu", seed=0) -> MLPDynamics:
    torch.manual_seed(seed)
    model = MLPDynamics(D, A, hidden=hidden, depth=depth)
    with torch.no_grad():  # non-trivial normalisation, so that a missed input shows up
        for name, buffer in model.named_buffers():
            positive = name.endswith("_std") or name == "delta_scale"
            buffer.copy_(torch.rand_like(buffer) + 0.5 if positive else torch.randn_like(buffer) * 0.1)
    return model.to(device).eval()


def problems(B, D, device, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g).to(device), torch.randn(B, D, generator=g).to(device)


def assert_same_plan(graphed, eager, atol=0.0, rtol=None):
    """Equal plans: bitwise by default, else within ``atol`` and ``rtol`` (default ``atol and 1e-5``)."""
    rtol = (atol and 1e-5) if rtol is None else rtol
    for name in ("actions", "states", "rollout", "final_distance", "energy_history"):
        a, b = getattr(graphed, name), getattr(eager, name)
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
    torch.testing.assert_close(graphed.info["sync_loss"], eager.info["sync_loss"], rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------------------------ CPU


def test_config_cuda_graph_is_a_bool():
    assert GraspConfig().cuda_graph is False
    with pytest.raises(TypeError, match="cuda_graph must be a bool"):
        GraspConfig(cuda_graph=1)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_cpu_states_warn_once_and_plan_eagerly(backend):
    if backend_unavailable_reason(backend, torch.device("cpu")) is not None:
        pytest.skip(f"{backend} unavailable here")
    model = make_model()
    s0, goal = problems(3, 3, "cpu", 1)
    eager = GraspPlanner(model, 2, GraspConfig(**FAST, backend=backend)).plan(s0, goal)
    planner = GraspPlanner(model, 2, GraspConfig(**FAST, backend=backend, cuda_graph=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = planner.plan(s0, goal)
        second = planner.plan(s0, goal)
    messages = [str(w.message) for w in caught if issubclass(w.category, BackendFallbackWarning)]
    assert messages == ["grasp_kernels: cuda_graph=True runs the plan eagerly: the states are on cpu, not a CUDA device"]
    assert planner.captured_plans == 0
    assert_same_plan(first, eager)
    assert_same_plan(second, eager)


def test_uncapturable_plan_warns_once_and_plans_eagerly(monkeypatch):
    """A plan whose capture fails (the recording is replaced here: no CUDA on CPU machines) is remembered
    per shape: one warning, the eager plan, no second attempt for that shape."""
    monkeypatch.setattr(graphs_module, "unsupported_reason", lambda state: None)
    attempts = []

    def fail(fresh, steps):
        attempts.append(fresh.states.shape)
        raise graphs_module._Uncapturable("RuntimeError: called a synchronizing CUDA operation")

    monkeypatch.setattr(graphs_module, "_record", fail)
    model = make_model()
    s0, goal = problems(2, 3, "cpu", 2)
    eager = GraspPlanner(model, 2, GraspConfig(**FAST, backend="reference")).plan(s0, goal)
    planner = GraspPlanner(model, 2, GraspConfig(**FAST, backend="reference", cuda_graph=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [planner.plan(s0, goal) for _ in range(2)]
    assert len(attempts) == 1
    failures = [str(w.message) for w in caught if "capturing it as a CUDA graph failed" in str(w.message)]
    assert len(failures) == 1 and "synchronizing CUDA operation" in failures[0]
    for result in results:
        assert_same_plan(result, eager)


def test_errors_of_the_plan_itself_propagate(monkeypatch):
    """Only an uncapturable plan falls back; anything else (a diverging warm-up, out of memory) is raised."""
    monkeypatch.setattr(graphs_module, "unsupported_reason", lambda state: None)

    def diverge(fresh, steps):
        raise RuntimeError("the GRASP energy became NaN/Inf at iteration 2")

    monkeypatch.setattr(graphs_module, "_record", diverge)
    planner = GraspPlanner(make_model(), 2, GraspConfig(**FAST, backend="reference", cuda_graph=True))
    with pytest.raises(RuntimeError, match="NaN/Inf at iteration 2"):
        planner.plan(*problems(2, 3, "cpu", 2))


class _FakeGraph:
    """Stands in for torch.cuda.CUDAGraph on the CPU: a capture runs its work once, eagerly; a replay
    counts. Enough to check what is captured and what each replay runs, not the arithmetic."""

    captures: list = []

    def __init__(self):
        self.replays = 0
        self.label = None

    def pool(self):
        return ("pool", id(self))

    def replay(self):
        self.replays += 1


class _Capture:
    active = False

    def __init__(self, graph, pool=None, stream=None):
        self.graph, self.pool = graph, pool

    def __enter__(self):
        _Capture.active = True
        _FakeGraph.captures.append((self.graph, self.pool))

    def __exit__(self, *exc):
        _Capture.active = False


def test_capture_structure_one_sync_graph_for_every_phase(monkeypatch):
    """12 iterations with a sync phase every 4: three lifted graphs (one per run of 4 iterations, sharing
    one pool) and ONE sync graph (its own pool), captured once; each replay runs the lifted graphs in
    order with the sync graph after each, and records each phase's loss row eagerly."""
    import contextlib

    monkeypatch.setattr(graphs_module, "unsupported_reason", lambda state: None)
    _FakeGraph.captures = []
    stream = type("Stream", (), {"wait_stream": lambda self, other: None})()
    for name, value in {"CUDAGraph": _FakeGraph, "graph": _Capture, "Stream": lambda device=None: stream,
                        "current_stream": lambda device=None: stream, "stream": lambda s: contextlib.nullcontext(),
                        "device": lambda d: contextlib.nullcontext(), "is_current_stream_capturing": lambda: _Capture.active,
                        "get_sync_debug_mode": lambda: 0, "set_sync_debug_mode": lambda mode: None}.items():
        monkeypatch.setattr(torch.cuda, name, value)
    model = make_model()
    planner = GraspPlanner(model, 2, GraspConfig(**FAST, backend="reference", cuda_graph=True))
    calls = {"iteration": 0, "sync_phase": 0, "record_sync": 0}
    for owner, name in ((planner, "iteration"), (planner, "sync_phase"), (PlanState, "record_sync")):
        original = getattr(owner, name)

        def counted(*args, _name=name, _original=original):
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(owner, name, counted)
    s0, goal = problems(2, 3, "cpu", 2)
    result = planner.plan(s0, goal)
    graphs = [graph for graph, _ in _FakeGraph.captures]
    lifted, sync = graphs[:1] + graphs[2:], graphs[1]
    assert len(graphs) == 4 and planner.captured_plans == 1
    assert [pool for _, pool in _FakeGraph.captures] == [None, None, lifted[0].pool(), lifted[0].pool()]
    # warm-up: 3 iterations and a phase; capture: 12 iterations, the sync phase once, 3 records (counters only)
    assert calls == {"iteration": 3 + 12, "sync_phase": 1 + 1, "record_sync": 1 + 3 + 3}
    assert (result.info["sync_loss"].shape[0], planner.config.iters) == (3, 12)
    assert [g.replays for g in lifted] == [1, 1, 1] and sync.replays == 3
    assert result.info["sync_loss"].shape == (3, 2) and result.energy_history.shape == (12, 2)
    planner.plan(s0, goal)  # a second call of the same shape: replay only
    assert len(_FakeGraph.captures) == 4 and sync.replays == 6 and calls["record_sync"] == 1 + 3 + 3 + 3


def test_graph_buffers_never_alias_the_plan():
    model = make_model()
    planner = GraspPlanner(model, 2, GraspConfig(**FAST, backend="reference", particles=2))
    state = planner.start(*problems(3, 3, "cpu", 3))
    copy = graphs_module._clone(state)
    originals = graphs_module._inputs(state)
    copies = graphs_module._inputs(copy)
    assert len(originals) == len(copies)
    for original, cloned in zip(originals, copies):
        assert (original is None) == (cloned is None)
        if original is not None:
            assert cloned.data_ptr() != original.data_ptr()
            torch.testing.assert_close(cloned, original, rtol=0, atol=0, equal_nan=True)
    assert graphs_module._plan_key(planner.config, state) == graphs_module._plan_key(planner.config, copy)
    other = planner.start(*problems(4, 3, "cpu", 3))
    assert graphs_module._plan_key(planner.config, other) != graphs_module._plan_key(planner.config, state)
    # the captured launches hold the noise counters' base: another plan_offset is another plan
    shifted = planner.start(*problems(3, 3, "cpu", 3), plan_offset=5)
    assert shifted.noise_base != state.noise_base
    assert graphs_module._plan_key(planner.config, shifted) != graphs_module._plan_key(planner.config, state)


# ------------------------------------------------------------------------------------------------ GPU


def gpu_backends():
    device = torch.device("cuda") if torch.cuda.is_available() else None
    return [b for b in ("triton", "cuda") if device is None or backend_unavailable_reason(b, device) is None]


GPU_CASES = {
    "plain": {},
    "particles": {"particles": 3},
    "annealed": {"anneal_noise": True, "state_noise": 0.05},
    "no_stopgrad": {"stop_gradient": False},
    "no_sync": {"sync_every": 0},
    "bf16": {"model_dtype": "bfloat16"},
    "last_run_short": {"iters": 10},  # 4 + 4 + 2: the last run of lifted iterations has no sync after it
    "fewer_than_warmup": {"iters": 2},
    "fused_odd_phases": {"iters": 10, "sync_every": 3, "fused_mlp": True},  # buffers swap an odd number of times
}


@pytest.mark.gpu
@pytest.mark.parametrize("backend", gpu_backends())
@pytest.mark.parametrize("case", list(GPU_CASES))
def test_gpu_graph_replay_equals_eager(backend, case):
    device = torch.device("cuda")
    model = make_model(device=device)
    if GPU_CASES[case].get("fused_mlp") and backend != "triton":
        pytest.skip("the fused MLP kernel is a Triton kernel (its cuda backend runs it too): one run suffices")
    config = GraspConfig(**{**FAST, **GPU_CASES[case]}, backend=backend)
    tol = plan_close_tol(torch.bfloat16 if config.model_dtype == "bfloat16" else torch.float32)
    eager_planner = GraspPlanner(model, 2, config)
    planner = GraspPlanner(model, 2, config.replace(cuda_graph=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendFallbackWarning)  # no fallback: the capture must succeed
        for seed in (11, 12, 13):  # the first call captures, the others replay with new inputs
            s0, goal = problems(5, 3, device, seed)
            init = torch.rand(5, FAST["horizon"], 2, device=device) * 2 - 1
            assert_same_plan(planner.plan(s0, goal, init), eager_planner.plan(s0, goal, init), **tol)
    assert planner.captured_plans == 1


@pytest.mark.gpu
def test_gpu_fused_mlp_and_history_graphs():
    device = torch.device("cuda")
    model = make_model(device=device)
    config = GraspConfig(**FAST, backend="triton", fused_mlp=True)
    planner = GraspPlanner(model, 2, config.replace(cuda_graph=True))
    for seed in (21, 22):
        s0, goal = problems(4, 3, device, seed)
        assert_same_plan(planner.plan(s0, goal), GraspPlanner(model, 2, config).plan(s0, goal), atol=1e-5)

    class Windows(nn.Module):
        history = 3

        def __init__(self):
            super().__init__()
            self.net = nn.Linear(3 * 3 + 2, 3)

        def forward(self, frames, actions):
            return frames[:, -1] + 0.1 * torch.tanh(self.net(torch.cat([frames.flatten(1), actions], dim=1)))

    windows = Windows().to(device)
    config = GraspConfig(**FAST, backend="triton", history=3)
    planner = GraspPlanner(windows, 2, config.replace(cuda_graph=True))
    g = torch.Generator().manual_seed(5)
    frames, goal = torch.randn(4, 3, 3, generator=g).to(device), torch.randn(4, 3, generator=g).to(device)
    assert_same_plan(planner.plan(frames, goal), GraspPlanner(windows, 2, config).plan(frames, goal), atol=1e-5)


@pytest.mark.gpu
def test_gpu_shapes_get_their_own_graph_and_results_are_not_overwritten():
    device = torch.device("cuda")
    model = make_model(device=device)
    planner = GraspPlanner(model, 2, GraspConfig(**FAST, backend="triton", cuda_graph=True))
    first = planner.plan(*problems(3, 3, device, 31))
    kept = first.actions.clone()
    planner.plan(*problems(3, 3, device, 32))
    planner.plan(*problems(6, 3, device, 33))
    assert planner.captured_plans == 2
    assert torch.equal(first.actions, kept)  # a later replay does not write into an earlier result
    planner.clear_cuda_graphs()
    assert planner.captured_plans == 0


@pytest.mark.gpu
def test_gpu_uncapturable_model_falls_back_with_one_warning():
    device = torch.device("cuda")
    base = make_model(device=device)

    class Syncing(nn.Module):
        def forward(self, states, actions):
            if float(actions.abs().max().item()) > 1e9:  # a host sync: not capturable
                raise AssertionError
            return base(states, actions)

    model = Syncing()
    config = GraspConfig(**FAST, backend="triton")
    planner = GraspPlanner(model, 2, config.replace(cuda_graph=True))
    s0, goal = problems(3, 3, device, 41)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = planner.plan(s0, goal)
        planner.plan(s0, goal)
    failures = [w for w in caught if "capturing it as a CUDA graph failed" in str(w.message)]
    assert len(failures) == 1 and "synchroniz" in str(failures[0].message)
    assert planner.captured_plans == 0
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    assert_same_plan(result, GraspPlanner(model, 2, config).plan(s0, goal), atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("fused_mlp", [False, True])
def test_gpu_replay_sees_in_place_weight_updates(fused_mlp):
    device = torch.device("cuda")
    model = make_model(device=device)
    config = GraspConfig(**FAST, backend="triton", fused_mlp=fused_mlp)
    planner = GraspPlanner(model, 2, config.replace(cuda_graph=True))
    s0, goal = problems(3, 3, device, 51)
    planner.plan(s0, goal)  # captured with the old weights
    model.load_state_dict(make_model(device=device, seed=1).state_dict())
    assert_same_plan(planner.plan(s0, goal), GraspPlanner(model, 2, config).plan(s0, goal), atol=1e-5)
    assert planner.captured_plans == 1
