"""Launchers of the CUDA kernels (the ``cuda`` provider module of :mod:`grasp_kernels.ops.custom_ops`).

The kernels live in ``csrc/`` and are exposed by the compiled pybind11 module ``grasp_kernels._cuda``
(built by CMake through ``setup.py`` when nvcc is found). That module links only the CUDA runtime,
not torch: it takes raw device pointers, sizes, scalars, the device index and the CUDA stream as ints.
This file is the last line before those raw pointers: every launcher checks dtype, device,
contiguity and shapes (cheaply; :mod:`grasp_kernels.ops.custom_ops` validated them already), then
passes ``data_ptr()`` s and ``torch.cuda.current_stream().cuda_stream``.

Launcher protocol (shared with :mod:`grasp_kernels.ops.triton_kernels`): tensors contiguous, outputs
preallocated by the caller, each launcher returns None and launches on the current stream.

- ``lifted_energy_fwd(pred, states, gamma, energy, grad_pred, grad_states)``
- ``state_step(states, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, noise_std, noise, seed)``
- ``action_step(actions, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, low, high)``
- ``lifted_energy_state_step(pred, states, gamma, energy, grad_pred, exp_avg, exp_avg_sq, step, lr,
  beta1, beta2, eps, noise_std, noise, seed)``

Shapes: ``pred [B,T,D]`` (float32 or bfloat16), ``states [B,T+1,D]`` float32, ``energy [B]``,
``grad_pred [B,T,D]``, ``grad_states [B,T+1,D]``, moments like their parameter, ``noise [B,T-1,D]``
or None, ``actions [B,T,A]``, ``low``/``high`` float32 ``[A]`` (+-inf for an unbounded side).

Noise drawn in-kernel (``noise is None`` and ``noise_std > 0``): element ``n`` of the flattened
``[B, T-1, D]`` noise is lane ``n % 4`` of ``curand_normal4`` after ``curand_init(seed, n // 4, 0)``
(Philox4x32-10; ``grasp_kernels._cuda.rng_backend()`` says whether curand's header or the in-tree
equivalent produced it). The same seed gives the same bits, in ``state_step`` and in the fused op.
Vary the seed per iteration.

Determinism of the energy: ``energy`` is reduced without atomics (fixed warp-shuffle trees, then a
fixed chunk order), so repeated calls give identical bits *on one device with the same pointer
alignment*. The bits are not portable across devices or layouts: the number of chunks a plan is cut
into depends on the device's SM count (``energy_workspace_numel``), and the summation order inside a
block differs between the 16-byte vector path (``D % 4 == 0`` and aligned pointers) and the scalar
fallback. ``grad_pred``, ``grad_states`` and the state/action steps are elementwise and do not depend
on either. The seeded noise depends only on ``(seed, element index)``.

Devices: each launch runs on the device of its tensors. The compiled module makes that device
current only for the duration of the call and restores the previous one (its static CUDA runtime
shares the per-thread driver context with torch's); the launchers also enter
``torch.cuda.device(index)`` when the tensors are not on torch's current device.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..backends import on_device

try:
    from .. import _cuda
except ImportError as _exc:  # the module is optional (built only where nvcc exists)
    _cuda = None
    _IMPORT_ERROR: Optional[ImportError] = _exc
else:
    _IMPORT_ERROR = None

__all__ = ["lifted_energy_fwd", "state_step", "action_step", "lifted_energy_state_step", "philox_normal", "available"]

_F32 = torch.float32
_PRED_DTYPES = (torch.float32, torch.bfloat16)
_SEED_MASK = (1 << 64) - 1


def available() -> bool:
    """True when the compiled module ``grasp_kernels._cuda`` was imported."""
    return _cuda is not None


def _module():
    if _cuda is None:
        raise RuntimeError(f"the CUDA module grasp_kernels._cuda is not built ({_IMPORT_ERROR})")
    return _cuda


def _fmt(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _check(name: str, t: object, shape: tuple, dtypes: tuple, device: torch.device) -> torch.Tensor:
    """One tensor handed to a kernel: a contiguous CUDA tensor of the given shape/dtype on ``device``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in ({', '.join(_fmt(d) for d in dtypes)}), got {_fmt(t.dtype)}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} must be on {device} (same device as the other arguments), got {t.device}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous()), got strides {t.stride()}")
    return t


