"""Triton kernel of ``lifted_energy_state_step_``: the lifted-energy pass with the state gradient consumed
in registers by the Adam + noise step."""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .._params import AdamHyper, NoiseCounters
from .._triton_common import (
    NOISE_TENSOR,
    NUM_WARPS,
    adam,
    adam_scalars,
    add_noise,
    energy_grid,
    energy_pass,
    energy_tile,
    noise_layout,
)


@triton.jit(do_not_specialize=["seed", "noise_base", "noise_stride"])
def lifted_energy_state_step_kernel(
    pred_ptr, states_ptr, energy_ptr, grad_pred_ptr, exp_avg_ptr, exp_avg_sq_ptr, noise_ptr,
    gamma, n_plans, n_inner, D, stride_s, n_chunks,
    lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step, noise_std, seed, noise_base, noise_stride,
    BP: tl.constexpr, BC: tl.constexpr, WIDE: tl.constexpr, NOISE: tl.constexpr,
):
    """The lifted-energy pass, with the state gradient consumed in registers by the Adam step.

    Row t+1 of a plan is read as s_next only by pred row t, in this same program, so the update in
    place never races with a read of another program (the goal row T is read, never written).
    """
    pid = tl.program_id(0)
    pred_off, next_off, goal_off, row0_off, noise_off, part_off, mask, row0, virt, pmask = energy_tile(
        pid, n_chunks, n_plans, n_inner, D, stride_s, noise_base, noise_stride, BP, BC, WIDE)
    s, r = energy_pass(pred_ptr, states_ptr, energy_ptr, grad_pred_ptr, gamma, pred_off, next_off, goal_off, part_off,
                       mask, pmask)
    m = tl.load(exp_avg_ptr + next_off, mask=virt, other=0.0)
    v = tl.load(exp_avg_sq_ptr + next_off, mask=virt, other=0.0)
    s, m, v = adam(s, -2.0 * r, m, v, lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step)
    s = add_noise(s, noise_std, noise_ptr, noise_off, virt, seed, NOISE)
    tl.store(states_ptr + next_off, s, mask=virt)
    tl.store(exp_avg_ptr + next_off, m, mask=virt)
    tl.store(exp_avg_sq_ptr + next_off, v, mask=virt)


def launch(
    pred: torch.Tensor,
    states: torch.Tensor,
    gamma: float,
    energy: torch.Tensor,
    grad_pred: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    adam: AdamHyper,
    noise_std: float,
    noise: Optional[torch.Tensor],
    counters: NoiseCounters,
) -> None:
    """Fused lifted_energy_fwd (from the states before the update) + state_step (gradient in registers);
    noise counters as the state step's."""
    grid = energy_grid(states, energy)
    if grid is None:
        return
    n_virt = grid.n_inner - grid.dim
    mode, seed, noise_base, noise_stride = noise_layout(float(noise_std), noise, grid.n_plans, n_virt, counters)
    lifted_energy_state_step_kernel[(grid.n_programs,)](
        pred, states, grid.partials, grad_pred, exp_avg, exp_avg_sq, noise if mode == NOISE_TENSOR else states,
        float(gamma), grid.n_plans, grid.n_inner, grid.dim, grid.stride_s, grid.n_chunks,
        *adam_scalars(step, adam), float(noise_std), seed, int(noise_base), int(noise_stride),
        BP=grid.bp, BC=grid.bc, WIDE=grid.wide, NOISE=mode, num_warps=NUM_WARPS,
    )
    grid.reduce_into(energy)
