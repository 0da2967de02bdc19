"""Triton kernels of the lifted GRASP iteration and their launchers (the ``triton`` provider module).

Launcher protocol (shared with ``grasp_kernels.ops.cuda_kernels``): every tensor is contiguous and
already validated by :mod:`grasp_kernels.ops.custom_ops`, outputs are preallocated by the caller,
each launcher returns None and launches on the current stream.

- ``lifted_energy_fwd(pred, states, gamma, energy, grad_pred, grad_states)``
- ``state_step(states, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, noise_std, noise, seed)``
- ``action_step(actions, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, low, high)``
- ``lifted_energy_state_step(pred, states, gamma, energy, grad_pred, exp_avg, exp_avg_sq, step, lr,
  beta1, beta2, eps, noise_std, noise, seed)``

Layout. A plan ``b`` of ``pred [B, T, D]`` is ``n_inner = T*D`` contiguous elements; element ``i``
of plan ``b`` is ``pred[b, t, d]`` with ``i = t*D + d``. Its ``s_next = states[b, t+1, d]`` sits at
``b*(T+1)*D + D + i`` and its goal element ``states[b, T, d]`` at ``b*(T+1)*D + T*D + i % D``.
The virtual rows ``1..T-1`` of plan ``b`` are the ``n_virt = (T-1)*D`` elements ``i < n_virt``;
the Langevin noise of such an element has the linear index ``b*n_virt + i`` in ``[B, T-1, D]``.

Kernels work on 2-D tiles ``[BP plans, BC in-plan elements]``: large plans get ``BP = 1`` and
chunks of ``BC`` elements, small plans are packed ``BP`` to a tile, so grids stay small and lanes
busy for any ``T*D`` (D not a power of two, D = 1, T = 1). Index arithmetic: plan offsets are int64
(``B*T*D`` may exceed 2^31); in-plan offsets are int32 unless a plan alone holds 2^31 elements
(constexpr ``WIDE``). The helpers ``_energy_tile`` / ``_state_tile`` / ``_flat_tile`` hold all of
it and are checked on huge virtual shapes by ``_index_probe_kernel`` (no 8 GB allocation needed).

Energy reduction is deterministic: each tile writes one partial per plan (no atomics), and when a
plan spans several chunks a second tiny kernel sums its partials in a fixed order.

Noise drawn in-kernel: ``tl.randn(seed, offset)`` (Philox, 10 rounds) with ``offset`` the element's
linear index in ``[B, T-1, D]``; 32-bit offsets while ``B*(T-1)*D < 2^31``, 64-bit beyond (where
32-bit offsets would repeat). Vary ``seed`` per iteration, never the offsets.

Adam follows ``torch.optim.Adam`` (``adam_update_ref``): ``m = lerp(m, g, 1-beta1)``,
``v = beta2 v + (1-beta2) g^2``, ``p += (-lr/bc1) m / (sqrt(v)/sqrt(bc2) + eps)``, with IEEE
``sqrt_rn`` / ``div_rn`` (not the fast approximations) so GPU results track the reference.

Set ``TRITON_INTERPRET=1`` before importing this module to run the kernels on the CPU.
"""

from __future__ import annotations

import math
import os
from typing import Optional

import torch
import triton
import triton.language as tl

__all__ = ["lifted_energy_fwd", "state_step", "action_step", "lifted_energy_state_step"]

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# Elements per program: 2048 over 8 warps on a GPU (8 per thread: 40-130 registers on sm_90, no
# spills; 16 per thread doubled the registers and starved occupancy). Under the interpreter each
# program costs Python overhead, so blocks are as large as numpy handles well.
GPU_BLOCK = 2048
BLOCK = (1 << 16) if INTERPRET else GPU_BLOCK
NUM_WARPS = 8
REDUCE_BLOCK = 1024
_I32 = 2**31

# noise modes (constexpr NOISE)
NOISE_NONE, NOISE_TENSOR, NOISE_PHILOX32, NOISE_PHILOX64 = 0, 1, 2, 3


# ---------------------------------------------------------------------------------------------
# index helpers (shared by the kernels and by the index probe)
# ---------------------------------------------------------------------------------------------


