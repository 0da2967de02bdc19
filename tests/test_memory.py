"""Planning in bounded memory (``GraspConfig(max_transitions=N)`` / ``memory_budget=``, docs/design.md,
"Bounded memory"): chunked plans equal unchunked ones, the budget sizes the chunks and is reported,
out-of-memory iterations are retried with halved chunks, and bad inputs are named.

Bitwise equality needs a world model that computes each row the same at any batch size: the navigation
task's point dynamics (elementwise) and an elementwise window model here. MLPs (BLAS matmuls whose blocking
depends on the row count) are compared to float rounding.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from grasp_kernels import GraspConfig, GraspPlanner, backends, compiled
from grasp_kernels.baselines import CEMConfig, CEMPlanner, GDConfig, GDPlanner, MPPIConfig, MPPIPlanner
from grasp_kernels.distributed import TimeShardedPlanner
from grasp_kernels.envs import make_task
from grasp_kernels.lifted import _chunk_grad_pred, _energy_grads, lifted_iteration
from grasp_kernels.rollouts import rollout, shooting_loss
from grasp_kernels.memory import (
    LiveTensorPeak,
    format_bytes,
    largest_fitting,
    measure_peak,
    parse_memory_budget,
    sync_chunking,
    transition_chunks,
)
from grasp_kernels.models import MLPDynamics
from grasp_kernels.ops import AdamHyper
from tests._dist import run_ranks

FIELDS = ("actions", "states", "rollout", "final_distance", "energy_history")


def _navigation() -> nn.Module:
    return make_task("detour").world_model  # elementwise: rows independent of the batch, to the bit


def _problem(batch: int = 3, seed: int = 1, history: int = 1, dim: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, dim) if history == 1 else (batch, history, dim)
    return torch.randn(shape, generator=g), torch.randn(batch, dim, generator=g)


def _config(**changes) -> GraspConfig:
    base = dict(horizon=7, iters=6, sync_every=3, sync_steps=2, particles=2, seed=3, backend="reference",
                state_noise=0.05, init_noise=0.1, goal_weight=0.3)
    return GraspConfig(**(base | changes))


def _plan(model, config: GraspConfig, s0, goal, **planner_kwargs):
    return GraspPlanner(model, 2, config, **planner_kwargs).plan(s0, goal)


def _assert_same(got, want, exact: bool = True, tol: float = 1e-5) -> None:
    for name in FIELDS:
        a, b = getattr(got, name), getattr(want, name)
        if exact:
            assert torch.equal(a, b), f"{name} differs by {(a - b).abs().max().item():.3g}"
        else:
            torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=name)
    if exact:
        assert torch.equal(got.info["sync_loss"], want.info["sync_loss"])


class ElementwiseWindow(nn.Module):
    """A history-3 model that is elementwise in the rows (each row the same at any batch size)."""

    history = 3

    def forward(self, windows: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        blend = 0.2 * windows[:, 0] + 0.3 * windows[:, 1] + 0.5 * windows[:, 2]
        return windows[:, -1] + 0.1 * torch.tanh(blend + actions)


def _mlp(dim: int = 2, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return MLPDynamics(dim, 2, hidden=16, depth=2).to(dtype)


# ---- the chunk schedule -------------------------------------------------------------------------------


@pytest.mark.parametrize("batch, horizon, most", [(4, 7, None), (4, 7, 28), (4, 7, 100), (4, 7, 14), (5, 7, 15),
                                                   (4, 7, 7), (4, 7, 3), (3, 7, 1), (1, 5, 2)])
def test_chunks_cover_every_transition_once_within_the_limit(batch, horizon, most):
    chunks = transition_chunks(batch, horizon, most)
    seen = torch.zeros(batch, horizon, dtype=torch.int64)
    for c in chunks:
        seen[c.b0:c.b1, c.t0:c.t1] += 1
        assert most is None or c.size <= most
        assert (c.t0, c.t1) == (0, horizon) or c.b1 - c.b0 == 1  # whole chains, or a window of one chain
    assert torch.equal(seen, torch.ones_like(seen))
    if most is not None and most < batch * horizon:
        assert len(chunks) > 1
    if most is not None and most >= horizon:  # as few chunks as whole chains allow, balanced
        assert len(chunks) == -(-batch // (most // horizon))


def test_sync_chunking_uses_checkpointing_when_one_chain_does_not_fit():
    assert sync_chunking(None, 10, None) == (None, False)
    assert sync_chunking(35, 10, None) == (3, False)
    assert sync_chunking(7, 10, None) == (7, True)  # a chain's 10 steps exceed 7: recompute
    assert sync_chunking(35, 10, True) == (35, True)
    assert sync_chunking(7, 10, False) == (1, False)  # never: one whole chain per chunk


# ---- chunked plans equal unchunked ones ---------------------------------------------------------------


@pytest.mark.parametrize("most", [1, 3, 7, 10, 14, 1000])
def test_chunked_plan_is_bitwise_the_unchunked_plan(most):
    s0, goal = _problem()
    want = _plan(_navigation(), _config(), s0, goal)
    got = _plan(_navigation(), _config(max_transitions=most), s0, goal)
    _assert_same(got, want)
    memory = got.info["memory"]
    assert memory["max_transitions"] == most
    assert memory["chunks_per_iteration"] == len(transition_chunks(6, 7, most))
    assert "memory" not in want.info  # the default plan reports nothing new


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0, 0.1234567])
@pytest.mark.parametrize("weighted", [False, True])
def test_chunk_gradient_is_the_reference_energy_ops_bitwise(dtype, gamma, weighted):
    """The chunks' dE/dp on the reference backend (elementwise, no graph per chunk) is, element by element,
    what the energy op's autograd computes over the full tensors."""
    g = torch.Generator().manual_seed(4)
    batch, horizon, dim = 3, 6, 5
    states = torch.randn(batch, horizon + 1, dim, generator=g, dtype=dtype)
    pred = torch.randn(batch, horizon, dim, generator=g, dtype=dtype)
    sqrt_w = torch.rand(dim, generator=g, dtype=dtype) + 0.5 if weighted else None
    want = _energy_grads(pred, states, gamma, "reference", sqrt_w)[1]
    for chunk in transition_chunks(batch, horizon, 4) + transition_chunks(batch, horizon, 12):
        got = _chunk_grad_pred(pred[chunk.b0:chunk.b1, chunk.t0:chunk.t1], states, chunk, gamma, "reference", sqrt_w,
                               None)
        assert torch.equal(got, want[chunk.b0:chunk.b1, chunk.t0:chunk.t1])


