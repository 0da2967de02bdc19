"""``state_step_`` (grasp_kernels/ops/state_step): Adam + Langevin noise on the virtual states. Its
specification ``state_step_ref`` against ``torch.optim.Adam``, the Triton kernel (CPU interpreter; GPU
with ``-m gpu``) and the CUDA kernel (gpu) against it, the in-kernel (Philox) noise, argument errors.
"""

from __future__ import annotations

import math

import pytest
import torch

import _cuda_helpers as cu
import grasp_kernels.ops as ops
from _cuda_helpers import ck  # noqa: F401  (fixture)
from _kernels import ADAM, DEVICE, adam_inputs, gen, randn
from _triton_checks import SHAPES, check_state_step, seeded_noise
from grasp_kernels.backends import backend_unavailable_reason
from grasp_kernels.ops import AdamHyper, NoiseCounters
from grasp_kernels.reference import state_step_ref

# CPU Triton tests: skipped by conftest where Triton cannot run on CPU tensors (``reference`` ones run)
CPU_TRITON_REASON = backend_unavailable_reason("triton", DEVICE)

REF_ADAM = AdamHyper(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8)


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
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_state_step_matches_torch_adam_on_virtual_rows_only(dtype):
    g = gen(11)
    batch, horizon, dim = 3, 6, 4
    states = torch.randn(batch, horizon + 1, dim, generator=g, dtype=dtype)
    grads = [torch.randn(batch, horizon + 1, dim, generator=g, dtype=dtype) for _ in range(5)]
    expected = _adam_reference_run(states[:, 1:-1], [gr[:, 1:-1] for gr in grads], *REF_ADAM.flat())
    original = states.clone()
    exp_avg, exp_avg_sq = torch.zeros_like(states), torch.zeros_like(states)
    for step, grad in enumerate(grads, start=1):
        state_step_ref(states, grad, exp_avg, exp_avg_sq, step, REF_ADAM, noise_std=0.0)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(states[:, 1:-1], expected, rtol=tol, atol=tol)
    assert torch.equal(states[:, 0], original[:, 0]) and torch.equal(states[:, -1], original[:, -1])
    assert torch.all(exp_avg[:, 0] == 0) and torch.all(exp_avg_sq[:, -1] == 0)


@pytest.mark.reference
def test_state_step_applies_given_noise_exactly():
    g = gen(5)
    states = torch.randn(2, 5, 3, generator=g)
    grad = torch.randn(2, 5, 3, generator=g)
    noise = torch.randn(2, 3, 3, generator=g)
    noisy, clean = states.clone(), states.clone()
    state_step_ref(noisy, grad, torch.zeros_like(states), torch.zeros_like(states), 1, REF_ADAM, noise_std=0.3,
                   noise=noise)
    state_step_ref(clean, grad, torch.zeros_like(states), torch.zeros_like(states), 1, REF_ADAM, noise_std=0.0)
    assert torch.equal(noisy[:, 1:-1], clean[:, 1:-1].add(noise, alpha=0.3))
    assert torch.equal(noisy[:, 0], states[:, 0]) and torch.equal(noisy[:, -1], states[:, -1])


@pytest.mark.reference
def test_state_step_drawn_noise_is_seeded_and_standard_normal():
    batch, horizon, dim = 4, 101, 50
    base = torch.zeros(batch, horizon + 1, dim)
    zero_grad = torch.zeros_like(base)

    def draw(seed):
        states = base.clone()
        state_step_ref(
            states, zero_grad, torch.zeros_like(base), torch.zeros_like(base), 1, REF_ADAM,
            noise_std=2.0, generator=gen(seed),
        )
        return states[:, 1:-1] / 2.0  # zero gradient: the Adam step moves nothing

    first, again, other = draw(1), draw(1), draw(2)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert abs(first.mean().item()) < 0.02 and abs(first.std().item() - 1.0) < 0.02
    assert abs(torch.corrcoef(torch.stack([first.flatten(), other.flatten()]))[0, 1].item()) < 0.02


