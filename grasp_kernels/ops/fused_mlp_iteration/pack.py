"""An :class:`~grasp_kernels.models.MLPDynamics` packed for the fused MLP kernel (no Triton import), and the checks
of a packed model that both fused MLP ops share.

The fused kernel (:mod:`.triton_kernel`) reads the model as a flat list of tensors,
prepared once per plan by :func:`pack_mlp`:

    [state_mean, state_std, action_mean, action_std, delta_scale,      float32 [D], [D], [A], [A], [D]
     W1^T, b1,                                                          [D+A, H] (rows 0..D-1: state part), [H]
     W2^T, b2, ..., W_depth^T, b_depth,                                 [H, H], [H]
     Wout^T, bout]                                                      [H, D], [D]

The matrices are contiguous transposes (``[in, out]``, so the kernel's forward loads are coalesced
along the output features) in the matmul dtype (float32 or bfloat16); vectors and biases stay float32.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import nn

from ..._checks import check_same_device, check_tensor
from ...models.mlp import MLPDynamics

__all__ = ["ACTIVATIONS", "MAX_DEPTH", "PackedMLP", "check_packed_params", "fused_mlp_unsupported_reason",
           "pack_mlp", "packed_for"]

# activation module -> the kernel's constexpr ACT code
ACTIVATIONS: dict[type, int] = {nn.SiLU: 0, nn.ReLU: 1, nn.Tanh: 2}
ACTIVATION_NAMES = {0: "SiLU", 1: "ReLU", 2: "Tanh"}
MAX_DEPTH = 3
MATMUL_DTYPES = (torch.float32, torch.bfloat16)


@dataclasses.dataclass(frozen=True)
class PackedMLP:
    """An MLPDynamics in the fused kernel's layout (module docstring); ``model`` is the source module."""

    model: nn.Module
    state_dim: int
    action_dim: int
    hidden: int
    depth: int
    activation: int
    matmul_dtype: torch.dtype
    tensors: tuple[torch.Tensor, ...]


def _layers(model: nn.Module) -> tuple[list[nn.Linear], list[nn.Module]]:
    net = getattr(model, "net", None)
    if not isinstance(net, nn.Sequential):
        raise TypeError("not an MLPDynamics (no nn.Sequential 'net')")
    modules = list(net)
    linears = [m for m in modules[0::2]]
    acts = [m for m in modules[1::2]]
    return linears, acts


def fused_mlp_unsupported_reason(model: object) -> Optional[str]:
    """None if the fused MLP kernel can evaluate ``model``, else why not (a sentence)."""
    if not isinstance(model, MLPDynamics):
        return f"the world model must be a grasp_kernels.models.MLPDynamics, got {type(model).__name__}"
    linears, acts = _layers(model)
    depth = len(acts)
    if len(linears) != depth + 1 or not all(type(m) is nn.Linear for m in linears):
        return "MLPDynamics.net must alternate nn.Linear and activation modules and end with nn.Linear"
    if not 1 <= depth <= MAX_DEPTH:
        return f"the fused MLP kernel supports depth 1..{MAX_DEPTH} hidden layers, got {depth}"
    for act in acts:
        if type(act) not in ACTIVATIONS:
            names = ", ".join(c.__name__ for c in ACTIVATIONS)
            return f"the fused MLP kernel supports the activations {names}, got {type(act).__name__}"
    if len({type(a) for a in acts}) != 1:
        return "the fused MLP kernel needs one activation type for all hidden layers"
    if any(m.bias is None for m in linears):
        return "the fused MLP kernel needs biased nn.Linear layers"
    dtypes = {p.dtype for p in model.parameters()}
    if not dtypes <= set(MATMUL_DTYPES):
        return f"the fused MLP kernel takes float32 or bfloat16 weights, got {sorted(map(str, dtypes))}"
    return None


