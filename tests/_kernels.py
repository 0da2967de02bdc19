"""Test helpers: the kernel backends' launch functions under the names the tests use, and the shared
tensor helpers of the op tests (relative error, seeded inputs, NaN-poisoned outputs).

``triton_launches()`` / ``cuda_launches()`` return a namespace with, for each op of :data:`OPS`, its
``launcher(backend)`` (``grasp_kernels/ops/<op>/op.py``): the raw launches behind the custom ops, which take
validated tensors and preallocated outputs (so tests can poison the outputs with NaN). Imported lazily:
Triton and the CUDA module are optional.
"""

from __future__ import annotations

import types

import pytest
import torch

from grasp_kernels.backends import backend_unavailable_reason
from grasp_kernels.ops import AdamHyper
from grasp_kernels.ops.table import OP_TABLE

KERNEL_BACKENDS = ("triton", "cuda")
# the ops of the op table with a launch on every kernel backend (the fused MLP ops, Triton only, have their
# own test modules)
OPS = tuple(op.name for op in OP_TABLE if op.backends == KERNEL_BACKENDS)


def launches(backend: str) -> types.SimpleNamespace:
    """Each op's launch function of ``backend`` ("triton" | "cuda"), by op name."""
    return types.SimpleNamespace(**{op.name: op.launcher(backend) for op in OP_TABLE if op.name in OPS})


def triton_launches() -> types.SimpleNamespace:
    return launches("triton")


def kernel_backends() -> list:
    """(backend, device) pairs whose kernels can run here."""
    pairs = []
    for backend in KERNEL_BACKENDS:
        for device in ("cpu", "cuda"):
            if device == "cuda" and not torch.cuda.is_available():
                continue
            if backend_unavailable_reason(backend, torch.device(device)) is None:
                pairs.append(pytest.param(backend, device, id=f"{backend}-{device}"))
    return pairs or [pytest.param(None, None, marks=pytest.mark.skip(reason="no kernel backend runs here"))]


def make_inputs(device, B=3, T=5, D=7, A=2, pred_dtype=torch.float32, seed=0):
    """Small seeded inputs of every op (states, moments, noise, actions, bounds) on ``device``."""
    g = torch.Generator().manual_seed(seed)

    def rn(*shape):
        return torch.randn(shape, generator=g).to(device)

    return types.SimpleNamespace(
        pred=rn(B, T, D).to(pred_dtype),
        states=rn(B, T + 1, D),
        grad=rn(B, T + 1, D),
        exp_avg=rn(B, T + 1, D) * 0.1,
        exp_avg_sq=torch.rand(B, T + 1, D, generator=g).to(device) * 0.01,
        noise=rn(B, T - 1, D),
        actions=rn(B, T, A),
        grad_a=rn(B, T, A),
        exp_avg_a=rn(B, T, A) * 0.1,
        exp_avg_sq_a=torch.rand(B, T, A, generator=g).to(device) * 0.01,
        low=torch.tensor([-0.5, float("-inf")], device=device),
        high=torch.tensor([0.5, 0.3], device=device),
    )


# ------------------------------------------------------------------ Triton op tests (CPU interpreter or GPU)

DEVICE = torch.device("cpu")
TOL = 1e-5
ADAM = AdamHyper(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)


def rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert torch.isfinite(out).all(), "non-finite values (a poisoned output was not written?)"
    denom = ref.norm().item()
    if denom == 0.0:
        return out.norm().item()
    return (out - ref).norm().item() / denom


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, g, device=DEVICE, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=g).to(device=device, dtype=dtype)


def adam_inputs(shape, g, device=DEVICE):
    grad = randn(*shape, g=g, device=device)
    exp_avg = randn(*shape, g=g, device=device) * 0.1
    exp_avg_sq = torch.rand(shape, generator=g).to(device) * 0.01 + 1e-4
    return grad, exp_avg, exp_avg_sq


def poisoned(*shape, device=DEVICE) -> torch.Tensor:
    return torch.full(shape, float("nan"), device=device, dtype=torch.float32)


# ------------------------------------------------------------------ tolerances by precision, each with its argument
# NaN never passes: rel() asserts finite values, and torch.testing.assert_close keeps equal_nan=False. No
# tolerance for tf32: no product here runs in it (the Triton kernels' float32 tl.dot is IEEE,
# input_precision="ieee", and torch leaves cuBLAS at float32 by default).


def fused_rel_tol(device: torch.device | str, matmul_dtype: torch.dtype | None = None) -> float:
    """Bound on ``rel(out, ref)`` of the fused MLP kernels (one iteration, or one sync step through its
    T-step adjoint) against their float32 / float64 references, every output and moment.

    - float32 under the CPU interpreter: numpy's float32 ``exp`` and division are correctly rounded; only
      the order of the sums differs (measured <= 1e-6, up to T = 50 adjoint steps): 1e-5, as tight as ever.
    - float32 on a GPU: ``tl.exp`` is ``ex2.approx`` of ``x * log2(e)`` (2^-22 relative, plus |x| 2^-24
      from the product) and float32 division is approximate (``div.full``, 2 ulp): a few ulp more per
      element and step, ~1e-6 over a 50-step adjoint whose rollout stays bounded (tests/_fused_mlp.py's
      ``gain``), so 1e-4 keeps two orders of margin and is still far below a wrong tile's error.
    - bfloat16 matrix operands (float32 accumulation): each operand rounded to 8 bits, 2^-9 = 2e-3 relative.
      Measured under the interpreter, whose bf16 products are the GPU's (the same rounded operands, float32
      sums): states, energy and loss 1e-4..5e-3; the gradients, sums over H saturated units with
      cancellation, 1.2-1.8e-2 (one iteration, and sync steps of T = 5..50), their squares (the second
      moments) 2.4e-2. Hence 5e-2 on any device.
    """
    if matmul_dtype == torch.bfloat16:
        return 5e-2
    return 1e-4 if torch.device(device).type == "cuda" else 1e-5


def plan_close_tol(model_dtype: torch.dtype) -> dict[str, float]:
    """``rtol``/``atol`` for two plans that run the same kernels on the same inputs (a CUDA-graph replay
    against the eager loop), for ``torch.testing.assert_close``. float32: 1e-5 (the same launches; only
    a library's choice of algorithm may change the rounding). bfloat16 model: one such change flips a
    bf16 rounding of the prediction, 2^-8 = 3.9e-3 at magnitude 1, above any float32 bound; the plan's
    Adam steps (lr 0.05, normalised) carry it on without growth: 1e-2."""
    if model_dtype == torch.bfloat16:
        return {"rtol": 1e-2, "atol": 1e-2}
    return {"rtol": 1e-5, "atol": 1e-5}
