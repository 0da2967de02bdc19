"""Triton kernel of ``fused_mlp_iteration_``: one whole GRASP iteration for an MLPDynamics world model.

``launch(states, actions, states_out, energy, params, depth, activation, gamma, state_exp_avg,
state_exp_avg_sq, action_exp_avg, action_exp_avg_sq, step, lr_states, lr_actions, beta1, beta2, eps,
noise_std, noise, seed, low, high)`` (the launch protocol of :mod:`.._triton_common`: validated
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

What lives where: two variants of the MLP part, chosen by the padded hidden width ``HP``.

- Register variant (``HP <= NARROW_MAX_HIDDEN``): the pre-activations ``z_l`` of every hidden layer
  ``[BM, HP]`` stay in registers through the backward; each weight matrix is read twice per tile from
  global memory (L2-resident across tiles): ``W^T`` for the forward, its transpose for the backward
  (keeping the forward's tile live in registers through the backward cost more spills). Nothing of
  the MLP (activations, ``pred``, ``dE/dp``, gradients) is written to global memory.
- Wide variant (``HP > NARROW_MAX_HIDDEN``, the usual 256-1024 widths): whole ``[HP, HP]`` weight
  tiles no longer fit (registers, and shared memory for the ``tl.dot`` operands: 1 MB at H = 512
  float32), and ``[BM, HP]`` activations outgrow the registers. Every layer is then a blocked matmul
  over ``[BM, BH] x [BH, BH]`` blocks, and the pre-activations go to a per-program scratch of
  ``DEPTH x [BM, HP]`` float32; the backward overwrites them with their gradients, layer by layer
  (each element by the thread that read it; a CTA barrier between layers, because the next layer
  reads blocks that other threads wrote). Triton has no shared-memory scratch, and at these widths
  ``[BM, HP]`` does not fit in shared memory anyway (64 x 1024 x 4 B = 256 KB per layer). The grid is
  persistent (one program per SM: 255 registers x 256 threads fill its register file; each program
  loops over tiles), so the scratch is ``programs x DEPTH x BM x HP x 4`` bytes (35 MB per layer at
  132 SMs, BM = 64, H = 1024; rewritten by the same program tile after tile, so much of it stays in
  L2). ``HP`` is H rounded up to a multiple of ``BH`` (not to a power of two). The weights are read once per
  tile for the forward and once (transposed) for the backward.

Register pressure of the register variant grows with ``BM * HP``: it serves padded widths up to 32
only, with 32 rows per tile. ``NARROW_MAX_HIDDEN``, ``NARROW_ROWS``, ``WIDE_BLOCK``, ``WIDE_ROWS`` and the
warps are set from the sm_90 lowering check (``ptxas -v``, tests/test_lowering.py, which also holds
each variant to a register, spill and compile-time budget), not yet from measured time.

Noise: the same linear index ``b*(T-1)*D + t*D + d`` of the virtual row ``t+1`` as the unfused kernels,
so a seed draws bit-identical noise in the fused and unfused paths.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import torch
import triton
import triton.language as tl

from .._triton_common import (
    INTERPRET,
    NOISE_TENSOR,
    adam,
    adam_scalars,
    add_noise,
    check_grid,
    clamp,
    noise_mode,
    reduce_into,
)

# rows per tile under the interpreter (each program costs Python overhead: few, large programs)
INTERPRET_ROWS = 128
MIN_DOT = 16  # tl.dot needs every dimension >= 16 on NVIDIA GPUs
# padded hidden widths above this run the wide variant: [BM, HP] register tiles and whole [HP, HP]
# weight tiles stop fitting (registers, and shared memory for the tl.dot operands) beyond it
# Set from the sm_90 lowering check (ptxas -v, tests/test_lowering.py; docs/design.md): the register variant
# spills from padded width 48-64 on (1.2-26 KB per thread at 16-64 rows), the blocked one with 32-wide
# blocks stays at 0-28 B from H = 32 to 1024 (64-wide blocks: 36-1440 B)
NARROW_MAX_HIDDEN = 32
NARROW_ROWS = 32  # BM of the register variant on a GPU (64 rows spill 76-184 B at H = 16-32)
WIDE_BLOCK = 32  # BH: hidden block of the wide variant
WIDE_ROWS = 64  # BM of the wide variant on a GPU up to WIDE_ROWS_MAX_HIDDEN, then 32 (H = 1024: 392 B of spills at 64)
WIDE_ROWS_MAX_HIDDEN = 512
# 255 registers x 256 threads (ptxas -v, sm_90) fill an SM's register file: one resident program per
# SM; more would run in waves with a larger scratch
WIDE_PROGRAMS_PER_SM = 1
INTERPRET_WIDE_PROGRAMS = 2  # under the interpreter: a few programs, each looping over several tiles


@triton.jit
def _tanh(z):
    """tanh from one exp (interpreter- and GPU-safe); absolute error ~1e-7 near 0."""
    e = tl.exp(-2.0 * tl.abs(z))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(z < 0.0, -t, t)


@triton.jit
def _activation(z, ACT: tl.constexpr):
    """ACT 0: SiLU, 1: ReLU, 2: Tanh."""
    if ACT == 0:
        h = z * tl.sigmoid(z)
    elif ACT == 1:
        h = tl.maximum(z, 0.0)
    else:
        h = _tanh(z)
    return h


@triton.jit
def _activation_grad(dh, z, ACT: tl.constexpr):
    """``dh * act'(z)`` with torch's backward formulas (SiLU: sig (1 + z (1 - sig)); ReLU: z > 0;
    Tanh: 1 - tanh^2)."""
    if ACT == 0:
        sg = tl.sigmoid(z)
        dz = dh * (sg * (1.0 + z * (1.0 - sg)))
    elif ACT == 1:
        dz = tl.where(z > 0.0, dh, 0.0)
    else:
        t = _tanh(z)
        dz = dh * (1.0 - t * t)
    return dz


@triton.jit
def _load_block(ptr, row0, col0, row_end, col_end, ld, R: tl.constexpr, C: tl.constexpr):
    """``[R, C]`` block (zero padded) at (``row0``, ``col0``) of a row-major matrix with leading dimension
    ``ld``, rows ``< row_end`` and columns ``< col_end`` valid."""
    r = row0 + tl.arange(0, R)
    c = col0 + tl.arange(0, C)
    mask = (r < row_end)[:, None] & (c < col_end)[None, :]
    return tl.load(ptr + r[:, None] * ld + c[None, :], mask=mask, other=0.0)


@triton.jit
def _load_block_t(ptr, row0, col0, row_end, col_end, ld, R: tl.constexpr, C: tl.constexpr):
    """The transpose ``[C, R]`` of the block :func:`_load_block` loads (a second, transposed read of the
    same weights for the backward: cheaper than keeping the forward's tile live in registers)."""
    r = row0 + tl.arange(0, R)
    c = col0 + tl.arange(0, C)
    mask = (c < col_end)[:, None] & (r < row_end)[None, :]
    return tl.load(ptr + r[None, :] * ld + c[:, None], mask=mask, other=0.0)


@triton.jit
def _load_mat(ptr, row0, n_rows, n_cols, R: tl.constexpr, C: tl.constexpr):
    """``[R, C]`` tile of rows ``row0 .. row0+n_rows-1`` of a row-major ``[*, n_cols]`` matrix."""
    return _load_block(ptr, row0, 0, row0 + n_rows, n_cols, n_cols, R, C)


@triton.jit
def _load_mat_t(ptr, row0, n_rows, n_cols, R: tl.constexpr, C: tl.constexpr):
    """The transpose ``[C, R]`` of the tile :func:`_load_mat` loads."""
    return _load_block_t(ptr, row0, 0, row0 + n_rows, n_cols, n_cols, R, C)


@triton.jit
def _load_vec_at(ptr, start, n, N: tl.constexpr, other: tl.constexpr):
    """Elements ``start .. start+N-1`` of a length-``n`` vector (``other`` past its end)."""
    idx = start + tl.arange(0, N)
    return tl.load(ptr + idx, mask=idx < n, other=other)


@triton.jit
def _load_vec(ptr, n, N: tl.constexpr, other: tl.constexpr):
    return _load_vec_at(ptr, 0, n, N, other)


@triton.jit
def _dense(x, w, b):
    """``x @ w + b`` on tensor cores: x cast to the matrix dtype, float32 accumulation (IEEE for f32)."""
    return tl.dot(x.to(w.dtype), w, input_precision="ieee") + b[None, :]


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


@triton.jit
def _scratch_block(layer_ptr, col0, BM: tl.constexpr, HP: tl.constexpr, BH: tl.constexpr):
    """Pointers to columns ``col0 .. col0+BH-1`` of a ``[BM, HP]`` scratch layer (always in bounds:
    HP is a multiple of BH, :func:`padded_hidden`)."""
    r = tl.arange(0, BM)
    c = col0 + tl.arange(0, BH)
    return layer_ptr + r[:, None] * HP + c[None, :]


@triton.jit
def _wide_first_layer(xs, xa, z_ptr, w1_ptr, b1_ptr, D, A, H,
                      BM: tl.constexpr, DP: tl.constexpr, AP: tl.constexpr, HP: tl.constexpr, BH: tl.constexpr):
    """``z1 = [xs, xa] @ W1^T + b1`` into scratch layer ``z_ptr``."""
    for j0 in range(0, HP, BH):
        w1s = _load_block(w1_ptr, 0, j0, D, H, H, DP, BH)
        w1a = _load_block(w1_ptr, D, j0, D + A, H, H, AP, BH)
        z = tl.dot(xs.to(w1s.dtype), w1s, input_precision="ieee") + _dense(xa, w1a, _load_vec_at(b1_ptr, j0, H, BH, 0.0))
        tl.store(_scratch_block(z_ptr, j0, BM, HP, BH), z)
    tl.debug_barrier()  # the next layer reads blocks other threads wrote


@triton.jit
def _wide_hidden_layer(zin_ptr, zout_ptr, w_ptr, b_ptr, H,
                       BM: tl.constexpr, HP: tl.constexpr, BH: tl.constexpr, ACT: tl.constexpr):
    """``z_out = act(z_in) @ W^T + b`` (scratch layer to scratch layer)."""
    for j0 in range(0, HP, BH):
        acc = tl.zeros([BM, BH], dtype=tl.float32) + _load_vec_at(b_ptr, j0, H, BH, 0.0)[None, :]
        for i0 in range(0, HP, BH):
            h = _activation(tl.load(_scratch_block(zin_ptr, i0, BM, HP, BH)), ACT)
            w = _load_block(w_ptr, i0, j0, H, H, H, BH, BH)
            acc += tl.dot(h.to(w.dtype), w, input_precision="ieee")
        tl.store(_scratch_block(zout_ptr, j0, BM, HP, BH), acc)
    tl.debug_barrier()


@triton.jit
def _wide_output(z_ptr, wo_ptr, bo_ptr, D, H,
                 BM: tl.constexpr, DP: tl.constexpr, HP: tl.constexpr, BH: tl.constexpr, ACT: tl.constexpr):
    """``f = act(z_depth) @ Wout^T + bout`` ``[BM, DP]`` (registers)."""
    f = tl.zeros([BM, DP], dtype=tl.float32) + _load_vec(bo_ptr, D, DP, 0.0)[None, :]
    for i0 in range(0, HP, BH):
        h = _activation(tl.load(_scratch_block(z_ptr, i0, BM, HP, BH)), ACT)
        w = _load_block(wo_ptr, i0, 0, H, D, D, BH, DP)
        f += tl.dot(h.to(w.dtype), w, input_precision="ieee")
    tl.debug_barrier()  # the backward overwrites the blocks other threads just read
    return f


@triton.jit
def _wide_output_backward(df, z_ptr, wo_ptr, D, H,
                          BM: tl.constexpr, DP: tl.constexpr, HP: tl.constexpr, BH: tl.constexpr, ACT: tl.constexpr):
    """``dz_depth = act'(z_depth) * (df @ Wout)``, written over ``z_depth`` (each element by the thread
    that read it)."""
    for j0 in range(0, HP, BH):
        wt = _load_block_t(wo_ptr, j0, 0, H, D, D, BH, DP)  # [DP, BH]
        dh = tl.dot(df.to(wt.dtype), wt, input_precision="ieee")
        ptrs = _scratch_block(z_ptr, j0, BM, HP, BH)
        tl.store(ptrs, _activation_grad(dh, tl.load(ptrs), ACT))
    tl.debug_barrier()


@triton.jit
def _wide_hidden_backward(dz_ptr, z_ptr, w_ptr, H,
                          BM: tl.constexpr, HP: tl.constexpr, BH: tl.constexpr, ACT: tl.constexpr):
    """``dz_{l-1} = act'(z_{l-1}) * (dz_l @ W_l)`` (``W_l^T`` packed ``[H_in, H_out]``), written over
    ``z_{l-1}``; ``dz_l`` is only read."""
    for i0 in range(0, HP, BH):
        dh = tl.zeros([BM, BH], dtype=tl.float32)
        for j0 in range(0, HP, BH):
            wt = _load_block_t(w_ptr, i0, j0, H, H, H, BH, BH)  # [out block j, in block i]
            dz = tl.load(_scratch_block(dz_ptr, j0, BM, HP, BH))
            dh += tl.dot(dz.to(wt.dtype), wt, input_precision="ieee")
        ptrs = _scratch_block(z_ptr, i0, BM, HP, BH)
        tl.store(ptrs, _activation_grad(dh, tl.load(ptrs), ACT))
    tl.debug_barrier()


@triton.jit
def _wide_action_grad(dz_ptr, w1_ptr, D, A, H,
                      BM: tl.constexpr, AP: tl.constexpr, HP: tl.constexpr, BH: tl.constexpr):
    """``dz_1 @ W1[:, D:]`` ``[BM, AP]``: the gradient at the (normalised) action input."""
    ga = tl.zeros([BM, AP], dtype=tl.float32)
    for j0 in range(0, HP, BH):
        wt = _load_block_t(w1_ptr, D, j0, D + A, H, H, AP, BH)  # [BH, AP]
        dz = tl.load(_scratch_block(dz_ptr, j0, BM, HP, BH))
        ga += tl.dot(dz.to(wt.dtype), wt, input_precision="ieee")
    return ga


@triton.jit(do_not_specialize=["seed"])
def _fused_mlp_iteration_kernel(
    states_ptr, actions_ptr, out_ptr, energy_ptr,
    s_avg_ptr, s_avg_sq_ptr, a_avg_ptr, a_avg_sq_ptr, noise_ptr, low_ptr, high_ptr,
    mean_ptr, std_ptr, amean_ptr, astd_ptr, delta_ptr,
    w1_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, wo_ptr, bo_ptr, scratch_ptr,
    gamma, n_plans, T, D, A, H, n_chunks, n_tiles,
    lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step_s, neg_step_a, noise_std, seed,
    BP: tl.constexpr, BT: tl.constexpr, DP: tl.constexpr, AP: tl.constexpr, HP: tl.constexpr,
    DEPTH: tl.constexpr, ACT: tl.constexpr, NOISE: tl.constexpr, WIDE: tl.constexpr, BH: tl.constexpr,
):
    BM: tl.constexpr = BP * BT
    pid = tl.program_id(0)
    # WIDE: this program's scratch, DEPTH layers of [BM, HP] (pre-activations, then their gradients)
    z1_ptr = scratch_ptr + pid.to(tl.int64) * (DEPTH * BM * HP)
    z2_ptr = z1_ptr + BM * HP
    z3_ptr = z2_ptr + BM * HP
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
        mean = _load_vec(mean_ptr, D, DP, 0.0)
        std = _load_vec(std_ptr, D, DP, 1.0)
        amean = _load_vec(amean_ptr, A, AP, 0.0)
        astd = _load_vec(astd_ptr, A, AP, 1.0)
        delta = _load_vec(delta_ptr, D, DP, 0.0)
        xs = tl.where(dmask, (s - mean[None, :]) / std[None, :], 0.0)
        xa = tl.where(amask, (a - amean[None, :]) / astd[None, :], 0.0)

        # ---- MLP forward ------------------------------------------------------------------------
        if WIDE:  # pre-activations in the scratch, [BM, BH] blocks
            _wide_first_layer(xs, xa, z1_ptr, w1_ptr, b1_ptr, D, A, H, BM, DP, AP, HP, BH)
            if DEPTH >= 2:
                _wide_hidden_layer(z1_ptr, z2_ptr, w2_ptr, b2_ptr, H, BM, HP, BH, ACT)
            if DEPTH >= 3:
                _wide_hidden_layer(z2_ptr, z3_ptr, w3_ptr, b3_ptr, H, BM, HP, BH, ACT)
            f = _wide_output(z1_ptr + (DEPTH - 1) * (BM * HP), wo_ptr, bo_ptr, D, H, BM, DP, HP, BH, ACT)
        else:  # whole [BM, HP] pre-activations in registers, kept for the backward
            w1s = _load_mat(w1_ptr, 0, D, H, DP, HP)  # W1^T rows of the state inputs  [DP, HP]
            w1a = _load_mat(w1_ptr, D, A, H, AP, HP)  # W1^T rows of the action inputs [AP, HP]
            z1 = tl.dot(xs.to(w1s.dtype), w1s, input_precision="ieee")
            z1 = _dense(xa, w1a, _load_vec(b1_ptr, H, HP, 0.0)) + z1
            h = _activation(z1, ACT)
            z2 = z1
            z3 = z1
            if DEPTH >= 2:
                z2 = _dense(h, _load_mat(w2_ptr, 0, H, H, HP, HP), _load_vec(b2_ptr, H, HP, 0.0))
                h = _activation(z2, ACT)
            if DEPTH >= 3:
                z3 = _dense(h, _load_mat(w3_ptr, 0, H, H, HP, HP), _load_vec(b3_ptr, H, HP, 0.0))
                h = _activation(z3, ACT)
            f = _dense(h, _load_mat(wo_ptr, 0, H, D, HP, DP), _load_vec(bo_ptr, D, DP, 0.0))  # Wout^T [HP, DP]
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
        if WIDE:  # gradients written over the pre-activations, layer by layer
            _wide_output_backward(df, z1_ptr + (DEPTH - 1) * (BM * HP), wo_ptr, D, H, BM, DP, HP, BH, ACT)
            if DEPTH >= 3:
                _wide_hidden_backward(z3_ptr, z2_ptr, w3_ptr, H, BM, HP, BH, ACT)
            if DEPTH >= 2:
                _wide_hidden_backward(z2_ptr, z1_ptr, w2_ptr, H, BM, HP, BH, ACT)
            ga = _wide_action_grad(z1_ptr, w1_ptr, D, A, H, BM, AP, HP, BH) / astd[None, :]
            tl.debug_barrier()  # the next tile overwrites the scratch this one just read
        else:
            wdt = w1_ptr.dtype.element_ty
            dh = tl.dot(df.to(wdt), _load_mat_t(wo_ptr, 0, H, D, HP, DP), input_precision="ieee")  # [BM, HP]
            if DEPTH >= 3:
                dz = _activation_grad(dh, z3, ACT)
                dh = tl.dot(dz.to(wdt), _load_mat_t(w3_ptr, 0, H, H, HP, HP), input_precision="ieee")
            if DEPTH >= 2:
                dz = _activation_grad(dh, z2, ACT)
                dh = tl.dot(dz.to(wdt), _load_mat_t(w2_ptr, 0, H, H, HP, HP), input_precision="ieee")
            dz = _activation_grad(dh, z1, ACT)
            ga = tl.dot(dz.to(wdt), _load_mat_t(w1_ptr, D, A, H, AP, HP), input_precision="ieee") / astd[None, :]

        # ---- action step: Adam then clamp, in place (a_t belongs to this tile row alone) --------
        am = tl.load(a_avg_ptr + a_off, mask=amask, other=0.0)
        av = tl.load(a_avg_sq_ptr + a_off, mask=amask, other=0.0)
        a, am, av = adam(a, ga, am, av, lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step_a)
        lo = _load_vec(low_ptr, A, AP, 0.0)
        hi = _load_vec(high_ptr, A, AP, 0.0)
        a = clamp(a, lo[None, :], hi[None, :])
        tl.store(actions_ptr + a_off, a, mask=amask)
        tl.store(a_avg_ptr + a_off, am, mask=amask)
        tl.store(a_avg_sq_ptr + a_off, av, mask=amask)

        # ---- state step on row t+1 (virtual for t < T-1) into the other buffer -----------------
        virt = dmask & (t < T - 1)[:, None]
        m = tl.load(s_avg_ptr + next_off, mask=virt, other=0.0)
        v = tl.load(s_avg_sq_ptr + next_off, mask=virt, other=0.0)
        sn, m, v = adam(s_next, -2.0 * r, m, v, lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step_s)
        noise_off = (plan * ((T - 1) * D) + t * D)[:, None] + d[None, :]
        sn = add_noise(sn, noise_std, noise_ptr, noise_off, virt, seed, NOISE)
        tl.store(out_ptr + next_off, tl.where(virt, sn, s_next), mask=dmask)  # t = T-1: the goal, copied
        tl.store(s_avg_ptr + next_off, m, mask=virt)
        tl.store(s_avg_sq_ptr + next_off, v, mask=virt)
        tl.store(out_ptr + s_off, s, mask=dmask & (t == 0)[:, None])  # s_0, copied


def _pad(n: int) -> int:
    return max(MIN_DOT, triton.next_power_of_2(max(n, 1)))


def is_wide(hidden: int) -> bool:
    """Whether a hidden width runs the wide (blocked, scratch) variant rather than the register one."""
    return _pad(hidden) > NARROW_MAX_HIDDEN


def gpu_rows(hidden: int) -> int:
    """Rows per tile ``BM`` on a GPU: NARROW_ROWS for the register variant; for the wide one WIDE_ROWS,
    halved above WIDE_ROWS_MAX_HIDDEN (its register tiles are [BM, BH])."""
    if not is_wide(hidden):
        return NARROW_ROWS
    return WIDE_ROWS if padded_hidden(hidden) <= WIDE_ROWS_MAX_HIDDEN else WIDE_ROWS // 2


def mlp_tile_config(n_plans: int, horizon: int, hidden: int, rows: Optional[int] = None) -> tuple[int, int, int]:
    """``(BP, BT, n_chunks)``: tiles of ``BP`` plans x ``BT`` time steps (``BP*BT >= 16`` rows)."""
    if rows is None:
        rows = min(INTERPRET_ROWS, _pad(n_plans * horizon)) if INTERPRET else gpu_rows(hidden)
    bt = min(triton.next_power_of_2(max(horizon, 1)), rows)
    bp = rows // bt
    return bp, bt, triton.cdiv(horizon, bt)


def num_warps_for(hidden: int) -> int:
    # wide: 8 warps (with 4, 48-wide layers spill 32 B); the register variant's tiles are small
    return 8 if is_wide(hidden) else 4


def wide_block(hidden: int) -> int:
    """Hidden block ``BH`` of the wide variant (a power of two)."""
    return min(WIDE_BLOCK, _pad(hidden))


def padded_hidden(hidden: int) -> int:
    """``HP``: the register variant's power of two (``tl.arange`` over it); the wide variant only loops
    over BH blocks, so a multiple of BH suffices (H = 520: 576, not 1024)."""
    if is_wide(hidden):
        return triton.cdiv(hidden, wide_block(hidden)) * wide_block(hidden)
    return _pad(hidden)


def wide_programs(n_tiles: int, device: torch.device) -> int:
    """Programs of a wide launch: persistent, so that the scratch (one per program) stays small."""
    if INTERPRET or device.type != "cuda":
        return min(n_tiles, INTERPRET_WIDE_PROGRAMS)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return min(n_tiles, _multiprocessors(index) * WIDE_PROGRAMS_PER_SM)


@functools.lru_cache(maxsize=None)
def _multiprocessors(index: int) -> int:
    """SMs of CUDA device ``index``, queried once (the launcher runs every iteration)."""
    return torch.cuda.get_device_properties(index).multi_processor_count


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
    lr_states: float,
    lr_actions: float,
    beta1: float,
    beta2: float,
    eps: float,
    noise_std: float,
    noise: Optional[torch.Tensor],
    seed: int,
    low: torch.Tensor,
    high: torch.Tensor,
) -> None:
    """One GRASP iteration for a packed MLPDynamics (``params``, see :mod:`.pack`).

    Writes ``states_out [B,T+1,D]`` (every row) and ``energy [B]``; updates ``actions`` and the four
    moments in place; ``states`` is only read.
    """
    n_plans, rows, dim = states.shape
    horizon, action_dim = actions.shape[1], actions.shape[2]
    if n_plans == 0:
        return
    mean, std, amean, astd, delta, w1, b1 = params[:7]
    hidden_layers = [(params[7 + 2 * i], params[8 + 2 * i]) for i in range(depth - 1)]
    wo, bo = params[-2], params[-1]
    while len(hidden_layers) < 2:  # unused pointer slots (DEPTH is constexpr)
        hidden_layers.append((w1, b1))
    (w2, b2), (w3, b3) = hidden_layers[:2]
    hidden = b1.shape[0]
    bp, bt, n_chunks = mlp_tile_config(n_plans, horizon, hidden)
    n_tiles = triton.cdiv(n_plans, bp) * n_chunks
    check_grid(n_tiles)
    wide = is_wide(hidden)
    if wide:  # per program: depth layers of [BM, HP] pre-activations, then their gradients
        n_programs = wide_programs(n_tiles, states.device)
        scratch = torch.empty(n_programs * depth * bp * bt * padded_hidden(hidden), device=states.device,
                              dtype=torch.float32)
    else:
        n_programs, scratch = n_tiles, states  # unused pointer
    mode = noise_mode(float(noise_std), noise, n_plans * (rows - 2) * dim)
    lerp_w, b2_, omb2, sqrt_bc2, eps_, neg_step_s = adam_scalars(step, lr_states, beta1, beta2, eps)
    neg_step_a = adam_scalars(step, lr_actions, beta1, beta2, eps)[-1]
    out = energy if n_chunks == 1 else torch.empty((n_plans, n_chunks), device=energy.device, dtype=torch.float32)
    _fused_mlp_iteration_kernel[(n_programs,)](
        states, actions, states_out, out,
        state_exp_avg, state_exp_avg_sq, action_exp_avg, action_exp_avg_sq,
        noise if mode == NOISE_TENSOR else states, low, high,
        mean, std, amean, astd, delta, w1, b1, w2, b2, w3, b3, wo, bo, scratch,
        float(gamma), n_plans, horizon, dim, action_dim, hidden, n_chunks, n_tiles,
        lerp_w, b2_, omb2, sqrt_bc2, eps_, neg_step_s, neg_step_a, float(noise_std), int(seed),
        BP=bp, BT=bt, DP=_pad(dim), AP=_pad(action_dim), HP=padded_hidden(hidden), DEPTH=depth, ACT=activation,
        NOISE=mode, WIDE=wide, BH=wide_block(hidden), num_warps=num_warps_for(hidden),
    )
    if n_chunks > 1:
        reduce_into(out, energy, n_plans, n_chunks)