@pytest.mark.reference
@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: state_step_ref(*[torch.zeros(2, 4, 3)] * 3, torch.zeros(2, 4, 2), 1, AdamHyper(0.1), 0.0), "exp_avg_sq must have shape"),
        (lambda: state_step_ref(*[torch.zeros(2, 4, 3)] * 4, 0, AdamHyper(0.1), 0.0), "step must be an int >= 1"),
        (lambda: state_step_ref(*[torch.zeros(2, 4, 3)] * 4, 1, AdamHyper(0.1, 1.0), 0.0), r"beta1 must be in \[0, 1\)"),
        (lambda: state_step_ref(*[torch.zeros(2, 4, 3)] * 4, 1, (0.1, 0.9, 0.999, 1e-8), 0.0), "adam must be a grasp_kernels.ops.AdamHyper"),
        (lambda: state_step_ref(*[torch.zeros(2, 4, 3)] * 4, 1, AdamHyper(0.1), 0.1, noise=torch.zeros(2, 3, 3)), "noise must have shape"),
    ],
)
def test_reference_rejects_bad_arguments(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# ----------------------------------------------------------------------------------------------
# triton (CPU interpreter)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("B,T,D", [s for s in SHAPES if s[1] != 1 or s[2] == 3])
def test_state_step_matches_reference(B, T, D):
    check_state_step(B, T, D)


@pytest.mark.parametrize("step,beta1,eps", [(1, 0.9, 1e-8), (7, 0.3, 1e-3), (50, 0.0, 1e-2)])
def test_state_step_adam_variants(step, beta1, eps):
    check_state_step(5, 7, 129, step=step, beta1=beta1, eps=eps)
    check_state_step(1, 2, 3, step=step, beta1=beta1, eps=eps, noise_std=0.0)


def test_seeded_noise_reproducible_and_seed_dependent():
    a = seeded_noise(5, 7, 129, seed=1234)
    b = seeded_noise(5, 7, 129, seed=1234)
    c = seeded_noise(5, 7, 129, seed=1235)
    assert torch.equal(a, b)
    assert (a != c).float().mean() > 0.99
    big = seeded_noise(2, 3, 5, seed=2**40 + 3)  # 64-bit seeds are accepted
    assert torch.isfinite(big).all()


def test_seeded_noise_offset_is_linear_index():
    """Element (b, t, d) uses offset b*(T-1)*D + t*D + d whatever the tiling: [B,T-1,D] == [1,B*(T-1),D]."""
    B, T, D = 5, 7, 129
    a = seeded_noise(B, T, D, seed=99)
    flat = seeded_noise(1, B * (T - 1) + 1, D, seed=99)
    assert torch.equal(a.reshape(-1), flat.reshape(-1))


def test_seeded_noise_statistics():
    B, T, D = 4, 65, 1000
    x = seeded_noise(B, T, D, seed=20240601).double()
    n = x.numel()
    assert abs(x.mean().item()) < 5 / math.sqrt(n)
    assert abs(x.std().item() - 1.0) < 5 / math.sqrt(2 * n)
    # distribution: Kolmogorov-Smirnov distance to N(0, 1)
    sorted_x = x.reshape(-1).sort().values
    cdf = torch.special.ndtr(sorted_x)
    emp = torch.arange(1, n + 1, dtype=torch.float64) / n
    assert (cdf - emp).abs().max().item() < 2.0 / math.sqrt(n)

    def corr(u, v):
        u, v = u.reshape(-1) - u.mean(), v.reshape(-1) - v.mean()
        return ((u * v).mean() / (u.std() * v.std())).item()

    limit = 5 / math.sqrt(n / 2)
    assert abs(corr(x[..., 1:], x[..., :-1])) < limit  # neighbours along D (offsets i, i+1)
    assert abs(corr(x[:, 1:], x[:, :-1])) < limit  # neighbouring rows
    assert abs(corr(x[1:], x[:-1])) < limit  # neighbouring plans
    y = seeded_noise(B, T, D, seed=20240602).double()
    assert abs(corr(x, y)) < 5 / math.sqrt(n)  # consecutive seeds


def test_state_step_seed_from_generator_and_default():
    B, T, D = 2, 5, 3

    def run(**kw):
        states = randn(B, T + 1, D, g=gen(0))
        grad, m, v = adam_inputs((B, T + 1, D), gen(1))
        ops.state_step_(states, grad, m, v, 2, ADAM, noise_std=0.1, backend="triton", **kw)
        return states

    assert torch.equal(run(generator=gen(5)), run(generator=gen(5)))
    assert not torch.equal(run(generator=gen(5)), run(generator=gen(6)))
    torch.manual_seed(11)
    x = run()
    torch.manual_seed(11)
    assert torch.equal(x, run())


def test_errors_name_the_argument():
    g = gen(9)
    B, T, D = 2, 3, 4
    states = randn(B, T + 1, D, g=g)
    grad, m, v = adam_inputs((B, T + 1, D), g)
    with pytest.raises(ValueError, match="noise"):
        ops.state_step_(states, grad, m, v, 1, ADAM, noise_std=0.1, noise=randn(B, T, D, g=g), backend="triton")
    with pytest.raises(ValueError, match="exp_avg_sq.*contiguous"):
        ops.state_step_(states, grad, m, randn(B, D, T + 1, g=g).transpose(1, 2), 1, ADAM, noise_std=0.1,
                        backend="triton")
    with pytest.raises(TypeError, match="grad.*float64"):
        ops.state_step_(states, grad.double(), m, v, 1, ADAM, noise_std=0.1, backend="triton")
    with pytest.raises(ValueError, match="step"):
        ops.state_step_(states, grad, m, v, 0, ADAM, noise_std=0.1, backend="triton")
    with pytest.raises(ValueError, match="seed"):
        ops.state_step_(states, grad, m, v, 1, ADAM, noise_std=0.1, counters=NoiseCounters(seed=-1), backend="triton")
    with pytest.raises(ValueError, match="beta2"):
        ops.state_step_(states, grad, m, v, 1, AdamHyper(ADAM.lr, beta2=1.0), noise_std=0.1, backend="triton")
    with pytest.raises(TypeError, match="counters must be a grasp_kernels.ops.NoiseCounters"):
        ops.state_step_(states, grad, m, v, 1, ADAM, noise_std=0.1, counters=3, backend="triton")


# ----------------------------------------------------------------------------------------------
# GPU: triton (native) and cuda
# ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,D", [(1, 1, 1), (5, 7, 3), (5, 64, 1000), (64, 50, 129), (3, 200, 4096)])
def test_gpu_native_matches_reference(B, T, D):
    check_state_step(B, T, D, device=torch.device("cuda"))


@pytest.mark.gpu
def test_gpu_seeded_noise_statistics():
    B, T, D = 8, 129, 4096
    states = torch.zeros(B, T + 1, D, device="cuda")
    zeros, ones = torch.zeros_like(states), torch.ones_like(states)
    ops.state_step_(states, zeros, zeros.clone(), ones, 1, AdamHyper(0.0), 1.0, counters=NoiseCounters(3), backend="triton")
    x = states[:, 1:T].double()
    n = x.numel()
    assert abs(x.mean().item()) < 5 / math.sqrt(n)
    assert abs(x.std().item() - 1.0) < 5 / math.sqrt(2 * n)


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,D", cu.SHAPES)
def test_cuda_state_step_noise_tensor(ck, B, T, D):
    states, grad, m, v = cu.adam_inputs(B, T, D, 0)
    cu.poison_fixed_rows(grad, m, v)
    noise = cu.randn((B, T - 1, D), cu.gen("noise", B, T, D))
    refs = [x.double() for x in (states, grad, m, v)]
    step, noise_std = 3, 0.05
    state_step_ref(*refs, step, cu.ADAM, noise_std=noise_std, noise=noise.double())
    before = states.clone()
    ck.state_step(states, grad, m, v, step, cu.ADAM, noise_std, noise, NoiseCounters(0))
    inner = slice(1, T)
    assert cu.rel(states[:, inner], refs[0][:, inner]) < cu.TOL if T > 1 else True
    assert cu.rel(m[:, inner], refs[2][:, inner]) < cu.TOL if T > 1 else True
    assert cu.rel(v[:, inner], refs[3][:, inner]) < cu.TOL if T > 1 else True
    assert torch.equal(states[:, 0], before[:, 0]) and torch.equal(states[:, T], before[:, T])
    assert m[:, 0].isnan().all() and m[:, T].isnan().all() and v[:, 0].isnan().all() and v[:, T].isnan().all()


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,D", [s for s in cu.SHAPES if s[1] > 1])
def test_cuda_state_step_noise_is_used_exactly(ck, B, T, D):
    """lr = 0, states 0, noise_std = 1: the virtual rows become the given noise bit for bit."""
    states = torch.zeros(B, T + 1, D, device="cuda")
    _, grad, m, v = cu.adam_inputs(B, T, D, 1)
    noise = cu.randn((B, T - 1, D), cu.gen("exact", B, T, D))
    ck.state_step(states, grad, m, v, 1, AdamHyper(0.0), 1.0, noise, NoiseCounters(0))
    assert torch.equal(states[:, 1:T], noise)


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,D", [(1, 2, 1), (5, 7, 3), (5, 7, 4), (2, 64, 1000), (3, 5, 129), (4096, 2, 3),
                                   (2048, 3, 8)])
