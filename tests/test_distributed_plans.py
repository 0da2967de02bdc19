"""Plans across ranks (grasp_kernels.distributed.plans) on 2-4 gloo CPU processes, one thread each.

Why the gathered plans equal the single-process plan bit for bit: each rank plans its slice with
``plan_offset`` = the slice's start, so every plan draws the random numbers it draws in the whole batch
(per-plan generators for CEM/MPPI, counters keyed by the chain's global index for GRASP), and every
other operation of these planners is row-wise (its Adam steps, CEM's top-k and MPPI's softmax over its
own samples, GRASP's choice of its own best chain), computed by the same kernels on one thread in every
process. The world model must be row-wise to the bit as well: the navigation model here is elementwise
per state. An MLP is not, on this machine: MKL multiplies a few rows (M <= 10 with 3 outputs, M = 1
always) with other kernels that sum in another order, so a rank's 2-row slice differs from the same
rows of a 5-row batch in the last bits. The single-process reference is computed in the spawned
processes too, so that it runs on the same single thread.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from _dist import run_ranks

from grasp_kernels import GraspConfig, GraspPlanner
from grasp_kernels.baselines import CEMConfig, CEMPlanner, GDConfig, GDPlanner, MPPIConfig, MPPIPlanner
from grasp_kernels.distributed import DistributedError, gather_shards, plan_across_ranks
from grasp_kernels.envs import make_task

FIELDS = ("actions", "states", "rollout", "final_distance", "energy_history")
STATE, ACTION, HORIZON = 2, 2, 5


def _planners() -> dict:
    model = make_task("detour").world_model  # point dynamics pushed out of walls (softplus): elementwise
    return {
        "grasp": GraspPlanner(model, ACTION, GraspConfig(
            horizon=HORIZON, iters=6, particles=2, sync_every=3, sync_steps=2, backend="reference", seed=3)),
        "cem": CEMPlanner(model, ACTION, CEMConfig(horizon=HORIZON, samples=12, topk=3, iters=3, seed=3)),
        "mppi": MPPIPlanner(model, ACTION, MPPIConfig(horizon=HORIZON, samples=12, iters=3, seed=3)),
        "gd": GDPlanner(model, ACTION, GDConfig(horizon=HORIZON, iters=3)),
    }


def _problem(batch: int, warm: bool = False):
    generator = torch.Generator().manual_seed(batch)
    s0 = torch.rand(batch, STATE, generator=generator) - 0.5
    goal = torch.rand(batch, STATE, generator=generator) - 0.5
    init = 0.5 * torch.rand(batch, HORIZON, ACTION, generator=generator) if warm else None
    return s0, goal, init


def _fields(result) -> dict:
    """The result's tensors as numpy arrays: tensors put on run_ranks' queue travel through shared
    memory that is gone once the rank's process exits."""
    out = {name: getattr(result, name) for name in FIELDS}
    out.update({f"info.{k}": v for k, v in result.info.items() if isinstance(v, torch.Tensor)})
    return {name: value.detach().cpu().numpy() for name, value in out.items()}


def _across(rank: int, world_size: int) -> dict:
    """Per planner and case: the gathered result on this rank, and (rank 0) the single-process plan."""
    out = {}
    cases = {
        "all": dict(batch=5, dst=None, warm=False),
        "warm": dict(batch=5, dst=None, warm=True),
        "dst": dict(batch=5, dst=world_size - 1, warm=False),
        "small": dict(batch=world_size - 1, dst=None, warm=False),  # the last rank plans nothing
    }
    for name, planner in _planners().items():
        for case, spec in cases.items():
            s0, goal, init = _problem(spec["batch"], spec["warm"])
            got = plan_across_ranks(planner, s0, goal, init, dst=spec["dst"])
            out[name, case] = None if got is None else _fields(got)
            if rank == 0:
                out[name, case, "one process"] = _fields(planner.plan(s0, goal, init))
    return out


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_plans_across_ranks_equal_the_single_process_plan(world_size):
    results = run_ranks(_across, world_size)
    reference = results[0]
    for (name, case, *rest), expected in reference.items():
        if not rest:
            continue
        dst = world_size - 1 if case == "dst" else None
        for rank, got in enumerate(results):
            mine = got[name, case]
            if dst is not None and rank != dst:
                assert mine is None, (name, case, rank)
                continue
            assert set(mine) == set(expected), (name, case, rank)
            for field, value in expected.items():
                assert mine[field].dtype == value.dtype and np.array_equal(mine[field], value), (name, case, rank, field)


