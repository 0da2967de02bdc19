"""Triton kernel of ``lifted_energy``: energy partials, ``grad_pred`` and ``grad_states`` in one pass."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_common import NUM_WARPS, energy_grid, energy_pass, energy_tile


@triton.jit
def lifted_energy_kernel(
    pred_ptr, states_ptr, energy_ptr, grad_pred_ptr, grad_states_ptr,
    gamma, n_plans, n_inner, D, stride_s, n_chunks,
    BP: tl.constexpr, BC: tl.constexpr, WIDE: tl.constexpr,
):
    """Energy partials, grad_pred and grad_states (zeros on rows 0 and T) in one pass."""
    pid = tl.program_id(0)
    pred_off, next_off, goal_off, row0_off, noise_off, part_off, mask, row0, virt, pmask = energy_tile(
        pid, n_chunks, n_plans, n_inner, D, stride_s, 0, 0, BP, BC, WIDE)  # no noise here
    _, r = energy_pass(pred_ptr, states_ptr, energy_ptr, grad_pred_ptr, gamma, pred_off, next_off, goal_off, part_off,
                       mask, pmask)
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
    grid = energy_grid(states, energy)
    if grid is None:
        return
    lifted_energy_kernel[(grid.n_programs,)](
        pred, states, grid.partials, grad_pred, grad_states,
        float(gamma), grid.n_plans, grid.n_inner, grid.dim, grid.stride_s, grid.n_chunks,
        BP=grid.bp, BC=grid.bc, WIDE=grid.wide, num_warps=NUM_WARPS,
    )
    grid.reduce_into(energy)
