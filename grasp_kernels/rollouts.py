"""The sequential part of GRASP, written once: the rollout of actions through the world model (the sync
phase, the final result, the baselines), the shooting loss and its gradient, with the bounded-memory
options (activation checkpointing, chunks of plans)."""

from __future__ import annotations

from typing import Optional

import torch
from torch.utils.checkpoint import checkpoint as recompute_in_backward

from ._checks import check_tensor
from .lifted import WorldModel, call_world_model
from .memory import row_chunks

__all__ = ["checkpointed_call", "rollout", "shooting_grad", "shooting_loss", "weighted_sq_norm"]


def rollout(
    world_model: WorldModel, s0: torch.Tensor, actions: torch.Tensor, history: int = 1, *, checkpoint: bool = False,
    max_rows: Optional[int] = None,
) -> torch.Tensor:
    """Roll ``actions [B, T, A]`` out from ``s0``: returns ``[B, T+1, *S]`` (row 0 = the current state).

    ``s0`` is ``[B, *S]`` for ``history = 1``; for ``history = h > 1`` it carries the last ``h``
    frames ``[B, h, *S]`` (oldest first, ``s0[:, -1]`` the current one) and every step calls the
    model on the window of the last ``h`` frames ``[B, h, *S]``.
    The only sequential part of GRASP (used by the sync phase and for the result).

    Bounded memory (:mod:`grasp_kernels.memory`): ``checkpoint`` recomputes each step's forward during
    the backward (activation checkpointing; under autograd only): a backward through the ``T`` steps then
    keeps each step's input instead of its activations. ``max_rows`` rolls at most that many rows at a
    time (for forward-only rollouts: under autograd every chunk's graph stays alive until the backward).
    """
    check_tensor("actions", actions, ndim=3)
    check_tensor("s0", s0, device=actions.device)
    batch, horizon, _ = actions.shape
    if s0.dim() == 0 or s0.shape[0] != batch:
        raise ValueError(f"s0 must be [B, *S] with B = {batch} (the batch of actions), got shape {tuple(s0.shape)}")
    if history > 1 and (s0.dim() < 2 or s0.shape[1] != history):
        raise ValueError(f"s0 must carry the last history = {history} frames [B, {history}, *S], got shape {tuple(s0.shape)}")
    ranges = row_chunks(batch, max_rows)
    if len(ranges) > 1:
        return torch.cat([rollout(world_model, s0[a:b], actions[a:b], history, checkpoint=checkpoint)
                          for a, b in ranges])
    step = checkpointed_call if checkpoint and torch.is_grad_enabled() else call_world_model
    if history == 1:
        current = s0
        trajectory = [s0]
        for t in range(horizon):
            current = step(world_model, current, actions[:, t], tuple(s0.shape), f"rollout step {t}")
            trajectory.append(current)
        return torch.stack(trajectory, dim=1)
    frame_shape = tuple(s0.shape[2:])
    frames = list(s0.unbind(1))
    for t in range(horizon):
        window = torch.stack(frames[-history:], dim=1)
        frames.append(step(world_model, window, actions[:, t], (batch, *frame_shape), f"rollout step {t}"))
    return torch.stack(frames[history - 1 :], dim=1)


def checkpointed_call(
    world_model: WorldModel, states: torch.Tensor, actions: torch.Tensor, expected_shape: tuple[int, ...], where: str
) -> torch.Tensor:
    """:func:`call_world_model` under activation checkpointing: the backward recomputes the call's forward
    instead of keeping its activations (``torch.utils.checkpoint``, non-reentrant). The world model must be
    deterministic (as everywhere in planning: ``eval()`` mode, no dropout): the random-number state is not
    stashed and restored for the recomputation, which would also not be allowed inside a CUDA graph capture."""
    return recompute_in_backward(call_world_model, world_model, states, actions, expected_shape, where,
                                 use_reentrant=False, preserve_rng_state=False)


def weighted_sq_norm(diff: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``sum_d w_d diff_d^2`` per row of ``diff [B, *S]`` (``weights`` broadcastable to ``S``): ``[B]``."""
    sq = diff.square()
    if weights is not None:
        sq = sq * weights.to(diff.dtype)
    return sq.reshape(diff.shape[0], -1).sum(dim=1)


def shooting_loss(
    world_model: WorldModel,
    s0: torch.Tensor,
    actions: torch.Tensor,
    goal: torch.Tensor,
    history: int = 1,
    weights: Optional[torch.Tensor] = None,
    *,
    checkpoint: bool = False,
    max_rows: Optional[int] = None,
) -> torch.Tensor:
    """``||rollout(s0, actions)_T - goal||_w^2`` per plan: ``[B]`` (differentiable in ``actions``).

    ``s0`` as :func:`rollout` (``[B, h, *S]`` for ``history = h > 1``); ``weights``: optional
    per-component weights broadcastable to ``S`` (plain squared norm without); ``checkpoint`` and
    ``max_rows`` as :func:`rollout`.
    """
    final = rollout(world_model, s0, actions, history, checkpoint=checkpoint, max_rows=max_rows)[:, -1]
    return weighted_sq_norm(final - goal, weights)


def shooting_grad(
    world_model: WorldModel,
    s0: torch.Tensor,
    actions: torch.Tensor,
    goal: torch.Tensor,
    history: int = 1,
    weights: Optional[torch.Tensor] = None,
    *,
    chains_per_chunk: Optional[int] = None,
    checkpoint: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The shooting loss ``[B]`` (:func:`shooting_loss`, detached) and its gradient w.r.t. ``actions [B, T, A]``.

    Plans are independent, so the gradient of the summed loss is each plan's own; ``chains_per_chunk``
    differentiates at most that many plans at a time (one chunk's graph alive), ``checkpoint`` recomputes
    each step's forward in the backward (:func:`rollout`). The same values as one pass over all plans
    (bitwise for a world model whose rows do not depend on the batch).
    """
    ranges = row_chunks(actions.shape[0], chains_per_chunk)
    if len(ranges) > 1:
        parts = [shooting_grad(world_model, s0[a:b], actions[a:b], goal[a:b], history, weights, checkpoint=checkpoint)
                 for a, b in ranges]
        return torch.cat([loss for loss, _ in parts]), torch.cat([grad for _, grad in parts])
    leaf = actions.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = shooting_loss(world_model, s0, leaf, goal, history, weights, checkpoint=checkpoint)
        (grad,) = torch.autograd.grad(loss.sum(), leaf)
    return loss.detach(), grad
