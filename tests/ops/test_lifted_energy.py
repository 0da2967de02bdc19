"""``lifted_energy`` (grasp_kernels/ops/lifted_energy): its specification ``lifted_energy_ref`` against
hand-derived formulas and finite differences, the Triton kernel (CPU interpreter; GPU with ``-m gpu``)
and the CUDA kernel (gpu) against it, and the argument errors of the op.
"""

from __future__ import annotations

import pytest
import torch

import _cuda_helpers as cu
import grasp_kernels.ops as ops
from _cuda_helpers import ck  # noqa: F401  (fixture)
from _kernels import DEVICE, TOL, gen, randn, rel
from _triton_checks import SHAPES, check_lifted_energy
from grasp_kernels.backends import backend_unavailable_reason
from grasp_kernels.reference import lifted_energy_ref

# The CPU Triton tests run the kernels under the interpreter (conftest sets it where there is no CUDA). On
# a GPU machine the kernels compile instead: conftest skips this module's CPU tests (the reason below)
# except the ``reference`` ones, and its gpu-marked tests run.
CPU_TRITON_REASON = backend_unavailable_reason("triton", DEVICE)


# ----------------------------------------------------------------------------------------------
# reference (the specification)
# ----------------------------------------------------------------------------------------------


@pytest.mark.reference
@pytest.mark.parametrize("batch,horizon,dim", [(1, 1, 1), (2, 3, 4), (5, 7, 3), (3, 16, 129)])
@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0])
def test_lifted_energy_gradients_match_hand_derived(batch, horizon, dim, gamma):
    g = gen(batch * 100 + horizon)
    pred = torch.randn(batch, horizon, dim, generator=g, dtype=torch.float64, requires_grad=True)
    states = torch.randn(batch, horizon + 1, dim, generator=g, dtype=torch.float64, requires_grad=True)
    energy = lifted_energy_ref(pred, states, gamma)
    weights = torch.rand(batch, generator=g, dtype=torch.float64)
    (energy * weights).sum().backward()

    p, s = pred.detach(), states.detach()
    goal = s[:, -1:]
    expected_energy = ((p - s[:, 1:]) ** 2).sum((1, 2)) + gamma * ((p - goal) ** 2).sum((1, 2))
    w = weights.view(-1, 1, 1)
    expected_pred_grad = w * (2 * (p - s[:, 1:]) + 2 * gamma * (p - goal))
    expected_state_grad = torch.zeros_like(s)
    expected_state_grad[:, 1:-1] = w * (-2 * (p[:, :-1] - s[:, 1:-1]))

    torch.testing.assert_close(energy.detach(), expected_energy, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pred.grad, expected_pred_grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(states.grad, expected_state_grad, rtol=1e-12, atol=1e-12)
    assert torch.all(states.grad[:, 0] == 0) and torch.all(states.grad[:, -1] == 0)


@pytest.mark.reference
def test_lifted_energy_gradients_match_finite_differences():
    """With s_0 and g held fixed, the reshaped gradients are the true gradients of E(pred, s_1..T-1)."""
    g = gen(7)
    batch, horizon, dim = 2, 5, 3
    fixed = torch.randn(batch, horizon + 1, dim, generator=g, dtype=torch.float64)
    pred = torch.randn(batch, horizon, dim, generator=g, dtype=torch.float64, requires_grad=True)
    inner = torch.randn(batch, horizon - 1, dim, generator=g, dtype=torch.float64, requires_grad=True)

    def energy(pred, inner):
        states = torch.cat([fixed[:, :1], inner, fixed[:, -1:]], dim=1)
        return lifted_energy_ref(pred, states, 0.7)

    assert torch.autograd.gradcheck(energy, (pred, inner), eps=1e-6, atol=1e-7)


@pytest.mark.reference
def test_lifted_energy_promotes_bf16_pred_and_keeps_its_grad_dtype():
    g = gen(3)
    pred = torch.randn(2, 4, 5, generator=g).to(torch.bfloat16).requires_grad_(True)
    states = torch.randn(2, 5, 5, generator=g)
    energy = lifted_energy_ref(pred, states, 0.5)
    assert energy.dtype == torch.float32
    energy.sum().backward()
    assert pred.grad.dtype == torch.bfloat16
    expected = lifted_energy_ref(pred.detach().float(), states, 0.5)
    torch.testing.assert_close(energy.detach(), expected)


@pytest.mark.reference
@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: lifted_energy_ref(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), 1.0), "pred must have shape"),
        (lambda: lifted_energy_ref(torch.zeros(2, 3, 4), torch.zeros(2, 4), 1.0), "states must be 3-D"),
        (lambda: lifted_energy_ref(torch.zeros(2, 3, 4), torch.zeros(2, 4, 4, dtype=torch.int64), 1.0), "states must have dtype"),
        (lambda: lifted_energy_ref(torch.zeros(2, 3, 4), torch.zeros(2, 4, 4), -1.0), "gamma must be >= 0"),
        (lambda: lifted_energy_ref(torch.zeros(2, 3, 4), torch.zeros(2, 4, 4), float("nan")), "gamma must be finite"),
    ],
)
def test_reference_rejects_bad_arguments(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# ----------------------------------------------------------------------------------------------
# triton (CPU interpreter)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("B,T,D", SHAPES)
def test_lifted_energy_matches_reference(B, T, D):
    check_lifted_energy(B, T, D)


@pytest.mark.parametrize("B,T,D", [(5, 7, 129), (1, 64, 3), (5, 2, 1)])
def test_lifted_energy_bf16_pred(B, T, D):
    check_lifted_energy(B, T, D, pred_dtype=torch.bfloat16)


def test_lifted_energy_gamma_zero_and_deterministic():
    check_lifted_energy(5, 7, 3, gamma=0.0)
    g = gen(3)
    pred, states = randn(5, 64, 129, g=g), randn(5, 65, 129, g=g)
    outs = [ops.lifted_energy(pred, states, 0.5, backend="triton") for _ in range(2)]
    assert torch.equal(outs[0], outs[1])


def test_offset_storage_is_respected():
    """Contiguous views with a storage offset (slices of a larger buffer) address the right memory."""
    g = gen(7)
    B, T, D = 3, 7, 5
    big_pred = randn(B + 2, T, D, g=g)
    big_states = randn(B + 1, T + 1, D, g=g)
    pred, states = big_pred[2:], big_states[1:]
    assert pred.storage_offset() > 0 and pred.is_contiguous() and states.is_contiguous()
    energy = ops.lifted_energy(pred, states, 0.3, backend="triton")
    assert rel(energy, lifted_energy_ref(pred, states, 0.3)) < TOL


def test_lifted_energy_grads_matches_reference_backend():
    g = gen(8)
    pred, states = randn(5, 7, 129, g=g, dtype=torch.bfloat16), randn(5, 8, 129, g=g)
    ref = ops.lifted_energy_grads(pred, states, 0.2, backend="reference")
    out = ops.lifted_energy_grads(pred, states, 0.2, backend="triton")
    for o, r in zip(out, ref):
        assert o.dtype == torch.float32 and rel(o, r) < TOL


def test_errors_name_the_argument():
    g = gen(9)
    B, T, D = 2, 3, 4
    pred, states = randn(B, T, D, g=g), randn(B, T + 1, D, g=g)
    with pytest.raises(TypeError, match="states.*float64.*reference"):
        ops.lifted_energy(pred.double(), states.double(), 0.5, backend="triton")
    with pytest.raises(TypeError, match="pred"):
        ops.lifted_energy(pred.half(), states, 0.5, backend="triton")
    with pytest.raises(ValueError, match="pred.*contiguous"):
        ops.lifted_energy(randn(B, D, T, g=g).transpose(1, 2), states, 0.5, backend="triton")
    with pytest.raises(ValueError, match="states.*contiguous"):
        ops.lifted_energy(pred, randn(B, T + 1, D + 1, g=g)[..., :D], 0.5, backend="triton")
    with pytest.raises(ValueError, match="pred.*shape"):
        ops.lifted_energy(randn(B, T + 1, D, g=g), states, 0.5, backend="triton")
    with pytest.raises(ValueError, match="gamma"):
        ops.lifted_energy(pred, states, -1.0, backend="triton")
    with pytest.raises(ValueError, match="device"):
        torch.ops.grasp.lifted_energy(pred.to("meta"), states, 0.5, "triton")
    with pytest.raises(ValueError, match="T\\+1 >= 2"):
        ops.lifted_energy(randn(B, 0, D, g=g), randn(B, 1, D, g=g), 0.5, backend="triton")
    with pytest.raises(ValueError, match="backend"):
        torch.ops.grasp.lifted_energy(pred, states, 0.5, "nope")


# ----------------------------------------------------------------------------------------------
# GPU: triton (native) and cuda
# ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,D", [(1, 1, 1), (5, 7, 3), (5, 64, 1000), (64, 50, 129), (3, 200, 4096)])
def test_gpu_native_matches_reference(B, T, D):
    cuda = torch.device("cuda")
    check_lifted_energy(B, T, D, device=cuda)
    check_lifted_energy(B, T, D, device=cuda, pred_dtype=torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.parametrize("pred_dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("B,T,D", cu.SHAPES)
def test_cuda_lifted_energy(ck, B, T, D, pred_dtype):
    pred, states = cu.energy_inputs(B, T, D, pred_dtype, 0)
    gamma = 0.37
    energy, grad_pred, grad_states = cu.poison((B,)), cu.poison((B, T, D)), cu.poison((B, T + 1, D))
    ck.lifted_energy(pred, states, gamma, energy, grad_pred, grad_states)
    e_ref, gp_ref, gs_ref = cu.energy_ref(pred, states, gamma)
    assert cu.rel(energy, e_ref) < cu.TOL
    assert cu.rel(grad_pred, gp_ref) < cu.TOL
    assert cu.rel(grad_states, gs_ref) < cu.TOL
    assert (grad_states[:, 0] == 0).all() and (grad_states[:, T] == 0).all()
    energy2 = cu.poison((B,))
    ck.lifted_energy(pred, states, gamma, energy2, grad_pred, grad_states)
    assert torch.equal(energy, energy2), "energy is not deterministic"


@pytest.mark.gpu
@pytest.mark.parametrize("pred_dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("B,T,D", [(2, 64, 20000), (3, 9, 100003), (1, 2, 4 * 8192 + 4)])
def test_cuda_lifted_energy_multi_chunk(ck, B, T, D, pred_dtype):
    """Plans large enough to be split across blocks (workspace + fixed-order finalize)."""
    from grasp_kernels import _cuda

    assert _cuda.energy_workspace_numel(torch.cuda.current_device(), B, T, D) > 0
    pred, states = cu.energy_inputs(B, T, D, pred_dtype, 1)
    energy, grad_pred, grad_states = cu.poison((B,)), cu.poison((B, T, D)), cu.poison((B, T + 1, D))
    ck.lifted_energy(pred, states, 1.0, energy, grad_pred, grad_states)
    e_ref, gp_ref, gs_ref = cu.energy_ref(pred, states, 1.0)
    assert cu.rel(energy, e_ref) < cu.TOL
    assert cu.rel(grad_pred, gp_ref) < cu.TOL
    assert cu.rel(grad_states, gs_ref) < cu.TOL
    for _ in range(3):
        again = cu.poison((B,))
        ck.lifted_energy(pred, states, 1.0, again, grad_pred, grad_states)
        assert torch.equal(energy, again), "energy is not deterministic"


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,D", [(1, 1, 1), (5, 7, 3), (5, 64, 1000), (2, 33, 20000)])
def test_cuda_matches_triton(ck, B, T, D):
    tk = cu.triton_provider()
    for dtype in (torch.float32, torch.bfloat16):
        pred, states = cu.energy_inputs(B, T, D, dtype, 8)
        outs = []
        for prov in (ck, tk):
            o = (cu.poison((B,)), cu.poison((B, T, D)), cu.poison((B, T + 1, D)))
            prov.lifted_energy(pred, states, 0.7, *o)
            outs.append(o)
        for a, b in zip(*outs):
            assert cu.rel(a, b) < cu.TOL


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("B,T,D", [(1, 1, 1), (5, 7, 129), (2, 64, 1000)])
def test_custom_op_autograd(request, backend, B, T, D):
    """energy.sum().backward() through torch.ops.grasp.lifted_energy on the GPU (each kernel backend)."""
    if backend == "cuda":
        request.getfixturevalue("ck")
    pred, states = cu.energy_inputs(B, T, D, torch.float32, 12)
    p = pred.clone().requires_grad_(True)
    s = states.clone().requires_grad_(True)
    energy = torch.ops.grasp.lifted_energy(p, s, 0.25, backend)[0]
    (energy * torch.arange(1, B + 1, device="cuda")).sum().backward()  # non-trivial incoming gradient
    p64 = pred.double().requires_grad_(True)
    s64 = states.double().requires_grad_(True)
    e64 = lifted_energy_ref(p64, s64, 0.25)
    (e64 * torch.arange(1, B + 1, device="cuda")).sum().backward()
    assert cu.rel(energy.detach(), e64.detach()) < cu.TOL
    assert cu.rel(p.grad, p64.grad) < cu.TOL
    assert cu.rel(s.grad, s64.grad) < cu.TOL