class Counting(nn.Module):
    """The navigation model, recording the rows of every call."""

    def __init__(self):
        super().__init__()
        self.inner, self.calls = _navigation(), []

    def forward(self, states, actions):
        self.calls.append(states.shape[0])
        return self.inner(states, actions)


def test_chunked_iteration_calls_the_model_on_chunks_only():
    model = Counting()
    calls = model.calls
    s0, goal = _problem()
    _plan(model, _config(sync_every=0, iters=2, max_transitions=10), s0, goal)
    lifted = calls[: 2 * 6]
    assert lifted == [7] * 12  # 6 chains of 7 transitions: one chain per chunk (10 // 7)
    assert max(calls) <= 10


@pytest.mark.parametrize("sync", ["gd", "cem"])
@pytest.mark.parametrize("most", [2, 7, 15])
def test_chunked_sync_variants_are_bitwise(sync, most):
    s0, goal = _problem()
    config = _config(sync=sync, cem_sync_samples=8, cem_sync_elites=3, init_cem_steps=2 if sync == "cem" else 0)
    want = _plan(_navigation(), config, s0, goal)
    got = _plan(_navigation(), config.replace(max_transitions=most), s0, goal)
    _assert_same(got, want)


@pytest.mark.parametrize("checkpoint", [None, True, False])
def test_checkpointing_of_the_sync_is_bitwise(checkpoint):
    s0, goal = _problem()
    want = _plan(_navigation(), _config(), s0, goal)
    got = _plan(_navigation(), _config(max_transitions=4, activation_checkpointing=checkpoint), s0, goal)
    _assert_same(got, want)
    assert got.info["memory"]["activation_checkpointing"] is (checkpoint is not False)


def test_history_windows_and_state_weights_are_bitwise():
    s0, goal = _problem(history=3)
    weights = torch.tensor([0.5, 2.0])
    config = _config(history=3)
    want = _plan(ElementwiseWindow(), config, s0, goal, state_weights=weights)
    for most in (2, 7, 20):
        got = _plan(ElementwiseWindow(), config.replace(max_transitions=most), s0, goal, state_weights=weights)
        _assert_same(got, want)


