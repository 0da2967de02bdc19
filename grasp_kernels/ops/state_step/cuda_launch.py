"""Launch of the CUDA kernel of ``state_step_`` (``csrc/optim_step.cu``)."""

from __future__ import annotations

from typing import Optional

import torch

from .._cuda_common import launch_context, module, noise_args
from .._params import AdamHyper, NoiseCounters


def launch(
    states: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    adam: AdamHyper,
    noise_std: float,
    noise: Optional[torch.Tensor],
    counters: NoiseCounters,
) -> None:
    """In place on rows 1..T-1: Adam (torch.optim.Adam formulas) then ``+ noise_std * xi``; Philox key
    ``counters.seed`` at counters ``counters.base + b * counters.stride + j`` (stride None: ``(T-1)*D``)."""
    mod = module()
    b, rows, d = states.shape
    if b == 0 or d == 0 or rows <= 2:
        return
    index, stream = launch_context(states.device)
    noise_ptr, seed, noise_base, noise_stride = noise_args(noise, counters, (rows - 2) * d)
    mod.state_step(
        index, stream, states.data_ptr(), grad.data_ptr(), exp_avg.data_ptr(), exp_avg_sq.data_ptr(), noise_ptr,
        b, rows - 1, d, step, *adam.flat(), noise_std, seed, noise_base, noise_stride,
    )
