"""Launch of the CUDA kernel of ``action_step_`` (``csrc/optim_step.cu``)."""

from __future__ import annotations

import torch

from .._cuda_common import launch_context, module
from .._params import AdamHyper


def launch(
    actions: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    adam: AdamHyper,
    low: torch.Tensor,
    high: torch.Tensor,
) -> None:
    """In place: Adam (step ``step``, constants ``adam``) on actions [B,T,A] then clamp to low/high [A]
    (float32; +-inf when unbounded)."""
    mod = module()
    batch, horizon, action_dim = actions.shape
    n = batch * horizon
    if n == 0 or action_dim == 0:
        return
    index, stream = launch_context(actions.device)
    mod.action_step(
        index, stream, actions.data_ptr(), grad.data_ptr(), exp_avg.data_ptr(), exp_avg_sq.data_ptr(),
        low.data_ptr(), high.data_ptr(), n, action_dim, step, *adam.flat(),
    )
