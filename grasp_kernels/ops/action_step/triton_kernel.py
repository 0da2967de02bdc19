"""Triton kernel of ``action_step_``: Adam then clamp on the actions, in place."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._params import AdamHyper
from .._triton_common import BLOCK, I32, NUM_WARPS, adam, adam_scalars, check_grid, clamp, flat_tile


@triton.jit
def action_step_kernel(
    actions_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, low_ptr, high_ptr,
    n, A, lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step,
    BLOCK: tl.constexpr, WIDE: tl.constexpr,
):
    """Adam then clamp(low[a], high[a]) on actions [B*T*A], in place (NaN propagates as in torch.clamp)."""
    pid = tl.program_id(0)
    offs, mask = flat_tile(pid, n, BLOCK, WIDE)
    col = offs % A
    p = tl.load(actions_ptr + offs, mask=mask, other=0.0)
    g = tl.load(grad_ptr + offs, mask=mask, other=0.0)
    m = tl.load(exp_avg_ptr + offs, mask=mask, other=0.0)
    v = tl.load(exp_avg_sq_ptr + offs, mask=mask, other=0.0)
    lo = tl.load(low_ptr + col, mask=mask, other=0.0)
    hi = tl.load(high_ptr + col, mask=mask, other=0.0)
    p, m, v = adam(p, g, m, v, lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step)
    p = clamp(p, lo, hi)
    tl.store(actions_ptr + offs, p, mask=mask)
    tl.store(exp_avg_ptr + offs, m, mask=mask)
    tl.store(exp_avg_sq_ptr + offs, v, mask=mask)


def launch(
    actions: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    adam: AdamHyper,
    low: torch.Tensor,
    high: torch.Tensor,
) -> None:
    """Adam then clamp to low/high (float32 [A], +-inf where unbounded) on actions [B,T,A], in place."""
    n = actions.numel()
    if n == 0:
        return
    block = BLOCK
    n_programs = triton.cdiv(n, block)
    check_grid(n_programs)
    action_step_kernel[(n_programs,)](
        actions, grad, exp_avg, exp_avg_sq, low, high,
        n, actions.shape[-1], *adam_scalars(step, adam),
        BLOCK=block, WIDE=n + block >= I32, num_warps=NUM_WARPS,
    )