@torch.no_grad()
def pack_mlp(
    model: nn.Module, matmul_dtype: Optional[torch.dtype] = None, device: Optional[torch.device] = None
) -> PackedMLP:
    """Pack ``model`` (an MLPDynamics) for the fused kernel; ``matmul_dtype`` float32 (default: the
    model's weight dtype) or bfloat16. Raises ValueError naming what the kernel does not support.
    A snapshot: pack again after changing the weights."""
    reason = fused_mlp_unsupported_reason(model)
    if reason is not None:
        raise ValueError(reason)
    linears, acts = _layers(model)
    if matmul_dtype is None:
        matmul_dtype = linears[0].weight.dtype
    if matmul_dtype not in MATMUL_DTYPES:
        raise TypeError(f"matmul_dtype must be float32 or bfloat16, got {matmul_dtype}")
    if device is None:
        device = linears[0].weight.device

    def vec(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(device=device, dtype=torch.float32).reshape(-1).contiguous()

    def mat(w: torch.Tensor) -> torch.Tensor:
        return w.detach().to(device=device, dtype=matmul_dtype).t().contiguous()

    tensors = [vec(model.state_mean), vec(model.state_std), vec(model.action_mean), vec(model.action_std),
               vec(model.delta_scale)]
    for layer in linears:
        tensors += [mat(layer.weight), vec(layer.bias)]
    return PackedMLP(
        model=model,
        state_dim=model.state_dim,
        action_dim=model.action_dim,
        hidden=linears[0].out_features,
        depth=len(acts),
        activation=ACTIVATIONS[type(acts[0])],
        matmul_dtype=matmul_dtype,
        tensors=tuple(tensors),
    )


def check_packed_params(params: list, depth: int, activation: int, dim: int, action_dim: int, device) -> None:
    """The custom ops' check of a packed model (``params`` as :attr:`PackedMLP.tensors`, with ``depth``
    and ``activation``) for states of width ``dim`` and actions of width ``action_dim`` on ``device``;
    errors name the parameter."""
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must be an int in 1..{MAX_DEPTH}, got {depth!r}")
    if activation not in ACTIVATION_NAMES:
        raise ValueError(f"activation must be one of {sorted(ACTIVATION_NAMES)} ({ACTIVATION_NAMES}), got {activation!r}")
    if len(params) != 5 + 2 * (depth + 1):
        raise ValueError(f"params must hold {5 + 2 * (depth + 1)} tensors for depth {depth}, got {len(params)}")
    hidden = params[6].shape[0] if params[6].dim() == 1 else -1
    if hidden < 1:
        raise ValueError(f"params[6] (b1) must be a non-empty 1-D tensor, got shape {tuple(params[6].shape)}")
    names = ["state_mean", "state_std", "action_mean", "action_std", "delta_scale"]
    shapes = [(dim,), (dim,), (action_dim,), (action_dim,), (dim,)]
    names += ["W1^T", "b1"]
    shapes += [(dim + action_dim, hidden), (hidden,)]
    for layer in range(2, depth + 1):
        names += [f"W{layer}^T", f"b{layer}"]
        shapes += [(hidden, hidden), (hidden,)]
    names += ["Wout^T", "bout"]
    shapes += [(hidden, dim), (dim,)]
    matmul_dtype = params[5].dtype
    for name, tensor, shape in zip(names, params, shapes):
        matrix = len(shape) == 2
        dtypes = (matmul_dtype,) if matrix else (torch.float32,)
        if matrix and matmul_dtype not in (torch.float32, torch.bfloat16):
            raise TypeError(f"params {name} must be float32 or bfloat16, got {matmul_dtype}")
        check_tensor(f"params {name}", tensor, shape=shape, dtypes=dtypes, contiguous=True)
        check_same_device(states=torch.empty(0, device=device), **{f"params {name}": tensor})


def packed_for(model: "nn.Module | PackedMLP", states: torch.Tensor, actions: torch.Tensor) -> PackedMLP:
    """``model`` packed on ``states``' device (a :class:`PackedMLP` is used as given), checked against
    the state width ``states.shape[-1]`` and the action width ``actions.shape[-1]``."""
    packed = model if isinstance(model, PackedMLP) else pack_mlp(model, device=states.device)
    if packed.state_dim != states.shape[-1] or packed.action_dim != actions.shape[-1]:
        raise ValueError(
            f"the MLP maps D = {packed.state_dim}, A = {packed.action_dim}; got states of shape {tuple(states.shape)} "
            f"and actions of shape {tuple(actions.shape)}"
        )
    return packed
