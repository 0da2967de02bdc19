"""Triton pieces of the fused MLPDynamics kernels (``fused_mlp_iteration_``, ``fused_mlp_sync_step_``):
the MLP forward, its backward to the inputs, and the choice between the two variants.

The model is the packed layout of :mod:`.fused_mlp_iteration.pack` (``W^T`` matrices ``[in, out]`` in
float32 or bfloat16, float32 vectors). Every product goes through :func:`mm`: matrix inputs in the
matrix dtype, float32 accumulation (IEEE for float32).

Two variants, chosen by the padded hidden width ``HP``:

- Register variant (``HP <= NARROW_MAX_HIDDEN``): the pre-activations ``z_l [BM, HP]`` stay in
  registers through the backward; each weight matrix is read twice per tile (``W^T`` for the forward,
  its transpose for the backward: cheaper than keeping the forward's tile live).
- Wide variant (``HP > NARROW_MAX_HIDDEN``): every layer is a blocked matmul over ``[BM, BH] x [BH, BH]``
  blocks and the pre-activations go to a per-program scratch of ``DEPTH x [BM, HP]`` float32; the
  backward overwrites them with their gradients, layer by layer (each element by the thread that read
  it; a CTA barrier between layers, because the next layer reads blocks other threads wrote). Whole
  ``[HP, HP]`` weight tiles and ``[BM, HP]`` activations do not fit in registers (nor the ``tl.dot``
  operands in shared memory: 1 MB at H = 512 float32) at the usual 256-1024 widths; Triton has no
  shared-memory scratch, and ``[BM, HP]`` would not fit there anyway (64 x 1024 x 4 B = 256 KB per
  layer). ``HP`` is H rounded up to a multiple of ``BH`` (not to a power of two). Programs are persistent (a few per SM, each
  looping over tiles), so the scratch stays ``programs x DEPTH x BM x HP x 4`` bytes.

``NARROW_MAX_HIDDEN`` and ``WIDE_BLOCK`` are set from the sm_90 lowering check (``ptxas -v``,
tests/test_lowering.py, with triton 3.9 and 3.6): the register variant spills from padded width 48-64 on
(1.2-26 KB per thread at 16-64 rows), the blocked one with 32-wide blocks stays at 0-100 B from H = 32
to 1024 (64-wide blocks: 36-1440 B).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Iterator, Optional, Sequence

import torch
import triton
import triton.language as tl

from ._triton_common import INTERPRET

MIN_DOT = 16  # tl.dot needs every dimension >= 16 on NVIDIA GPUs
NARROW_MAX_HIDDEN = 32  # padded hidden widths above this run the wide variant
WIDE_BLOCK = 32  # BH: hidden block of the wide variant
# 255 registers x 256 threads (ptxas -v, sm_90) fill an SM's register file: one resident program per
# SM; more would run in waves with a larger scratch
WIDE_PROGRAMS_PER_SM = 1
INTERPRET_WIDE_PROGRAMS = 2  # under the interpreter: a few programs, each looping over several tiles
# the interpreter's bfloat16 tl.dot returns garbage: it multiplies the bf16-rounded operands in float32
# instead (the same products; a GPU never takes this branch)
EMULATE_BF16_DOT: tl.constexpr = tl.constexpr(INTERPRET)


@triton.jit
def mm(x, w):
    """``x @ w`` on tensor cores: ``x`` cast to the matrix dtype, float32 accumulation (IEEE for f32)."""
    if EMULATE_BF16_DOT:
        out = tl.dot(x.to(w.dtype).to(tl.float32), w.to(tl.float32), input_precision="ieee")
    else:
        out = tl.dot(x.to(w.dtype), w, input_precision="ieee")
    return out


@triton.jit
def tanh_exp(z):
    """tanh from one exp (interpreter- and GPU-safe); absolute error ~1e-7 near 0."""
    e = tl.exp(-2.0 * tl.abs(z))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(z < 0.0, -t, t)


@triton.jit
def activation(z, ACT: tl.constexpr):
    """ACT 0: SiLU, 1: ReLU, 2: Tanh."""
    if ACT == 0:
        h = z * tl.sigmoid(z)
    elif ACT == 1:
        h = tl.maximum(z, 0.0)
    else:
        h = tanh_exp(z)
    return h


@triton.jit
def activation_grad(dh, z, ACT: tl.constexpr):
    """``dh * act'(z)`` with torch's backward formulas (SiLU: sig (1 + z (1 - sig)); ReLU: z > 0;
    Tanh: 1 - tanh^2)."""
    if ACT == 0:
        sg = tl.sigmoid(z)
        dz = dh * (sg * (1.0 + z * (1.0 - sg)))
    elif ACT == 1:
        dz = tl.where(z > 0.0, dh, 0.0)
    else:
        t = tanh_exp(z)
        dz = dh * (1.0 - t * t)
    return dz


@triton.jit
def load_block(ptr, row0, col0, row_end, col_end, ld, R: tl.constexpr, C: tl.constexpr):
    """``[R, C]`` block (zero padded) at (``row0``, ``col0``) of a row-major matrix with leading dimension
    ``ld``, rows ``< row_end`` and columns ``< col_end`` valid."""
    r = row0 + tl.arange(0, R)
    c = col0 + tl.arange(0, C)
    mask = (r < row_end)[:, None] & (c < col_end)[None, :]
    return tl.load(ptr + r[:, None] * ld + c[None, :], mask=mask, other=0.0)


@triton.jit
def load_block_t(ptr, row0, col0, row_end, col_end, ld, R: tl.constexpr, C: tl.constexpr):
    """The transpose ``[C, R]`` of the block :func:`load_block` loads (a second, transposed read of the
    same weights for the backward: cheaper than keeping the forward's tile live in registers)."""
    r = row0 + tl.arange(0, R)
    c = col0 + tl.arange(0, C)
    mask = (c < col_end)[:, None] & (r < row_end)[None, :]
    return tl.load(ptr + r[None, :] * ld + c[:, None], mask=mask, other=0.0)


@triton.jit
def load_mat(ptr, row0, n_rows, n_cols, R: tl.constexpr, C: tl.constexpr):
    """``[R, C]`` tile of rows ``row0 .. row0+n_rows-1`` of a row-major ``[*, n_cols]`` matrix."""
    return load_block(ptr, row0, 0, row0 + n_rows, n_cols, n_cols, R, C)


@triton.jit
def load_mat_t(ptr, row0, n_rows, n_cols, R: tl.constexpr, C: tl.constexpr):
    """The transpose ``[C, R]`` of the tile :func:`load_mat` loads."""
    return load_block_t(ptr, row0, 0, row0 + n_rows, n_cols, n_cols, R, C)


@triton.jit
def load_vec_at(ptr, start, n, N: tl.constexpr, other: tl.constexpr):
    """Elements ``start .. start+N-1`` of a length-``n`` vector (``other`` past its end)."""
    idx = start + tl.arange(0, N)
    return tl.load(ptr + idx, mask=idx < n, other=other)


@triton.jit
def load_vec(ptr, n, N: tl.constexpr, other: tl.constexpr):
    return load_vec_at(ptr, 0, n, N, other)


@triton.jit
def dense(x, w, b):
    """``x @ w + b`` (:func:`mm`)."""
    return mm(x, w) + b[None, :]


@triton.jit
def scratch_block(layer_ptr, col0, BM: tl.constexpr, HP: tl.constexpr, BH: tl.constexpr):
    """Pointers to columns ``col0 .. col0+BH-1`` of a ``[BM, HP]`` scratch layer (always in bounds:
    HP is a multiple of BH, :func:`padded_hidden`)."""
    r = tl.arange(0, BM)
    c = col0 + tl.arange(0, BH)
    return layer_ptr + r[:, None] * HP + c[None, :]


@triton.jit
def wide_first_layer(xs, xa, z_ptr, w1_ptr, b1_ptr, D, A, H,
                      BM: tl.constexpr, DP: tl.constexpr, AP: tl.constexpr, HP: tl.constexpr, BH: tl.constexpr):
    """``z1 = [xs, xa] @ W1^T + b1`` into scratch layer ``z_ptr``."""
    for j0 in range(0, HP, BH):
        w1s = load_block(w1_ptr, 0, j0, D, H, H, DP, BH)
        w1a = load_block(w1_ptr, D, j0, D + A, H, H, AP, BH)
        z = mm(xs, w1s) + dense(xa, w1a, load_vec_at(b1_ptr, j0, H, BH, 0.0))
        tl.store(scratch_block(z_ptr, j0, BM, HP, BH), z)
    tl.debug_barrier()  # the next layer reads blocks other threads wrote


@triton.jit
def wide_hidden_layer(zin_ptr, zout_ptr, w_ptr, b_ptr, H,
                       BM: tl.constexpr, HP: tl.constexpr, BH: tl.constexpr, ACT: tl.constexpr):
    """``z_out = act(z_in) @ W^T + b`` (scratch layer to scratch layer)."""
    for j0 in range(0, HP, BH):
        acc = tl.zeros([BM, BH], dtype=tl.float32) + load_vec_at(b_ptr, j0, H, BH, 0.0)[None, :]
        for i0 in range(0, HP, BH):
            h = activation(tl.load(scratch_block(zin_ptr, i0, BM, HP, BH)), ACT)
            w = load_block(w_ptr, i0, j0, H, H, H, BH, BH)
            acc += mm(h, w)
        tl.store(scratch_block(zout_ptr, j0, BM, HP, BH), acc)
    tl.debug_barrier()


@triton.jit
def wide_output(z_ptr, wo_ptr, bo_ptr, D, H,
                 BM: tl.constexpr, DP: tl.constexpr, HP: tl.constexpr, BH: tl.constexpr, ACT: tl.constexpr):
    """``f = act(z_depth) @ Wout^T + bout`` ``[BM, DP]`` (registers)."""
    f = tl.zeros([BM, DP], dtype=tl.float32) + load_vec(bo_ptr, D, DP, 0.0)[None, :]
    for i0 in range(0, HP, BH):
        h = activation(tl.load(scratch_block(z_ptr, i0, BM, HP, BH)), ACT)
        w = load_block(wo_ptr, i0, 0, H, D, D, BH, DP)
        f += mm(h, w)
    tl.debug_barrier()  # the backward overwrites the blocks other threads just read
    return f


@triton.jit
def wide_output_backward(df, z_ptr, wo_ptr, D, H,
                          BM: tl.constexpr, DP: tl.constexpr, HP: tl.constexpr, BH: tl.constexpr, ACT: tl.constexpr):
    """``dz_depth = act'(z_depth) * (df @ Wout)``, written over ``z_depth`` (each element by the thread
    that read it)."""
    for j0 in range(0, HP, BH):
        wt = load_block_t(wo_ptr, j0, 0, H, D, D, BH, DP)  # [DP, BH]
        dh = mm(df, wt)
        ptrs = scratch_block(z_ptr, j0, BM, HP, BH)
        tl.store(ptrs, activation_grad(dh, tl.load(ptrs), ACT))
    tl.debug_barrier()


@triton.jit
def wide_hidden_backward(dz_ptr, z_ptr, w_ptr, H,
                          BM: tl.constexpr, HP: tl.constexpr, BH: tl.constexpr, ACT: tl.constexpr):
    """``dz_{l-1} = act'(z_{l-1}) * (dz_l @ W_l)`` (``W_l^T`` packed ``[H_in, H_out]``), written over
    ``z_{l-1}``; ``dz_l`` is only read."""
    for i0 in range(0, HP, BH):
        dh = tl.zeros([BM, BH], dtype=tl.float32)
        for j0 in range(0, HP, BH):
            wt = load_block_t(w_ptr, i0, j0, H, H, H, BH, BH)  # [out block j, in block i]
            dz = tl.load(scratch_block(dz_ptr, j0, BM, HP, BH))
            dh += mm(dz, wt)
        ptrs = scratch_block(z_ptr, i0, BM, HP, BH)
        tl.store(ptrs, activation_grad(dh, tl.load(ptrs), ACT))
    tl.debug_barrier()


@triton.jit
def wide_input_grad(dz_ptr, w1_ptr, row0, row_end, H,
                    BM: tl.constexpr, NP: tl.constexpr, HP: tl.constexpr, BH: tl.constexpr):
    """``dz_1 @ W1[:, row0:row_end]`` ``[BM, NP]``: the gradient at an input of the first layer (state
    rows ``0..D-1`` of ``W1^T``, action rows ``D..D+A-1``)."""
    g = tl.zeros([BM, NP], dtype=tl.float32)
    for j0 in range(0, HP, BH):
        wt = load_block_t(w1_ptr, row0, j0, row_end, H, H, NP, BH)  # [BH, NP]
        dz = tl.load(scratch_block(dz_ptr, j0, BM, HP, BH))
        g += mm(dz, wt)
    return g


@triton.jit
def normalised_inputs(s, a, dmask, amask, mean, std, amean, astd):
    """The MLP inputs ``(s - mean) / std`` and ``(a - amean) / astd``, zero on padding."""
    xs = tl.where(dmask, (s - mean[None, :]) / std[None, :], 0.0)
    xa = tl.where(amask, (a - amean[None, :]) / astd[None, :], 0.0)
    return xs, xa


@triton.jit
def mlp_forward(xs, xa, z1_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, wo_ptr, bo_ptr, D, A, H,
                BM: tl.constexpr, DP: tl.constexpr, AP: tl.constexpr, HP: tl.constexpr, DEPTH: tl.constexpr,
                ACT: tl.constexpr, WIDE: tl.constexpr, BH: tl.constexpr):
    """The MLP output ``f [BM, DP]`` of normalised inputs ``xs [BM, DP]``, ``xa [BM, AP]``, and the
    pre-activations ``(z1, z2, z3)`` for :func:`mlp_backward`: ``[BM, HP]`` registers (register variant;
    unused layers alias ``z1``) or, for the wide variant, the scratch layers at ``z1_ptr`` (the returned
    ``z`` are then placeholders)."""
    if WIDE:
        wide_first_layer(xs, xa, z1_ptr, w1_ptr, b1_ptr, D, A, H, BM, DP, AP, HP, BH)
        if DEPTH >= 2:
            wide_hidden_layer(z1_ptr, z1_ptr + BM * HP, w2_ptr, b2_ptr, H, BM, HP, BH, ACT)
        if DEPTH >= 3:
            wide_hidden_layer(z1_ptr + BM * HP, z1_ptr + 2 * BM * HP, w3_ptr, b3_ptr, H, BM, HP, BH, ACT)
        f = wide_output(z1_ptr + (DEPTH - 1) * (BM * HP), wo_ptr, bo_ptr, D, H, BM, DP, HP, BH, ACT)
        z1 = f
        z2 = f
        z3 = f
    else:
        w1s = load_mat(w1_ptr, 0, D, H, DP, HP)  # W1^T rows of the state inputs  [DP, HP]
        w1a = load_mat(w1_ptr, D, A, H, AP, HP)  # W1^T rows of the action inputs [AP, HP]
        z1 = dense(xa, w1a, load_vec(b1_ptr, H, HP, 0.0)) + mm(xs, w1s)
        h = activation(z1, ACT)
        z2 = z1
        z3 = z1
        if DEPTH >= 2:
            z2 = dense(h, load_mat(w2_ptr, 0, H, H, HP, HP), load_vec(b2_ptr, H, HP, 0.0))
            h = activation(z2, ACT)
        if DEPTH >= 3:
            z3 = dense(h, load_mat(w3_ptr, 0, H, H, HP, HP), load_vec(b3_ptr, H, HP, 0.0))
            h = activation(z3, ACT)
        f = dense(h, load_mat(wo_ptr, 0, H, D, HP, DP), load_vec(bo_ptr, D, DP, 0.0))  # Wout^T [HP, DP]
    return f, z1, z2, z3


@triton.jit
def mlp_backward(df, z1, z2, z3, z1_ptr, w2_ptr, w3_ptr, wo_ptr, D, H,
                 BM: tl.constexpr, DP: tl.constexpr, HP: tl.constexpr, DEPTH: tl.constexpr, ACT: tl.constexpr,
                 WIDE: tl.constexpr, BH: tl.constexpr):
    """``dz_1 = dL/dz_1`` from ``df = dL/df [BM, DP]`` (activation gradients only, no weight
    gradients): returned ``[BM, HP]`` (register variant), or written over the scratch layers at
    ``z1_ptr`` (wide variant; the returned value is then a placeholder). Read it with
    :func:`mlp_input_grad`."""
    if WIDE:
        wide_output_backward(df, z1_ptr + (DEPTH - 1) * (BM * HP), wo_ptr, D, H, BM, DP, HP, BH, ACT)
        if DEPTH >= 3:
            wide_hidden_backward(z1_ptr + 2 * BM * HP, z1_ptr + BM * HP, w3_ptr, H, BM, HP, BH, ACT)
        if DEPTH >= 2:
            wide_hidden_backward(z1_ptr + BM * HP, z1_ptr, w2_ptr, H, BM, HP, BH, ACT)
        dz = df
    else:
        dh = mm(df, load_mat_t(wo_ptr, 0, H, D, HP, DP))  # [BM, HP]
        if DEPTH >= 3:
            dz = activation_grad(dh, z3, ACT)
            dh = mm(dz, load_mat_t(w3_ptr, 0, H, H, HP, HP))
        if DEPTH >= 2:
            dz = activation_grad(dh, z2, ACT)
            dh = mm(dz, load_mat_t(w2_ptr, 0, H, H, HP, HP))
        dz = activation_grad(dh, z1, ACT)
    return dz


@triton.jit
def mlp_input_grad(dz1, z1_ptr, w1_ptr, row0, n_rows, H,
                   BM: tl.constexpr, NP: tl.constexpr, HP: tl.constexpr, WIDE: tl.constexpr, BH: tl.constexpr):
    """``dz_1 @ W1[:, row0:row0+n_rows]`` ``[BM, NP]`` (``dz_1`` from :func:`mlp_backward`): the
    gradient at the normalised state inputs (``row0 = 0, n_rows = D``) or action inputs (``row0 = D,
    n_rows = A``)."""
    if WIDE:
        g = wide_input_grad(z1_ptr, w1_ptr, row0, row0 + n_rows, H, BM, NP, HP, BH)
    else:
        g = mm(dz1, load_mat_t(w1_ptr, row0, n_rows, H, NP, HP))
    return g


# host side


def pad_dim(n: int) -> int:
    """A tile dimension: ``n`` rounded up to a power of two, at least :data:`MIN_DOT`."""
    return max(MIN_DOT, triton.next_power_of_2(max(n, 1)))


def is_wide(hidden: int) -> bool:
    """Whether a hidden width runs the wide (blocked, scratch) variant rather than the register one."""
    return pad_dim(hidden) > NARROW_MAX_HIDDEN


def wide_block(hidden: int) -> int:
    """Hidden block ``BH`` of the wide variant (a power of two)."""
    return min(WIDE_BLOCK, pad_dim(hidden))


def padded_hidden(hidden: int) -> int:
    """``HP``: the register variant's power of two (``tl.arange`` over it); the wide variant only loops
    over BH blocks, so a multiple of BH suffices (H = 520: 576, not 1024)."""
    if is_wide(hidden):
        return triton.cdiv(hidden, wide_block(hidden)) * wide_block(hidden)
    return pad_dim(hidden)


# set by force_wide_programs: the program count of every wide launch in the block (tests, sanitizer)
_FORCED_WIDE_PROGRAMS: contextvars.ContextVar[Optional[int]] = contextvars.ContextVar("forced_wide_programs",
                                                                                      default=None)


@contextlib.contextmanager
def force_wide_programs(programs: int) -> Iterator[None]:
    """Launch the wide variant with ``min(tiles, programs)`` persistent programs inside the block, whatever
    the device's SM count: with fewer programs than tiles every program loops, so the scratch is reused
    from tile to tile behind the CTA barriers (a GPU check; the launchers' public ops need no argument)."""
    if not isinstance(programs, int) or programs < 1:
        raise ValueError(f"force_wide_programs: programs must be an int >= 1, got {programs!r}")
    token = _FORCED_WIDE_PROGRAMS.set(programs)
    try:
        yield
    finally:
        _FORCED_WIDE_PROGRAMS.reset(token)


def wide_programs(n_tiles: int, device: torch.device) -> int:
    """Programs of a wide launch: persistent, so that the scratch (one per program) stays small."""
    forced = _FORCED_WIDE_PROGRAMS.get()
    if forced is not None:
        return min(n_tiles, forced)
    if INTERPRET or device.type != "cuda":
        return min(n_tiles, INTERPRET_WIDE_PROGRAMS)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return min(n_tiles, _multiprocessors(index) * WIDE_PROGRAMS_PER_SM)


@functools.lru_cache(maxsize=None)
def _multiprocessors(index: int) -> int:
    """SMs of CUDA device ``index``, queried once (the launchers run every iteration)."""
    return torch.cuda.get_device_properties(index).multi_processor_count


def kernel_params(params: Sequence[torch.Tensor], depth: int) -> list[torch.Tensor]:
    """The packed model as the kernels' 13 pointer arguments ``mean, std, amean, astd, delta, w1, b1,
    w2, b2, w3, b3, wo, bo`` (layers beyond ``depth`` point at layer 1: unused, DEPTH is constexpr)."""
    hidden_layers = [(params[7 + 2 * i], params[8 + 2 * i]) for i in range(depth - 1)]
    while len(hidden_layers) < 2:
        hidden_layers.append((params[5], params[6]))
    (w2, b2), (w3, b3) = hidden_layers[:2]
    return [*params[:7], w2, b2, w3, b3, params[-2], params[-1]]


def wide_scratch(n_programs: int, depth: int, rows: int, hidden: int, device: torch.device) -> torch.Tensor:
    """The wide variant's scratch: per program ``depth`` layers of ``[rows, HP]`` float32."""
    return torch.empty(n_programs * depth * rows * padded_hidden(hidden), device=device, dtype=torch.float32)