@triton.jit
def _tile(pid, n_chunks, n_plans, n_inner, BP: tl.constexpr, BC: tl.constexpr, WIDE: tl.constexpr):
    """Tile ``pid`` of a ``[n_plans, n_inner]`` space cut in ``[BP, BC]`` tiles, chunk-major per plan block.

    Returns plan indices (int64 ``[BP]``), in-plan indices (``[BC]``, int64 if WIDE else int32),
    their masks and the chunk index.
    """
    pid_p = pid // n_chunks
    pid_c = pid - pid_p * n_chunks
    plans = pid_p.to(tl.int64) * BP + tl.arange(0, BP).to(tl.int64)
    if WIDE:
        inner = pid_c.to(tl.int64) * BC + tl.arange(0, BC).to(tl.int64)
    else:
        inner = pid_c * BC + tl.arange(0, BC)
    return plans, inner, plans < n_plans, inner < n_inner, pid_c


@triton.jit
def _energy_tile(pid, n_chunks, n_plans, n_inner, D, stride_s,
                 BP: tl.constexpr, BC: tl.constexpr, WIDE: tl.constexpr):
    """Offsets of one lifted-energy tile over ``pred [B, T*D]``.

    pred_off: ``pred[b, t, d]``; next_off: ``states[b, t+1, d]``; goal_off: ``states[b, T, d]``;
    row0_off: ``states[b, 0, i]`` (valid where ``row0``); noise_off: ``[B, T-1, D]`` linear index
    (valid where ``virt``, i.e. row t+1 is a virtual state); part_off: this tile's partial energy.
    """
    plans, inner, pmask, imask, pid_c = _tile(pid, n_chunks, n_plans, n_inner, BP, BC, WIDE)
    mask = pmask[:, None] & imask[None, :]
    n_virt = n_inner - D
    pred_off = plans[:, None] * n_inner + inner[None, :]
    s_base = plans[:, None] * stride_s
    next_off = s_base + D + inner[None, :]
    goal_off = s_base + n_inner + (inner % D)[None, :]
    row0_off = s_base + inner[None, :]
    row0 = mask & (inner < D)[None, :]
    virt = mask & (inner < n_virt)[None, :]
    noise_off = plans[:, None] * n_virt + inner[None, :]
    part_off = plans * n_chunks + pid_c
    return pred_off, next_off, goal_off, row0_off, noise_off, part_off, mask, row0, virt, pmask


@triton.jit
def _state_tile(pid, n_chunks, n_plans, n_virt, D, stride_s,
                BP: tl.constexpr, BC: tl.constexpr, WIDE: tl.constexpr):
    """Offsets of one tile over the virtual rows ``states[b, 1..T-1]`` (``n_virt = (T-1)*D`` per plan)."""
    plans, inner, pmask, imask, pid_c = _tile(pid, n_chunks, n_plans, n_virt, BP, BC, WIDE)
    mask = pmask[:, None] & imask[None, :]
    off = plans[:, None] * stride_s + D + inner[None, :]
    noise_off = plans[:, None] * n_virt + inner[None, :]
    return off, noise_off, mask


@triton.jit
def _flat_tile(pid, n, BLOCK: tl.constexpr, WIDE: tl.constexpr):
    """Offsets ``[BLOCK]`` of program ``pid`` over ``n`` contiguous elements."""
    if WIDE:
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    else:
        offs = pid * BLOCK + tl.arange(0, BLOCK)
    return offs, offs < n


# ---------------------------------------------------------------------------------------------
# math helpers
# ---------------------------------------------------------------------------------------------


@triton.jit
def _adam(p, g, m, v, lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step):
    """torch.optim.Adam on registers (the formulas of adam_update_ref); returns (p, m, v)."""
    diff = g - m
    m = tl.where(lerp_w < 0.5, m + lerp_w * diff, g - diff * (1.0 - lerp_w))  # torch.lerp
    v = v * beta2
    v = v + (one_minus_beta2 * g) * g
    denom = tl.div_rn(tl.sqrt_rn(v), sqrt_bc2) + eps
    p = p + tl.div_rn(neg_step * m, denom)
    return p, m, v


@triton.jit
def _add_noise(p, noise_std, noise_ptr, noise_off, mask, seed, NOISE: tl.constexpr):
    """``p + noise_std * xi``: xi from the noise tensor or Philox at the element's linear index."""
    if NOISE == 1:
        xi = tl.load(noise_ptr + noise_off, mask=mask, other=0.0)
        p = p + noise_std * xi
    elif NOISE == 2:
        xi = tl.randn(seed, noise_off.to(tl.int32))
        p = p + noise_std * xi
    elif NOISE == 3:
        xi = tl.randn(seed, noise_off.to(tl.int64))
        p = p + noise_std * xi
    return p