@pytest.mark.parametrize("history", [1, 3])
def test_without_stop_gradient_chunks_sum_the_state_input_gradient(history):
    s0, goal = _problem(history=history)
    model = ElementwiseWindow() if history == 3 else _navigation()
    config = _config(history=history, stop_gradient=False)
    want = _plan(model, config, s0, goal)
    got = _plan(model, config.replace(max_transitions=3), s0, goal)
    # windows crossing a chunk boundary add their state-input gradients in another order
    _assert_same(got, want, exact=history == 1, tol=1e-6)


def test_chunked_mlp_plan_equals_to_rounding():
    s0, goal = _problem(dim=3)
    want = _plan(_mlp(3), _config(), s0, goal)
    for most in (1, 5, 14):
        got = _plan(_mlp(3), _config(max_transitions=most), s0, goal)
        _assert_same(got, want, exact=False, tol=1e-5)


def test_chunked_float64_mlp_plan_equals_to_rounding():
    s0, goal = (t.double() for t in _problem(dim=3))
    want = _plan(_mlp(3, torch.float64), _config(), s0, goal)
    got = _plan(_mlp(3, torch.float64), _config(max_transitions=5), s0, goal)
    _assert_same(got, want, exact=False, tol=1e-12)


def test_plan_offset_shard_invariance_holds_chunked():
    s0, goal = _problem(batch=4)
    config = _config(max_transitions=5)
    whole = _plan(_navigation(), config, s0, goal)
    part = GraspPlanner(_navigation(), 2, config).plan(s0[2:], goal[2:], plan_offset=2)
    assert torch.equal(part.actions, whole.actions[2:]) and torch.equal(part.states, whole.states[2:])


@pytest.mark.parametrize("weighted", [False, True])
def test_triton_backend_chunked_equals_unchunked(weighted):
    s0, goal = _problem(batch=2)
    config = _config(backend="triton", iters=3, sync_every=0, particles=1, horizon=5)
    weights = torch.tensor([0.5, 2.0]) if weighted else None
    with warnings.catch_warnings():
        warnings.simplefilter("error", backends.BackendFallbackWarning)  # the kernels must run
        want = _plan(_navigation(), config, s0, goal, state_weights=weights)
        got = _plan(_navigation(), config.replace(max_transitions=3), s0, goal, state_weights=weights)
    assert got.info["backend"] == "triton"
    # chunked: dE/dp of each chunk from the energy kernel, then the fused state step on every row with
    # the same seed and counters (the noise is the unchunked plan's)
    _assert_same(got, want, exact=False, tol=1e-6)


