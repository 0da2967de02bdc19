"""Time across ranks (grasp_kernels.distributed.time_sharding) on 2-4 gloo processes: the time-sharded
plan equals the single-process GraspPlanner plan of the same seed and config.

Not bitwise, to float tolerance: the per-plan energy is summed in another order (each rank sums its
chunk, the chunk's last dynamics term is corrected by one row, then the ranks' partial sums are added),
and the world model runs on B*K*n rows instead of B*K*T, which may change the BLAS blocking of its
matmuls and so the last bits of the predictions. The state and action updates are elementwise Adam
steps on the same gradients, so the planned states and actions agree tightly (1e-6 here, float32;
on the machine this was written on they came out bitwise equal, and only the energy differed, in its
last bits); the energies are compared per iteration and per plan at a relative 1e-5.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from grasp_kernels import GraspConfig, GraspPlanner
from grasp_kernels.distributed import DistributedError, TimeShardedPlanner
from grasp_kernels.models import MLPDynamics
from tests._dist import run_ranks

B, D, A = 3, 4, 2


def _model() -> nn.Module:
    torch.manual_seed(0)
    return MLPDynamics(D, A, hidden=16, depth=2, activation=nn.Tanh)


def _problem():
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)


def _config(horizon: int, particles: int, noise: bool) -> GraspConfig:
    return GraspConfig(
        horizon=horizon, iters=24, sync_every=8, sync_steps=3, particles=particles, seed=7,
        state_noise=0.05 if noise else 0.0, init_noise=0.1 if noise else 0.0,
        action_low=-0.8, action_high=0.8, backend="reference",
    )


def _as_tuple(result):
    return (result.actions, result.states, result.rollout, result.final_distance, result.energy_history,
            result.info["sync_loss"], result.info["particle"])


def _sharded(rank, world_size, horizon, particles, noise, plan_offset=0):
    s0, goal = _problem()
    planner = TimeShardedPlanner(_model(), A, _config(horizon, particles, noise))
    # numpy across the process boundary: torch.multiprocessing would share tensors through file
    # descriptors of a process that has exited by the time the parent reads them
    return tuple(t.numpy() for t in _as_tuple(planner.plan(s0, goal, plan_offset=plan_offset)))


def _single(horizon, particles, noise, plan_offset=0):
    s0, goal = _problem()
    planner = GraspPlanner(_model(), A, _config(horizon, particles, noise))
    return _as_tuple(planner.plan(s0, goal, plan_offset=plan_offset))


def _assert_equal_plans(got, want):
    got = tuple(torch.as_tensor(t) for t in got)
    actions, states, rollout, distance, energy, sync_loss, particle = got
    w_actions, w_states, w_rollout, w_distance, w_energy, w_sync_loss, w_particle = want
    assert energy.shape == w_energy.shape and sync_loss.shape == w_sync_loss.shape
    torch.testing.assert_close(energy, w_energy, rtol=1e-5, atol=1e-6)  # per iteration, per plan
    torch.testing.assert_close(actions, w_actions, rtol=0, atol=1e-6)
    torch.testing.assert_close(states, w_states, rtol=0, atol=1e-6)
    torch.testing.assert_close(rollout, w_rollout, rtol=0, atol=1e-6)
    torch.testing.assert_close(distance, w_distance, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sync_loss, w_sync_loss, rtol=1e-5, atol=1e-6)
    assert torch.equal(particle, w_particle)


@pytest.mark.parametrize(
    "world_size, horizon, particles, noise",
    [(2, 9, 2, True), (3, 11, 1, False), (4, 13, 2, True)],
)
def test_time_sharded_plan_equals_single_process(world_size, horizon, particles, noise):
    want = _single(horizon, particles, noise)
    results = run_ranks(_sharded, world_size, horizon, particles, noise)
    for got in results:  # every rank returns the whole plan
        _assert_equal_plans(got, want)


def test_one_rank_without_process_group_equals_planner():
    _assert_equal_plans(_sharded(0, 1, 9, 2, True, 5), _single(9, 2, True, 5))  # plan_offset 5: other streams


class _FailsOnRank1(nn.Module):
    """The test model, raising on rank 1 at its 5th call (a rank that dies mid-plan)."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.inner, self.rank, self.calls = _model(), rank, 0

    def forward(self, states, actions):
        self.calls += 1
        if self.rank == 1 and self.calls == 5:
            raise MemoryError("rank 1 dies here")
        return self.inner(states, actions)


def _error_cases(rank, world_size):
    """Every error case in one spawn of 4 ranks (a spawn costs seconds): what each case raised here."""
    s0, goal = _problem()
    seen = {}

    def attempt(name, model, cfg, goal=goal):
        try:
            TimeShardedPlanner(model, A, cfg).plan(s0, goal)
        except (ValueError, DistributedError) as error:
            seen[name] = f"{type(error).__name__}: {error}"
        except MemoryError as error:
            seen[name] = f"MemoryError: {error}"

    attempt("too many ranks", _model(), _config(3, 1, False))
    attempt("horizon", _model(), _config(9 + (rank == 2), 1, False))
    config = _config(9, 1, False)
    attempt("config", _model(), GraspConfig(**{**config.__dict__, "lr_actions": config.lr_actions * (1 + (rank == 1))}))
    attempt("goal", _model(), config, goal + (rank == 3))
    # last: a rank that fails mid-plan (its exchanges with the neighbours then fail: its connections
    # close; a rank that stalls instead would leave them waiting until the group's timeout, 8 s here)
    attempt("dead rank", _FailsOnRank1(rank), config)
    return seen


def test_errors_are_clear_and_do_not_hang():
    results = run_ranks(_error_cases, 4, timeout_s=8)
    for rank, seen in enumerate(results):
        assert "ValueError: time sharding needs at least one time step per rank: config.horizon = 3 < world size 4" \
            in seen["too many ranks"]
        assert seen["horizon"].startswith("DistributedError: ranks disagree on the problem"), seen
        assert "rank 2: [3, 3, 4, 10, 2, 24, 0]" in seen["horizon"]
        assert seen["config"].startswith("DistributedError: ranks disagree on the GraspConfig"), seen
        assert seen["goal"].startswith("DistributedError: ranks disagree on the inputs"), seen
        if rank == 1:
            assert seen["dead rank"] == "MemoryError: rank 1 dies here"
        else:  # the neighbours' exchanges fail, and then those of the ranks behind them
            assert seen["dead rank"].startswith("DistributedError: "), seen
            assert "failed on rank" in seen["dead rank"]


def test_out_of_scope_settings_are_rejected():
    with pytest.raises(ValueError, match="config.history = 2"):
        TimeShardedPlanner(_model(), A, GraspConfig(horizon=8, history=2))
    with pytest.raises(ValueError, match="stop_gradient=False"):
        TimeShardedPlanner(_model(), A, GraspConfig(horizon=8, stop_gradient=False))
