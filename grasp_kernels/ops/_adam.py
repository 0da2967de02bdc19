"""Adam as ``torch.optim.Adam`` computes it: the specification the state and action steps share."""

from __future__ import annotations

import math
from typing import Union

import torch

from .._checks import check_same_device, check_tensor
from ._params import AdamHyper
from ._validate import check_params, check_step


def adam_update_ref(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: Union[int, torch.Tensor],
    adam: AdamHyper,
) -> None:
    """One in-place Adam update of ``param`` (any shape; ``grad`` and the moments alike), the formulas of
    ``torch.optim.Adam`` with the constants ``adam`` (no weight decay, no amsgrad).

    ``step`` is the 1-based count of this update (it sets the bias corrections): a Python int, or a 0-d
    float64 tensor (``torch.compile``: one graph then serves every step; same formulas, as
    ``torch.optim.Adam(capturable=True)`` writes them).
    """
    lr, beta1, beta2, eps = adam.flat()
    bias_correction1 = 1.0 - beta1**step
    bias_correction2 = 1.0 - beta2**step
    exp_avg.lerp_(grad, 1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    if isinstance(step, torch.Tensor):  # addcdiv_'s value must be a host number
        denom = (exp_avg_sq.sqrt() / bias_correction2.sqrt()).add_(eps)
        param.sub_(exp_avg / denom * (lr / bias_correction1))
        return
    denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)


def check_adam_args(
    param_name: str,
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: Union[int, torch.Tensor],
    adam: AdamHyper,
) -> None:
    """The arguments of a reference Adam step on ``param [B, T(+1), X]`` (float32/float64; ``grad`` and the
    moments of its shape and dtype, on its device), ``step`` and ``adam``."""
    check_tensor(param_name, param, ndim=3, dtypes=(torch.float32, torch.float64))
    for name, tensor in (("grad", grad), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        check_tensor(name, tensor, shape=tuple(param.shape), dtypes=(param.dtype,))
    check_same_device(**{param_name: param}, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    check_step(step)
    check_params(adam)
