"""Launch of the CUDA kernel of ``state_step_`` (``csrc/optim_step.cu``)."""

from __future__ import annotations

from typing import Optional

import torch

from .._cuda_common import launch_context, module, noise_args


def launch(
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
    noise_base: int = 0,
    noise_stride: int = -1,
) -> None:
    """In place on rows 1..T-1: Adam (torch.optim.Adam formulas) then ``+ noise_std * xi``; Philox
    counters ``noise_base + b * noise_stride + j`` (``noise_stride < 0``: ``(T-1)*D``)."""
    mod = module()
    b, rows, d = states.shape
    if b == 0 or d == 0 or rows <= 2:
        return
    index, stream = launch_context(states.device)
    noise_ptr, seed = noise_args(noise, seed)
    mod.state_step(
        index, stream, states.data_ptr(), grad.data_ptr(), exp_avg.data_ptr(), exp_avg_sq.data_ptr(), noise_ptr,
        b, rows - 1, d, step, lr, beta1, beta2, eps, noise_std, seed, noise_base,
        (rows - 2) * d if noise_stride < 0 else noise_stride,
    )