class _FailsOnRankOne:
    """A planner whose slice at plan_offset > 0 raises (e.g. NaN in one rank's plans)."""

    def __init__(self, inner):
        self.inner = inner

    def plan(self, s0, goal, init_actions=None, progress=False, *, plan_offset=0):
        if plan_offset > 0:
            raise ValueError("the planner's energy became NaN")
        return self.inner.plan(s0, goal, init_actions, progress, plan_offset=plan_offset)


def _errors_then_gathers(rank: int, world_size: int) -> dict:
    """One group for several checks (a spawn costs seconds): each error below is raised on every rank
    after a completed exchange, so the group stays usable for the next."""
    from grasp_kernels.distributed import shard_range

    out = {}
    planners = _planners()
    s0, goal, _ = _problem(5 if rank == 0 else 4)
    try:
        plan_across_ranks(planners["cem"], s0, goal)
        out["disagree"] = "no error"
    except DistributedError as exc:
        out["disagree"] = str(exc)
    s0, goal, _ = _problem(4)
    start = time.perf_counter()
    try:
        plan_across_ranks(_FailsOnRankOne(planners["gd"]), s0, goal)
        out["fails"] = "no error", 0.0
    except DistributedError as exc:
        out["fails"] = str(exc), time.perf_counter() - start
    for total, dst in ((7, None), (2, 2)):
        first, stop = shard_range(total, rank, world_size)
        rows = torch.arange(first, stop, dtype=torch.float64).unsqueeze(1) * torch.tensor([[1.0, -1.0]], dtype=torch.float64)
        flags = torch.arange(first, stop) % 2 == 0
        got = gather_shards(rows, total, dst=dst), gather_shards(flags, total, dst=dst)
        out["gather", total] = [None if g is None else g.tolist() for g in got]
    return out


def test_errors_are_clear_and_gather_shards_reassembles_the_rows():
    results = run_ranks(_errors_then_gathers, 3, timeout_s=30)
    for rank, got in enumerate(results):
        # ranks passing different batches: a DistributedError listing them, not a hang
        assert "ranks disagree on the shapes" in got["disagree"] and "rank 0: [5, 2, 5, 2" in got["disagree"]
        # a rank whose planner raised: every rank hears of it in the header exchange, not by the timeout
        message, seconds = got["fails"]
        assert "failed on rank(s) [1, 2] of 3" in message and seconds < 10, got["fails"]
        assert ("energy became NaN" in message) == (rank > 0)
        # contiguous rows (7 over 3 ranks: 3, 2, 2) to every rank; 2 rows (the last rank holds none) to rank 2
        assert got["gather", 7] == [[[float(i), -float(i)] for i in range(7)], [i % 2 == 0 for i in range(7)]]
        assert got["gather", 2] == ([[[0.0, -0.0], [1.0, -1.0]], [True, False]] if rank == 2 else [None, None])


def _exits_early(rank: int, world_size: int) -> tuple[str, float]:
    if rank == 1:
        return "left", 0.0  # leaves the group (run_ranks destroys it) before any collective
    s0, goal, _ = _problem(4)
    start = time.perf_counter()
    try:
        plan_across_ranks(_planners()["gd"], s0, goal)
    except DistributedError as exc:
        return str(exc), time.perf_counter() - start
    return "no error", 0.0


