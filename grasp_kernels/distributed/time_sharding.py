"""Time across ranks: one GRASP plan whose horizon is split into contiguous chunks of time steps.

Rank ``r`` of ``W`` holds the transitions ``t0 <= t < t1`` (``shard_range(T, r, W)``) of EVERY plan:
their actions ``a_t``, the Adam moments of both, and the virtual states it OWNS. Ownership follows the
transitions' outputs: rank ``r`` owns ``s_{t0+1} .. s_{t1}`` (rank ``W-1``'s last one is the goal,
fixed). Under the stop-gradient energy (``ops/lifted_energy/reference.py``)

    E = sum_t ||p_t - s_{t+1}||^2 + gamma sum_t ||p_t - g||^2,   p_t = F(sg(s_t), a_t),
    dE/dp_t = 2 (p_t - s_{t+1}) + 2 gamma (p_t - g),   dE/ds_{t+1} = -2 (p_t - s_{t+1}),

so every gradient a rank needs comes from its own transitions: the residual of the boundary state
``s_{t1}`` is computed where it is owned, and nothing has to travel back. Per lifted iteration the
only exchange is ONE boundary row per plan: rank ``r`` sends ``s_{t1}`` (before this iteration's
update) to rank ``r+1``, whose first transition reads it as its state input. That is ``B*K*D``
elements per boundary per iteration, half of the "state row forward, residual back" scheme in which
the model-input rows are owned (the residual of the first owned row would then live on the
neighbour).

Per lifted iteration a rank runs :func:`grasp_kernels.lifted.lifted_iteration` unchanged on its chunk
``[B*K, n+1, D]``: row 0 is the received boundary state (``s0`` on rank 0), rows ``1..n-1`` its
owned interior states, row ``n`` the goal. The op therefore evaluates the goal term exactly and the
interior residuals exactly, updates rows ``1..n-1`` and leaves rows 0 and ``n`` untouched; only the
last transition's dynamics term used the goal in place of ``s_{t1}``. The ``boundary`` hook corrects
that one row (energy and ``dE/dp``) before the action VJP and runs the owned boundary state's own
Adam + noise step (``ops.state_step_`` on a ``[B*K, 3, D]`` buffer whose middle row is ``s_{t1}``).
The world model is called ONCE per iteration on the chunk's ``B*K*n`` transitions.

The sync phase (:func:`grasp_kernels.sync.gd_sync`: Adam on the actions of the shooting loss with
fresh moments, clamped) is a pipeline: state forward (rank ``r`` receives the rolled-out state at
``t0`` from ``r-1``, rolls its chunk under autograd, sends ``x_{t1}`` on), the last rank's loss,
the adjoint backward (a VJP through the chunk with the received adjoint, the state-input gradient
sent to ``r-1``), then every rank's Adam step on its own actions. Per sync step that is ``B*K*D``
elements forward and ``B*K*D`` back per boundary, sequential across the ranks. The final rollout is
the same forward pipeline.

The per-plan energy is the sum of the ranks' partial energies: one all-reduce per sync phase (for
the finite check, as the single-device planner checks once per phase) and one at the end, never one
per iteration. At the end actions, states and rollout are gathered (one all-gather) and every rank
returns the single-process :class:`~grasp_kernels.result.PlanResult`.

Memory: a rank holds its chunk, except at the start: :meth:`GraspPlanner.start` builds the
single-device plan state once (the same checks, warm starts and random draws as the single-process
plan) and the rank keeps its chunk, freeing the rest before the first iteration.

Scope: ``history = 1``, ``stop_gradient=True``, no state weights, no ``fused_mlp`` / ``cuda_graph`` /
``compile`` / ``model_dtype`` / ``stop_tolerance`` (each a ValueError). Tested on the reference backend on CPUs (gloo).
The triton and cuda backends run the same ops on each chunk and need NCCL on GPUs; that path is
untested here; their noise is drawn in-kernel at the single-device plan's Philox counters (the chunk's
rows at ``noise_base = chain offset + (first row - 1)*D`` with the full horizon's stride ``(T-1)*D``).

Randomness (:mod:`grasp_kernels.randomness`): the reference backend draws each chain's noise of the
full horizon from the chain's generator (as one device does) and keeps the chunk's rows: every rank
draws ``B*K*(T-1)*D`` normals per iteration, which is what keeps the chains' streams identical to
the single-device plan's.
"""

