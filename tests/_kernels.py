"""Test helpers: the kernel backends' launch functions under the names the tests use, and the shared
tensor helpers of the op tests (relative error, seeded inputs, NaN-poisoned outputs).

``triton_launches()`` / ``cuda_launches()`` return a namespace ``lifted_energy, state_step, action_step,
lifted_energy_state_step`` of each op's ``launcher(backend)`` (``grasp_kernels/ops/<op>/op.py``): the
raw launches behind the custom ops, which take validated tensors and preallocated outputs (so tests
can poison the outputs with NaN). Imported lazily: Triton and the CUDA module are optional.
"""

from __future__ import annotations

import types

import pytest
import torch

from grasp_kernels.backends import backend_unavailable_reason

OPS = ("lifted_energy", "state_step", "action_step", "lifted_energy_state_step")
KERNEL_BACKENDS = ("triton", "cuda")


def launches(backend: str) -> types.SimpleNamespace:
    """Each op's launch function of ``backend`` ("triton" | "cuda")."""
    import importlib

    return types.SimpleNamespace(**{
        op: importlib.import_module(f"grasp_kernels.ops.{op}.op").launcher(backend) for op in OPS
    })


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
ADAM = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)


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
