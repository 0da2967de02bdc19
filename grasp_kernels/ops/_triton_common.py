"""Triton helpers shared by the op kernels: tiling and index arithmetic, Adam, noise, clamp, and the
deterministic sum of per-chunk energy partials.

Launch protocol of every op's ``triton_kernel.launch`` (and ``cuda_launch.launch``): the op body
(``op.py``) has validated every argument; tensors are contiguous, outputs preallocated, the launch
returns None and runs on the current stream of the tensors' device.

Layout. A plan ``b`` of ``pred [B, T, D]`` is ``n_inner = T*D`` contiguous elements; element ``i``
of plan ``b`` is ``pred[b, t, d]`` with ``i = t*D + d``. Its ``s_next = states[b, t+1, d]`` sits at
``b*(T+1)*D + D + i`` and its goal element ``states[b, T, d]`` at ``b*(T+1)*D + T*D + i % D``.
The virtual rows ``1..T-1`` of plan ``b`` are the ``n_virt = (T-1)*D`` elements ``i < n_virt``;
the Langevin noise of such an element has the linear index ``b*n_virt + i`` in ``[B, T-1, D]``.

Kernels work on 2-D tiles ``[BP plans, BC in-plan elements]``: large plans get ``BP = 1`` and
chunks of ``BC`` elements, small plans are packed ``BP`` to a tile, so grids stay small and lanes
busy for any ``T*D`` (D not a power of two, D = 1, T = 1). Index arithmetic: plan offsets are int64
(``B*T*D`` may exceed 2^31); in-plan offsets are int32 unless a plan alone holds 2^31 elements
(constexpr ``WIDE``). The helpers ``energy_tile`` / ``state_tile`` / ``flat_tile`` hold all of
it; the tests check them on huge virtual shapes with a probe kernel (no 8 GB allocation needed).

Energy reduction is deterministic: each tile writes one partial per plan (no atomics), and when a
plan spans several chunks a second tiny kernel sums its partials in a fixed order.

Noise drawn in-kernel: ``tl.randn(seed, offset)`` (Philox, 10 rounds) with ``offset`` the element's
linear index in ``[B, T-1, D]``; 32-bit offsets while ``B*(T-1)*D < 2^31``, 64-bit beyond (where
32-bit offsets would repeat). Vary ``seed`` per iteration, never the offsets.

Adam follows ``torch.optim.Adam`` (``adam_update_ref``): ``m = lerp(m, g, 1-beta1)``,
``v = beta2 v + (1-beta2) g^2``, ``p += (-lr/bc1) m / (sqrt(v)/sqrt(bc2) + eps)``, with IEEE
``sqrt_rn`` / ``div_rn`` (not the fast approximations) so GPU results track the reference.

Set ``TRITON_INTERPRET=1`` before importing any kernel module to run the kernels on the CPU.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Optional

import torch
import triton
import triton.language as tl

from ._params import AdamHyper, NoiseCounters

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# Elements per program: 2048 over 8 warps on a GPU (8 per thread: 40-130 registers on sm_90, no
# spills; 16 per thread doubled the registers and starved occupancy). Under the interpreter each
# program costs Python overhead, so blocks are as large as numpy handles well.
GPU_BLOCK = 2048
BLOCK = (1 << 16) if INTERPRET else GPU_BLOCK
NUM_WARPS = 8
REDUCE_BLOCK = 1024
I32 = 2**31

# noise modes (constexpr NOISE)
NOISE_NONE, NOISE_TENSOR, NOISE_PHILOX32, NOISE_PHILOX64 = 0, 1, 2, 3


@triton.jit
def plan_tile(pid, n_chunks, n_plans, n_inner, BP: tl.constexpr, BC: tl.constexpr, WIDE: tl.constexpr):
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
def energy_tile(pid, n_chunks, n_plans, n_inner, D, stride_s, noise_base, noise_stride,
                 BP: tl.constexpr, BC: tl.constexpr, WIDE: tl.constexpr):
    """Offsets of one lifted-energy tile over ``pred [B, T*D]``.

    pred_off: ``pred[b, t, d]``; next_off: ``states[b, t+1, d]``; goal_off: ``states[b, T, d]``;
    row0_off: ``states[b, 0, i]`` (valid where ``row0``); noise_off: ``noise_base + b * noise_stride
    + t*D + d`` (:func:`noise_layout`; valid where ``virt``, i.e. row t+1 is a virtual state);
    part_off: this tile's partial energy.
    """
    plans, inner, pmask, imask, pid_c = plan_tile(pid, n_chunks, n_plans, n_inner, BP, BC, WIDE)
    mask = pmask[:, None] & imask[None, :]
    n_virt = n_inner - D
    pred_off = plans[:, None] * n_inner + inner[None, :]
    s_base = plans[:, None] * stride_s
    next_off = s_base + D + inner[None, :]
    goal_off = s_base + n_inner + (inner % D)[None, :]
    row0_off = s_base + inner[None, :]
    row0 = mask & (inner < D)[None, :]
    virt = mask & (inner < n_virt)[None, :]
    noise_off = noise_base + plans[:, None] * noise_stride + inner[None, :]
    part_off = plans * n_chunks + pid_c
    return pred_off, next_off, goal_off, row0_off, noise_off, part_off, mask, row0, virt, pmask


@triton.jit
def state_tile(pid, n_chunks, n_plans, n_virt, D, stride_s, noise_base, noise_stride,
                BP: tl.constexpr, BC: tl.constexpr, WIDE: tl.constexpr):
    """Offsets of one tile over the virtual rows ``states[b, 1..T-1]`` (``n_virt = (T-1)*D`` per plan);
    noise offsets as :func:`energy_tile`."""
    plans, inner, pmask, imask, pid_c = plan_tile(pid, n_chunks, n_plans, n_virt, BP, BC, WIDE)
    mask = pmask[:, None] & imask[None, :]
    off = plans[:, None] * stride_s + D + inner[None, :]
    noise_off = noise_base + plans[:, None] * noise_stride + inner[None, :]
    return off, noise_off, mask


@triton.jit
def flat_tile(pid, n, BLOCK: tl.constexpr, WIDE: tl.constexpr):
    """Offsets ``[BLOCK]`` of program ``pid`` over ``n`` contiguous elements."""
    if WIDE:
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    else:
        offs = pid * BLOCK + tl.arange(0, BLOCK)
    return offs, offs < n


@triton.jit
def adam(p, g, m, v, lerp_w, beta2, one_minus_beta2, sqrt_bc2, eps, neg_step):
    """torch.optim.Adam on registers (the formulas of adam_update_ref); returns (p, m, v)."""
    diff = g - m
    m = tl.where(lerp_w < 0.5, m + lerp_w * diff, g - diff * (1.0 - lerp_w))  # torch.lerp
    v = v * beta2
    v = v + (one_minus_beta2 * g) * g
    denom = tl.div_rn(tl.sqrt_rn(v), sqrt_bc2) + eps
    p = p + tl.div_rn(neg_step * m, denom)
    return p, m, v


@triton.jit
def add_noise(p, noise_std, noise_ptr, noise_off, mask, seed, NOISE: tl.constexpr):
    """``p + noise_std * xi``: xi from the noise tensor at ``noise_off`` or Philox at counter ``noise_off``
    (:func:`noise_layout`)."""
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
def clamp(p, lo, hi):
    """``clamp(p, lo, hi)`` with NaN propagating as in ``torch.clamp`` (+-inf bounds: unbounded)."""
    return tl.minimum(tl.maximum(p, lo, propagate_nan=tl.PropagateNan.ALL), hi, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def energy_pass(pred_ptr, states_ptr, energy_ptr, grad_pred_ptr, gamma, pred_off, next_off, goal_off, part_off, mask,
                pmask):
    """The lifted energy of one tile: stores the plan partials and ``grad_pred = 2 r + 2 gamma q``;
    returns ``(s_next, r)`` with ``r = p - s_next`` (the state gradient is ``-2 r``)."""
    p = tl.load(pred_ptr + pred_off, mask=mask, other=0.0).to(tl.float32)
    s = tl.load(states_ptr + next_off, mask=mask, other=0.0)
    g = tl.load(states_ptr + goal_off, mask=mask, other=0.0)
    r = p - s
    q = p - g
    e = tl.sum(r * r + gamma * (q * q), axis=1)
    tl.store(energy_ptr + part_off, e, mask=pmask)
    tl.store(grad_pred_ptr + pred_off, 2.0 * r + (2.0 * gamma) * q, mask=mask)
    return s, r


@triton.jit
def sum_partials_kernel(partial_ptr, energy_ptr, n_chunks, BLOCK_R: tl.constexpr):
    """energy[b] = sum of the plan's partials, in a fixed order (deterministic)."""
    b = tl.program_id(0)
    base = b.to(tl.int64) * n_chunks
    acc = tl.zeros([BLOCK_R], dtype=tl.float32)
    for start in range(0, n_chunks, BLOCK_R):
        idx = start + tl.arange(0, BLOCK_R)
        acc += tl.load(partial_ptr + base + idx, mask=idx < n_chunks, other=0.0)
    tl.store(energy_ptr + b, tl.sum(acc, axis=0))