def _device_of(name: str, t: object) -> torch.device:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cuda":
        raise ValueError(f"the cuda backend needs CUDA tensors, {name} is on {t.device}")
    return t.device


def _states_shape(states: object) -> tuple[int, int, int]:
    if not isinstance(states, torch.Tensor) or states.dim() != 3 or states.shape[1] < 2:
        shape = tuple(states.shape) if isinstance(states, torch.Tensor) else type(states).__name__
        raise ValueError(f"states must be [B, T+1, D] with T >= 1, got {shape}")
    b, rows, d = states.shape
    return int(b), int(rows) - 1, int(d)


def _launch_ctx(device: torch.device) -> tuple[int, int]:
    index = device.index if device.index is not None else torch.cuda.current_device()
    return index, torch.cuda.current_stream(index).cuda_stream


def _gamma(gamma: object) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
        raise TypeError(f"gamma must be a float, got {type(gamma).__name__}")
    gamma = float(gamma)
    if not math.isfinite(gamma) or gamma < 0.0:
        raise ValueError(f"gamma must be finite and >= 0, got {gamma}")
    return gamma


def _adam_args(step: int, lr: float, beta1: float, beta2: float, eps: float) -> tuple:
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be an int >= 1 (the 1-based Adam step), got {step!r}")
    return int(step), float(lr), float(beta1), float(beta2), float(eps)


