"""The Triton kernels' tiling and index arithmetic (grasp_kernels/ops/_triton_common.py), shared by
every op: small blocks (plans split in chunks, or packed several per tile) for the energy, state step
and fused ops, and the index helpers on huge virtual shapes through the probe kernel of
tests/_triton_probe.py (CPU: TRITON_INTERPRET=1 set by conftest).
"""

from __future__ import annotations

import pytest

from _kernels import DEVICE
from _triton_checks import check_fused, check_lifted_energy, check_state_step
from grasp_kernels.backends import backend_unavailable_reason

# CPU Triton tests: skipped by conftest where Triton cannot run on CPU tensors
CPU_TRITON_REASON = backend_unavailable_reason("triton", DEVICE)


@pytest.mark.parametrize(
    "block,B,T,D",
    [(256, 2, 64, 20), (32, 5, 7, 3), (64, 5, 7, 3), (32, 1, 2, 1000), (16, 5, 1, 1), (64, 5, 3, 5)],
)
def test_tilings(monkeypatch, block, B, T, D):
    """Small blocks: plans split into many chunks (two-pass energy) or packed several per tile."""
    from grasp_kernels.ops import _triton_common as tc

    monkeypatch.setattr(tc, "BLOCK", block)
    bp, bc, n_chunks = tc.tile_config(B, T * D)
    assert bp * bc <= block
    check_lifted_energy(B, T, D)
    check_state_step(B, T, D)
    check_fused(B, T, D)


@pytest.mark.parametrize(
    "kind,B,rows,D",
    [
        ("energy", 2**20, 65, 129),  # B*T*D ~ 8.7e9 > 2^32, each plan small: int64 plan offsets
        ("energy", 3, 65, 2**26 + 3),  # one plan > 2^31 elements: WIDE in-plan offsets
        ("state", 2**20, 65, 129),
        ("state", 3, 65, 2**26 + 3),
        ("energy", 2**30, 3, 5),  # several small plans packed per tile
    ],
)
def test_index_arithmetic_beyond_int32(kind, B, rows, D):
    """The kernels' own index helpers, evaluated for the last programs of huge virtual problems."""
    from _triton_probe import probe_offsets
    from grasp_kernels.ops._triton_common import tile_config

    T = rows - 1
    n_inner = T * D if kind == "energy" else (T - 1) * D
    bp, bc, n_chunks = tile_config(B, n_inner, block=64)
    n_programs = -(-B // bp) * n_chunks
    pids = [0, n_programs // 2 + 1, n_programs - 1]
    out, (bp, bc, n_chunks, wide) = probe_offsets(kind, B, rows, D, pids, block=64)
    assert wide == (rows * D >= 2**31)
    for k, pid in enumerate(pids):
        pid_p, pid_c = divmod(pid, n_chunks)
        for r, c in ((0, 0), (bp - 1, bc - 1), (bp // 2, bc // 3)):
            b, i = pid_p * bp + r, pid_c * bc + c
            if kind == "energy":
                expected = [b * n_inner + i, b * rows * D + D + i, b * rows * D + T * D + i % D, b * rows * D + i,
                            b * (T - 1) * D + i]
            else:
                expected = [b * rows * D + D + i, b * (T - 1) * D + i]
            got = out[k, : len(expected), r, c].tolist()
            assert got == expected, (pid, r, c, got, expected)
    assert max(expected) > 2**32