# host side


def tile_config(n_plans: int, n_inner: int, block: Optional[int] = None) -> tuple[int, int, int]:
    """``(BP, BC, n_chunks)`` for a ``[n_plans, n_inner]`` space (n_inner >= 1)."""
    block = BLOCK if block is None else block
    bc = min(triton.next_power_of_2(max(n_inner, 1)), block)
    bp = max(1, min(block // bc, triton.next_power_of_2(max(n_plans, 1))))
    n_chunks = triton.cdiv(n_inner, bc)
    return bp, bc, n_chunks


def adam_scalars(step: int, adam: AdamHyper) -> tuple[float, ...]:
    """(lerp weight, beta2, 1 - beta2, sqrt(bc2), eps, -lr / bc1) of Adam step ``step`` in double, as
    adam_update_ref."""
    lr, beta1, beta2, eps = adam.flat()
    bias_correction1 = 1.0 - beta1**step
    bias_correction2 = 1.0 - beta2**step
    return (1.0 - beta1, beta2, 1.0 - beta2, math.sqrt(bias_correction2), eps, -lr / bias_correction1)


def noise_mode(noise_std: float, noise: Optional[torch.Tensor], n_noise: int) -> int:
    """The constexpr NOISE of a launch; ``n_noise``: one past the largest noise offset it reads."""
    if noise_std == 0.0:
        return NOISE_NONE
    if noise is not None:
        return NOISE_TENSOR
    return NOISE_PHILOX32 if n_noise < I32 else NOISE_PHILOX64


def noise_layout(
    noise_std: float, noise: Optional[torch.Tensor], n_plans: int, n_virt: int, counters: NoiseCounters
) -> tuple[int, int, int, int]:
    """``(NOISE, seed, base, row stride)`` of a launch over ``n_plans`` plans of ``n_virt = (T-1)*D`` noisy
    elements: element ``(b, i)`` reads the noise tensor at ``b * n_virt + i`` or draws Philox at
    counter ``counters.base + b * counters.stride + i`` (:mod:`grasp_kernels.randomness`; stride None:
    ``n_virt``) with key ``counters.seed``."""
    seed = int(counters.seed)
    if noise is not None or noise_std == 0.0:
        return noise_mode(noise_std, noise, n_plans * n_virt), seed, 0, n_virt
    stride = n_virt if counters.stride is None else counters.stride
    last = counters.base + max(n_plans - 1, 0) * stride + n_virt
    return noise_mode(noise_std, noise, last), seed, counters.base, stride


def check_grid(n_programs: int) -> None:
    if n_programs >= I32:
        raise ValueError(f"problem too large for one launch ({n_programs} programs)")


def reduce_into(partials: torch.Tensor, energy: torch.Tensor, n_plans: int, n_chunks: int) -> None:
    sum_partials_kernel[(n_plans,)](partials, energy, n_chunks, BLOCK_R=REDUCE_BLOCK, num_warps=4)


@dataclasses.dataclass(frozen=True)
class EnergyGrid:
    """The launch of an energy kernel over ``pred [B, T, D]``: tiles, programs, and where the plan
    partials go (``energy`` itself when a plan fits one chunk, else a ``[B, n_chunks]`` buffer)."""

    n_plans: int
    n_inner: int
    dim: int
    stride_s: int
    bp: int
    bc: int
    n_chunks: int
    wide: bool
    n_programs: int
    partials: torch.Tensor

    def reduce_into(self, energy: torch.Tensor) -> None:
        """Sum a multi-chunk launch's partials into ``energy`` (a no-op for one chunk)."""
        if self.n_chunks > 1:
            reduce_into(self.partials, energy, self.n_plans, self.n_chunks)


def energy_grid(states: torch.Tensor, energy: torch.Tensor) -> Optional[EnergyGrid]:
    """The grid of an energy kernel for ``states [B, T+1, D]``, or None when there is nothing to launch
    (no plans; or ``T*D = 0``, where ``energy`` is zeroed)."""
    n_plans, rows, dim = states.shape
    n_inner = (rows - 1) * dim
    if n_plans == 0:
        return None
    if n_inner == 0:
        energy.zero_()
        return None
    bp, bc, n_chunks = tile_config(n_plans, n_inner)
    n_programs = triton.cdiv(n_plans, bp) * n_chunks
    check_grid(n_programs)
    partials = energy if n_chunks == 1 else torch.empty((n_plans, n_chunks), device=energy.device, dtype=torch.float32)
    return EnergyGrid(n_plans, n_inner, dim, rows * dim, bp, bc, n_chunks, rows * dim >= I32, n_programs, partials)
