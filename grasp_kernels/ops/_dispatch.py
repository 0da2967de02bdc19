"""What every op's public function shares: the backend choice, the noise seed of a kernel call, and
action bounds in the kernels' form.

Noise seeds of the kernel backends (``state_step_``, ``lifted_energy_state_step_``,
``fused_mlp_iteration_``): the noise is the explicit ``noise`` tensor if given; else it is drawn
in-kernel (Philox) from ``counters.seed`` (:class:`~grasp_kernels.ops.NoiseCounters`) if set; else from
a seed drawn from ``generator`` (one host sync if that generator lives on a GPU); else from a seed drawn
from torch's default CPU generator (so ``torch.manual_seed`` makes runs reproducible). Pass a fresh seed
every iteration.

Counters of the in-kernel noise: element ``(b, t, d)`` of a call's noise ``[B, T-1, D]`` is the
normal at counter ``counters.base + b * counters.stride + t*D + d`` (default: base 0, stride
``(T-1)*D``, the element's linear index). A caller that plans a slice of a bigger batch or a chunk of a
longer horizon passes the slice's global position (:mod:`grasp_kernels.randomness`), so every plan draws
the same noise however plans are batched or split. The reference backend with a seed draws exactly the
Triton kernels' stream (:func:`grasp_kernels.randomness.philox_normal` at the same counters; the CUDA
kernels draw curand's layout of the same counters); with only a ``generator`` it draws ``torch.randn``
from it.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional, TypeVar

import torch

from .._checks import BoundArg, as_bounds
from ..backends import resolve_backend
from ..randomness import noise_counters as counters_of, philox_normal
from ._params import NoiseCounters

SEED_HIGH = 2**62
T = TypeVar("T")


def assume_constant_result(fn: Callable[..., T]) -> Callable[..., T]:
    """``torch.compiler.assume_constant_result`` without importing ``torch._dynamo`` at import time.

    The decorator only sets ``fn._dynamo_marked_constant`` (torch 2.x), which dynamo reads when it
    traces a call; importing it costs seconds of ``import grasp_kernels`` (a test pins that the
    attribute is what torch's decorator sets). Once dynamo is loaded, torch's own decorator is used.
    """
    if "torch._dynamo" in sys.modules:
        return torch.compiler.assume_constant_result(fn)
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn


@assume_constant_result
def resolve(backend: str, device: torch.device) -> str:
    """:func:`resolve_backend`, a constant for torch.compile (it imports modules and reads the
    environment, which dynamo cannot trace; a compiled graph keeps the backend it was traced with)."""
    return resolve_backend(backend, device)


def kernel_counters(
    counters: NoiseCounters, generator: Optional[torch.Generator], noise: Optional[torch.Tensor], noise_std: float
) -> NoiseCounters:
    """``counters`` with the Philox seed of a kernel call (see the module docstring): its own seed, a seed
    drawn from ``generator`` or torch's default CPU generator, or 0 when no noise is drawn."""
    if counters.seed is not None:
        return counters
    if noise is not None or noise_std == 0:
        seed = 0
    elif generator is not None:
        seed = int(torch.randint(0, SEED_HIGH, (1,), generator=generator, device=generator.device).item())
    else:
        seed = int(torch.randint(0, SEED_HIGH, (1,)).item())
    return counters.with_seed(seed)


def reference_noise(
    states: torch.Tensor, noise: Optional[torch.Tensor], noise_std: object, counters: NoiseCounters
) -> Optional[torch.Tensor]:
    """The reference path's explicit noise ``[B, T-1, D]`` for seeded ``counters`` (checked with
    :meth:`NoiseCounters.for_states`: the kernels' stream), or ``noise`` as given (None: the reference draws
    from its generator)."""
    if noise is not None or counters.seed is None or isinstance(noise_std, torch.Tensor) or not noise_std > 0:
        return noise
    batch, rows, dim = states.shape
    if rows <= 2:
        return None
    ctr = counters.base + counters_of(0, batch, rows - 2, dim, counters.stride, device=states.device)
    return philox_normal(counters.seed, ctr, dtype=states.dtype)


def kernel_bounds(low: BoundArg, high: BoundArg, actions: torch.Tensor) -> list[torch.Tensor]:
    """Bounds as float32 ``[A]`` tensors, +-inf where unbounded (the kernels' form).

    Bounds already in that form (float32, ``[A]``, contiguous, on the actions' device) are used as
    given, without a NaN or order check: that check would be a device sync on every step (planners
    validate their bounds once, before the loop, and pass them in this form). Any other form is
    converted and checked ``low <= high``."""
    action_dim = actions.shape[-1]
    if all(
        isinstance(bound, torch.Tensor) and bound.dtype == torch.float32 and bound.shape == (action_dim,)
        and bound.device == actions.device and bound.is_contiguous()
        for bound in (low, high)
    ):
        return [low, high]  # type: ignore[list-item]
    bounds = []
    for bound, fill in zip(as_bounds(low, high, action_dim, actions.device, torch.float32), (float("-inf"), float("inf"))):
        if bound is None:
            bound = torch.full((action_dim,), fill, device=actions.device, dtype=torch.float32)
        bounds.append(bound.contiguous())
    return bounds