from __future__ import annotations

import hashlib
import time
from typing import Optional, Sequence

import torch
import torch.distributed as dist

from .. import ops, schedules
from .._problem import NonFiniteError, best_chains_result, raise_if_nonfinite
from ..config import GraspConfig
from ..lifted import WorldModel, call_world_model, lifted_iteration
from ..rollouts import checkpointed_call, weighted_sq_norm
from ..memory import row_chunks
from ..ops.action_step.reference import action_step_ref
from ..plan_state import PlanState
from ..planner import GraspPlanner
from ..randomness import per_plan_normal
from ..result import PlanResult
from ..sync import SYNC_RULES, adam_phase
from ._comm import agree, group_device, guarded, shard_range, world

__all__ = ["TimeShardedPlanner"]


class TimeShardedPlanner:
    """GRASP with the horizon split across the ranks of the default process group (module docstring).

    Every rank constructs it with the same world model, ``action_dim`` and config and calls
    :meth:`plan` with the same inputs; each returns the same :class:`PlanResult`, equal to
    ``GraspPlanner(world_model, action_dim, config, state_shape).plan(s0, goal, init_actions)``
    up to float rounding (the energy is summed in another order, and the model runs on fewer rows).

    Args:
        world_model: ``states [N, *S], actions [N, A] -> next states [N, *S]`` (``history = 1``).
        action_dim: ``A``.
        config: :class:`GraspConfig`; ``horizon`` must be >= the world size.
        state_shape: ``S``, as :class:`GraspPlanner` takes it.

    Raises:
        ValueError: a setting outside the scope (``history > 1``, ``stop_gradient=False``,
            ``fused_mlp``, ``cuda_graph``, ``compile``, ``model_dtype``, ``stop_tolerance``).
    """

    def __init__(
        self,
        world_model: WorldModel,
        action_dim: int,
        config: Optional[GraspConfig] = None,
        state_shape: Optional[Sequence[int]] = None,
    ) -> None:
        self.planner = GraspPlanner(world_model, action_dim, config, state_shape)
        cfg = self.planner.config
        if cfg.history != 1:
            raise ValueError(
                f"time sharding implements config.history = 1 only, got config.history = {cfg.history} (a window "
                "crossing a chunk boundary would need the neighbour's last h-1 rows)"
            )
        unsupported = [name for name in ("fused_mlp", "cuda_graph", "compile") if getattr(cfg, name)]
        if cfg.model_dtype is not None:
            unsupported.append(f"model_dtype={cfg.model_dtype!r}")
        if cfg.stop_tolerance:
            unsupported.append(f"stop_tolerance={cfg.stop_tolerance}")
        if not cfg.stop_gradient:
            unsupported.append("stop_gradient=False")
        if not SYNC_RULES[cfg.sync].time_shardable:  # the sync phase runs as a pipeline over the ranks
            unsupported.append(f"sync={cfg.sync!r}")
        if unsupported:
            raise ValueError(
                f"time sharding does not support config {', '.join(unsupported)}: it runs the eager lifted "
                "iteration on each chunk with the stop-gradient energy in the world model's dtype"
            )
        self.world_model = world_model
        self.action_dim = action_dim
        self.config = cfg

    def plan(
        self, s0: torch.Tensor, goal: torch.Tensor, init_actions: Optional[torch.Tensor] = None, *, plan_offset: int = 0
    ) -> PlanResult:
        """Plan from ``s0`` to ``goal`` with the horizon sharded over the ranks.

        Args:
            s0, goal: ``[B, *S]`` (or ``[*S]``), the same on every rank.
            init_actions: optional ``[B, T, A]`` (``[T, A]``), the same on every rank.
            plan_offset: the global index of the first plan, as :meth:`GraspPlanner.plan` takes it (the
                plans' random streams), the same on every rank.

        Returns:
            The full :class:`PlanResult` on every rank (``actions [B, T, A]``, ``states [B, T+1, *S]``,
            ``rollout``, ``final_distance``, ``energy_history [iters, B]``, ``info['sync_loss']``).

        Raises:
            DistributedError: ranks passed different shapes, configs or inputs, or a neighbour failed
                or timed out.
            ValueError: more ranks than time steps (``config.horizon``).
        """
        start_time = time.perf_counter()
        cfg = self.config
        rank, size = world()
        # the single-device start: input checks, initial states and actions, the noise generator
        # after the initial draw; the rank keeps its chunk of it (module docstring, "Memory")
        state = self.planner.start(s0, goal, init_actions, plan_offset=plan_offset)
        chains = state.chains
        batch, dim, horizon = chains.batch, chains.state_dim, cfg.horizon
        device, dtype = state.states.device, state.states.dtype
        if size > 1:
            agree("the problem [plans, chains, state dim, horizon, action dim, iters, plan_offset]",
                  [state.problem.batch, batch, dim, horizon, self.action_dim, cfg.iters, plan_offset])
            agree("the GraspConfig (a digest of its repr)", [_digest(repr(cfg).encode())])
            agree("the inputs s0, goal and init_actions (a digest of their values)",
                  [_digest(*(_bytes(x) for x in (s0, goal, init_actions)))])
            if group_device().type != device.type:
                raise ValueError(
                    f"the plan's tensors are on {device.type} but the process group exchanges {group_device().type} "
                    "tensors (use gloo for CPU plans, NCCL for CUDA plans)"
                )
        if size > horizon:
            raise ValueError(
                f"time sharding needs at least one time step per rank: config.horizon = {horizon} < world size {size}"
            )
        t0, t1 = shard_range(horizon, rank, size)
        n = t1 - t0
        last = rank == size - 1
        full_states = state.states
        # chunk [BK, n+1, D]: row 0 the input boundary (s0 on rank 0, received otherwise), rows 1..n-1
        # the owned interior states, row n the goal (the goal term of every transition is exact)
        chunk = torch.cat([full_states[:, t0:t1], full_states[:, -1:]], dim=1)
        # the owned boundary state s_{t1} as the middle row of [BK, 3, D]: ops.state_step_ steps it alone
        edge = torch.zeros((batch, 3, dim), device=device, dtype=dtype)
        if not last:
            edge[:, 1] = full_states[:, t1]
        edge_moments = (torch.zeros_like(edge), torch.zeros_like(edge))
        edge_grad = torch.zeros_like(edge)
        state.states = chunk
        state.actions = state.actions[:, t0:t1].contiguous()
        state.state_moments = (torch.zeros_like(chunk), torch.zeros_like(chunk))
        state.action_moments = (torch.zeros_like(state.actions), torch.zeros_like(state.actions))
        del full_states
        energy_sum = torch.zeros_like(state.energy_history)  # summed over the ranks up to `reduced`
        reduced = 0
        if not last:
            state.sync_losses.zero_()  # the last rank's rows; zeros here so that the final sum is exact
        boundary_in = torch.empty((batch, dim), device=device, dtype=dtype)
        gamma = cfg.goal_weight  # the boundary hook reads it; reset each iteration (goal_weight_final)

        row_counters = max(horizon - 1, 1) * dim  # Philox counters per chain: the full horizon's rows 1..T-1
        state_adam = cfg.adam(cfg.lr_states)
        # the hook reads this iteration's `step`, `sigma`, `edge_noise` and `seed`, set in the loop below
        def boundary(pred: torch.Tensor, energy: torch.Tensor, grad_pred: torch.Tensor) -> None:
            # the last transition leads to s_{t1}, not to the goal row the op used in its dynamics term
            p, s, g = pred[:, -1].to(dtype), edge[:, 1], chunk[:, -1]
            residual = p - s
            to_goal = p - g
            energy.add_(residual.square().sum(dim=1) - to_goal.square().sum(dim=1))
            grad_pred[:, -1] = 2 * residual + (2 * gamma) * to_goal  # the reference's rounding, term by term
            edge_grad[:, 1] = -(2 * residual)
            ops.state_step_(edge, edge_grad, *edge_moments, step, state_adam, sigma, edge_noise,
                            counters=ops.NoiseCounters(seed, state.noise_base + (t1 - 1) * dim, row_counters),
                            backend=state.backend)

        for it in range(cfg.iters):
            step = state.adam_step + 1
            sigma = schedules.noise_std(cfg, state.iteration, state.sync_every)
            gamma = schedules.goal_weight(cfg, state.iteration, state.sync_every)
            # s_{t1} before this iteration's update goes to the rank whose first transition reads it
            _exchange_forward(edge[:, 1] if not last else None, boundary_in if rank > 0 else None, rank, size,
                              f"lifted iteration {it}: boundary state")
            if rank > 0:
                chunk[:, 0] = boundary_in
            # the single-device plan's noise, restricted to this chunk's rows (rows 1..T-1 of chain c):
            # the reference backend draws each chain's full [T-1, D] block from its generator and slices
            # it; the kernels draw in-kernel at the full horizon's Philox counters (grasp_kernels.randomness)
            chunk_noise, edge_noise, seed = None, None, None
            if state.backend != "reference":
                seed = schedules.iteration_seed(cfg.seed, it)
            elif sigma > 0 and horizon > 1:
                noise = per_plan_normal(state.chain_generators, (horizon - 1, dim), device, dtype)
                chunk_noise = noise[:, t0 : t1 - 1].contiguous()
                if not last:
                    edge_noise = noise[:, t1 - 1 : t1].contiguous()
            energy, _, _ = lifted_iteration(
                self.world_model, chunk, state.actions, state.state_moments, state.action_moments,
                step=step, gamma=gamma, state_adam=state_adam, action_adam=cfg.adam(cfg.lr_actions), noise_std=sigma,
                low=state.low, high=state.high, state_shape=chains.state_shape, backend=state.backend,
                noise=chunk_noise, counters=ops.NoiseCounters(seed, state.noise_base + t0 * dim, row_counters),
                boundary=None if last else boundary,
                max_transitions=None if state.memory is None else state.memory.max_transitions,
                last_next=None if last else edge[:, 1],
            )
            state.record_iteration(energy)
            if state.sync_due:
                if cfg.check_finite:
                    reduced = _reduce_rows(state.energy_history, energy_sum, reduced, state.iteration, size)
                    raise_if_nonfinite(energy_sum, state.iteration, "the GRASP energy")
                loss = self._sync_phase(state, rank, size, t0, t1)
                torch._foreach_zero_([*state.state_moments, *state.action_moments, *edge_moments])
                state.record_sync(loss)  # None except on the last rank: the other rows stay zero

        reduced = _reduce_rows(state.energy_history, energy_sum, reduced, state.iteration, size)
        rollout_rows = self._pipeline_rollout(state, rank, size, t0, t1)
        owned = torch.cat([chunk[:, 1:n], edge[:, 1:2] if not last else chunk[:, -1:]], dim=1)  # s_{t0+1}..s_{t1}
        actions, states, rollout = _gather_time(state.actions, owned, rollout_rows, horizon, rank, size)
        s0_flat = chains.flat(chains.s0)
        states = torch.cat([s0_flat.unsqueeze(1), states], dim=1)
        rollout = torch.cat([s0_flat.unsqueeze(1), rollout], dim=1).reshape(batch, horizon + 1, *chains.state_shape)
        sync_losses = state.sync_losses[: state.syncs]
        if size > 1 and sync_losses.numel():
            with guarded("gathering the sync losses"):
                dist.all_reduce(sync_losses)  # the last rank's values plus zeros: exact
        if cfg.check_finite:
            raise_if_nonfinite(energy_sum, state.iteration, "the GRASP energy")
            if not bool(torch.isfinite(actions).all()):
                raise NonFiniteError(f"the planned actions hold NaN/Inf after {state.iteration} iterations")
        distance = chains.flat(rollout[:, -1] - chains.goal).norm(dim=1)  # as grasp_kernels._problem.final_rollout
        return best_chains_result(
            state.problem, cfg.particles, state.backend, actions, states, rollout, distance, energy_sum[: state.iteration],
            sync_losses, start_time,
        )

    def _sync_phase(self, state: PlanState, rank: int, size: int, t0: int, t1: int) -> Optional[torch.Tensor]:
        """The GD sync (:func:`grasp_kernels.sync.gd_sync`) as a pipeline over the ranks: ``sync_steps``
        Adam steps (:func:`grasp_kernels.sync.adam_phase`, fresh moments) on this rank's actions
        ``[B*K, n, A]``. Returns the shooting loss ``[B*K]`` before the last step on the last rank, None
        elsewhere."""
        cfg = self.config
        actions = state.actions
        last = rank == size - 1
        adam = cfg.adam(cfg.sync_lr)

        memory = state.memory
        # bounded memory: the pipeline runs once per chunk of chains (the same chunks on every rank)
        ranges = row_chunks(actions.shape[0], None if memory is None else memory.sync_chains)
        checkpoint = memory is not None and memory.checkpoint

        def pipelined_step(exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: int) -> Optional[torch.Tensor]:
            losses, action_grads = [], []
            what = f"sync phase {state.syncs} step {step}"
            for a, b in ranges:
                leaf = actions[a:b].detach().requires_grad_(True)
                x_in = self._chunk_input(state, rank, f"{what}: forward state", a, b)
                inputs = (leaf,) if rank == 0 else (leaf, x_in)
                with torch.enable_grad():
                    x = self._roll_chunk(state, x_in, leaf, t0, t1, checkpoint=checkpoint)
                    if last:
                        loss = weighted_sq_norm(x - state.chains.goal[a:b])
                        grads = torch.autograd.grad(loss.sum(), inputs)
                        losses.append(loss.detach())
                    else:
                        _send(x.detach().reshape(x.shape[0], -1), rank + 1, f"{what}: forward state")
                        adjoint = _recv(torch.empty_like(x.detach()).reshape(x.shape[0], -1), rank + 1,
                                        f"{what}: adjoint")
                        grads = torch.autograd.grad(x, inputs, adjoint.view_as(x))
                if rank > 0:
                    _send(grads[1].reshape(grads[1].shape[0], -1).contiguous(), rank - 1, f"{what}: adjoint")
                action_grads.append(grads[0])
            grad = action_grads[0] if len(action_grads) == 1 else torch.cat(action_grads)
            with torch.no_grad():
                action_step_ref(actions, grad, exp_avg, exp_avg_sq, step, adam, state.low, state.high)
            if not losses:
                return None
            return losses[0] if len(losses) == 1 else torch.cat(losses)

        loss = adam_phase(actions, cfg.sync_steps, pipelined_step)
        return loss if last else None

    def _chunk_input(self, state: PlanState, rank: int, what: str, a: int = 0, b: Optional[int] = None) -> torch.Tensor:
        """The rolled-out state at this chunk's first time step of chains ``a .. b-1`` (all by default)
        ``[b-a, *S]``: ``s0`` on rank 0, else received from rank ``r-1``; a leaf that requires grad (the
        adjoint sent back is its gradient)."""
        chains = state.chains
        b = chains.batch if b is None else b
        if rank == 0:
            return chains.s0[a:b]
        x = _recv(torch.empty((b - a, chains.state_dim), device=chains.s0.device, dtype=chains.s0.dtype),
                  rank - 1, what)
        return x.reshape(b - a, *chains.s0.shape[1:]).requires_grad_(True)

    def _roll_chunk(self, state: PlanState, x: torch.Tensor, actions: torch.Tensor, t0: int, t1: int,
                    rows: Optional[list] = None, checkpoint: bool = False) -> torch.Tensor:
        """Roll ``x [B*K, *S]`` through the chunk's actions ``[B*K, n, A]`` (the steps of
        :func:`grasp_kernels.rollouts.rollout`); appends each next state to ``rows`` if given; ``checkpoint``:
        recompute each step in the backward (bounded memory)."""
        model = self.planner.rollout_model()
        call = checkpointed_call if checkpoint and torch.is_grad_enabled() else call_world_model
        shape = tuple(x.shape)
        for t in range(t1 - t0):
            x = call(model, x, actions[:, t], shape, f"rollout step {t0 + t}")
            if rows is not None:
                rows.append(x)
        return x

    def _pipeline_rollout(self, state: PlanState, rank: int, size: int, t0: int, t1: int) -> torch.Tensor:
        """This chunk's rows ``t0+1 .. t1`` of the true rollout, flat ``[B*K, n, D]`` (forward pipeline)."""
        rows: list = []
        with torch.no_grad():
            x = self._roll_chunk(state, self._chunk_input(state, rank, "final rollout").detach(), state.actions, t0, t1,
                                 rows)
            if rank < size - 1:
                _send(x.reshape(x.shape[0], -1).contiguous(), rank + 1, "final rollout")
        return torch.stack([r.reshape(r.shape[0], -1) for r in rows], dim=1)


