"""GRASP beyond one device, on torch.distributed (gloo on CPUs, NCCL on GPUs; launched by ``torchrun``).

Two shardings (docs/design.md, "Beyond one device"):

- plans across ranks: each rank plans its contiguous slice of a global batch;
- time across ranks (:class:`TimeShardedPlanner`): each rank holds a contiguous chunk of the time steps
  of every plan and sends one boundary state row per plan to its neighbour per lifted iteration (it owns
  the states its transitions lead to, so no residual has to come back).

Both give the single-process plan of the same seed: a plan's randomness depends on the seed and the
plan's own index only (``plan_offset``; :mod:`grasp_kernels.randomness`).
"""

from __future__ import annotations

from ._comm import DistributedError, init, shard_range, world
from .plans import gather_shards, max_over_ranks, plan_across_ranks
from .time_sharding import TimeShardedPlanner

__all__ = [
    "DistributedError",
    "TimeShardedPlanner",
    "gather_shards",
    "init",
    "max_over_ranks",
    "plan_across_ranks",
    "shard_range",
    "world",
]
