"""Triton kernels against the reference (CPU: TRITON_INTERPRET=1 set by conftest; GPU: ``-m gpu``).

Fresh random inputs (never zeros), outputs poisoned with NaN before every launcher call, shapes of
DESIGN.md section 4, relative error ``||out - ref|| / ||ref|| < 1e-5`` in float32, gradients too.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import grasp_kernels.ops as ops
from grasp_kernels.backends import backend_unavailable_reason
from grasp_kernels.reference import (
    action_step_ref,
    lifted_energy_ref,
    lifted_energy_state_step_ref,
    state_step_ref,
)

DEVICE = torch.device("cpu")
# The CPU tests run the kernels under the interpreter (conftest sets it where there is no CUDA). On a GPU
# machine the kernels compile instead: conftest skips this module's CPU tests (the reason below) and its
# gpu-marked tests run; only without either is the whole module skipped.
CPU_TRITON_REASON = backend_unavailable_reason("triton", DEVICE)
if CPU_TRITON_REASON is not None and not torch.cuda.is_available():  # pragma: no cover
    pytest.skip(f"triton backend unavailable: {CPU_TRITON_REASON}", allow_module_level=True)

from grasp_kernels.ops import triton_kernels as tk  # noqa: E402  (after the interpreter check)

TOL = 1e-5
B_VALUES, T_VALUES, D_VALUES = (1, 5), (1, 2, 7, 64), (1, 3, 129, 1000)
SHAPES = list(itertools.product(B_VALUES, T_VALUES, D_VALUES))
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


# ----------------------------------------------------------------------------------------------
# lifted_energy
# ----------------------------------------------------------------------------------------------


def check_lifted_energy(B, T, D, device=DEVICE, pred_dtype=torch.float32, gamma=0.7, seed=0):
    g = gen(seed + 1000 * T + D)
    pred = randn(B, T, D, g=g, device=device, dtype=pred_dtype)
    states = randn(B, T + 1, D, g=g, device=device)

    # launcher, poisoned outputs: every element (zeros of rows 0 and T included) must be written
    energy, grad_pred, grad_states = poisoned(B, device=device), poisoned(B, T, D, device=device), poisoned(
        B, T + 1, D, device=device
    )
    tk.lifted_energy_fwd(pred, states, gamma, energy, grad_pred, grad_states)

    p_ref = pred.detach().float().requires_grad_(True)
    s_ref = states.clone().requires_grad_(True)
    e_ref = lifted_energy_ref(p_ref, s_ref, gamma)
    e_ref.sum().backward()
    assert rel(energy, e_ref) < TOL
    assert rel(grad_pred, p_ref.grad) < TOL
    assert rel(grad_states, s_ref.grad) < TOL
    assert (grad_states[:, 0] == 0).all() and (grad_states[:, T] == 0).all()

    # public op through autograd, with a random upstream gradient
    p_op = pred.clone().requires_grad_(True)
    s_op = states.clone().requires_grad_(True)
    e_op = ops.lifted_energy(p_op, s_op, gamma, backend="triton")
    upstream = randn(B, g=g, device=device)
    e_op.backward(upstream)
    p_ref2 = pred.clone().requires_grad_(True)
    s_ref2 = states.clone().requires_grad_(True)
    lifted_energy_ref(p_ref2, s_ref2, gamma).backward(upstream)
    assert e_op.dtype == torch.float32 and e_op.shape == (B,)
    assert rel(e_op, e_ref) < TOL
    assert p_op.grad.dtype == pred_dtype
    # bf16 gradients: both sides round a float32 value to bf16 (8-bit mantissa); values whose float32
    # results differ by an ulp may round apart, hence 1e-3 for bf16
    tol = TOL if pred_dtype == torch.float32 else 1e-3
    assert rel(p_op.grad, p_ref2.grad) < tol
    assert rel(s_op.grad, s_ref2.grad) < TOL


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


@pytest.mark.parametrize(
    "block,B,T,D",
    [(256, 2, 64, 20), (32, 5, 7, 3), (64, 5, 7, 3), (32, 1, 2, 1000), (16, 5, 1, 1), (64, 5, 3, 5)],
)
def test_tilings(monkeypatch, block, B, T, D):
    """Small blocks: plans split into many chunks (two-pass energy) or packed several per tile."""
    monkeypatch.setattr(tk, "BLOCK", block)
    bp, bc, n_chunks = tk.tile_config(B, T * D)
    assert bp * bc <= block
    check_lifted_energy(B, T, D)
    check_state_step(B, T, D)
    check_fused(B, T, D)


# ----------------------------------------------------------------------------------------------
# state_step
# ----------------------------------------------------------------------------------------------


def check_state_step(B, T, D, device=DEVICE, step=3, beta1=0.9, noise_std=0.05, seed=0, eps=1e-8):
    g = gen(seed + 17 * T + D)
    states = randn(B, T + 1, D, g=g, device=device)
    grad, exp_avg, exp_avg_sq = adam_inputs((B, T + 1, D), g, device)
    noise = randn(B, T - 1, D, g=g, device=device)
    adam = dict(ADAM, beta1=beta1, eps=eps)
    ref = [t.clone() for t in (states, exp_avg, exp_avg_sq)]
    state_step_ref(ref[0], grad, ref[1], ref[2], step, noise_std=noise_std, noise=noise, **adam)
    out = [t.clone() for t in (states, exp_avg, exp_avg_sq)]
    ops.state_step_(out[0], grad, out[1], out[2], step, noise_std=noise_std, noise=noise, backend="triton", **adam)
    for o, r, orig in zip(out, ref, (states, exp_avg, exp_avg_sq)):
        assert torch.equal(o[:, 0], orig[:, 0]) and torch.equal(o[:, T], orig[:, T]), "rows 0 / T changed"
        if T > 1:
            assert rel(o[:, 1:T], r[:, 1:T]) < 1e-6  # same noise: equal up to float rounding
            assert rel(o[:, 1:T] - orig[:, 1:T], r[:, 1:T] - orig[:, 1:T]) < 2e-5  # the update itself
        else:
            assert torch.equal(o, orig)


@pytest.mark.parametrize("B,T,D", [s for s in SHAPES if s[1] != 1 or s[2] == 3])
def test_state_step_matches_reference(B, T, D):
    check_state_step(B, T, D)


@pytest.mark.parametrize("step,beta1,eps", [(1, 0.9, 1e-8), (7, 0.3, 1e-3), (50, 0.0, 1e-2)])
def test_state_step_adam_variants(step, beta1, eps):
    check_state_step(5, 7, 129, step=step, beta1=beta1, eps=eps)
    check_state_step(1, 2, 3, step=step, beta1=beta1, eps=eps, noise_std=0.0)


def seeded_noise(B, T, D, seed, fused=False):
    """The noise the kernels draw for a seed, recovered exactly (states 0, lr 0)."""
    states = torch.zeros(B, T + 1, D)
    zeros = torch.zeros(B, T + 1, D)
    ones = torch.ones(B, T + 1, D)
    if fused:
        pred = randn(B, T, D, g=gen(1))
        ops.lifted_energy_state_step_(pred, states, 0.5, zeros.clone(), ones.clone(), 1, 0.0, 0.9, 0.999, 1e-8, 1.0,
                                      seed=seed, backend="triton")
    else:
        ops.state_step_(states, zeros, zeros.clone(), ones.clone(), 1, 0.0, 0.9, 0.999, 1e-8, 1.0, seed=seed,
                        backend="triton")
    assert (states[:, 0] == 0).all() and (states[:, T] == 0).all()
    return states[:, 1:T]


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


def test_seeded_noise_same_in_fused_and_unfused():
    assert torch.equal(seeded_noise(5, 7, 129, seed=5), seeded_noise(5, 7, 129, seed=5, fused=True))


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
        ops.state_step_(states, grad, m, v, 2, noise_std=0.1, backend="triton", **ADAM, **kw)
        return states

    assert torch.equal(run(generator=gen(5)), run(generator=gen(5)))
    assert not torch.equal(run(generator=gen(5)), run(generator=gen(6)))
    torch.manual_seed(11)
    x = run()
    torch.manual_seed(11)
    assert torch.equal(x, run())


# ----------------------------------------------------------------------------------------------
# action_step
# ----------------------------------------------------------------------------------------------


def check_action_step(B, T, A, device=DEVICE, step=4, seed=0):
    g = gen(seed + 31 * T + A)
    actions = randn(B, T, A, g=g, device=device)
    grad, exp_avg, exp_avg_sq = adam_inputs((B, T, A), g, device)
    low = -torch.rand(A, generator=g).to(device) - 0.2
    high = torch.rand(A, generator=g).to(device) + 0.2
    low[::2] = float("-inf")  # unbounded on some dimensions
    high[1::3] = float("inf")
    ref = [t.clone() for t in (actions, exp_avg, exp_avg_sq)]
    action_step_ref(ref[0], grad, ref[1], ref[2], step, low=low, high=high, **ADAM)
    out = [t.clone() for t in (actions, exp_avg, exp_avg_sq)]
    ops.action_step_(out[0], grad, out[1], out[2], step, low=low, high=high, backend="triton", **ADAM)
    for o, r in zip(out, ref):
        assert rel(o, r) < TOL
    assert ((out[0] >= low) & (out[0] <= high)).all()


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
    action_step_ref(ref[0], grad, ref[1], ref[2], 2, low=ref_low, high=high, **ADAM)
    out = [t.clone() for t in (actions, m, v)]
    ops.action_step_(out[0], grad, out[1], out[2], 2, low=low, high=high, backend="triton", **ADAM)
    assert torch.allclose(out[0], ref[0], rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# fused lifted_energy_state_step
# ----------------------------------------------------------------------------------------------


def check_fused(B, T, D, device=DEVICE, pred_dtype=torch.float32, noise_std=0.05, seed=0):
    g = gen(seed + 7 * T + D)
    pred = randn(B, T, D, g=g, device=device, dtype=pred_dtype)
    states = randn(B, T + 1, D, g=g, device=device)
    _, exp_avg, exp_avg_sq = adam_inputs((B, T + 1, D), g, device)
    noise = randn(B, T - 1, D, g=g, device=device)
    ref = [t.clone() for t in (states, exp_avg, exp_avg_sq)]
    e_ref, gp_ref = lifted_energy_state_step_ref(pred, ref[0], 0.4, ref[1], ref[2], 3, noise_std=noise_std,
                                                 noise=noise, **ADAM)
    out = [t.clone() for t in (states, exp_avg, exp_avg_sq)]
    energy, grad_pred = poisoned(B, device=device), poisoned(B, T, D, device=device)
    tk.lifted_energy_state_step(pred, out[0], 0.4, energy, grad_pred, out[1], out[2], 3, ADAM["lr"], ADAM["beta1"],
                                ADAM["beta2"], ADAM["eps"], noise_std, noise, 0)
    assert rel(energy, e_ref) < TOL
    assert rel(grad_pred, gp_ref) < TOL
    for o, r, orig in zip(out, ref, (states, exp_avg, exp_avg_sq)):
        assert torch.equal(o[:, 0], orig[:, 0]) and torch.equal(o[:, T], orig[:, T]), "rows 0 / T changed"
        assert rel(o, r) < 1e-6
        if T > 1:
            assert rel(o[:, 1:T] - orig[:, 1:T], r[:, 1:T] - orig[:, 1:T]) < 2e-5


@pytest.mark.parametrize("B,T,D", [s for s in SHAPES if s[0] == 5 or s[1] in (1, 64)])
def test_fused_matches_reference(B, T, D):
    check_fused(B, T, D)


def test_fused_bf16_and_public_api():
    check_fused(5, 7, 129, pred_dtype=torch.bfloat16)
    g = gen(4)
    B, T, D = 5, 7, 3
    pred, states = randn(B, T, D, g=g), randn(B, T + 1, D, g=g)
    grad_zero = torch.zeros(B, T + 1, D)
    m, v = adam_inputs((B, T + 1, D), g)[1:]
    # fused == lifted_energy_grads + state_step_ with the same seed
    s1, m1, v1 = states.clone(), m.clone(), v.clone()
    energy, grad_pred = ops.lifted_energy_state_step_(pred, s1, 0.4, m1, v1, 3, noise_std=0.05, seed=77,
                                                      backend="triton", **ADAM)
    s2, m2, v2 = states.clone(), m.clone(), v.clone()
    e2, gp2, gs2 = ops.lifted_energy_grads(pred, s2, 0.4, backend="triton")
    ops.state_step_(s2, gs2, m2, v2, 3, noise_std=0.05, seed=77, backend="triton", **ADAM)
    assert grad_zero.abs().sum() == 0
    exact = tk.INTERPRET  # compiled kernels may contract -2r into an FMA differently
    for a, b in ((energy, e2), (grad_pred, gp2), (s1, s2), (m1, m2), (v1, v2)):
        assert torch.equal(a, b) if exact else rel(a, b) < 1e-6
    # reference backend of the public fused op
    s3, m3, v3 = states.clone(), m.clone(), v.clone()
    noise = randn(B, T - 1, D, g=g)
    e3, gp3 = ops.lifted_energy_state_step_(pred, s3, 0.4, m3, v3, 3, noise_std=0.05, noise=noise,
                                            backend="reference", **ADAM)
    s4, m4, v4 = states.clone(), m.clone(), v.clone()
    e4, gp4 = ops.lifted_energy_state_step_(pred, s4, 0.4, m4, v4, 3, noise_std=0.05, noise=noise,
                                            backend="triton", **ADAM)
    assert rel(e4, e3) < TOL and rel(gp4, gp3) < TOL and rel(s4, s3) < 1e-6


def test_lifted_energy_grads_matches_reference_backend():
    g = gen(8)
    pred, states = randn(5, 7, 129, g=g, dtype=torch.bfloat16), randn(5, 8, 129, g=g)
    ref = ops.lifted_energy_grads(pred, states, 0.2, backend="reference")
    out = ops.lifted_energy_grads(pred, states, 0.2, backend="triton")
    for o, r in zip(out, ref):
        assert o.dtype == torch.float32 and rel(o, r) < TOL


# ----------------------------------------------------------------------------------------------
# argument errors, index arithmetic
# ----------------------------------------------------------------------------------------------


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
    grad, m, v = adam_inputs((B, T + 1, D), g)
    with pytest.raises(ValueError, match="noise"):
        ops.state_step_(states, grad, m, v, 1, noise_std=0.1, noise=randn(B, T, D, g=g), backend="triton", **ADAM)
    with pytest.raises(ValueError, match="exp_avg_sq.*contiguous"):
        ops.state_step_(states, grad, m, randn(B, D, T + 1, g=g).transpose(1, 2), 1, noise_std=0.1,
                        backend="triton", **ADAM)
    with pytest.raises(TypeError, match="grad.*float64"):
        ops.state_step_(states, grad.double(), m, v, 1, noise_std=0.1, backend="triton", **ADAM)
    with pytest.raises(ValueError, match="step"):
        ops.state_step_(states, grad, m, v, 0, noise_std=0.1, backend="triton", **ADAM)
    with pytest.raises(ValueError, match="seed"):
        ops.state_step_(states, grad, m, v, 1, noise_std=0.1, seed=-1, backend="triton", **ADAM)
    with pytest.raises(ValueError, match="beta2"):
        ops.state_step_(states, grad, m, v, 1, noise_std=0.1, backend="triton", **dict(ADAM, beta2=1.0))
    with pytest.raises(ValueError, match="T\\+1 >= 2"):
        ops.lifted_energy(randn(B, 0, D, g=g), randn(B, 1, D, g=g), 0.5, backend="triton")
    actions = randn(B, T, 2, g=g)
    ga, ma, va = adam_inputs((B, T, 2), g)
    with pytest.raises(ValueError, match="low"):
        ops.action_step_(actions, ga, ma, va, 1, low=[0.0, 1.0, 2.0], high=None, backend="triton", **ADAM)
    with pytest.raises(TypeError, match="actions.*float64"):
        ops.action_step_(actions.double(), ga.double(), ma.double(), va.double(), 1, low=None, high=None,
                         backend="triton", **ADAM)
    with pytest.raises(ValueError, match="backend"):
        torch.ops.grasp.lifted_energy(pred, states, 0.5, "nope")


@pytest.mark.parametrize(
    "kind,B,rows,D",
    [
        ("energy", 2**20, 65, 129),  # B*T*D ~ 8.7e9 > 2^32, each plan small: int64 plan offsets
        ("energy", 3, 65, 2**26 + 3),  # one plan > 2^31 elements: WIDE in-plan offsets
        ("state", 2**20, 65, 129),
        ("state", 3, 65, 2**26 + 3),
        ("energy", 2**30, 3, 5),  # several small plans packed per tile
    ],
)
def test_index_arithmetic_beyond_int32(kind, B, rows, D):
    """The kernels' own index helpers, evaluated for the last programs of huge virtual problems."""
    T = rows - 1
    n_inner = T * D if kind == "energy" else (T - 1) * D
    bp, bc, n_chunks = tk.tile_config(B, n_inner, block=64)
    n_programs = -(-B // bp) * n_chunks
    pids = [0, n_programs // 2 + 1, n_programs - 1]
    out, (bp, bc, n_chunks, wide) = tk.probe_offsets(kind, B, rows, D, pids, block=64)
    assert wide == (rows * D >= 2**31)
    for k, pid in enumerate(pids):
        pid_p, pid_c = divmod(pid, n_chunks)
        for r, c in ((0, 0), (bp - 1, bc - 1), (bp // 2, bc // 3)):
            b, i = pid_p * bp + r, pid_c * bc + c
            if kind == "energy":
                expected = [b * n_inner + i, b * rows * D + D + i, b * rows * D + T * D + i % D, b * rows * D + i,
                            b * (T - 1) * D + i]
            else:
                expected = [b * rows * D + D + i, b * (T - 1) * D + i]
            got = out[k, : len(expected), r, c].tolist()
            assert got == expected, (pid, r, c, got, expected)
    assert max(expected) > 2**32


# ----------------------------------------------------------------------------------------------
# GPU (native Triton)
# ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,D", [(1, 1, 1), (5, 7, 3), (5, 64, 1000), (64, 50, 129), (3, 200, 4096)])
def test_gpu_native_matches_reference(B, T, D):
    cuda = torch.device("cuda")
    check_lifted_energy(B, T, D, device=cuda)
    check_lifted_energy(B, T, D, device=cuda, pred_dtype=torch.bfloat16)
    check_state_step(B, T, D, device=cuda)
    check_action_step(B, T, min(D, 64), device=cuda)
    check_fused(B, T, D, device=cuda)
    check_fused(B, T, D, device=cuda, pred_dtype=torch.bfloat16)


@pytest.mark.gpu
def test_gpu_seeded_noise_statistics():
    B, T, D = 8, 129, 4096
    states = torch.zeros(B, T + 1, D, device="cuda")
    zeros, ones = torch.zeros_like(states), torch.ones_like(states)
    ops.state_step_(states, zeros, zeros.clone(), ones, 1, 0.0, 0.9, 0.999, 1e-8, 1.0, seed=3, backend="triton")
    x = states[:, 1:T].double()
    n = x.numel()
    assert abs(x.mean().item()) < 5 / math.sqrt(n)
    assert abs(x.std().item() - 1.0) < 5 / math.sqrt(2 * n)
