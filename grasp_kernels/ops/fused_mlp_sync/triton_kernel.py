"""Triton kernel of ``fused_mlp_sync_step_``: one step of the sync phase for an MLPDynamics world model.

``launch(s0, goal, actions, exp_avg, exp_avg_sq, workspace, loss, params, depth, activation, step, adam,
low, high)`` (the launch protocol of :mod:`.._triton_common`: validated contiguous
tensors, preallocated outputs).

The sync phase is sequential in time but independent across plans, so the grid is over blocks of
``BP`` plans (the rows of every ``tl.dot``) and each program runs its block through all ``T`` steps:

1. forward rollout: ``s_{t+1} = s_t + delta * f(s_t, a_t)`` for ``t = 0..T-1`` in registers, every
   ``s_t`` stored to the float32 workspace ``[B, T+1, D]`` (the backward needs them in reverse order);
2. the loss ``||s_T - g||^2`` (stored: the loss of the actions before this step) and the adjoint
   ``lambda_T = 2 (s_T - g)``;
3. adjoint backward for ``t = T-1..0``: recompute step ``t``'s MLP forward from the stored ``s_t``,
   pull ``df = lambda_{t+1} * delta`` back through the MLP to both inputs: the action part is
   ``dL/da_t``, the state part plus the residual's identity is ``lambda_t = lambda_{t+1} + dL/dx_s / std``;
4. Adam + clamp on ``a_t`` as soon as ``dL/da_t`` is known: ``a_t`` is read again by no later step of
   the backward (its recompute has just happened), so it is updated in place.

Only the program's own plans are read and written (``a_t``, its moments, the workspace rows), so no
step races another program. The workspace rows written in the forward are read back in the backward
by other threads of the same program: a CTA barrier separates the two passes. The MLP part (register
variant up to padded width ``NARROW_MAX_HIDDEN``, blocked variant with a per-program scratch above) is
:mod:`.._mlp_triton`; the weights are re-read from global memory (L2) at every step.

Tiles: ``SYNC_ROWS`` plans per program on a GPU. Fewer plans per program mean more programs in flight
for the usual tens to hundreds of plans, and ``tl.dot`` needs at least 16 rows. The sizes are set from
the sm_90 lowering check (``ptxas -v``, tests/test_lowering.py), not yet from measured time.
"""

from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from .._mlp_triton import (
    MIN_DOT,
    is_wide,
    kernel_params,
    load_vec,
    mlp_backward,
    mlp_forward,
    mlp_input_grad,
    normalised_inputs,
    pad_dim,
    padded_hidden,
    wide_block,
    wide_programs,
    wide_scratch,
)
from .._params import AdamHyper
from .._triton_common import INTERPRET, adam, adam_scalars, check_grid, clamp

SYNC_ROWS = 16  # plans per program on a GPU (the tl.dot minimum: the most programs for a given batch)
INTERPRET_ROWS = 128  # under the interpreter: few, large programs (each costs Python overhead)