def test_compiled_chunked_iteration_equals_eager(monkeypatch):
    monkeypatch.setattr(compiled, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    backends._warned.clear()
    s0, goal = _problem()
    config = _config(max_transitions=14, iters=4, sync_every=2)  # 3 chunks of 2 chains; sync: 2 chains a chunk
    want = _plan(_navigation(), config, s0, goal)
    with warnings.catch_warnings():
        warnings.simplefilter("error", backends.BackendFallbackWarning)  # the compiled path must run
        got = _plan(_navigation(), config.replace(compile=True), s0, goal)
    _assert_same(got, want, exact=False, tol=1e-6)
    # checkpointing over several chunks of chains: torch.compile takes one recomputed region, the sync runs
    # eagerly (one warning), the iteration stays compiled
    config = config.replace(max_transitions=5)
    with pytest.warns(backends.BackendFallbackWarning, match="GD sync step eagerly with activation checkpointing"):
        got = _plan(_navigation(), config.replace(compile=True), s0, goal)
    _assert_same(got, _plan(_navigation(), config, s0, goal), exact=False, tol=1e-6)
    torch._dynamo.reset()


def _boundary_case(max_transitions):
    """lifted_iteration on a time chunk whose last transition leads to a neighbour's row (the boundary hook of
    time sharding), chunked and not."""
    torch.manual_seed(5)
    batch, horizon, dim = 3, 5, 2
    states = torch.randn(batch, horizon + 1, dim)
    actions = torch.randn(batch, horizon, 2) * 0.3
    neighbour = torch.randn(batch, dim)
    moments = [torch.zeros_like(states) for _ in range(2)] + [torch.zeros_like(actions) for _ in range(2)]
    seen = {}

    def boundary(pred, energy, grad_pred):
        residual, to_goal = pred[:, -1] - neighbour, pred[:, -1] - states[:, -1]
        energy.add_(residual.square().sum(1) - to_goal.square().sum(1))
        grad_pred[:, -1] = 2 * residual + 0.6 * to_goal
        seen["pred"] = pred.clone()

    energy, grad_pred, action_grad = lifted_iteration(
        _navigation(), states, actions, tuple(moments[:2]), tuple(moments[2:]), step=1, gamma=0.3,
        state_adam=AdamHyper(0.1), action_adam=AdamHyper(0.1), noise_std=0.0, low=None, high=None, state_shape=(dim,),
        boundary=boundary, max_transitions=max_transitions, last_next=None if max_transitions is None else neighbour,
    )
    return energy, grad_pred, action_grad, states, actions


@pytest.mark.parametrize("most", [2, 5, 7])
def test_boundary_hook_of_time_sharding_is_bitwise_chunked(most):
    want = _boundary_case(None)
    got = _boundary_case(most)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def _time_sharded(rank, world_size, max_transitions):
    s0, goal = _problem()
    config = _config(horizon=9, max_transitions=max_transitions)
    result = TimeShardedPlanner(_navigation(), 2, config).plan(s0, goal)
    return tuple(getattr(result, name).numpy() for name in FIELDS)


@pytest.mark.parametrize("max_transitions", [3, 12])  # time windows with checkpointed sync; whole chains
def test_time_sharding_composes_with_chunks(max_transitions):
    s0, goal = _problem()
    want = _plan(_navigation(), _config(horizon=9), s0, goal)
    for got in run_ranks(_time_sharded, 2, max_transitions):
        for name, value in zip(FIELDS, got):
            # as tests/test_distributed_time.py: the energy is summed in another order across the ranks
            torch.testing.assert_close(torch.as_tensor(value), getattr(want, name), rtol=1e-5, atol=1e-6)


def test_boundary_without_last_next_is_rejected():
    with pytest.raises(ValueError, match="last_next"):
        torch.manual_seed(0)
        states, actions = torch.randn(1, 3, 2), torch.randn(1, 2, 2)
        zeros = (torch.zeros_like(states), torch.zeros_like(states))
        lifted_iteration(_navigation(), states, actions, zeros, (torch.zeros_like(actions),) * 2, step=1, gamma=0.1,
                         state_adam=AdamHyper(0.1), action_adam=AdamHyper(0.1), noise_std=0.0, low=None,
                         high=None, state_shape=(2,), boundary=lambda *a: None, max_transitions=1)


def test_checkpointed_rollout_gradient_is_the_plain_one():
    torch.manual_seed(2)
    s0, goal = torch.randn(4, 3), torch.randn(4, 3)
    actions = (0.3 * torch.randn(4, 6, 2)).requires_grad_(True)
    model = _mlp(3)
    plain = torch.autograd.grad(shooting_loss(model, s0, actions, goal).sum(), actions)[0]
    again = torch.autograd.grad(shooting_loss(model, s0, actions, goal, checkpoint=True).sum(), actions)[0]
    assert torch.equal(plain, again)
    with torch.no_grad():  # rows of a batch: bitwise for a row-wise model, to rounding for an MLP's matmuls
        torch.testing.assert_close(rollout(model, s0, actions, max_rows=3), rollout(model, s0, actions))
        nav_s0 = s0[:, :2]
        assert torch.equal(rollout(_navigation(), nav_s0, actions, max_rows=3), rollout(_navigation(), nav_s0, actions))


# ---- baselines ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("most", [1, 4, 9, 1000])
def test_baselines_chunked_are_bitwise(most):
    s0, goal = _problem()
    cases = [
        (GDPlanner, GDConfig(horizon=5, iters=4)),
        (GDPlanner, GDConfig(horizon=5, iters=4, activation_checkpointing=True)),
        (CEMPlanner, CEMConfig(horizon=5, iters=3, samples=8, topk=3)),
        (MPPIPlanner, MPPIConfig(horizon=5, iters=3, samples=8)),
    ]
    for planner, config in cases:
        want = planner(_navigation(), 2, config).plan(s0, goal)
        got = planner(_navigation(), 2, config.__class__(**(vars(config) | {"max_transitions": most}))).plan(s0, goal)
        for name in FIELDS:
            assert torch.equal(getattr(got, name), getattr(want, name)), (planner.__name__, name)


def test_baselines_chunk_their_model_calls():
    model = Counting()
    calls = model.calls
    s0, goal = _problem()
    CEMPlanner(model, 2, CEMConfig(horizon=4, iters=2, samples=10, topk=3, max_transitions=7)).plan(s0, goal)
    assert max(calls) == 6  # 30 candidates, at most 7 rows a call: 5 balanced chunks of 6
    calls.clear()
    GDPlanner(model, 2, GDConfig(horizon=4, iters=2, max_transitions=8)).plan(s0, goal)
    differentiated, final = calls[:-4], calls[-4:]
    assert max(differentiated) == 2  # 8 // 4 = 2 plans per chunk through the 4 steps
    assert final == [3] * 4  # the forward-only final rollout: at most 8 rows a call


# ---- the budget ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, size", [("512MiB", 512 * 2**20), ("8GiB", 8 * 2**30), ("2GB", 2 * 10**9),
                                        ("1.5 GiB", int(1.5 * 2**30)), ("100", 100), ("64 kb", 64000),
                                        (4096, 4096), ("3b", 3)])