def test_a_rank_that_exits_early_gives_distributed_error_within_the_timeout():
    timeout_s = 6
    (message, seconds), _ = run_ranks(_exits_early, 2, timeout_s=timeout_s)
    assert "failed on rank 0 of 2" in message, message
    assert seconds < timeout_s + 10


def test_single_process_plans_the_whole_batch():
    planner = _planners()["cem"]
    s0, goal, _ = _problem(3)
    got, expected = plan_across_ranks(planner, s0, goal), planner.plan(s0, goal)
    for name in FIELDS:
        assert torch.equal(getattr(got, name), getattr(expected, name))


@pytest.mark.parametrize(
    "call, kind, match",
    [
        (lambda p, s, g: plan_across_ranks(p, s[0], g[0]), ValueError, "must be batched"),
        (lambda p, s, g: plan_across_ranks(p, s, g[:2]), ValueError, "the same batch"),
        (lambda p, s, g: plan_across_ranks(p, s, g, dst=1), ValueError, r"dst must be a rank in \[0, 1\)"),
        (lambda p, s, g: plan_across_ranks(p, s, g, torch.zeros(2, HORIZON, ACTION)), ValueError, "init_actions"),
    ],
    ids=["single", "batches", "dst", "init"],
)
def test_bad_arguments_name_themselves(call, kind, match):
    s0, goal, _ = _problem(3)
    with pytest.raises(kind, match=match):
        call(_planners()["cem"], s0, goal)


class _PointMass(torch.nn.Module):
    """A PointMaze-shaped world model (state: position, velocity; action: force) that is elementwise per
    state, so that sharded planning is bitwise the single-process planning (the shipped MLP is not:
    module docstring; there rounding in the first plan, ~1e-5 in GRASP's actions, grows through the
    replans of the closed loop into different episodes)."""

    state_dim, action_dim = 4, 2

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        position, velocity = states[..., :2], states[..., 2:]
        velocity = 0.8 * velocity + 0.5 * torch.tanh(actions)
        return torch.cat([position + 0.3 * velocity, velocity], dim=-1)


def _quality(rank: int, world_size: int, pairs, closed: bool) -> dict:
    from grasp_kernels.quality import closed_loop, open_loop, planner_settings

    model = _PointMass()
    settings = planner_settings(model, model.action_dim, 10, quick=True)
    out = {}
    for family in ("GRASP", "CEM"):
        factory = next(iter(settings[family].values()))
        out["open", family, "sharded"] = open_loop(pairs.env_name, factory(1.0), pairs, across_ranks=True)[0]
        if closed:
            out["closed", family, "sharded"] = closed_loop(
                pairs.env_name, factory(1.0), pairs, max_steps=6, replan_every=3, across_ranks=True)[0]
        if rank == 0:  # one process: the plain calls plan every pair here
            out["open", family, "one"] = open_loop(pairs.env_name, factory(1.0), pairs)[0]
            if closed:
                out["closed", family, "one"] = closed_loop(pairs.env_name, factory(1.0), pairs, max_steps=6, replan_every=3)[0]
    return out


def test_sharded_quality_scores_equal_one_process():
    pytest.importorskip("gymnasium_robotics")
    from grasp_kernels.envs.tasks import make_pairs

    pairs = make_pairs("pointmaze-medium", 3, 2000, 10)
    results = run_ranks(_quality, 2, pairs, True, timeout_s=120)
    for key, one in results[0].items():
        if key[-1] != "one":
            continue
        for rank, got in enumerate(results):
            sharded = got[(*key[:-1], "sharded")]
            assert (sharded.successes, sharded.trials, sharded.median_error) == (one.successes, one.trials, one.median_error), (key, rank)
        # every rank reports the same wall time (the slowest rank's), so that equal-time scaling agrees
        assert len({got[(*key[:-1], "sharded")].wall_time for got in results}) == 1
