"""``action_step_`` (grasp_kernels/ops/action_step): Adam then a clamp to the action bounds. Its
specification ``action_step_ref`` against ``torch.optim.Adam``, the Triton kernel (CPU interpreter; GPU
with ``-m gpu``) and the CUDA kernel (gpu) against it, argument errors.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import _cuda_helpers as cu
import grasp_kernels.ops as ops
from _cuda_helpers import ck  # noqa: F401  (fixture)
from _kernels import ADAM, DEVICE, adam_inputs, gen, randn
from _triton_checks import B_VALUES, check_action_step
from grasp_kernels.backends import backend_unavailable_reason
from grasp_kernels.ops import AdamHyper
from grasp_kernels.reference import action_step_ref

# CPU Triton tests: skipped by conftest where Triton cannot run on CPU tensors (``reference`` ones run)
CPU_TRITON_REASON = backend_unavailable_reason("triton", DEVICE)


# ----------------------------------------------------------------------------------------------
# reference (the specification)
# ----------------------------------------------------------------------------------------------


def _adam_reference_run(param0, grads, lr, beta1, beta2, eps):
    param = torch.nn.Parameter(param0.clone())
    opt = torch.optim.Adam([param], lr=lr, betas=(beta1, beta2), eps=eps, foreach=False)
    for grad in grads:
        param.grad = grad.clone()
        opt.step()
    return param.detach()


@pytest.mark.reference
@pytest.mark.parametrize("bounds", ["float", "tensor", "none"])
def test_action_step_matches_torch_adam_then_clamps(bounds):
    g = gen(13)
    actions = torch.rand(3, 8, 2, generator=g) * 2 - 1
    grads = [torch.randn(3, 8, 2, generator=g) * 3]
    low, high = {"float": (-0.5, 0.5), "tensor": (torch.tensor([-0.3, -1.0]), torch.tensor([0.2, 1.0])), "none": (None, None)}[bounds]
    exp_avg, exp_avg_sq = torch.zeros_like(actions), torch.zeros_like(actions)
    lr = 0.2
    # one step against torch.optim.Adam, then the clamp
    expected = _adam_reference_run(actions, grads[:1], lr, 0.9, 0.999, 1e-8)
    action_step_ref(actions, grads[0], exp_avg, exp_avg_sq, 1, AdamHyper(lr, 0.9, 0.999, 1e-8), low, high)
    if bounds != "none":
        lo = torch.as_tensor(low).expand(2)
        hi = torch.as_tensor(high).expand(2)
        expected = torch.maximum(torch.minimum(expected, hi), lo)
        assert torch.all(actions >= lo) and torch.all(actions <= hi)
    torch.testing.assert_close(actions, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.reference
def test_action_step_several_steps_match_torch_adam_without_bounds():
    g = gen(17)
    actions = torch.randn(2, 5, 3, generator=g)
    grads = [torch.randn(2, 5, 3, generator=g) for _ in range(6)]
    expected = _adam_reference_run(actions, grads, 0.01, 0.8, 0.99, 1e-6)
    exp_avg, exp_avg_sq = torch.zeros_like(actions), torch.zeros_like(actions)
    for step, grad in enumerate(grads, start=1):
        action_step_ref(actions, grad, exp_avg, exp_avg_sq, step, AdamHyper(0.01, 0.8, 0.99, 1e-6), None, None)
    torch.testing.assert_close(actions, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.reference
@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: action_step_ref(*[torch.zeros(2, 4, 3)] * 4, 1, AdamHyper(0.1), torch.zeros(2), None), "low must have one value per action dimension"),
        (lambda: action_step_ref(*[torch.zeros(2, 4, 3)] * 3, torch.zeros(2, 4, 3, dtype=torch.float64), 1, AdamHyper(0.1), None, None), "exp_avg_sq must have dtype"),
    ],
)
def test_reference_rejects_bad_arguments(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# ----------------------------------------------------------------------------------------------
# triton (CPU interpreter)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("B,T,A", list(itertools.product(B_VALUES, (1, 7, 64), (1, 3, 129))))
def test_action_step_matches_reference(B, T, A):
    check_action_step(B, T, A)


@pytest.mark.parametrize("low,high", [(None, None), (-0.5, 0.5), (None, 0.25), ([-0.1, -0.2, -0.3], None)])
def test_action_step_bound_kinds(low, high):
    g = gen(2)
    actions = randn(5, 7, 3, g=g)
    grad, m, v = adam_inputs((5, 7, 3), g)
    ref = [t.clone() for t in (actions, m, v)]
    ref_low = torch.tensor(low) if isinstance(low, list) else low
    action_step_ref(ref[0], grad, ref[1], ref[2], 2, ADAM, low=ref_low, high=high)
    out = [t.clone() for t in (actions, m, v)]
    ops.action_step_(out[0], grad, out[1], out[2], 2, ADAM, low=low, high=high, backend="triton")
    assert torch.allclose(out[0], ref[0], rtol=1e-6, atol=1e-7)


def test_errors_name_the_argument():
    g = gen(9)
    B, T = 2, 3
    actions = randn(B, T, 2, g=g)
    ga, ma, va = adam_inputs((B, T, 2), g)
    with pytest.raises(ValueError, match="low"):
        ops.action_step_(actions, ga, ma, va, 1, ADAM, low=[0.0, 1.0, 2.0], high=None, backend="triton")
    with pytest.raises(TypeError, match="actions.*float64"):
        ops.action_step_(actions.double(), ga.double(), ma.double(), va.double(), 1, ADAM, low=None, high=None,
                         backend="triton")


# ----------------------------------------------------------------------------------------------
# GPU: triton (native) and cuda
# ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,D", [(1, 1, 1), (5, 7, 3), (5, 64, 1000), (64, 50, 129), (3, 200, 4096)])
def test_gpu_native_matches_reference(B, T, D):
    check_action_step(B, T, min(D, 64), device=torch.device("cuda"))


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,A", cu.SHAPES)
def test_cuda_action_step(ck, B, T, A):
    g = cu.gen("action", B, T, A)
    actions, grad = cu.randn((B, T, A), g), cu.randn((B, T, A), g)
    m, v = cu.randn((B, T, A), g, scale=0.1), cu.randn((B, T, A), g, scale=0.1).square()
    low, high = cu.bounds(A, g)
    refs = [x.double() for x in (actions, grad, m, v)]
    action_step_ref(*refs, 5, cu.ADAM, low=low.double(), high=high.double())
    ck.action_step(actions, grad, m, v, 5, cu.ADAM, low, high)
    assert cu.rel(actions, refs[0]) < cu.TOL
    assert cu.rel(m, refs[2]) < cu.TOL
    assert cu.rel(v, refs[3]) < cu.TOL
    assert (actions >= low).all() and (actions <= high).all()


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,A", [(1024, 1024, 4), (1366, 1024, 3)], ids=["A4-vector", "A3-scalar"])
def test_cuda_action_step_grid_stride(ck, B, T, A):
    """N*A >= 4M elements: several grid-stride passes of the full grid, with the action index ``a``
    advanced incrementally across passes (stride % A != 0 for odd A)."""
    assert B * T * A >= 4 * 2**20
    g = cu.gen("action-loop", B, T, A)
    actions, grad = cu.randn((B, T, A), g), cu.randn((B, T, A), g)
    m, v = cu.randn((B, T, A), g, scale=0.1), cu.randn((B, T, A), g, scale=0.1).square()
    low, high = cu.bounds(A, g)
    refs = [x.double() for x in (actions, grad, m, v)]
    action_step_ref(*refs, 4, cu.ADAM, low=low.double(), high=high.double())
    ck.action_step(actions, grad, m, v, 4, cu.ADAM, low, high)
    assert cu.rel(actions, refs[0]) < cu.TOL
    assert cu.rel(m, refs[2]) < cu.TOL
    assert cu.rel(v, refs[3]) < cu.TOL
    assert (actions >= low).all() and (actions <= high).all()
    # elementwise, so the worst element too (a wrong `a` would clamp against the wrong bounds)
    assert (actions.double() - refs[0]).abs().max().item() < 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,D", [(1, 1, 1), (5, 7, 3), (5, 64, 1000), (2, 33, 20000)])
def test_cuda_matches_triton(ck, B, T, D):
    tk = cu.triton_provider()
    results = []
    for prov in (ck, tk):
        g = cu.gen("tri-act", B, T, D)
        a, ga = cu.randn((B, T, D), g), cu.randn((B, T, D), g)
        ma, va = cu.randn((B, T, D), g, scale=0.1), cu.randn((B, T, D), g, scale=0.1).square()
        low, high = cu.bounds(D, g)
        prov.action_step(a, ga, ma, va, 2, AdamHyper(0.1), low, high)
        results.append((a, ma, va))
    for a, b in zip(*results):
        assert cu.rel(a, b) < cu.TOL
