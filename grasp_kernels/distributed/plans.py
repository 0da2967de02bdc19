"""Plans across ranks: every rank plans its contiguous slice of one global batch, and the per-plan
outputs are gathered along the batch dimension (to every rank, or to one).

Each rank passes its slice's start as ``plan_offset``, so plan ``i`` of the global batch draws the
random numbers of plan ``i`` of a single-process plan of the whole batch (:mod:`grasp_kernels.randomness`);
with row-wise world models the gathered plans equal that single-process plan.

Example (``torchrun --nproc-per-node 4 script.py``)::

    from grasp_kernels.distributed import init, plan_across_ranks
    init()
    result = plan_across_ranks(planner, s0, goal)          # s0, goal: [B, *S], the same on every rank
    result.actions.shape                                    # [B, T, A] on every rank
"""

from __future__ import annotations

from typing import Optional, Protocol

import torch
import torch.distributed as dist

from .._checks import check_int
from ..result import PlanResult
from ._comm import DistributedError, agree, group_device, guarded, shard_range, world

__all__ = ["OffsetPlanner", "gather_shards", "max_over_ranks", "plan_across_ranks"]


class OffsetPlanner(Protocol):
    """What :func:`plan_across_ranks` needs: a ``plan`` that takes the global index of its batch's first
    plan (GraspPlanner, GDPlanner, CEMPlanner, MPPIPlanner)."""

    def plan(
        self, s0: torch.Tensor, goal: torch.Tensor, init_actions: Optional[torch.Tensor] = None, progress: bool = False,
        *, plan_offset: int = 0,
    ) -> PlanResult: ...


# the per-plan tensors of a PlanResult and the dimension that is the batch
_FIELDS = (("actions", 0), ("states", 0), ("rollout", 0), ("final_distance", 0), ("energy_history", 1))
# GRASP's per-plan extras (GraspPlanner.finish): the chosen particle [B] and the sync losses [syncs, B].
# Other tensor entries of info have no known batch dimension and are left out of a gathered result.
_INFO_FIELDS = (("particle", 0), ("sync_loss", 1))
# dtypes travel in the shape header as their index here
_DTYPES = (
    torch.float32, torch.float64, torch.float16, torch.bfloat16,
    torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
)
_MAX_DIMS = 8  # dimensions of a gathered field (PlanResult's are at most 2 + the state's)
_FIELD_WIDTH = 3 + _MAX_DIMS  # present, dtype, ndim, dims


