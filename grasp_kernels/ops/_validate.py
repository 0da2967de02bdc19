"""Argument checks of the kernel ops, shared by every op body (``ops/*/op.py``).

Each op validates its arguments once, in its ``torch.library.custom_op`` body (and in its fake
implementation, so the same errors come from meta tensors and ``torch.compile``); the launchers behind
it assume checked input. Tensor checks name the argument and what was expected. ``check_no_overlap``
rejects in-place outputs that share memory with each other or with what the op reads: the kernels
load and store in one pass, so an overlap would race.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from .._checks import check_same_device, check_tensor
from ..backends import backend_unavailable_reason
from ._params import AdamHyper, NoiseCounters

KERNEL_BACKENDS = ("triton", "cuda")


def check_backend_runs(backend: str, device: torch.device) -> None:
    if backend not in KERNEL_BACKENDS:
        raise ValueError(f"backend must be one of {KERNEL_BACKENDS} for the grasp custom ops, got {backend!r}")
    reason = backend_unavailable_reason(backend, device)
    if reason is not None:
        raise RuntimeError(f"grasp custom op: backend {backend!r} cannot run: {reason}")


def check_float32(name: str, tensor: object) -> None:
    if isinstance(tensor, Tensor) and tensor.dtype == torch.float64:
        raise TypeError(
            f"{name} is float64: the triton/cuda kernels take float32 {name} "
            "(use backend='reference' for float64)"
        )


def check_states(name: str, states: object) -> tuple[int, int, int]:
    check_float32(name, states)
    check_tensor(name, states, ndim=3, dtypes=(torch.float32,), contiguous=True)
    batch, rows, dim = states.shape  # type: ignore[union-attr]
    if rows < 2:
        raise ValueError(f"{name} must have T+1 >= 2 rows (s_0 and the goal), got shape {tuple(states.shape)}")
    return batch, rows, dim


def check_like(param_name: str, param: Tensor, **tensors: Tensor) -> None:
    for name, tensor in tensors.items():
        check_float32(name, tensor)
        check_tensor(name, tensor, shape=tuple(param.shape), dtypes=(torch.float32,), contiguous=True)
    check_same_device(**{param_name: param}, **tensors)


def check_pred(pred: object, states: Tensor) -> None:
    batch, rows, dim = states.shape
    check_float32("pred", pred)
    check_tensor("pred", pred, shape=(batch, rows - 1, dim), dtypes=(torch.float32, torch.bfloat16), contiguous=True)
    check_same_device(pred=pred, states=states)


def check_noise(noise: Optional[Tensor], states: Tensor) -> None:
    if noise is None:
        return
    batch, rows, dim = states.shape
    check_float32("noise", noise)
    check_tensor("noise", noise, shape=(batch, rows - 2, dim), dtypes=(torch.float32,), contiguous=True)
    check_same_device(states=states, noise=noise)


def check_step(step: Union[int, Tensor]) -> None:
    """The 1-based Adam step: an int >= 1, or a 0-d floating tensor (the reference under ``torch.compile``),
    whose value is not checked: that would be a host sync."""
    if isinstance(step, Tensor):
        check_tensor("step", step, ndim=0)
    elif isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be an int >= 1 (the 1-based Adam step), got {step!r}")


def check_params(adam: object, counters: object = None) -> None:
    """``adam`` an :class:`AdamHyper` and ``counters`` (where given) a :class:`NoiseCounters`: TypeError naming
    the argument (the objects check their values when built)."""
    if not isinstance(adam, AdamHyper):
        raise TypeError(f"adam must be a grasp_kernels.ops.AdamHyper, got {type(adam).__name__}")
    if counters is not None and not isinstance(counters, NoiseCounters):
        raise TypeError(f"counters must be a grasp_kernels.ops.NoiseCounters, got {type(counters).__name__}")


def byte_range(tensor: Tensor) -> Optional[tuple[int, int]]:
    """[first, last) byte addresses of a contiguous tensor's elements; None when it has none."""
    if tensor.numel() == 0:
        return None
    start = tensor.data_ptr()
    return start, start + tensor.numel() * tensor.element_size()


def check_no_overlap(written: dict, read: dict) -> None:
    """The tensors a kernel writes (``written``: in-place outputs) must not share memory with each
    other or with the tensors it only reads (``read``): the kernels load and store in one pass, so an
    overlap would race. Compares the byte ranges of the (contiguous) tensors on one device: no device
    sync, a few pointer reads. Skipped for fake/meta tensors (no data). Raises ValueError naming both."""
    ranges = []
    for role, tensors in (("written", written), ("read", read)):
        for name, tensor in tensors.items():
            if tensor is None or tensor.device.type == "meta":
                continue
            try:
                span = byte_range(tensor)
            except RuntimeError:  # a tensor without storage (fake / functional): nothing to compare
                continue
            if span is not None:
                ranges.append((name, role, tensor.device, span))
    for i, (name_a, role_a, dev_a, (lo_a, hi_a)) in enumerate(ranges):
        if role_a != "written":
            continue
        for j, (name_b, role_b, dev_b, (lo_b, hi_b)) in enumerate(ranges):
            if j == i or (role_b == "written" and j < i) or dev_a != dev_b:
                continue
            if lo_a < hi_b and lo_b < hi_a:
                if role_b == "written":
                    how = "both are updated in place"
                else:
                    how = f"{name_a} is updated in place while {name_b} is read"
                raise ValueError(
                    f"{name_a} and {name_b} overlap in memory ({how}): pass separate tensors, e.g. {name_b}.clone()"
                )


def check_bounds(actions: Tensor, low: Tensor, high: Tensor) -> None:
    """``low`` and ``high``: float32 ``[A]`` tensors (the kernels' form: +-inf where unbounded)."""
    for name, bound in (("low", low), ("high", high)):
        check_float32(name, bound)
        check_tensor(name, bound, shape=(actions.shape[-1],), dtypes=(torch.float32,), contiguous=True)
    check_same_device(actions=actions, low=low, high=high)
