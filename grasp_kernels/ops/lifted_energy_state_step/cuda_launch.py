"""Launch of the CUDA kernel of ``lifted_energy_state_step_`` (``csrc/lifted_energy.cu``)."""

from __future__ import annotations

from typing import Optional

import torch

from .._cuda_common import energy_workspace, launch_context, module, noise_args
from .._params import AdamHyper, NoiseCounters


def launch(
    pred: torch.Tensor,
    states: torch.Tensor,
    gamma: float,
    energy: torch.Tensor,
    grad_pred: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    adam: AdamHyper,
    noise_std: float,
    noise: Optional[torch.Tensor],
    counters: NoiseCounters,
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
    noise_ptr, seed, noise_base, noise_stride = noise_args(noise, counters, (rows - 2) * d)
    workspace, ws_ptr, ws_numel = energy_workspace(mod, index, states.device, b, rows - 1, d)
    mod.lifted_energy_state_step(
        index, stream, pred.data_ptr(), pred.dtype == torch.bfloat16, states.data_ptr(), energy.data_ptr(),
        grad_pred.data_ptr(), exp_avg.data_ptr(), exp_avg_sq.data_ptr(), noise_ptr, ws_ptr, ws_numel,
        b, rows - 1, d, gamma, step, *adam.flat(), noise_std, seed, noise_base, noise_stride,
    )
    del workspace
