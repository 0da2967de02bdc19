"""Test hook (moved out of the package): the Triton index helpers of ``grasp_kernels.ops._triton_common``
(``energy_tile``, ``state_tile``) evaluated for given program ids of huge virtual problems, without
allocating them, so shapes with ``B*T*D`` far beyond 2^31 can be checked on any machine.

Import after conftest has set ``TRITON_INTERPRET`` (the kernel below is defined at import).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from grasp_kernels.ops._triton_common import I32, INTERPRET, energy_tile, state_tile, tile_config


@triton.jit
def _index_probe_kernel(
    pids_ptr, out_ptr, n_plans, n_inner, D, stride_s, n_chunks,
    BP: tl.constexpr, BC: tl.constexpr, WIDE: tl.constexpr, KIND: tl.constexpr,
):
    """Evaluates the index helpers for given program ids and stores the offsets (int64).

    KIND 0: energy_tile -> out[k, 0..4] = pred, next, goal, row0, noise offsets ``[BP, BC]``;
    KIND 1: state_tile -> out[k, 0..1] = state, noise offsets. No memory of that size is touched.
    """
    k = tl.program_id(0)
    pid = tl.load(pids_ptr + k)
    tile = tl.arange(0, BP)[:, None] * BC + tl.arange(0, BC)[None, :]
    base = out_ptr + k.to(tl.int64) * (5 * BP * BC) + tile
    if KIND == 0:
        pred_off, next_off, goal_off, row0_off, noise_off, part_off, mask, row0, virt, pmask = energy_tile(
            pid, n_chunks, n_plans, n_inner, D, stride_s, 0, n_inner - D, BP, BC, WIDE)  # default noise layout
        tl.store(base, pred_off.to(tl.int64))
        tl.store(base + BP * BC, next_off.to(tl.int64))
        tl.store(base + 2 * BP * BC, goal_off.to(tl.int64))
        tl.store(base + 3 * BP * BC, row0_off.to(tl.int64))
        tl.store(base + 4 * BP * BC, noise_off.to(tl.int64))
    else:
        off, noise_off, mask = state_tile(pid, n_chunks, n_plans, n_inner, D, stride_s, 0, n_inner, BP, BC, WIDE)
        tl.store(base, off.to(tl.int64))
        tl.store(base + BP * BC, noise_off.to(tl.int64))


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
    Returns ``(out [len(pids), 5, BP, BC] int64, (BP, BC, n_chunks, WIDE))``.
    """
    stride_s = rows * dim
    n_inner = (rows - 1) * dim if kind == "energy" else (rows - 2) * dim
    bp, bc, n_chunks = tile_config(n_plans, n_inner, block=block)
    wide = stride_s >= I32
    pid_tensor = torch.tensor(pids, dtype=torch.int32, device="cuda" if not INTERPRET else "cpu")
    out = torch.full((len(pids), 5, bp, bc), -1, dtype=torch.int64, device=pid_tensor.device)
    _index_probe_kernel[(len(pids),)](
        pid_tensor, out, n_plans, n_inner, dim, stride_s, n_chunks,
        BP=bp, BC=bc, WIDE=wide, KIND=0 if kind == "energy" else 1,
    )
    return out.cpu(), (bp, bc, n_chunks, wide)
