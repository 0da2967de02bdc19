"""Adam as ``torch.optim.Adam`` computes it: the specification the state and action steps share."""

from __future__ import annotations

import math

import torch

from .._checks import check_same_device, check_tensor
from ._validate import check_adam_scalars


def adam_update_ref(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """One in-place Adam update, the formulas of ``torch.optim.Adam`` (no weight decay, no amsgrad).

    ``step`` is the 1-based count of this update (it sets the bias corrections).
    """
    bias_correction1 = 1.0 - beta1**step
    bias_correction2 = 1.0 - beta2**step
    exp_avg.lerp_(grad, 1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)


def check_adam_args(
    param_name: str,
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    check_tensor(param_name, param, ndim=3, dtypes=(torch.float32, torch.float64))
    for name, tensor in (("grad", grad), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        check_tensor(name, tensor, shape=tuple(param.shape), dtypes=(param.dtype,))
    check_same_device(**{param_name: param}, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    check_adam_scalars(step, lr, beta1, beta2, eps)
