"""Triton kernel of ``state_step_``: Adam + Langevin noise on rows 1..T-1 of the states, in place."""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .._params import AdamHyper, NoiseCounters
from .._triton_common import (
    I32,
    NOISE_TENSOR,
    NUM_WARPS,
    adam,
    adam_scalars,
    add_noise,
    check_grid,
    noise_layout,
    state_tile,
    tile_config,
)


@triton.jit(do_not_specialize=["seed", "noise_base", "noise_stride"])
def state_step_kernel(
    states_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, noise_ptr,
    n_plans, n_virt, D, stride_s, n_chunks,
    lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step, noise_std, seed, noise_base, noise_stride,
    BP: tl.constexpr, BC: tl.constexpr, WIDE: tl.constexpr, NOISE: tl.constexpr,
):
    """Adam + Langevin noise on rows 1..T-1 of states / exp_avg / exp_avg_sq, in place."""
    pid = tl.program_id(0)
    off, noise_off, mask = state_tile(pid, n_chunks, n_plans, n_virt, D, stride_s, noise_base, noise_stride, BP, BC, WIDE)
    p = tl.load(states_ptr + off, mask=mask, other=0.0)
    g = tl.load(grad_ptr + off, mask=mask, other=0.0)
    m = tl.load(exp_avg_ptr + off, mask=mask, other=0.0)
    v = tl.load(exp_avg_sq_ptr + off, mask=mask, other=0.0)
    p, m, v = adam(p, g, m, v, lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step)
    p = add_noise(p, noise_std, noise_ptr, noise_off, mask, seed, NOISE)
    tl.store(states_ptr + off, p, mask=mask)
    tl.store(exp_avg_ptr + off, m, mask=mask)
    tl.store(exp_avg_sq_ptr + off, v, mask=mask)


def launch(
    states: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    adam: AdamHyper,
    noise_std: float,
    noise: Optional[torch.Tensor],
    counters: NoiseCounters,
) -> None:
    """Adam + noise on rows 1..T-1 of states [B,T+1,D] (and the moments), in place; Philox key
    ``counters.seed`` at counters ``counters.base + b * counters.stride + (t-1)*D + d`` (stride None:
    ``(T-1)*D``)."""
    n_plans, rows, dim = states.shape
    n_virt = (rows - 2) * dim
    if n_plans == 0 or n_virt <= 0:
        return
    stride_s = rows * dim
    bp, bc, n_chunks = tile_config(n_plans, n_virt)
    wide = stride_s >= I32
    mode, seed, noise_base, noise_stride = noise_layout(float(noise_std), noise, n_plans, n_virt, counters)
    n_programs = triton.cdiv(n_plans, bp) * n_chunks
    check_grid(n_programs)
    state_step_kernel[(n_programs,)](
        states, grad, exp_avg, exp_avg_sq, noise if mode == NOISE_TENSOR else states,
        n_plans, n_virt, dim, stride_s, n_chunks,
        *adam_scalars(step, adam), float(noise_std), seed, int(noise_base), int(noise_stride),
        BP=bp, BC=bc, WIDE=wide, NOISE=mode, num_warps=NUM_WARPS,
    )