@triton.jit
def _fused_mlp_sync_kernel(
    s0_ptr, goal_ptr, actions_ptr, a_avg_ptr, a_avg_sq_ptr, ws_ptr, loss_ptr, low_ptr, high_ptr,
    mean_ptr, std_ptr, amean_ptr, astd_ptr, delta_ptr,
    w1_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, wo_ptr, bo_ptr, scratch_ptr,
    n_plans, T, D, A, H, n_blocks,
    lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step,
    BP: tl.constexpr, DP: tl.constexpr, AP: tl.constexpr, HP: tl.constexpr,
    DEPTH: tl.constexpr, ACT: tl.constexpr, WIDE: tl.constexpr, BH: tl.constexpr,
):
    pid = tl.program_id(0)
    # WIDE: this program's scratch, DEPTH layers of [BP, HP] (pre-activations, then their gradients)
    z1_ptr = scratch_ptr + pid.to(tl.int64) * (DEPTH * BP * HP)
    if WIDE:  # persistent: the grid is capped (one scratch per program)
        block_end, block_step = n_blocks, tl.num_programs(0)
    else:  # one block per program
        block_end, block_step = pid + 1, 1
    d = tl.arange(0, DP)
    k = tl.arange(0, AP)
    mean = load_vec(mean_ptr, D, DP, 0.0)
    std = load_vec(std_ptr, D, DP, 1.0)
    amean = load_vec(amean_ptr, A, AP, 0.0)
    astd = load_vec(astd_ptr, A, AP, 1.0)
    delta = load_vec(delta_ptr, D, DP, 0.0)
    for blk in tl.range(pid, block_end, block_step, num_stages=1):  # no software pipelining across blocks
        plan = tl.arange(0, BP).to(tl.int64) + blk * BP  # int64: B*(T+1)*D may exceed 2^31 (B*BP does not)
        row_ok = plan < n_plans
        dmask = row_ok[:, None] & (d < D)[None, :]
        amask = row_ok[:, None] & (k < A)[None, :]
        vec_off = (plan * D)[:, None] + d[None, :]  # s0[b, :], goal[b, :]
        ws_base = plan * ((T + 1) * D)
        a_base = plan * T

        # ---- forward rollout, every state to the workspace --------------------------------------
        s = tl.load(s0_ptr + vec_off, mask=dmask, other=0.0)
        tl.store(ws_ptr + ws_base[:, None] + d[None, :], s, mask=dmask)
        for t in range(0, T):
            a_off = ((a_base + t) * A)[:, None] + k[None, :]
            a = tl.load(actions_ptr + a_off, mask=amask, other=0.0)
            xs, xa = normalised_inputs(s, a, dmask, amask, mean, std, amean, astd)
            f, z1, z2, z3 = mlp_forward(xs, xa, z1_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, wo_ptr,
                                        bo_ptr, D, A, H, BP, DP, AP, HP, DEPTH, ACT, WIDE, BH)
            s = tl.where(dmask, s + delta[None, :] * f, 0.0)
            tl.store(ws_ptr + (ws_base + (t + 1) * D)[:, None] + d[None, :], s, mask=dmask)

        # ---- loss of the actions before the step, and its gradient at s_T -------------------------
        g = tl.load(goal_ptr + vec_off, mask=dmask, other=0.0)
        r = tl.where(dmask, s - g, 0.0)
        tl.store(loss_ptr + plan, tl.sum(r * r, axis=1), mask=row_ok)
        adj = 2.0 * r  # dL/ds_{t+1} while stepping back through t
        tl.debug_barrier()  # the backward reads workspace rows other threads of this program wrote

        # ---- adjoint backward, Adam + clamp on a_t as soon as its gradient is known -------------
        lo = load_vec(low_ptr, A, AP, 0.0)
        hi = load_vec(high_ptr, A, AP, 0.0)
        for i in range(0, T):
            t = T - 1 - i
            a_off = ((a_base + t) * A)[:, None] + k[None, :]
            s = tl.load(ws_ptr + (ws_base + t * D)[:, None] + d[None, :], mask=dmask, other=0.0)
            a = tl.load(actions_ptr + a_off, mask=amask, other=0.0)
            xs, xa = normalised_inputs(s, a, dmask, amask, mean, std, amean, astd)
            f, z1, z2, z3 = mlp_forward(xs, xa, z1_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, wo_ptr,
                                        bo_ptr, D, A, H, BP, DP, AP, HP, DEPTH, ACT, WIDE, BH)
            df = adj * delta[None, :]
            dz1 = mlp_backward(df, z1, z2, z3, z1_ptr, w2_ptr, w3_ptr, wo_ptr, D, H, BP, DP, HP, DEPTH, ACT, WIDE, BH)
            ga = mlp_input_grad(dz1, z1_ptr, w1_ptr, D, A, H, BP, AP, HP, WIDE, BH) / astd[None, :]
            gs = mlp_input_grad(dz1, z1_ptr, w1_ptr, 0, D, H, BP, DP, HP, WIDE, BH) / std[None, :]
            adj = tl.where(dmask, adj + gs, 0.0)  # s_{t+1} = s_t + delta f: identity plus the MLP's part
            if WIDE:
                tl.debug_barrier()  # the next recompute overwrites the scratch just read
            m = tl.load(a_avg_ptr + a_off, mask=amask, other=0.0)
            v = tl.load(a_avg_sq_ptr + a_off, mask=amask, other=0.0)
            a, m, v = adam(a, ga, m, v, lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step)
            a = clamp(a, lo[None, :], hi[None, :])
            tl.store(actions_ptr + a_off, a, mask=amask)
            tl.store(a_avg_ptr + a_off, m, mask=amask)
            tl.store(a_avg_sq_ptr + a_off, v, mask=amask)