def _digest(*chunks: bytes) -> int:
    """A 62-bit digest of ``chunks`` (an int64 for :func:`agree`)."""
    h = hashlib.sha256()
    for c in chunks:
        h.update(len(c).to_bytes(8, "little"))
        h.update(c)
    return int.from_bytes(h.digest()[:8], "little") >> 2


def _bytes(x: Optional[torch.Tensor]) -> bytes:
    if x is None:
        return b""
    if not isinstance(x, torch.Tensor):
        return repr(x).encode()
    return repr((tuple(x.shape), x.dtype)).encode() + x.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()


def _send(tensor: torch.Tensor, peer: int, what: str) -> None:
    with guarded(f"sending {what} to rank {peer}"):
        dist.send(tensor.contiguous(), peer)


def _recv(buffer: torch.Tensor, peer: int, what: str) -> torch.Tensor:
    with guarded(f"receiving {what} from rank {peer}"):
        dist.recv(buffer, peer)
    return buffer


def _exchange_forward(send_row: Optional[torch.Tensor], recv_into: Optional[torch.Tensor], rank: int, size: int,
                      what: str) -> None:
    """Send ``send_row [B*K, D]`` to rank ``r+1`` and receive rank ``r-1``'s into ``recv_into`` at once
    (non-blocking pair, then wait: every rank sends before it waits, so the chain cannot deadlock)."""
    if size == 1:
        return
    with guarded(f"{what} exchange with the neighbouring ranks"):
        requests = []
        outgoing = None if send_row is None else send_row.contiguous()  # alive until the send completes
        if outgoing is not None:
            requests.append(dist.isend(outgoing, rank + 1))
        if recv_into is not None:
            requests.append(dist.irecv(recv_into, rank - 1))
        for request in requests:
            request.wait()


