"""Launch of the CUDA kernel of ``lifted_energy_state_step_`` (``csrc/lifted_energy.cu``)."""

from __future__ import annotations

from typing import Optional

import torch

from .._cuda_common import energy_workspace, launch_context, module, noise_args


def launch(
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
    noise_base: int = 0,
    noise_stride: int = -1,
) -> None:
    """Energy and grad_pred from the states before the update, then the state step in place (the state
    gradient ``-2 (p_{t-1} - s_t)`` is consumed in registers, never written)."""
    mod = module()
    b, rows, d = states.shape
    if b == 0:
        return
    if d == 0:
        energy.zero_()
        return
    index, stream = launch_context(states.device)
    noise_ptr, seed = noise_args(noise, seed)
    workspace, ws_ptr, ws_numel = energy_workspace(mod, index, states.device, b, rows - 1, d)
    mod.lifted_energy_state_step(
        index, stream, pred.data_ptr(), pred.dtype == torch.bfloat16, states.data_ptr(), energy.data_ptr(),
        grad_pred.data_ptr(), exp_avg.data_ptr(), exp_avg_sq.data_ptr(), noise_ptr, ws_ptr, ws_numel,
        b, rows - 1, d, gamma, step, lr, beta1, beta2, eps, noise_std, seed, noise_base,
        (rows - 2) * d if noise_stride < 0 else noise_stride,
    )
    del workspace