def plan_across_ranks(
    planner: OffsetPlanner,
    s0: torch.Tensor,
    goal: torch.Tensor,
    init_actions: Optional[torch.Tensor] = None,
    *,
    dst: Optional[int] = None,
) -> Optional[PlanResult]:
    """Plan one global batch with every rank of the default process group planning its slice.

    Every rank passes the same global batch; rank ``r`` plans plans ``shard_range(B, r, world_size)``
    with ``plan_offset`` = its slice's start (a rank whose slice is empty, ``B < world_size``, plans
    nothing but takes part in the exchanges). Without a process group this is ``planner.plan`` of the
    whole batch.

    Args:
        planner: a planner whose ``plan`` takes ``plan_offset`` (GRASP, GD, CEM, MPPI), configured the
            same on every rank.
        s0: ``[B, *S]`` start states (``[B, h, *S]`` for GRASP with ``history = h``); batched: a single
            plan is not split.
        goal: ``[B, *S]`` goal states.
        init_actions: optional warm start ``[B, T, A]`` (sliced per rank) or ``[T, A]`` (shared).
        dst: ``None``: every rank gets the gathered result; a rank: only that rank does, the others
            get ``None``.

    Returns:
        :class:`PlanResult` of the whole batch: ``actions [B, T, A]``, ``states`` and ``rollout``
        ``[B, T+1, *S]``, ``final_distance [B]``, ``energy_history [iters, B]``, GRASP's
        ``info["particle"] [B]`` and ``info["sync_loss"] [syncs, B]``; the other info entries are
        rank 0's non-tensor ones (e.g. the backend) and ``info["ranks"]`` (the world size).
        ``wall_time``: the slowest rank's planning time. ``None`` on ranks other than ``dst``.

    Raises:
        DistributedError: ranks passed different batches or shapes, a rank's planner failed, a rank
            died or did not arrive within the group's timeout.
    """
    rank, size = world()
    if dst is not None:
        dst = check_int("dst", dst, minimum=0)
        if dst >= size:
            raise ValueError(f"dst must be a rank in [0, {size}) or None, got {dst}")
    batch = _check_batch(planner, s0, goal, init_actions)
    if size == 1:
        return planner.plan(s0, goal, init_actions, plan_offset=0)
    shared_init = init_actions is not None and init_actions.dim() == 2
    dims = [s0.dim(), goal.dim(), -1 if init_actions is None else init_actions.dim()]
    agree("the number of dimensions of s0, goal, init_actions", dims)
    shapes = [*s0.shape, *goal.shape, *(() if init_actions is None else init_actions.shape), -1 if dst is None else dst]
    agree("the shapes of s0, goal, init_actions [B, ...] and dst", shapes)

    start, stop = shard_range(batch, rank, size)
    local: Optional[PlanResult] = None
    failure: Optional[BaseException] = None
    if stop > start:
        init = init_actions if init_actions is None or shared_init else init_actions[start:stop]
        try:
            local = planner.plan(s0[start:stop], goal[start:stop], init, plan_offset=start)
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the others have heard of it
            failure = exc
    # one exchange tells every rank whether all slices were planned, how long each took, and the shapes
    # and dtypes of the outputs (a rank with an empty slice learns from them what to send)
    headers = _exchange_headers(local, failure)
    failed = [r for r, header in enumerate(headers) if header[0] == 0]
    if failed:
        message = f"planning across ranks failed on rank(s) {failed} of {size}"
        if failure is not None:
            raise DistributedError(f"{message}: {type(failure).__name__}: {failure}") from failure
        raise DistributedError(f"{message}; see their errors")
    layout = _common_layout(headers, batch, size)
    device = s0.device
    gathered: dict[str, torch.Tensor] = {}
    for index, (name, batch_dim) in enumerate((*_FIELDS, *_INFO_FIELDS)):
        if layout[index] is None:
            continue
        dtype, shape = layout[index]
        if local is not None:
            mine = _field(local, name) if index < len(_FIELDS) else local.info[name]
            mine = mine.movedim(batch_dim, 0)
        else:
            rest = list(shape)
            del rest[batch_dim]
            mine = torch.empty((0, *rest), dtype=dtype, device=device)
        full = _gather(mine, batch, dst, what=f"gathering {name} across ranks")
        if full is not None:
            gathered[name] = full.to(device).movedim(0, batch_dim)
    extras = _rank0_extras(local)
    if dst is not None and rank != dst:
        return None
    wall_time = max(header[1] for header in headers) / 1e9
    info = {**extras, **{name: gathered[name] for name, _ in _INFO_FIELDS if name in gathered}, "ranks": size}
    return PlanResult(
        actions=gathered["actions"], states=gathered["states"], rollout=gathered["rollout"],
        final_distance=gathered["final_distance"], energy_history=gathered["energy_history"],
        wall_time=wall_time, info=info,
    )


