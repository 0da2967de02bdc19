"""Triton kernel of ``fused_mlp_iteration_``: one whole GRASP iteration for an MLPDynamics world model.

``launch(states, actions, states_out, energy, params, depth, activation, gamma, state_exp_avg,
state_exp_avg_sq, action_exp_avg, action_exp_avg_sq, step, state_adam, action_adam, noise_std, noise,
counters, low, high)`` (the launch protocol of :mod:`.._triton_common`: validated
contiguous tensors, preallocated outputs).

Per tile of ``BM = BP x BT`` (plan, time) rows, the kernel

1. loads ``s_t`` (rows ``0..T-1`` of ``states [B, T+1, D]``), ``s_{t+1}``, the goal and ``a_t``,
   normalises them and runs the MLP forward with ``tl.dot`` (float32 accumulation; float32 matrices
   with ``input_precision="ieee"``, or bfloat16 matrix inputs),
2. forms ``p_t = s_t + delta * f``, the residual ``r = p_t - s_{t+1}``, the goal term ``q = p_t - g``
   and the per-plan energy partial (``sum r^2 + gamma q^2``; one partial per plan and time chunk, no
   atomics: a plan longer than ``BT`` is summed by ``_sum_partials_kernel`` in a fixed order),
3. pulls ``dE/dp = 2 r + 2 gamma q`` back through the MLP to the ACTION input only (activation
   gradients; no weight gradients, no state-input gradient),
4. applies Adam + clamp to ``a_t`` (in place: ``a_t`` is read and written by its own tile row only)
   and Adam + Langevin noise to ``s_{t+1}`` for ``t < T-1`` with the reshaped gradient
   ``dE/ds_{t+1} = -2 r``, in registers (the state moments of row ``t+1`` are likewise owned by tile
   row ``t``: in place).

Read/write hazard and double buffering. Row ``s_{t+1}`` is read twice: as ``s_next`` by tile row ``t``
and as the MLP input by tile row ``t+1``, which may live in another program (time chunks) that runs
before or after. Updating states in place would let a program see a half-updated iteration. The new
states therefore go to a separate buffer ``states_out``: tile row ``t`` writes row ``t+1`` (updated if
virtual, the goal copied for ``t = T-1``) and tile rows ``t = 0`` copy ``s_0``, so every row of
``states_out`` is written exactly once and ``states`` is only read. The planner swaps the two buffers
after each iteration (no copy).

What lives where: the MLP part is :mod:`.._mlp_triton` (shared with the fused sync step). Register
variant for padded hidden widths up to ``NARROW_MAX_HIDDEN``: nothing of the MLP (activations, ``pred``,
``dE/dp``, gradients) is written to global memory. Wide variant above it: the pre-activations go to a
per-program scratch, ``programs x DEPTH x BM x HP x 4`` bytes with one persistent program per SM (35 MB
per layer at 132 SMs, BM = 64, H = 1024; rewritten by the same program tile after tile, so much of it
stays in L2).

Register pressure of the register variant grows with ``BM * HP``: it serves padded widths up to 32
only, with 32 rows per tile. ``NARROW_MAX_HIDDEN``, ``NARROW_ROWS``, ``WIDE_BLOCK``, ``WIDE_ROWS`` and the
warps are set from the sm_90 lowering check (``ptxas -v``, tests/test_lowering.py, which also holds
each variant to a register, spill and compile-time budget), not yet from measured time.

Noise: the same linear index ``b*(T-1)*D + t*D + d`` of the virtual row ``t+1`` as the unfused kernels,
so a seed draws bit-identical noise in the fused and unfused paths.
"""

from __future__ import annotations

from typing import Optional, Sequence

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
from .._params import AdamHyper, NoiseCounters
from .._triton_common import (
    INTERPRET,
    NOISE_TENSOR,
    adam,
    adam_scalars,
    add_noise,
    check_grid,
    clamp,
    noise_layout,
    reduce_into,
)

# rows per tile under the interpreter (each program costs Python overhead: few, large programs)
INTERPRET_ROWS = 128
NARROW_ROWS = 32  # BM of the register variant on a GPU (64 rows spill 76-184 B at H = 16-32)
WIDE_ROWS = 64  # BM of the wide variant on a GPU up to WIDE_ROWS_MAX_HIDDEN, then 32 (H = 1024: 392 B of spills at 64)
WIDE_ROWS_MAX_HIDDEN = 512


