"""Launch of the CUDA kernel of ``lifted_energy`` (``csrc/lifted_energy.cu``)."""

from __future__ import annotations

import torch

from .._cuda_common import energy_workspace, launch_context, module


def launch(
    pred: torch.Tensor,
    states: torch.Tensor,
    gamma: float,
    energy: torch.Tensor,
    grad_pred: torch.Tensor,
    grad_states: torch.Tensor,
) -> None:
    """energy [B], grad_pred [B,T,D] and grad_states [B,T+1,D] (rows 0 and T zero) of the lifted energy."""
    mod = module()
    b, rows, d = states.shape
    if b == 0:
        return
    if d == 0:
        energy.zero_()
        return
    index, stream = launch_context(states.device)
    workspace, ws_ptr, ws_numel = energy_workspace(mod, index, states.device, b, rows - 1, d)
    mod.lifted_energy_fwd(
        index, stream, pred.data_ptr(), pred.dtype == torch.bfloat16, states.data_ptr(), energy.data_ptr(),
        grad_pred.data_ptr(), grad_states.data_ptr(), ws_ptr, ws_numel, b, rows - 1, d, gamma,
    )
    del workspace  # back to torch's caching allocator, stream-ordered on the current stream