def sync_rows(n_plans: int) -> int:
    """Plans per program ``BP`` (the rows of every ``tl.dot``)."""
    if INTERPRET:
        return min(INTERPRET_ROWS, max(MIN_DOT, triton.next_power_of_2(max(n_plans, 1))))
    return SYNC_ROWS


def launch_options(hidden: int, matrix_dtype: torch.dtype) -> dict[str, int]:
    """The compile options of a launch (``num_warps``, ``maxnreg``), shared with the lowering check
    (tests/_lowering_specs.py) so that it compiles what runs. ``matrix_dtype``: the packed matrices'."""
    if not is_wide(hidden):
        return {"num_warps": 4}  # the register variant's tiles are small
    # wide: 8 warps (with 4, H = 1024 at D = 64 spilled 1-2 KB). With bfloat16 matrices, triton 3.6's ptxas
    # (12.8) aims at two programs per SM, i.e. 128 registers, and spills 120-156 B at H = 256-512; the
    # persistent grid has one program per SM (WIDE_PROGRAMS_PER_SM), so .maxnreg 255 says what runs: 0 B
    # with both ptxas versions. Not for float32: there .maxnreg makes ptxas schedule for more registers
    # and H = 1024 spills 72-84 B instead of 8-32 B.
    if matrix_dtype == torch.bfloat16:
        return {"num_warps": 8, "maxnreg": 255}
    return {"num_warps": 8}


def launch(
    s0: torch.Tensor,
    goal: torch.Tensor,
    actions: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    workspace: torch.Tensor,
    loss: torch.Tensor,
    params: Sequence[torch.Tensor],
    depth: int,
    activation: int,
    step: int,
    adam: AdamHyper,
    low: torch.Tensor,
    high: torch.Tensor,
) -> None:
    """One sync step for a packed MLPDynamics (``params``, see :mod:`..fused_mlp_iteration.pack`).

    Writes ``loss [B]`` and ``workspace [B, T+1, D]`` (the rolled-out states); updates ``actions`` and
    its moments in place; ``s0 [B, D]`` and ``goal [B, D]`` are only read.
    """
    n_plans, dim = s0.shape
    horizon, action_dim = actions.shape[1], actions.shape[2]
    if n_plans == 0:
        return
    hidden = params[6].shape[0]
    bp = sync_rows(n_plans)
    n_blocks = triton.cdiv(n_plans, bp)
    check_grid(n_blocks * bp)  # the kernel's block * BP is int32
    wide = is_wide(hidden)
    if wide:
        n_programs = wide_programs(n_blocks, s0.device)
        scratch = wide_scratch(n_programs, depth, bp, hidden, s0.device)
    else:
        n_programs, scratch = n_blocks, loss  # unused pointer
    lerp_w, b2_, omb2, sqrt_bc2, eps_, neg_step = adam_scalars(step, adam)
    _fused_mlp_sync_kernel[(n_programs,)](
        s0, goal, actions, exp_avg, exp_avg_sq, workspace, loss, low, high,
        *kernel_params(params, depth), scratch,
        n_plans, horizon, dim, action_dim, hidden, n_blocks,
        lerp_w, b2_, omb2, sqrt_bc2, eps_, neg_step,
        BP=bp, DP=pad_dim(dim), AP=pad_dim(action_dim), HP=padded_hidden(hidden), DEPTH=depth, ACT=activation,
        WIDE=wide, BH=wide_block(hidden), **launch_options(hidden, params[5].dtype),
    )
