"""The physical floor of one GRASP iteration, for the planner-speed table.

Floor per iteration = max(FLOP floor, byte floor):

- FLOP floor: the FLOPs of one world-model forward plus the action-input backward (activation gradients
  only) over the B*T rows, counted analytically (:func:`model_flops`), over a large matmul's rate in the
  model's dtype measured in the same run;
- byte floor: the minimum bytes of the GRASP update (:func:`grasp_bytes`: states read + written, state
  and action Adam moments read + written, actions read + written, the energy, the weights once;
  predictions and activations never in global memory, as in the fused path) over the copy bandwidth
  measured in the same run.

"% floor" in the table = floor / time.
"""

from __future__ import annotations

import _bench_env  # noqa: F401  (first: TRITON_INTERPRET before Triton is imported)

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from _timing import copy_bandwidth_gbs, matmul_tflops
from grasp_kernels.models import MLPDynamics

if TYPE_CHECKING:
    from _planner_providers import Shape


@dataclass(frozen=True)
class Rates:
    """The physical rates the floors divide by, measured in this run."""

    tflops: float  # one matmul_n x matmul_n @ matmul_n x matmul_n matmul in the model's dtype
    matmul_n: int
    copy_gbs: float  # dst.copy_(src), read + write


def measure_rates(device: torch.device, model_dtype: torch.dtype, quick: bool) -> Rates:
    tflops, matmul_n = matmul_tflops(device, model_dtype, quick)
    return Rates(tflops, matmul_n, copy_bandwidth_gbs(device, quick))


@dataclass(frozen=True)
class Floor:
    """One shape's floor: the work counted and the time it takes at the measured rates."""

    flops: float
    nbytes: float
    flop_ms: float
    byte_ms: float

    @property
    def ms(self) -> float:
        return max(self.flop_ms, self.byte_ms)

    @property
    def bound(self) -> str:
        return "FLOPs" if self.flop_ms >= self.byte_ms else "bytes"


def shape_floor(shape: Shape, action_dim: int, rates: Rates) -> Floor:
    flops, nbytes = model_flops(shape, action_dim), grasp_bytes(shape, action_dim)
    return Floor(flops, nbytes, flops / (rates.tflops * 1e12) * 1e3, nbytes / (rates.copy_gbs * 1e9) * 1e3)


def model_flops(shape: Shape, action_dim: int) -> float:
    """FLOPs of one forward + action-input backward (activation gradients, no weight gradients) over
    the B*T rows. Elementwise work (activations, norms, softmax) is not counted."""
    n, model = shape.rows, shape.model
    if isinstance(model, MLPDynamics):
        linears = [m for m in model.net if isinstance(m, torch.nn.Linear)]
        forward = sum(2 * n * m.in_features * m.out_features for m in linears)
        return 2.0 * forward  # the input-gradient backward: one matmul of the same size per layer
    h, p, e = model.history, model.num_patches, model.embed_dim
    tokens = h * p
    width = model.token_in.out_features
    encoder = 0.0
    attention = 0.0
    for layer in model.encoder.layers:
        ff = layer.linear1.out_features
        encoder += 2 * tokens * (4 * width * width + 2 * width * ff)  # qkv + out projection, the MLP
        attention += 2 * 2 * tokens * tokens * width  # QK^T and PV over all h*P tokens (the mask is applied, not skipped)
    token_in = 2 * tokens * e * width
    token_out = 2 * p * width * e
    action_in = 2 * (action_dim * width + width * width)
    forward = encoder + attention + token_in + token_out + action_in
    # backward to the action input: every encoder matmul once more (input gradients), attention twice
    # (dQ, dK, dV, dP), token_out and action_in once; token_in has no gradient (detached states)
    backward = encoder + 2 * attention + token_out + action_in
    return float(n * (forward + backward))


def grasp_bytes(shape: Shape, action_dim: int) -> float:
    """Minimum bytes of the GRASP update of one iteration (float32 states, actions, moments)."""
    b, t, d, a = shape.batch, shape.horizon, shape.state_numel, action_dim
    inner = b * max(t - 1, 0) * d
    elements = (
        b * (t + 1) * d  # states read (s_0 .. s_T, incl. the goal row)
        + inner  # virtual states written
        + 4 * inner  # state moments read + written
        + b * (shape.history - 1) * d  # older observed frames (history windows)
        + 2 * b * t * a  # actions read + written
        + 4 * b * t * a  # action moments read + written
        + b  # energy
    )
    weights = sum(p.numel() * p.element_size() for p in shape.model.parameters())
    return 4.0 * elements + weights