@triton.jit
def _mlp_rows(pid, n_chunks, n_plans, T, BP: tl.constexpr, BT: tl.constexpr):
    """The ``BP*BT`` (plan, time) rows of tile ``pid`` (plan-block major, time chunks of BT): int64
    plan and time indices, row mask, and the tile's plan indices ``[BP]`` and chunk index."""
    pid_p = pid // n_chunks
    pid_c = pid - pid_p * n_chunks
    i = tl.arange(0, BP * BT)
    plan = pid_p.to(tl.int64) * BP + (i // BT).to(tl.int64)
    t = pid_c.to(tl.int64) * BT + (i % BT).to(tl.int64)
    plans = pid_p.to(tl.int64) * BP + tl.arange(0, BP).to(tl.int64)
    return plan, t, (plan < n_plans) & (t < T), plans, pid_c



@triton.jit(do_not_specialize=["seed", "noise_base", "noise_stride"])
def _fused_mlp_iteration_kernel(
    states_ptr, actions_ptr, out_ptr, energy_ptr,
    s_avg_ptr, s_avg_sq_ptr, a_avg_ptr, a_avg_sq_ptr, noise_ptr, low_ptr, high_ptr,
    mean_ptr, std_ptr, amean_ptr, astd_ptr, delta_ptr,
    w1_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, wo_ptr, bo_ptr, scratch_ptr,
    gamma, n_plans, T, D, A, H, n_chunks, n_tiles,
    lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step_s, neg_step_a, noise_std, seed, noise_base, noise_stride,
    BP: tl.constexpr, BT: tl.constexpr, DP: tl.constexpr, AP: tl.constexpr, HP: tl.constexpr,
    DEPTH: tl.constexpr, ACT: tl.constexpr, NOISE: tl.constexpr, WIDE: tl.constexpr, BH: tl.constexpr,
):
    BM: tl.constexpr = BP * BT
    pid = tl.program_id(0)
    # WIDE: this program's scratch, DEPTH layers of [BM, HP] (pre-activations, then their gradients)
    z1_ptr = scratch_ptr + pid.to(tl.int64) * (DEPTH * BM * HP)
    if WIDE:  # persistent: the grid is capped (one scratch per program)
        tile_end, tile_step = n_tiles, tl.num_programs(0)
    else:  # one tile per program (a one-trip loop: straight-line code after LLVM)
        tile_end, tile_step = pid + 1, 1
    for tile in tl.range(pid, tile_end, tile_step, num_stages=1):  # no software pipelining across tiles
        plan, t, row_ok, plans, pid_c = _mlp_rows(tile, n_chunks, n_plans, T, BP, BT)
        d = tl.arange(0, DP)
        k = tl.arange(0, AP)
        dmask = row_ok[:, None] & (d < D)[None, :]
        amask = row_ok[:, None] & (k < A)[None, :]
        s_base = plan * ((T + 1) * D)
        s_off = (s_base + t * D)[:, None] + d[None, :]  # states[b, t, :]
        a_off = ((plan * T + t) * A)[:, None] + k[None, :]  # actions[b, t, :]

        # ---- inputs, normalised (zero on padding) ---------------------------------------------
        s = tl.load(states_ptr + s_off, mask=dmask, other=0.0)
        a = tl.load(actions_ptr + a_off, mask=amask, other=0.0)
        mean = load_vec(mean_ptr, D, DP, 0.0)
        std = load_vec(std_ptr, D, DP, 1.0)
        amean = load_vec(amean_ptr, A, AP, 0.0)
        astd = load_vec(astd_ptr, A, AP, 1.0)
        delta = load_vec(delta_ptr, D, DP, 0.0)
        xs, xa = normalised_inputs(s, a, dmask, amask, mean, std, amean, astd)

        # ---- MLP forward (wide: pre-activations in the scratch; register: kept for the backward) ----
        f, z1, z2, z3 = mlp_forward(xs, xa, z1_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, wo_ptr, bo_ptr,
                                    D, A, H, BM, DP, AP, HP, DEPTH, ACT, WIDE, BH)
        p = s + delta[None, :] * f
        # loaded after the MLP: fewer registers live through it
        next_off = s_off + D  # states[b, t+1, :]
        goal_off = (s_base + T * D)[:, None] + d[None, :]  # states[b, T, :]
        s_next = tl.load(states_ptr + next_off, mask=dmask, other=0.0)
        g = tl.load(states_ptr + goal_off, mask=dmask, other=0.0)

        # ---- energy: one partial per plan of this tile (fixed-order sums, no atomics) ----------
        r = tl.where(dmask, p - s_next, 0.0)
        q = tl.where(dmask, p - g, 0.0)
        e_row = tl.sum(r * r + gamma * (q * q), axis=1)
        e_plan = tl.sum(tl.reshape(e_row, [BP, BT]), axis=1)
        tl.store(energy_ptr + plans * n_chunks + pid_c, e_plan, mask=plans < n_plans)

        # ---- backward to the action input only ------------------------------------------------
        df = (2.0 * r + (2.0 * gamma) * q) * delta[None, :]  # dE/dp * delta = dE/df
        dz1 = mlp_backward(df, z1, z2, z3, z1_ptr, w2_ptr, w3_ptr, wo_ptr, D, H, BM, DP, HP, DEPTH, ACT, WIDE, BH)
        ga = mlp_input_grad(dz1, z1_ptr, w1_ptr, D, A, H, BM, AP, HP, WIDE, BH) / astd[None, :]
        if WIDE:
            tl.debug_barrier()  # the next tile overwrites the scratch this one just read

        # ---- action step: Adam then clamp, in place (a_t belongs to this tile row alone) --------
        am = tl.load(a_avg_ptr + a_off, mask=amask, other=0.0)
        av = tl.load(a_avg_sq_ptr + a_off, mask=amask, other=0.0)
        a, am, av = adam(a, ga, am, av, lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step_a)
        lo = load_vec(low_ptr, A, AP, 0.0)
        hi = load_vec(high_ptr, A, AP, 0.0)
        a = clamp(a, lo[None, :], hi[None, :])
        tl.store(actions_ptr + a_off, a, mask=amask)
        tl.store(a_avg_ptr + a_off, am, mask=amask)
        tl.store(a_avg_sq_ptr + a_off, av, mask=amask)

        # ---- state step on row t+1 (virtual for t < T-1) into the other buffer -----------------
        virt = dmask & (t < T - 1)[:, None]
        m = tl.load(s_avg_ptr + next_off, mask=virt, other=0.0)
        v = tl.load(s_avg_sq_ptr + next_off, mask=virt, other=0.0)
        sn, m, v = adam(s_next, -2.0 * r, m, v, lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step_s)
        noise_off = (noise_base + plan * noise_stride + t * D)[:, None] + d[None, :]
        sn = add_noise(sn, noise_std, noise_ptr, noise_off, virt, seed, NOISE)
        tl.store(out_ptr + next_off, tl.where(virt, sn, s_next), mask=dmask)  # t = T-1: the goal, copied
        tl.store(s_avg_ptr + next_off, m, mask=virt)
        tl.store(s_avg_sq_ptr + next_off, v, mask=virt)
        tl.store(out_ptr + s_off, s, mask=dmask & (t == 0)[:, None])  # s_0, copied


def gpu_rows(hidden: int) -> int:
    """Rows per tile ``BM`` on a GPU: NARROW_ROWS for the register variant; for the wide one WIDE_ROWS,
    halved above WIDE_ROWS_MAX_HIDDEN (its register tiles are [BM, BH])."""
    if not is_wide(hidden):
        return NARROW_ROWS
    return WIDE_ROWS if padded_hidden(hidden) <= WIDE_ROWS_MAX_HIDDEN else WIDE_ROWS // 2


def mlp_tile_config(n_plans: int, horizon: int, hidden: int, rows: Optional[int] = None) -> tuple[int, int, int]:
    """``(BP, BT, n_chunks)``: tiles of ``BP`` plans x ``BT`` time steps (``BP*BT >= 16`` rows)."""
    if rows is None:
        rows = min(INTERPRET_ROWS, pad_dim(n_plans * horizon)) if INTERPRET else gpu_rows(hidden)
    bt = min(triton.next_power_of_2(max(horizon, 1)), rows)
    bp = rows // bt
    return bp, bt, triton.cdiv(horizon, bt)


def launch_options(hidden: int, matrix_dtype: torch.dtype) -> dict[str, int]:
    """The compile options of a launch (``num_warps``), shared with the lowering check
    (tests/_lowering_specs.py) so that it compiles what runs. ``matrix_dtype``: the packed matrices'."""
    # wide: 8 warps (with 4, 48-wide layers spill 32 B). Register variant: 4 warps at padded width 16;
    # at 32 (bf16) 4 warps spill 64 B with triton 3.9's ptxas and 84 B with 3.6's, 8 warps none
    del matrix_dtype  # the same warps for float32 and bfloat16 matrices
    return {"num_warps": 8 if is_wide(hidden) or pad_dim(hidden) > MIN_DOT else 4}


def launch(
    states: torch.Tensor,
    actions: torch.Tensor,
    states_out: torch.Tensor,
    energy: torch.Tensor,
    params: Sequence[torch.Tensor],
    depth: int,
    activation: int,
    gamma: float,
    state_exp_avg: torch.Tensor,
    state_exp_avg_sq: torch.Tensor,
    action_exp_avg: torch.Tensor,
    action_exp_avg_sq: torch.Tensor,
    step: int,
    state_adam: AdamHyper,
    action_adam: AdamHyper,
    noise_std: float,
    noise: Optional[torch.Tensor],
    counters: NoiseCounters,
    low: torch.Tensor,
    high: torch.Tensor,
) -> None:
    """One GRASP iteration for a packed MLPDynamics (``params``, see :mod:`.pack`).

    Writes ``states_out [B,T+1,D]`` (every row) and ``energy [B]``; updates ``actions`` and the four
    moments in place; ``states`` is only read. ``beta1``, ``beta2`` and ``eps`` are ``state_adam``'s (the
    op checks that ``action_adam`` shares them); the learning rates are each one's own.
    """
    n_plans, rows, dim = states.shape
    horizon, action_dim = actions.shape[1], actions.shape[2]
    if n_plans == 0:
        return
    hidden = params[6].shape[0]
    bp, bt, n_chunks = mlp_tile_config(n_plans, horizon, hidden)
    n_tiles = triton.cdiv(n_plans, bp) * n_chunks
    check_grid(n_tiles)
    wide = is_wide(hidden)
    if wide:  # per program: depth layers of [BM, HP] pre-activations, then their gradients
        n_programs = wide_programs(n_tiles, states.device)
        scratch = wide_scratch(n_programs, depth, bp * bt, hidden, states.device)
    else:
        n_programs, scratch = n_tiles, states  # unused pointer
    n_virt = (rows - 2) * dim
    mode, seed, noise_base, noise_stride = noise_layout(float(noise_std), noise, n_plans, n_virt, counters)
    lerp_w, b2_, omb2, sqrt_bc2, eps_, neg_step_s = adam_scalars(step, state_adam)
    neg_step_a = adam_scalars(step, action_adam)[-1]
    out = energy if n_chunks == 1 else torch.empty((n_plans, n_chunks), device=energy.device, dtype=torch.float32)
    _fused_mlp_iteration_kernel[(n_programs,)](
        states, actions, states_out, out,
        state_exp_avg, state_exp_avg_sq, action_exp_avg, action_exp_avg_sq,
        noise if mode == NOISE_TENSOR else states, low, high,
        *kernel_params(params, depth), scratch,
        float(gamma), n_plans, horizon, dim, action_dim, hidden, n_chunks, n_tiles,
        lerp_w, b2_, omb2, sqrt_bc2, eps_, neg_step_s, neg_step_a, float(noise_std), seed, int(noise_base),
        int(noise_stride),
        BP=bp, BT=bt, DP=pad_dim(dim), AP=pad_dim(action_dim), HP=padded_hidden(hidden), DEPTH=depth, ACT=activation,
        NOISE=mode, WIDE=wide, BH=wide_block(hidden), **launch_options(hidden, params[5].dtype),
    )
    if n_chunks > 1:
        reduce_into(out, energy, n_plans, n_chunks)