def _noise_args(noise: Optional[torch.Tensor], noise_std: float, seed: Optional[int], shape: tuple, device) -> tuple:
    noise_std = float(noise_std)
    if not noise_std >= 0.0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    if noise is not None:
        _check("noise", noise, shape, (_F32,), device)
        return noise_std, noise.data_ptr(), 0
    if noise_std > 0.0 and (seed is None or isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an int when noise is None and noise_std > 0, got {seed!r}")
    return noise_std, 0, int(seed or 0) & _SEED_MASK


def _workspace(mod, index: int, device: torch.device, b: int, t: int, d: int) -> tuple[Optional[torch.Tensor], int, int]:
    numel = mod.energy_workspace_numel(index, b, t, d)
    if numel == 0:
        return None, 0, 0
    ws = torch.empty(numel, device=device, dtype=_F32)
    return ws, ws.data_ptr(), numel


def lifted_energy_fwd(
    pred: torch.Tensor,
    states: torch.Tensor,
    gamma: float,
    energy: torch.Tensor,
    grad_pred: torch.Tensor,
    grad_states: torch.Tensor,
) -> None:
    """energy [B], grad_pred [B,T,D] and grad_states [B,T+1,D] (rows 0 and T zero) of the lifted energy."""
    mod = _module()
    gamma = _gamma(gamma)
    device = _device_of("states", states)
    b, t, d = _states_shape(states)
    _check("states", states, (b, t + 1, d), (_F32,), device)
    _check("pred", pred, (b, t, d), _PRED_DTYPES, device)
    _check("energy", energy, (b,), (_F32,), device)
    _check("grad_pred", grad_pred, (b, t, d), (_F32,), device)
    _check("grad_states", grad_states, (b, t + 1, d), (_F32,), device)
    if b == 0:
        return
    if d == 0:
        energy.zero_()
        return
    index, stream = _launch_ctx(device)
    with on_device(torch.device("cuda", index)):
        ws, ws_ptr, ws_numel = _workspace(mod, index, device, b, t, d)
        mod.lifted_energy_fwd(
            index, stream, pred.data_ptr(), pred.dtype == torch.bfloat16, states.data_ptr(), energy.data_ptr(),
            grad_pred.data_ptr(), grad_states.data_ptr(), ws_ptr, ws_numel, b, t, d, gamma,
        )
        del ws  # returned to torch's caching allocator, stream-ordered on the current stream


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
    """In place on rows 1..T-1: Adam (torch.optim.Adam formulas) then ``+ noise_std * xi``."""
    mod = _module()
    device = _device_of("states", states)
    b, t, d = _states_shape(states)
    shape = (b, t + 1, d)
    _check("states", states, shape, (_F32,), device)
    _check("grad", grad, shape, (_F32,), device)
    _check("exp_avg", exp_avg, shape, (_F32,), device)
    _check("exp_avg_sq", exp_avg_sq, shape, (_F32,), device)
    adam = _adam_args(step, lr, beta1, beta2, eps)
    noise_std, noise_ptr, seed = _noise_args(noise, noise_std, seed, (b, t - 1, d), device)
    if b == 0 or d == 0 or t == 1:
        return
    index, stream = _launch_ctx(device)
    with on_device(torch.device("cuda", index)):
        mod.state_step(
            index, stream, states.data_ptr(), grad.data_ptr(), exp_avg.data_ptr(), exp_avg_sq.data_ptr(), noise_ptr,
            b, t, d, *adam, noise_std, seed,
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
    """In place: Adam on actions [B,T,A] then clamp to low/high [A] (float32; +-inf when unbounded)."""
    mod = _module()
    device = _device_of("actions", actions)
    if actions.dim() != 3:
        raise ValueError(f"actions must be [B, T, A], got shape {tuple(actions.shape)}")
    shape = tuple(int(s) for s in actions.shape)
    _check("actions", actions, shape, (_F32,), device)
    _check("grad", grad, shape, (_F32,), device)
    _check("exp_avg", exp_avg, shape, (_F32,), device)
    _check("exp_avg_sq", exp_avg_sq, shape, (_F32,), device)
    _check("low", low, (shape[2],), (_F32,), device)
    _check("high", high, (shape[2],), (_F32,), device)
    adam = _adam_args(step, lr, beta1, beta2, eps)
    n, a = shape[0] * shape[1], shape[2]
    if n == 0 or a == 0:
        return
    index, stream = _launch_ctx(device)
    with on_device(torch.device("cuda", index)):
        mod.action_step(
            index, stream, actions.data_ptr(), grad.data_ptr(), exp_avg.data_ptr(), exp_avg_sq.data_ptr(),
            low.data_ptr(), high.data_ptr(), n, a, *adam,
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
    """Fused: energy and grad_pred from the states before the update, then the state step in place
    (the state gradient ``-2 (p_{t-1} - s_t)`` is consumed in registers, never written)."""
    mod = _module()
    gamma = _gamma(gamma)
    device = _device_of("states", states)
    b, t, d = _states_shape(states)
    shape = (b, t + 1, d)
    _check("states", states, shape, (_F32,), device)
    _check("pred", pred, (b, t, d), _PRED_DTYPES, device)
    _check("energy", energy, (b,), (_F32,), device)
    _check("grad_pred", grad_pred, (b, t, d), (_F32,), device)
    _check("exp_avg", exp_avg, shape, (_F32,), device)
    _check("exp_avg_sq", exp_avg_sq, shape, (_F32,), device)
    adam = _adam_args(step, lr, beta1, beta2, eps)
    noise_std, noise_ptr, seed = _noise_args(noise, noise_std, seed, (b, t - 1, d), device)
    if b == 0:
        return
    if d == 0:
        energy.zero_()
        return
    index, stream = _launch_ctx(device)
    with on_device(torch.device("cuda", index)):
        ws, ws_ptr, ws_numel = _workspace(mod, index, device, b, t, d)
        mod.lifted_energy_state_step(
            index, stream, pred.data_ptr(), pred.dtype == torch.bfloat16, states.data_ptr(), energy.data_ptr(),
            grad_pred.data_ptr(), exp_avg.data_ptr(), exp_avg_sq.data_ptr(), noise_ptr, ws_ptr, ws_numel,
            b, t, d, gamma, *adam, noise_std, seed,
        )
        del ws


def philox_normal(shape: tuple, seed: int, device: torch.device, impl: int = 0) -> torch.Tensor:
    """Test hook: the in-kernel noise the state step draws for ``seed``, as a float32 tensor of ``shape``
    (``impl`` 0: the build's generator, 1: the in-tree Philox, 2: curand, if built with it)."""
    mod = _module()
    device = torch.device(device)
    out = torch.empty(shape, device=device, dtype=_F32)
    if out.numel():
        index, stream = _launch_ctx(device)
        with on_device(torch.device("cuda", index)):
            mod.philox_normal(index, stream, out.data_ptr(), out.numel(), int(seed) & _SEED_MASK, int(impl))
    return out