def _reduce_rows(partial: torch.Tensor, total: torch.Tensor, start: int, stop: int, size: int) -> int:
    """``total[start:stop]`` = the sum over the ranks of ``partial[start:stop]`` (one all-reduce); returns ``stop``."""
    if stop > start:
        rows = partial[start:stop].clone()
        if size > 1:
            with guarded("summing the partial energies over the ranks"):
                dist.all_reduce(rows)
        total[start:stop] = rows
    return stop


def _gather_time(actions: torch.Tensor, states: torch.Tensor, rollout: torch.Tensor, horizon: int, rank: int,
                 size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every rank's chunk (``[B*K, n, A]`` actions, ``[B*K, n, D]`` owned states and rollout rows) to
    the full ``[B*K, T, *]`` on every rank: one all-gather of the three packed and padded to the
    longest chunk."""
    packed = torch.cat([actions, states.to(actions.dtype), rollout.to(actions.dtype)], dim=2)
    if size == 1:
        parts = [packed]
    else:
        longest = max(b - a for a, b in (shard_range(horizon, r, size) for r in range(size)))
        padded = packed.new_zeros((packed.shape[0], longest, packed.shape[2]))
        padded[:, : packed.shape[1]] = packed
        gathered = [torch.empty_like(padded) for _ in range(size)]
        with guarded("gathering the planned chunks"):
            dist.all_gather(gathered, padded)
        parts = [g[:, : b - a] for g, (a, b) in zip(gathered, (shard_range(horizon, r, size) for r in range(size)))]
    full = torch.cat(parts, dim=1)
    a_dim, s_dim = actions.shape[2], states.shape[2]
    return full[..., :a_dim], full[..., a_dim : a_dim + s_dim], full[..., a_dim + s_dim :]
