"""Triton kernel of ``lifted_energy``: energy partials, ``grad_pred`` and ``grad_states`` in one pass."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_common import I32, NUM_WARPS, check_grid, energy_tile, reduce_into, tile_config


@triton.jit
def lifted_energy_kernel(
    pred_ptr, states_ptr, energy_ptr, grad_pred_ptr, grad_states_ptr,
    gamma, n_plans, n_inner, D, stride_s, n_chunks,
    BP: tl.constexpr, BC: tl.constexpr, WIDE: tl.constexpr,
):
    """Energy partials, grad_pred and grad_states (zeros on rows 0 and T) in one pass."""
    pid = tl.program_id(0)
    pred_off, next_off, goal_off, row0_off, noise_off, part_off, mask, row0, virt, pmask = energy_tile(
        pid, n_chunks, n_plans, n_inner, D, stride_s, BP, BC, WIDE)
    p = tl.load(pred_ptr + pred_off, mask=mask, other=0.0).to(tl.float32)
    s = tl.load(states_ptr + next_off, mask=mask, other=0.0)
    g = tl.load(states_ptr + goal_off, mask=mask, other=0.0)
    r = p - s
    q = p - g
    e = tl.sum(r * r + gamma * (q * q), axis=1)
    tl.store(energy_ptr + part_off, e, mask=pmask)
    tl.store(grad_pred_ptr + pred_off, 2.0 * r + (2.0 * gamma) * q, mask=mask)
    tl.store(grad_states_ptr + next_off, tl.where(virt, -2.0 * r, 0.0), mask=mask)
    tl.store(grad_states_ptr + row0_off, tl.zeros_like(r), mask=row0)


def launch(
    pred: torch.Tensor,
    states: torch.Tensor,
    gamma: float,
    energy: torch.Tensor,
    grad_pred: torch.Tensor,
    grad_states: torch.Tensor,
) -> None:
    """energy [B], grad_pred [B,T,D] and grad_states [B,T+1,D] (float32) from pred and states."""
    n_plans, rows, dim = states.shape
    n_inner = (rows - 1) * dim
    if n_plans == 0:
        return
    if n_inner == 0:
        energy.zero_()
        return
    stride_s = rows * dim
    bp, bc, n_chunks = tile_config(n_plans, n_inner)
    wide = stride_s >= I32
    n_programs = triton.cdiv(n_plans, bp) * n_chunks
    check_grid(n_programs)
    out = energy if n_chunks == 1 else torch.empty((n_plans, n_chunks), device=energy.device, dtype=torch.float32)
    lifted_energy_kernel[(n_programs,)](
        pred, states, out, grad_pred, grad_states,
        float(gamma), n_plans, n_inner, dim, stride_s, n_chunks,
        BP=bp, BC=bc, WIDE=wide, num_warps=NUM_WARPS,
    )
    if n_chunks > 1:
        reduce_into(out, energy, n_plans, n_chunks)