def test_budget_forms_parse(text, size):
    assert parse_memory_budget(text) == size


@pytest.mark.parametrize("bad", ["abc", "8 GiBs", "1e9", "-1GB", "", "GiB", "1.2.3MB"])
def test_budget_that_does_not_parse_names_the_accepted_forms(bad):
    with pytest.raises(ValueError, match=r"memory_budget .* does not parse.*'512MiB', '8GiB', '2GB', '1.5 GiB'"):
        GraspConfig(memory_budget=bad)


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-5, ValueError), (True, TypeError), (1.5e9, TypeError),
                                        ("0.1 B", ValueError)])
def test_budget_values_out_of_range(bad, error):
    with pytest.raises(error, match="memory_budget"):
        GraspConfig(memory_budget=bad)


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-3, ValueError), (1.5, TypeError), (True, TypeError),
                                        ("8", TypeError)])
def test_max_transitions_must_be_an_int_of_at_least_one(bad, error):
    with pytest.raises(error, match="max_transitions"):
        GraspConfig(max_transitions=bad)
    with pytest.raises(error, match="max_transitions"):
        CEMConfig(max_transitions=bad)
    with pytest.raises(error, match="max_transitions"):
        GDConfig(max_transitions=bad)


def test_activation_checkpointing_must_be_a_bool():
    with pytest.raises(TypeError, match="activation_checkpointing"):
        GraspConfig(activation_checkpointing="yes")


