"""Specification of ``state_step_``: Adam plus Langevin noise on the virtual states, in plain PyTorch."""

from __future__ import annotations

from typing import Optional, Union

import torch

from ..._checks import check_scalar, check_tensor
from .._adam import adam_update_ref, check_adam_args
from .._params import AdamHyper


def state_step_ref(
    states: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: Union[int, torch.Tensor],
    adam: AdamHyper,
    noise_std: Union[float, torch.Tensor],
    noise: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> None:
    """In-place Adam step plus Langevin noise on the virtual-state rows ``1..T-1``.

    Rows 0 and T of ``states`` and of both moments are left untouched.

    Args:
        states: ``[B, T+1, D]`` float32/float64, updated in place.
        grad, exp_avg, exp_avg_sq: ``[B, T+1, D]``, same dtype; the moments are updated in place.
        step: 1-based Adam step count of this update.
        adam: Adam's constants.
        noise_std: sigma of the noise added after the Adam step (0 disables it); a 0-d tensor (and
            ``step`` one too: ``torch.compile``) needs the explicit ``noise`` and always adds it.
        noise: optional ``[B, T-1, D]`` standard-normal noise; drawn with ``generator`` if None.
        generator: torch.Generator on ``states.device`` used to draw the noise.
    """
    check_adam_args("states", states, grad, exp_avg, exp_avg_sq, step, adam)
    if isinstance(noise_std, torch.Tensor):  # no value check and no branch on it: both would sync the host
        check_tensor("noise_std", noise_std, ndim=0)
        if noise is None:
            raise ValueError("a tensor noise_std needs an explicit noise tensor")
    else:
        noise_std = check_scalar("noise_std", noise_std, minimum=0.0)
    batch, rows, dim = states.shape
    if noise is not None:
        check_tensor("noise", noise, shape=(batch, rows - 2, dim), dtypes=(states.dtype,), device=states.device)
    if rows <= 2:  # T = 1: no virtual states
        return
    inner = slice(1, rows - 1)
    param = states[:, inner]
    adam_update_ref(param, grad[:, inner], exp_avg[:, inner], exp_avg_sq[:, inner], step, adam)
    if isinstance(noise_std, torch.Tensor):
        param.add_(noise * noise_std)
    elif noise_std > 0.0:
        if noise is None:
            noise = torch.randn(param.shape, generator=generator, device=states.device, dtype=states.dtype)
        param.add_(noise, alpha=noise_std)
