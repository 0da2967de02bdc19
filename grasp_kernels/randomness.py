"""Shard-invariant randomness: a plan's random numbers depend on the seed and the plan's own index
(its position in the global batch), never on how plans are batched or split across ranks.

- GRASP's state noise and initial noise are keyed by counters: element ``(chain c, row t, component
  d)`` of an iteration's noise ``[B*K, T-1, D]`` is the normal ``philox_normal(seed_it, c*(T-1)*D +
  (t-1)*D + d)``, with ``c`` the chain's global index (``plan_index * K + k``). The Triton kernels
  draw exactly this stream in-kernel (``tl.randn(seed, counter)``); :func:`philox_normal` is the
  same function in PyTorch (the reference backend and the initial states), equal to the Triton stream
  up to the last bits of ``log``/``cos``. The CUDA kernels use the same counters with curand's
  Philox layout (4 normals per counter group; a different stream of the same distribution).
- The sampling baselines (CEM, MPPI) draw from one generator per plan, seeded by
  :func:`plan_seed` (``seed``, plan index): batching B plans costs B small draws per iteration instead
  of one, negligible next to the world-model calls.
"""

from __future__ import annotations

from typing import Sequence

import torch

_MASK32 = 0xFFFFFFFF
_MASK64 = (1 << 64) - 1
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85


def plan_seed(seed: int, index: int, stream: int = 0) -> int:
    """A 63-bit seed for plan ``index`` of a run seeded with ``seed`` (``stream`` separates independent
    uses): splitmix64 of the three, so neighbouring plans get unrelated seeds."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(index) * 0xBF58476D1CE4E5B9 + int(stream) * 0x94D049BB133111EB) & _MASK64
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        x = ((x ^ (x >> shift)) * mult) & _MASK64
    return (x ^ (x >> 31)) >> 1


def plan_generators(seed: int, first: int, count: int, device: torch.device, stream: int = 0) -> list[torch.Generator]:
    """One generator per plan ``first .. first + count - 1`` (:func:`plan_seed`)."""
    return [torch.Generator(device=device).manual_seed(plan_seed(seed, first + i, stream)) for i in range(count)]


def per_plan_normal(
    generators: Sequence[torch.Generator], shape: Sequence[int], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """``[len(generators), *shape]`` standard normals, row ``i`` drawn from ``generators[i]``."""
    return torch.stack([torch.randn(tuple(shape), generator=g, device=device, dtype=dtype) for g in generators])


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hi, lo)`` 32-bit words of ``a * b`` for a 32-bit constant ``a`` and uint32 values ``b`` held in
    int64 (split into 16-bit halves so that no int64 product overflows)."""
    b_lo, b_hi = b & 0xFFFF, b >> 16
    low = a * b_lo  # < 2**48
    high = a * b_hi  # < 2**48; the product is high * 2**16 + low
    lo = (low + ((high & 0xFFFF) << 16)) & _MASK32
    hi = (high + (low >> 16)) >> 16
    return hi & _MASK32, lo


def philox_normal(seed: int, counters: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normals at ``counters`` (int64, any shape, values in [0, 2**63)) for a seed in
    [0, 2**63): Philox4x32-10 with key ``(lo(seed), hi(seed))`` on the counter ``(lo(c), hi(c), 0, 0)``,
    its first two words mapped to uniforms and Box-Muller'd, as Triton's ``tl.randn(seed, c)``."""
    if counters.dtype != torch.int64:
        raise TypeError(f"counters must be int64, got {counters.dtype}")
    c0, c1 = counters & _MASK32, (counters >> 32) & _MASK32
    c2 = torch.zeros_like(counters)
    c3 = torch.zeros_like(counters)
    k0, k1 = int(seed) & _MASK32, (int(seed) >> 32) & _MASK32
    for _ in range(10):
        hi_b, lo_b = _mulhilo(_ROUND_B, c2)
        hi_a, lo_a = _mulhilo(_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _KEY_A) & _MASK32, (k1 + _KEY_B) & _MASK32
    u1, u2 = _uniform(c0), _uniform(c1)
    radius = torch.sqrt(-2.0 * torch.log(torch.clamp(u1, min=1.0e-7)))
    return (radius * torch.cos(6.283185307179586 * u2)).to(dtype)


def _uniform(word: torch.Tensor) -> torch.Tensor:
    """Triton's ``uint_to_uniform_float`` of a uint32 word: as int32, negatives flipped, times 2**-31."""
    signed = torch.where(word >= 1 << 31, word - (1 << 32), word)
    signed = torch.where(signed < 0, -signed - 1, signed)
    return signed.to(torch.float32) * 4.6566127342e-10


def noise_counters(
    chain_offset: int, chains: int, rows: int, dim: int, row_stride: int, row_offset: int = 0, device=None
) -> torch.Tensor:
    """The counters ``[chains, rows, dim]`` of noise rows: element ``(c, t, d)`` is
    ``(chain_offset + c) * row_stride + (row_offset + t) * dim + d`` (``row_stride = (T-1) * D`` of
    the whole horizon; ``row_offset``: the first row's index among the T-1 noisy rows)."""
    c = torch.arange(chain_offset, chain_offset + chains, device=device, dtype=torch.int64).view(-1, 1, 1)
    t = torch.arange(row_offset, row_offset + rows, device=device, dtype=torch.int64).view(1, -1, 1)
    d = torch.arange(dim, device=device, dtype=torch.int64).view(1, 1, -1)
    return c * row_stride + t * dim + d