class Wide(nn.Module):
    """An MLP with a wide hidden layer: its activations dominate the plan's memory (~4 KiB per transition)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 512), nn.Tanh(), nn.Linear(512, 512), nn.Tanh(), nn.Linear(512, 2))

    def forward(self, states, actions):
        return states + 0.1 * self.net(torch.cat([states, actions], dim=1))


def _budget_config(**changes) -> GraspConfig:
    return _config(horizon=8, particles=2, iters=2, sync_every=2, sync_steps=1, **changes)


def _peak_of_plan(model, config, s0, goal):
    with LiveTensorPeak() as tracker:
        result = _plan(model, config, s0, goal)
    return tracker.peak, result


def test_budget_sizes_the_chunks_and_the_plan_stays_within_it():
    s0, goal = _problem(batch=4)
    unbounded, _ = _peak_of_plan(Wide(), _budget_config(), s0, goal)
    budget = unbounded // 4
    peak, result = _peak_of_plan(Wide(), _budget_config(memory_budget=budget), s0, goal)
    memory = result.info["memory"]
    assert memory["budget"] == budget
    assert 1 <= memory["max_transitions"] < 64 and memory["chunks_per_iteration"] > 1
    assert memory["measured_peak"] <= budget
    assert memory["measured_peak"] >= 0.5 * budget  # it uses the budget, not a tiny chunk
    assert "dispatch" in memory["method"]
    # the whole plan (sizing included) within 10 % of the budget, on the same count of tensor storages
    assert peak <= 1.1 * budget, (format_bytes(peak), format_bytes(budget))
    want = _plan(Wide(), _budget_config(max_transitions=memory["max_transitions"]), s0, goal)
    _assert_same(result, want)  # the sized plan is the plan of that chunk size


def test_budget_is_measured_once_per_shape():
    s0, goal = _problem(batch=4)
    planner = GraspPlanner(Wide(), 2, _budget_config(memory_budget="2MiB"))
    calls = []
    planner.world_model.register_forward_hook(lambda *args: calls.append(1))
    planner.plan(s0, goal)
    first = len(calls)
    calls.clear()
    planner.plan(s0, goal)
    assert len(calls) < first  # the second plan of the shape does not measure again
    calls.clear()
    planner.plan(s0[:2], goal[:2])
    assert len(calls) > 0 and len(planner._memory_plans) == 2


def test_budget_below_one_transition_names_the_bytes_it_needs():
    s0, goal = _problem(batch=4)
    with pytest.raises(ValueError, match=r"memory_budget = '1KiB' \(1024 bytes\) cannot hold one transition: one "
                                         r"transition needs \d+ bytes"):
        _plan(Wide(), _budget_config(memory_budget="1KiB"), s0, goal)


def test_budget_and_max_transitions_that_contradict_are_rejected():
    s0, goal = _problem(batch=4)
    with pytest.raises(ValueError, match=r"max_transitions = 64 contradicts memory_budget = '200KiB'"):
        _plan(Wide(), _budget_config(memory_budget="200KiB", max_transitions=64), s0, goal)
    ok = _plan(Wide(), _budget_config(memory_budget="64MiB", max_transitions=5), s0, goal)
    assert ok.info["memory"]["max_transitions"] == 5


@pytest.mark.parametrize("fixed, a, b", [(100, 0, 10), (700, 20, 10), (0, 300, 7), (900, 0, 1), (990, 5, 1)])
@pytest.mark.parametrize("chain", [1, 8])
def test_largest_fitting_finds_the_largest_chunk(fixed, a, b, chain):
    """An iteration peak of max(F, a + b r) in the realized chunk size r (whole chains of ``chain``
    transitions above one chain), the chunk loop's a + b r: the size found is the largest that fits, and
    every whole iteration measured fits."""
    def realized(n):
        return n if n < chain else n - n % chain

    seen = []

    def iteration(n):
        seen.append(max(fixed, a + b * realized(n)))
        return seen[-1]

    available, total = 1000, 400
    n, peak, slope = largest_fitting(iteration, lambda n: a + b * realized(n), available, total, realized)
    best = max(r for r in range(1, total + 1) if a + b * realized(r) <= 0.97 * available)  # F <= available here
    assert all(p <= available for p in seen) and peak == iteration(n) <= available
    assert realized(n) == realized(best), (n, best)
    assert slope == b
    assert largest_fitting(iteration, lambda n: a + b * realized(n), 50, total, realized)[0] == 0


def test_live_tensor_peak_counts_new_storages_until_freed():
    kept = torch.ones(1000)

    def work():
        a = torch.empty(2000)  # 8000 bytes
        b = a * 2  # 8000 more, both alive
        del a, b
        c = kept[:10].clone()  # 40
        view = kept[5:]  # a view of an older storage: nothing new
        return c, view

    peak, method = measure_peak(work, torch.device("cpu"))
    assert peak == 16000 and "dispatch" in method


# ---- out of memory ------------------------------------------------------------------------------------


class RunsOut(nn.Module):
    """The navigation model that raises torch.OutOfMemoryError on calls of more than ``limit`` rows."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.inner = _navigation()

    def forward(self, states, actions):
        if states.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (test: {states.shape[0]} rows)")
        return self.inner(states, actions)


def test_out_of_memory_halves_the_chunk_and_retries_once():
    s0, goal = _problem()
    config = _config(sync_every=0, max_transitions=20)  # chunks of 2 chains (14 rows); the model fails above 10
    with pytest.warns(ResourceWarning, match=r"out of memory in lifted iteration 0 .* max_transitions = 10"):
        got = _plan(RunsOut(limit=10), config, s0, goal)
    assert got.info["memory"]["max_transitions"] == 10 and got.info["memory"]["out_of_memory_retries"] == 1
    want = _plan(_navigation(), config.replace(max_transitions=10), s0, goal)
    _assert_same(got, want)  # the retried iteration ran on untouched tensors with the same noise


def test_out_of_memory_unchunked_plan_retries_with_half_the_batch():
    s0, goal = _problem()
    with pytest.warns(ResourceWarning, match="max_transitions = 21"):
        got = _plan(RunsOut(limit=30), _config(sync_every=0), s0, goal)
    _assert_same(got, _plan(_navigation(), _config(sync_every=0), s0, goal))


def test_out_of_memory_twice_raises():
    s0, goal = _problem()
    with pytest.warns(ResourceWarning), pytest.raises(torch.OutOfMemoryError):
        _plan(RunsOut(limit=4), _config(sync_every=0, max_transitions=20), s0, goal)