def gather_shards(local: torch.Tensor, total: int, dst: Optional[int] = None) -> Optional[torch.Tensor]:
    """The ``[total, *F]`` tensor whose contiguous slices (:func:`shard_range`) the ranks hold.

    Args:
        local: ``[stop - start, *F]`` this rank's rows (``[0, *F]`` for an empty slice), the same ``F`` and
            dtype on every rank (checked: one small exchange).
        total: the global number of rows, the same on every rank.
        dst: ``None``: every rank gets the whole tensor; a rank: only that rank does (the others get None).

    Returns:
        ``[total, *F]`` on ``local``'s device, or ``None`` on ranks other than ``dst``.
    """
    rank, size = world()
    total = check_int("total", total, minimum=0)
    if not isinstance(local, torch.Tensor) or local.dim() < 1:
        raise TypeError(f"local must be a tensor [rows, ...], got {getattr(local, 'shape', type(local).__name__)}")
    if dst is not None:
        dst = check_int("dst", dst, minimum=0)
        if dst >= size:
            raise ValueError(f"dst must be a rank in [0, {size}) or None, got {dst}")
    start, stop = shard_range(total, rank, size)
    if local.shape[0] != stop - start:
        raise ValueError(f"local must hold this rank's {stop - start} rows [{start}, {stop}) of {total}, got {local.shape[0]}")
    if size == 1:
        return local
    agree("gather_shards: total, dst, the dtype and the row shape", [total, -1 if dst is None else dst, _DTYPES.index(local.dtype), local.dim(), *local.shape[1:]])
    full = _gather(local, total, dst, what="gather_shards")
    return None if full is None else full.to(local.device)


def max_over_ranks(value: float) -> float:
    """The largest ``value`` any rank passes (e.g. the slowest rank's wall time); ``value`` alone
    without a process group."""
    rank, size = world()
    if size == 1:
        return float(value)
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=group_device())
    with guarded("max_over_ranks (all_reduce)"):
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def _check_batch(planner: object, s0: object, goal: object, init_actions: object) -> int:
    """The global batch ``B`` (>= 1) of batched ``s0``/``goal`` (and ``init_actions [B, T, A]``)."""
    if not callable(getattr(planner, "plan", None)):
        raise TypeError(f"planner must have a plan(s0, goal, init_actions, plan_offset=) method, got {type(planner).__name__}")
    for name, value in (("s0", s0), ("goal", goal)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    state_shape = getattr(planner, "state_shape", None)
    single_dims = 1 if state_shape is None else len(state_shape)
    # the planner's own rule (make_problem): a goal of the state's dimensions is one plan
    if goal.dim() <= single_dims or s0.dim() < 2:
        raise ValueError(
            f"s0 and goal must be batched [B, *S] to split them over ranks, got s0 {tuple(s0.shape)}, goal "
            f"{tuple(goal.shape)} (a single plan: add a leading batch dimension of 1)"
        )
    batch = int(s0.shape[0])
    if batch < 1 or goal.shape[0] != batch:
        raise ValueError(f"s0 and goal must lead with the same batch B >= 1, got {tuple(s0.shape)} and {tuple(goal.shape)}")
    if init_actions is not None:
        if not isinstance(init_actions, torch.Tensor) or init_actions.dim() not in (2, 3):
            raise ValueError(f"init_actions must be a tensor [B, T, A] or [T, A], got {getattr(init_actions, 'shape', type(init_actions).__name__)}")
        if init_actions.dim() == 3 and init_actions.shape[0] != batch:
            raise ValueError(f"init_actions must have the batch of s0 ({batch}) first, got {tuple(init_actions.shape)}")
    return batch


def _field(result: PlanResult, name: str) -> torch.Tensor:
    value = getattr(result, name)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"the planner's result.{name} must be a tensor, got {type(value).__name__}")
    return value


def _exchange_headers(local: Optional[PlanResult], failure: Optional[BaseException]) -> list[list[int]]:
    """Every rank's header: ``[ok, wall time in ns, per field: present, dtype index, ndim, dims...]``."""
    header = [0 if failure is not None else 1, 0]
    fields: list[Optional[torch.Tensor]] = [None] * (len(_FIELDS) + len(_INFO_FIELDS))
    if local is not None:
        header[1] = int(round(float(local.wall_time) * 1e9))
        fields = [_field(local, name) for name, _ in _FIELDS]
        fields += [local.info.get(name) if isinstance(local.info.get(name), torch.Tensor) else None for name, _ in _INFO_FIELDS]
    for tensor in fields:
        if tensor is None:
            header += [0] * _FIELD_WIDTH
            continue
        if tensor.dim() > _MAX_DIMS or tensor.dtype not in _DTYPES:
            raise ValueError(f"cannot gather a result tensor of shape {tuple(tensor.shape)} and dtype {tensor.dtype}")
        header += [1, _DTYPES.index(tensor.dtype), tensor.dim(), *tensor.shape, *[0] * (_MAX_DIMS - tensor.dim())]
    mine = torch.tensor(header, dtype=torch.int64, device=group_device())
    everyone = [torch.empty_like(mine) for _ in range(world()[1])]
    with guarded("exchanging the plans' shapes across ranks (all_gather)"):
        dist.all_gather(everyone, mine)
    return [row.cpu().tolist() for row in everyone]