@triton.jit
def _clamp(p, lo, hi):
    """``clamp(p, lo, hi)`` with NaN propagating as in ``torch.clamp`` (+-inf bounds: unbounded)."""
    return tl.minimum(tl.maximum(p, lo, propagate_nan=tl.PropagateNan.ALL), hi, propagate_nan=tl.PropagateNan.ALL)


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _lifted_energy_kernel(
    pred_ptr, states_ptr, energy_ptr, grad_pred_ptr, grad_states_ptr,
    gamma, n_plans, n_inner, D, stride_s, n_chunks,
    BP: tl.constexpr, BC: tl.constexpr, WIDE: tl.constexpr,
):
    """Energy partials, grad_pred and grad_states (zeros on rows 0 and T) in one pass."""
    pid = tl.program_id(0)
    pred_off, next_off, goal_off, row0_off, noise_off, part_off, mask, row0, virt, pmask = _energy_tile(
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


@triton.jit(do_not_specialize=["seed"])
def _lifted_energy_state_step_kernel(
    pred_ptr, states_ptr, energy_ptr, grad_pred_ptr, exp_avg_ptr, exp_avg_sq_ptr, noise_ptr,
    gamma, n_plans, n_inner, D, stride_s, n_chunks,
    lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step, noise_std, seed,
    BP: tl.constexpr, BC: tl.constexpr, WIDE: tl.constexpr, NOISE: tl.constexpr,
):
    """The lifted-energy pass, with the state gradient consumed in registers by the Adam step.

    Row t+1 of a plan is read as s_next only by pred row t, in this same program, so the update in
    place never races with a read of another program (the goal row T is read, never written).
    """
    pid = tl.program_id(0)
    pred_off, next_off, goal_off, row0_off, noise_off, part_off, mask, row0, virt, pmask = _energy_tile(
        pid, n_chunks, n_plans, n_inner, D, stride_s, BP, BC, WIDE)
    p = tl.load(pred_ptr + pred_off, mask=mask, other=0.0).to(tl.float32)
    s = tl.load(states_ptr + next_off, mask=mask, other=0.0)
    g = tl.load(states_ptr + goal_off, mask=mask, other=0.0)
    r = p - s
    q = p - g
    e = tl.sum(r * r + gamma * (q * q), axis=1)
    tl.store(energy_ptr + part_off, e, mask=pmask)
    tl.store(grad_pred_ptr + pred_off, 2.0 * r + (2.0 * gamma) * q, mask=mask)
    m = tl.load(exp_avg_ptr + next_off, mask=virt, other=0.0)
    v = tl.load(exp_avg_sq_ptr + next_off, mask=virt, other=0.0)
    s, m, v = _adam(s, -2.0 * r, m, v, lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step)
    s = _add_noise(s, noise_std, noise_ptr, noise_off, virt, seed, NOISE)
    tl.store(states_ptr + next_off, s, mask=virt)
    tl.store(exp_avg_ptr + next_off, m, mask=virt)
    tl.store(exp_avg_sq_ptr + next_off, v, mask=virt)


@triton.jit
def _sum_partials_kernel(partial_ptr, energy_ptr, n_chunks, BLOCK_R: tl.constexpr):
    """energy[b] = sum of the plan's partials, in a fixed order (deterministic)."""
    b = tl.program_id(0)
    base = b.to(tl.int64) * n_chunks
    acc = tl.zeros([BLOCK_R], dtype=tl.float32)
    for start in range(0, n_chunks, BLOCK_R):
        idx = start + tl.arange(0, BLOCK_R)
        acc += tl.load(partial_ptr + base + idx, mask=idx < n_chunks, other=0.0)
    tl.store(energy_ptr + b, tl.sum(acc, axis=0))


@triton.jit(do_not_specialize=["seed"])
def _state_step_kernel(
    states_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, noise_ptr,
    n_plans, n_virt, D, stride_s, n_chunks,
    lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step, noise_std, seed,
    BP: tl.constexpr, BC: tl.constexpr, WIDE: tl.constexpr, NOISE: tl.constexpr,
):
    """Adam + Langevin noise on rows 1..T-1 of states / exp_avg / exp_avg_sq, in place."""
    pid = tl.program_id(0)
    off, noise_off, mask = _state_tile(pid, n_chunks, n_plans, n_virt, D, stride_s, BP, BC, WIDE)
    p = tl.load(states_ptr + off, mask=mask, other=0.0)
    g = tl.load(grad_ptr + off, mask=mask, other=0.0)
    m = tl.load(exp_avg_ptr + off, mask=mask, other=0.0)
    v = tl.load(exp_avg_sq_ptr + off, mask=mask, other=0.0)
    p, m, v = _adam(p, g, m, v, lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step)
    p = _add_noise(p, noise_std, noise_ptr, noise_off, mask, seed, NOISE)
    tl.store(states_ptr + off, p, mask=mask)
    tl.store(exp_avg_ptr + off, m, mask=mask)
    tl.store(exp_avg_sq_ptr + off, v, mask=mask)


@triton.jit
def _action_step_kernel(
    actions_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, low_ptr, high_ptr,
    n, A, lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step,
    BLOCK: tl.constexpr, WIDE: tl.constexpr,
):
    """Adam then clamp(low[a], high[a]) on actions [B*T*A], in place (NaN propagates as in torch.clamp)."""
    pid = tl.program_id(0)
    offs, mask = _flat_tile(pid, n, BLOCK, WIDE)
    col = offs % A
    p = tl.load(actions_ptr + offs, mask=mask, other=0.0)
    g = tl.load(grad_ptr + offs, mask=mask, other=0.0)
    m = tl.load(exp_avg_ptr + offs, mask=mask, other=0.0)
    v = tl.load(exp_avg_sq_ptr + offs, mask=mask, other=0.0)
    lo = tl.load(low_ptr + col, mask=mask, other=0.0)
    hi = tl.load(high_ptr + col, mask=mask, other=0.0)
    p, m, v = _adam(p, g, m, v, lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step)
    p = _clamp(p, lo, hi)
    tl.store(actions_ptr + offs, p, mask=mask)
    tl.store(exp_avg_ptr + offs, m, mask=mask)
    tl.store(exp_avg_sq_ptr + offs, v, mask=mask)


@triton.jit
def _index_probe_kernel(
    pids_ptr, out_ptr, n_plans, n_inner, D, stride_s, n_chunks,
    BP: tl.constexpr, BC: tl.constexpr, WIDE: tl.constexpr, KIND: tl.constexpr,
):
    """Test hook: evaluates the index helpers for given program ids and stores the offsets (int64).

    KIND 0: _energy_tile -> out[k, 0..4] = pred, next, goal, row0, noise offsets ``[BP, BC]``;
    KIND 1: _state_tile -> out[k, 0..1] = state, noise offsets. No memory of that size is touched.
    """
    k = tl.program_id(0)
    pid = tl.load(pids_ptr + k)
    tile = tl.arange(0, BP)[:, None] * BC + tl.arange(0, BC)[None, :]
    base = out_ptr + k.to(tl.int64) * (5 * BP * BC) + tile
    if KIND == 0:
        pred_off, next_off, goal_off, row0_off, noise_off, part_off, mask, row0, virt, pmask = _energy_tile(
            pid, n_chunks, n_plans, n_inner, D, stride_s, BP, BC, WIDE)
        tl.store(base, pred_off.to(tl.int64))
        tl.store(base + BP * BC, next_off.to(tl.int64))
        tl.store(base + 2 * BP * BC, goal_off.to(tl.int64))
        tl.store(base + 3 * BP * BC, row0_off.to(tl.int64))
        tl.store(base + 4 * BP * BC, noise_off.to(tl.int64))
    else:
        off, noise_off, mask = _state_tile(pid, n_chunks, n_plans, n_inner, D, stride_s, BP, BC, WIDE)
        tl.store(base, off.to(tl.int64))
        tl.store(base + BP * BC, noise_off.to(tl.int64))


# ---------------------------------------------------------------------------------------------
# launch configuration
# ---------------------------------------------------------------------------------------------


def tile_config(n_plans: int, n_inner: int, block: Optional[int] = None) -> tuple[int, int, int]:
    """``(BP, BC, n_chunks)`` for a ``[n_plans, n_inner]`` space (n_inner >= 1)."""
    block = BLOCK if block is None else block
    bc = min(triton.next_power_of_2(max(n_inner, 1)), block)
    bp = max(1, min(block // bc, triton.next_power_of_2(max(n_plans, 1))))
    n_chunks = triton.cdiv(n_inner, bc)
    return bp, bc, n_chunks


def _adam_scalars(step: int, lr: float, beta1: float, beta2: float, eps: float) -> tuple[float, ...]:
    """(lerp weight, beta2, 1 - beta2, sqrt(bc2), eps, -lr / bc1) in double, as adam_update_ref."""
    bias_correction1 = 1.0 - beta1**step
    bias_correction2 = 1.0 - beta2**step
    return (1.0 - beta1, beta2, 1.0 - beta2, math.sqrt(bias_correction2), eps, -lr / bias_correction1)


def _noise_mode(noise_std: float, noise: Optional[torch.Tensor], n_noise: int) -> int:
    if noise_std == 0.0:
        return NOISE_NONE
    if noise is not None:
        return NOISE_TENSOR
    return NOISE_PHILOX32 if n_noise < _I32 else NOISE_PHILOX64


def _check_grid(n_programs: int) -> None:
    if n_programs >= _I32:
        raise ValueError(f"problem too large for one launch ({n_programs} programs)")


def _reduce_into(partials: torch.Tensor, energy: torch.Tensor, n_plans: int, n_chunks: int) -> None:
    _sum_partials_kernel[(n_plans,)](partials, energy, n_chunks, BLOCK_R=REDUCE_BLOCK, num_warps=4)


# ---------------------------------------------------------------------------------------------
# launchers (the provider protocol)
# ---------------------------------------------------------------------------------------------


def lifted_energy_fwd(
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
    wide = stride_s >= _I32
    n_programs = triton.cdiv(n_plans, bp) * n_chunks
    _check_grid(n_programs)
    out = energy if n_chunks == 1 else torch.empty((n_plans, n_chunks), device=energy.device, dtype=torch.float32)
    _lifted_energy_kernel[(n_programs,)](
        pred, states, out, grad_pred, grad_states,
        float(gamma), n_plans, n_inner, dim, stride_s, n_chunks,
        BP=bp, BC=bc, WIDE=wide, num_warps=NUM_WARPS,
    )
    if n_chunks > 1:
        _reduce_into(out, energy, n_plans, n_chunks)


def state_step(
    states: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    noise_std: float,
    noise: Optional[torch.Tensor],
    seed: int,
) -> None:
    """Adam + noise on rows 1..T-1 of states [B,T+1,D] (and the moments), in place."""
    n_plans, rows, dim = states.shape
    n_virt = (rows - 2) * dim
    if n_plans == 0 or n_virt <= 0:
        return
    stride_s = rows * dim
    bp, bc, n_chunks = tile_config(n_plans, n_virt)
    wide = stride_s >= _I32
    mode = _noise_mode(float(noise_std), noise, n_plans * n_virt)
    n_programs = triton.cdiv(n_plans, bp) * n_chunks
    _check_grid(n_programs)
    _state_step_kernel[(n_programs,)](
        states, grad, exp_avg, exp_avg_sq, noise if mode == NOISE_TENSOR else states,
        n_plans, n_virt, dim, stride_s, n_chunks,
        *_adam_scalars(step, lr, beta1, beta2, eps), float(noise_std), int(seed),
        BP=bp, BC=bc, WIDE=wide, NOISE=mode, num_warps=NUM_WARPS,
    )


def action_step(
    actions: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    low: torch.Tensor,
    high: torch.Tensor,
) -> None:
    """Adam then clamp to low/high (float32 [A], +-inf where unbounded) on actions [B,T,A], in place."""
    n = actions.numel()
    if n == 0:
        return
    block = BLOCK
    n_programs = triton.cdiv(n, block)
    _check_grid(n_programs)
    _action_step_kernel[(n_programs,)](
        actions, grad, exp_avg, exp_avg_sq, low, high,
        n, actions.shape[-1], *_adam_scalars(step, lr, beta1, beta2, eps),
        BLOCK=block, WIDE=n + block >= _I32, num_warps=NUM_WARPS,
    )


def lifted_energy_state_step(
    pred: torch.Tensor,
    states: torch.Tensor,
    gamma: float,
    energy: torch.Tensor,
    grad_pred: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    noise_std: float,
    noise: Optional[torch.Tensor],
    seed: int,
) -> None:
    """Fused lifted_energy_fwd (from the states before the update) + state_step (gradient in registers)."""
    n_plans, rows, dim = states.shape
    n_inner = (rows - 1) * dim
    if n_plans == 0:
        return
    if n_inner == 0:
        energy.zero_()
        return
    stride_s = rows * dim
    bp, bc, n_chunks = tile_config(n_plans, n_inner)
    wide = stride_s >= _I32
    mode = _noise_mode(float(noise_std), noise, n_plans * (rows - 2) * dim)
    n_programs = triton.cdiv(n_plans, bp) * n_chunks
    _check_grid(n_programs)
    out = energy if n_chunks == 1 else torch.empty((n_plans, n_chunks), device=energy.device, dtype=torch.float32)
    _lifted_energy_state_step_kernel[(n_programs,)](
        pred, states, out, grad_pred, exp_avg, exp_avg_sq, noise if mode == NOISE_TENSOR else states,
        float(gamma), n_plans, n_inner, dim, stride_s, n_chunks,
        *_adam_scalars(step, lr, beta1, beta2, eps), float(noise_std), int(seed),
        BP=bp, BC=bc, WIDE=wide, NOISE=mode, num_warps=NUM_WARPS,
    )
    if n_chunks > 1:
        _reduce_into(out, energy, n_plans, n_chunks)


# ---------------------------------------------------------------------------------------------
# test hooks
# ---------------------------------------------------------------------------------------------


def probe_offsets(
    kind: str,
    n_plans: int,
    rows: int,
    dim: int,
    pids: list[int],
    block: int = 64,
) -> tuple[torch.Tensor, tuple[int, int, int, bool]]:
    """Offsets computed by the kernels' index helpers for programs ``pids`` of a (virtual) problem.

    ``kind`` "energy" (pred [B, rows-1, dim]) or "state" (virtual rows of states [B, rows, dim]).
    Returns ``(out [len(pids), 5, BP, BC] int64, (BP, BC, n_chunks, WIDE))``; nothing of the
    problem's size is allocated, so shapes with B*T*D far beyond 2^31 can be checked on any machine.
    """
    stride_s = rows * dim
    n_inner = (rows - 1) * dim if kind == "energy" else (rows - 2) * dim
    bp, bc, n_chunks = tile_config(n_plans, n_inner, block=block)
    wide = stride_s >= _I32
    pid_tensor = torch.tensor(pids, dtype=torch.int32, device="cuda" if not INTERPRET else "cpu")
    out = torch.full((len(pids), 5, bp, bc), -1, dtype=torch.int64, device=pid_tensor.device)
    _index_probe_kernel[(len(pids),)](
        pid_tensor, out, n_plans, n_inner, dim, stride_s, n_chunks,
        BP=bp, BC=bc, WIDE=wide, KIND=0 if kind == "energy" else 1,
    )
    return out.cpu(), (bp, bc, n_chunks, wide)


def lowering_specs() -> list[dict]:
    """Each kernel in representative configurations, for an ahead-of-time compile for sm_90.

    Returns dicts with ``name``, ``fn``, ``signature``, ``constexprs``, ``attrs`` (``tt.divisibility``
    hints as the JIT would give them: pointers always 16-aligned, sizes when ``D % 16 == 0``) and
    ``num_warps``; compile with ``triton.compile(ASTSource(fn, signature, constexprs, attrs),
    target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})``.
    """
    i32, i64, f32, cx = "i32", "i64", "fp32", "constexpr"
    adam = {"lerp_w": f32, "beta2": f32, "one_minus_beta2": f32, "sqrt_bc2": f32, "eps": f32, "neg_step": f32}
    size_names = ("n_inner", "n_virt", "D", "stride_s", "n", "A")

    def spec(name, fn, signature, constexprs, aligned, num_warps=NUM_WARPS):
        attrs = {}
        for i, (arg, kind) in enumerate(signature.items()):
            if kind.startswith("*") or (aligned and arg in size_names):
                attrs[(i,)] = [["tt.divisibility", 16]]
        return {"name": name, "fn": fn, "signature": signature, "constexprs": constexprs, "attrs": attrs,
                "num_warps": num_warps}

    def energy_sig(pred_t, idx):
        return {"pred_ptr": pred_t, "states_ptr": "*fp32", "energy_ptr": "*fp32", "grad_pred_ptr": "*fp32",
                "grad_states_ptr": "*fp32", "gamma": f32, "n_plans": i32, "n_inner": idx, "D": idx,
                "stride_s": idx, "n_chunks": i32, "BP": cx, "BC": cx, "WIDE": cx}

    def fused_sig(pred_t):
        return {"pred_ptr": pred_t, "states_ptr": "*fp32", "energy_ptr": "*fp32", "grad_pred_ptr": "*fp32",
                "exp_avg_ptr": "*fp32", "exp_avg_sq_ptr": "*fp32", "noise_ptr": "*fp32", "gamma": f32,
                "n_plans": i32, "n_inner": i32, "D": i32, "stride_s": i32, "n_chunks": i32, **adam,
                "noise_std": f32, "seed": i64, "BP": cx, "BC": cx, "WIDE": cx, "NOISE": cx}

    state_sig = {"states_ptr": "*fp32", "grad_ptr": "*fp32", "exp_avg_ptr": "*fp32", "exp_avg_sq_ptr": "*fp32",
                 "noise_ptr": "*fp32", "n_plans": i32, "n_virt": i32, "D": i32, "stride_s": i32, "n_chunks": i32,
                 **adam, "noise_std": f32, "seed": i64, "BP": cx, "BC": cx, "WIDE": cx, "NOISE": cx}
    big = {"BP": 1, "BC": GPU_BLOCK}
    specs = []
    for aligned in (True, False):
        tag = "D%16==0" if aligned else "D odd"
        specs.append(spec(f"lifted_energy f32 {tag}", _lifted_energy_kernel, energy_sig("*fp32", i32),
                          {**big, "WIDE": False}, aligned))
        specs.append(spec(f"lifted_energy bf16 {tag}", _lifted_energy_kernel, energy_sig("*bf16", i32),
                          {**big, "WIDE": False}, aligned))
        for mode, label in ((NOISE_TENSOR, "noise tensor"), (NOISE_PHILOX32, "philox")):
            specs.append(spec(f"state_step {label} {tag}", _state_step_kernel, state_sig,
                              {**big, "WIDE": False, "NOISE": mode}, aligned))
            specs.append(spec(f"lifted_energy_state_step f32 {label} {tag}", _lifted_energy_state_step_kernel,
                              fused_sig("*fp32"), {**big, "WIDE": False, "NOISE": mode}, aligned))
    specs.append(spec("lifted_energy f32 wide (plan >= 2^31 elements)", _lifted_energy_kernel,
                      energy_sig("*fp32", i64), {**big, "WIDE": True}, False))
    specs.append(spec("lifted_energy f32 small plans (BP=64, BC=32)", _lifted_energy_kernel,
                      energy_sig("*fp32", i32), {"BP": 64, "BC": 32, "WIDE": False}, False))
    specs.append(spec("state_step philox64 (B*(T-1)*D >= 2^31)", _state_step_kernel, state_sig,
                      {**big, "WIDE": False, "NOISE": NOISE_PHILOX64}, True))
    specs.append(spec("lifted_energy_state_step bf16 philox", _lifted_energy_state_step_kernel, fused_sig("*bf16"),
                      {**big, "WIDE": False, "NOISE": NOISE_PHILOX32}, True))
    specs.append(spec("sum_partials", _sum_partials_kernel,
                      {"partial_ptr": "*fp32", "energy_ptr": "*fp32", "n_chunks": i32, "BLOCK_R": cx},
                      {"BLOCK_R": REDUCE_BLOCK}, False, num_warps=4))
    action_sig = {"actions_ptr": "*fp32", "grad_ptr": "*fp32", "exp_avg_ptr": "*fp32", "exp_avg_sq_ptr": "*fp32",
                  "low_ptr": "*fp32", "high_ptr": "*fp32", "n": i32, "A": i32, **adam, "BLOCK": cx, "WIDE": cx}
    specs.append(spec("action_step", _action_step_kernel, action_sig, {"BLOCK": GPU_BLOCK, "WIDE": False}, False))
    specs.append(spec("action_step wide", _action_step_kernel, {**action_sig, "n": i64},
                      {"BLOCK": GPU_BLOCK, "WIDE": True}, False))
    return specs