def test_cuda_seeded_noise_reproducible(ck, B, T, D):
    a = cu.seeded_noise(ck, B, T, D, seed=1234)
    b = cu.seeded_noise(ck, B, T, D, seed=1234)
    c = cu.seeded_noise(ck, B, T, D, seed=1235)
    assert torch.equal(a, b), "same seed, different bits"
    assert not torch.equal(a, c), "different seeds, same noise"
    # the documented stream: element n of [B, T-1, D] is normal n of philox_normal(seed)
    assert torch.equal(a, ck.philox_normal((B, T - 1, D), 1234, "cuda"))
    # the fused op draws the same noise as state_step
    assert torch.equal(a, cu.seeded_noise(ck, B, T, D, seed=1234, fused=True))


@pytest.mark.gpu
def test_cuda_seeded_noise_statistics(ck):
    x = cu.seeded_noise(ck, 4, 65, 4096, seed=7).flatten().double()  # 1,048,576 normals
    n = x.numel()
    assert abs(x.mean().item()) < 5 / math.sqrt(n)
    assert abs(x.std().item() - 1.0) < 0.005
    assert abs(((x - x.mean()) ** 4).mean().item() / x.var().item() ** 2 - 3.0) < 0.05  # kurtosis
    assert abs((x.abs() > 3).double().mean().item() - 0.0026998) < 0.0006
    for lag in (1, 2, 3, 4, 4096):  # lanes of one Philox block, neighbouring blocks, neighbouring rows
        r = torch.corrcoef(torch.stack([x[:-lag], x[lag:]]))[0, 1].item()
        assert abs(r) < 5 / math.sqrt(n), (lag, r)
    y = cu.seeded_noise(ck, 4, 65, 4096, seed=8).flatten().double()
    assert abs(torch.corrcoef(torch.stack([x, y]))[0, 1].item()) < 5 / math.sqrt(n)


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,D", [(1, 1, 1), (5, 7, 3), (5, 64, 1000), (2, 33, 20000)])
def test_cuda_matches_triton(ck, B, T, D):
    tk = cu.triton_provider()
    noise = cu.randn((B, T - 1, D), cu.gen("tri-noise", B, T, D))
    results = []
    for prov in (ck, tk):
        s, g, m, v = cu.adam_inputs(B, T, D, 9)
        prov.state_step(s, g, m, v, 3, AdamHyper(0.1), 0.05, noise, NoiseCounters(0))
        results.append((s, m, v))
    for a, b in zip(*results):
        assert cu.rel(a, b) < cu.TOL