def _common_layout(headers: list[list[int]], batch: int, size: int) -> list[Optional[tuple[torch.dtype, list[int]]]]:
    """Per field, ``(dtype, shape of the first rank's slice)``, or None where it is absent; checks that
    the ranks that planned agree on everything but the batch size."""
    layout: list[Optional[tuple[torch.dtype, list[int]]]] = []
    planned = [r for r in range(size) if shard_range(batch, r, size)[1] > shard_range(batch, r, size)[0]]
    for index, (name, batch_dim) in enumerate((*_FIELDS, *_INFO_FIELDS)):
        base = 2 + index * _FIELD_WIDTH
        seen = {}
        for r in planned:
            present, dtype, ndim = headers[r][base : base + 3]
            dims = headers[r][base + 3 : base + 3 + ndim]
            rows = shard_range(batch, r, size)
            if present and (ndim <= batch_dim or dims[batch_dim] != rows[1] - rows[0]):
                raise DistributedError(f"rank {r} returned {name} of shape {dims} for its {rows[1] - rows[0]} plans")
            if present:
                dims[batch_dim] = -1
            seen[r] = (present, dtype, dims)
        first = seen[planned[0]]
        differ = [r for r in planned if seen[r] != first]
        if differ:
            listing = "; ".join(f"rank {r}: {seen[r]}" for r in planned)
            raise DistributedError(
                f"ranks returned different {name} (present, dtype index, shape with the batch as -1): {listing}; "
                "the planners must be configured the same on every rank"
            )
        if not first[0]:
            layout.append(None)
            continue
        shape = list(first[2])
        shape[batch_dim] = 0
        layout.append((_DTYPES[first[1]], shape))
    return layout


def _gather(local: torch.Tensor, total: int, dst: Optional[int], what: str) -> Optional[torch.Tensor]:
    """Rows ``[total, *F]`` from every rank's contiguous slice ``local [rows, *F]``: each rank sends a
    buffer padded to the largest slice (slices differ by at most one row; collectives need equal sizes)."""
    rank, size = world()
    width = shard_range(total, 0, size)[1]  # rank 0 holds the largest slice
    # bool is sent as uint8 (not every backend reduces or gathers bool tensors)
    wire = torch.uint8 if local.dtype == torch.bool else local.dtype
    padded = torch.zeros((width, *local.shape[1:]), dtype=wire, device=group_device())
    padded[: local.shape[0]] = local.to(device=padded.device, dtype=wire)
    receive = dst is None or rank == dst
    buffers = [torch.empty_like(padded) for _ in range(size)] if receive else None
    with guarded(f"{what} ({'all_gather' if dst is None else f'gather to rank {dst}'})"):
        if dst is None:
            dist.all_gather(buffers, padded)
        else:
            dist.gather(padded, gather_list=buffers, dst=dst)
    if not receive:
        return None
    parts = []
    for r, buffer in enumerate(buffers):
        start, stop = shard_range(total, r, size)
        parts.append(buffer[: stop - start])
    return torch.cat(parts).to(local.dtype)


def _rank0_extras(local: Optional[PlanResult]) -> dict:
    """Rank 0's non-tensor info entries (e.g. the backend), sent to every rank (rank 0 always plans:
    it holds the largest slice of a batch >= 1)."""
    payload = [None]
    if world()[0] == 0 and local is not None:
        payload[0] = {k: v for k, v in local.info.items() if not isinstance(v, torch.Tensor)}
    with guarded("sending rank 0's result info (broadcast_object_list)"):
        dist.broadcast_object_list(payload, src=0, device=group_device())
    return dict(payload[0] or {})

