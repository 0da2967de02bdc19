"""``fused_mlp_iteration_`` (grasp_kernels/ops/fused_mlp_iteration): one Triton kernel per GRASP iteration
for MLPDynamics, against its specification ``fused_mlp_iteration_ref`` (tests/_fused_mlp.py), i.e. one
planner iteration (:func:`grasp_kernels.lifted.lifted_iteration`) on the reference backend (CPU: TRITON_INTERPRET=1 set by conftest; GPU:
``-m gpu``); the planner with ``GraspConfig(fused_mlp=True)``. The op's opcheck and device guard are
here too (they need its packed-model inputs); the other ops' are in tests/ops/test_opcheck_and_compile.py
and tests/ops/test_op_checks.py.

Fresh random inputs (normalisation statistics, delta scale, moments: never identity or zeros), outputs
poisoned with NaN, relative error ``||out - ref|| / ||ref||`` on energy, new states, actions and all four
moments, and on the updates themselves (``out - before``): below 1e-5 in float32 under the interpreter,
1e-4 on a GPU, 5e-2 with bfloat16 matrices (tests/_kernels.py, ``fused_rel_tol``, gives the arguments).
"""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from torch import nn

import grasp_kernels.ops as ops
from grasp_kernels import GraspConfig, GraspPlanner
from grasp_kernels.backends import BackendFallbackWarning, backend_unavailable_reason
from grasp_kernels.models import MLPDynamics
from grasp_kernels.lifted import lifted_predictions
from grasp_kernels.ops import AdamHyper, NoiseCounters

from _fused_mlp import ACTS, DEVICE, fused_mlp_iteration_ref, make_model, plan_pair, recorded_programs, rel
from _kernels import fused_rel_tol

# The CPU tests run the kernels under the interpreter (conftest sets it where there is no CUDA). On a GPU
# machine the kernels compile instead: conftest skips this module's CPU tests (the reason below) and its
# gpu-marked tests run; only without either is the whole module skipped.
CPU_TRITON_REASON = backend_unavailable_reason("triton", DEVICE)
if CPU_TRITON_REASON is not None and not torch.cuda.is_available():  # pragma: no cover
    pytest.skip(f"triton backend unavailable: {CPU_TRITON_REASON}", allow_module_level=True)

from grasp_kernels.ops import _mlp_triton as mt  # noqa: E402  (after the interpreter check)
from grasp_kernels.ops.fused_mlp_iteration import triton_kernel as fm  # noqa: E402

TOL = fused_rel_tol(DEVICE)  # float32 under the interpreter; GPU and bfloat16 bounds: fused_rel_tol
ADAM = dict(step=3, state_adam=AdamHyper(0.1), action_adam=AdamHyper(0.05))  # one beta1, beta2, eps


def make_inputs(B, T, D, A, seed=0, device=DEVICE):
    g = torch.Generator().manual_seed(seed + 7 * T + 13 * D + A)

    def randn(*shape, scale=1.0):
        return (torch.randn(shape, generator=g) * scale).to(device)

    def rand(*shape):
        return (torch.rand(shape, generator=g) * 0.01 + 1e-4).to(device)

    low = (-0.3 - torch.rand(A, generator=g)).to(device)
    high = (0.3 + torch.rand(A, generator=g)).to(device)
    low[::2] = float("-inf")  # unbounded on some dimensions
    return dict(
        states=randn(B, T + 1, D), actions=randn(B, T, A, scale=0.5),
        state_exp_avg=randn(B, T + 1, D, scale=0.1), state_exp_avg_sq=rand(B, T + 1, D),
        action_exp_avg=randn(B, T, A, scale=0.1), action_exp_avg_sq=rand(B, T, A),
        noise=randn(B, T - 1, D), low=low, high=high,
    )


MUTATED = ("actions", "state_exp_avg", "state_exp_avg_sq", "action_exp_avg", "action_exp_avg_sq")


def run_reference(model, inp, gamma, noise_std):
    ref = {k: v.clone() for k, v in inp.items()}
    energy, _, _ = fused_mlp_iteration_ref(
        model, ref["states"], ref["actions"], gamma, ref["state_exp_avg"], ref["state_exp_avg_sq"],
        ref["action_exp_avg"], ref["action_exp_avg_sq"], **ADAM, noise_std=noise_std, low=ref["low"],
        high=ref["high"], noise=ref["noise"],
    )
    return energy, ref


def run_launcher(model, inp, gamma, noise_std, matmul_dtype=None):
    out = {k: v.clone() for k, v in inp.items()}
    packed = ops.pack_mlp(model, matmul_dtype)
    B = inp["states"].shape[0]
    states_out = torch.full_like(inp["states"], float("nan"))
    energy = torch.full((B,), float("nan"), device=inp["states"].device)
    fm.launch(
        out["states"], out["actions"], states_out, energy, list(packed.tensors), packed.depth, packed.activation,
        gamma, out["state_exp_avg"], out["state_exp_avg_sq"], out["action_exp_avg"], out["action_exp_avg_sq"],
        *ADAM.values(), noise_std, out["noise"], NoiseCounters(0), out["low"], out["high"],
    )
    return energy, states_out, out


def check_fused_mlp(B, T, D, A, hidden, depth, act=nn.SiLU, gamma=0.4, noise_std=0.05, device=DEVICE,
                    matmul_dtype=None, tol=None):
    tol = fused_rel_tol(device, matmul_dtype) if tol is None else tol
    model = make_model(D, A, hidden, depth, act, seed=B + T + D + A + hidden + depth, device=device)
    inp = make_inputs(B, T, D, A, device=device)
    e_ref, ref = run_reference(model, inp, gamma, noise_std)
    energy, states_out, out = run_launcher(model, inp, gamma, noise_std, matmul_dtype)
    assert torch.equal(out["states"], inp["states"]), "the input states must only be read"
    assert rel(energy, e_ref) < tol
    assert rel(states_out, ref["states"]) < tol
    assert torch.equal(states_out[:, 0], inp["states"][:, 0]) and torch.equal(states_out[:, T], inp["states"][:, T])
    if T > 1:  # the update itself, not only the (dominant) old value
        assert rel(states_out[:, 1:T] - inp["states"][:, 1:T], ref["states"][:, 1:T] - inp["states"][:, 1:T]) < 2 * tol
    for name in MUTATED:
        assert rel(out[name], ref[name]) < tol, name
    assert rel(out["actions"] - inp["actions"], ref["actions"] - inp["actions"]) < 2 * tol
    assert rel(out["action_exp_avg"] - inp["action_exp_avg"], ref["action_exp_avg"] - inp["action_exp_avg"]) < 2 * tol
    assert torch.equal(out["state_exp_avg"][:, [0, T]], inp["state_exp_avg"][:, [0, T]]), "moments of rows 0 / T"
    return model, inp


# odd shapes: every (B, T, D) of the brief, with A, hidden, depth and the activation cycled over them
BTD = list(itertools.product((1, 3), (1, 2, 7), (1, 3, 17)))
CASES = [(B, T, D, (1, 2, 5)[i % 3], (16, 48)[i % 2], (1, 2)[(i // 2) % 2], ACTS[i % 3]) for i, (B, T, D) in enumerate(BTD)]


@pytest.mark.parametrize("B,T,D,A,hidden,depth,act", CASES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_fused_mlp_matches_reference(B, T, D, A, hidden, depth, act):
    check_fused_mlp(B, T, D, A, hidden, depth, act)


@pytest.mark.parametrize("act", ACTS, ids=lambda a: a.__name__)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_fused_mlp_depths_and_activations(depth, act):
    check_fused_mlp(3, 7, 17, 5, 48, depth, act)


@pytest.mark.parametrize("B,T,rows", [(3, 7, 16), (2, 40, 16), (5, 3, 16), (1, 33, 32)])
def test_fused_mlp_tilings(monkeypatch, B, T, rows):
    """Small tiles: several plans per tile, and plans split over time chunks in different programs (the
    double-buffer hazard case, energy summed by the second pass)."""
    monkeypatch.setattr(fm, "INTERPRET_ROWS", rows)
    bp, bt, n_chunks = fm.mlp_tile_config(B, T, 48)
    assert bp * bt == rows and (n_chunks > 1) == (T > rows)
    check_fused_mlp(B, T, 3, 2, 48, 2)


# the wide variant: hidden layers in [BM, BH] blocks through a per-program scratch, persistent programs
WIDE_CASES = [  # (B, T, D, A, hidden, depth, act, rows, BH): several blocks, padded widths, tiles per program
    (3, 7, 17, 5, 80, 1, nn.SiLU, 16, 32),
    (2, 9, 3, 2, 48, 2, nn.Tanh, 16, 16),
    (1, 33, 5, 3, 40, 3, nn.ReLU, 16, 16),
    (5, 3, 1, 1, 20, 2, nn.SiLU, 16, 16),
    (2, 40, 6, 2, 128, 3, nn.SiLU, 32, 64),
]


@pytest.mark.parametrize("B,T,D,A,hidden,depth,act,rows,block", WIDE_CASES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_fused_mlp_wide_variant_matches_reference(monkeypatch, B, T, D, A, hidden, depth, act, rows, block):
    monkeypatch.setattr(mt, "NARROW_MAX_HIDDEN", 8)  # every width takes the wide variant
    monkeypatch.setattr(mt, "WIDE_BLOCK", block)
    monkeypatch.setattr(fm, "INTERPRET_ROWS", rows)
    bp, bt, n_chunks = fm.mlp_tile_config(B, T, hidden)
    n_tiles = -(-B // bp) * n_chunks
    assert mt.is_wide(hidden) and mt.wide_block(hidden) == min(block, mt.pad_dim(hidden))
    assert mt.padded_hidden(hidden) == -(-hidden // mt.wide_block(hidden)) * mt.wide_block(hidden)  # 40 -> 48, 80 -> 96
    assert mt.wide_programs(n_tiles, DEVICE) == min(n_tiles, mt.INTERPRET_WIDE_PROGRAMS)
    check_fused_mlp(B, T, D, A, hidden, depth, act)


@pytest.mark.parametrize("programs", [1, 3])
def test_fused_mlp_forced_programs_loop_over_the_tiles(monkeypatch, programs):
    """force_wide_programs sets the wide grid (the GPU tests' way into the persistent loop): 7 tiles over
    1 or 3 programs, each program reusing its scratch from tile to tile (3: 3, 2 and 2 tiles)."""
    monkeypatch.setattr(fm, "INTERPRET_ROWS", 16)
    counts = recorded_programs(monkeypatch, fm)
    bp, bt, n_chunks = fm.mlp_tile_config(7, 9, 40)
    assert -(-7 // bp) * n_chunks == 7
    with mt.force_wide_programs(programs):
        check_fused_mlp(7, 9, 5, 3, 40, 3, nn.Tanh)
    assert counts == [programs]
    check_fused_mlp(5, 9, 3, 2, 40, 1)  # 5 tiles, the block left: the interpreter's default again
    assert counts[-1] == mt.INTERPRET_WIDE_PROGRAMS == 2
    with pytest.raises(ValueError, match="programs must be an int >= 1"):
        with mt.force_wide_programs(0):
            pass


def test_fused_mlp_wide_variant_is_chosen_by_width():
    assert not mt.is_wide(mt.NARROW_MAX_HIDDEN) and mt.is_wide(mt.NARROW_MAX_HIDDEN + 1)
    assert mt.wide_block(1000) == mt.WIDE_BLOCK and mt.pad_dim(1000) % mt.wide_block(1000) == 0
    check_fused_mlp(2, 5, 4, 2, mt.NARROW_MAX_HIDDEN + 16, 2)  # default blocks, as the planner runs it


def test_fused_mlp_gamma_zero_no_noise_and_deterministic():
    check_fused_mlp(3, 7, 3, 2, 16, 2, gamma=0.0, noise_std=0.0)
    model = make_model(17, 5, 48, 2)
    inp = make_inputs(3, 7, 17, 5)
    first, second = run_launcher(model, inp, 0.3, 0.05), run_launcher(model, inp, 0.3, 0.05)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_fused_mlp_seeded_noise_equals_unfused_kernels():
    """With a seed, the fused kernel draws the noise of the unfused kernels (same Philox offsets): the
    public op equals the planner's unfused triton path (pred by the model, lifted_energy_state_step_,
    the VJP, action_step_)."""
    B, T, D, A = 3, 7, 17, 5
    model = make_model(D, A, 48, 2)
    inp = make_inputs(B, T, D, A)
    fused = {k: v.clone() for k, v in inp.items()}
    energy, new_states = ops.fused_mlp_iteration_(
        model, fused["states"], fused["actions"], 0.4, fused["state_exp_avg"], fused["state_exp_avg_sq"],
        fused["action_exp_avg"], fused["action_exp_avg_sq"], *ADAM.values(), 0.05, fused["low"], fused["high"],
        counters=NoiseCounters(1234), backend="triton",
    )
    unf = {k: v.clone() for k, v in inp.items()}
    leaf = unf["actions"].clone().requires_grad_(True)
    with torch.enable_grad():
        pred = lifted_predictions(model, unf["states"][:, :T].clone(), leaf, (D,))
    e2, grad_pred = ops.lifted_energy_state_step_(
        pred.detach(), unf["states"], 0.4, unf["state_exp_avg"], unf["state_exp_avg_sq"], ADAM["step"],
        ADAM["state_adam"], 0.05, counters=NoiseCounters(1234), backend="triton",
    )
    (action_grad,) = torch.autograd.grad(pred, leaf, grad_pred)
    ops.action_step_(unf["actions"], action_grad, unf["action_exp_avg"], unf["action_exp_avg_sq"], ADAM["step"],
                     ADAM["action_adam"], unf["low"], unf["high"], backend="triton")
    assert rel(energy, e2) < TOL
    assert rel(new_states, unf["states"]) < TOL
    noise_part = new_states[:, 1:T] - unf["states"][:, 1:T]
    assert noise_part.abs().max() < 1e-4, "different noise: the Philox offsets differ"
    for name in MUTATED:
        assert rel(fused[name], unf[name]) < TOL, name


def test_public_op_on_a_model_and_a_packed_model_and_no_reference_backend():
    """The public op, on the module and on its PackedMLP, against the specification; the reference backend is
    refused with an error that says where the op runs (it has no reference path: its specification is the
    planner's iteration, which runs on the ops)."""
    B, T, D, A = 3, 7, 3, 2
    model = make_model(D, A, 16, 2, nn.Tanh)
    inp = make_inputs(B, T, D, A)
    ref = {k: v.clone() for k, v in inp.items()}
    e_ref, _, _ = fused_mlp_iteration_ref(
        model, ref["states"], ref["actions"], 0.4, ref["state_exp_avg"], ref["state_exp_avg_sq"], ref["action_exp_avg"],
        ref["action_exp_avg_sq"], **ADAM, noise_std=0.05, low=-0.8, high=0.8, noise=ref["noise"],
    )
    for m in (model, ops.pack_mlp(model)):
        x = {k: v.clone() for k, v in inp.items()}
        energy, new_states = ops.fused_mlp_iteration_(
            m, x["states"], x["actions"], 0.4, x["state_exp_avg"], x["state_exp_avg_sq"], x["action_exp_avg"],
            x["action_exp_avg_sq"], *ADAM.values(), 0.05, -0.8, 0.8, x["noise"], backend="triton",
        )
        assert torch.equal(x["states"], inp["states"]) and new_states is not x["states"]
        assert rel(energy, e_ref) < TOL
        assert rel(new_states, ref["states"]) < TOL
        for name in MUTATED:
            assert rel(x[name], ref[name]) < TOL, name
    x = {k: v.clone() for k, v in inp.items()}
    with pytest.raises(ValueError, match="fused_mlp_iteration_ runs on the triton backend only.*TRITON_INTERPRET=1"):
        ops.fused_mlp_iteration_(
            model, x["states"], x["actions"], 0.4, x["state_exp_avg"], x["state_exp_avg_sq"], x["action_exp_avg"],
            x["action_exp_avg_sq"], *ADAM.values(), 0.05, -0.8, 0.8, x["noise"], backend="reference",
        )
    assert all(torch.equal(x[k], inp[k]) for k in inp), "a refused call must not touch its tensors"


def test_custom_op_opcheck():
    B, T, D, A = 2, 3, 3, 2
    model = make_model(D, A, 16, 1)
    packed = ops.pack_mlp(model)
    inp = make_inputs(B, T, D, A)
    args = (inp["states"], inp["actions"].clone(), torch.empty_like(inp["states"]), list(packed.tensors), 1,
            packed.activation, 0.4, inp["state_exp_avg"].clone(), inp["state_exp_avg_sq"].clone(),
            inp["action_exp_avg"].clone(), inp["action_exp_avg_sq"].clone(), 3, 0.1, 0.05, 0.9, 0.999, 1e-8, 0.05,
            inp["noise"], 0, 0, 6, inp["low"], inp["high"], "triton")
    torch.library.opcheck(torch.ops.grasp.fused_mlp_iteration.default, args,
                          test_utils=("test_schema", "test_faketensor"))


def test_custom_op_launches_inside_its_tensors_device(monkeypatch, device_guard_recorder):
    """The fused op enters the tensors' device around its launch (Triton launches on the current one)."""
    from grasp_kernels.ops.fused_mlp_iteration import op

    guard = device_guard_recorder
    monkeypatch.setattr(op, "on_device", guard)
    monkeypatch.setattr(fm, "launch", guard.launcher("fused_mlp_iteration"))
    B, T, D, A = 2, 3, 3, 2
    packed = ops.pack_mlp(make_model(D, A, 16, 1))
    inp = make_inputs(B, T, D, A)
    torch.ops.grasp.fused_mlp_iteration(
        inp["states"], inp["actions"], torch.empty_like(inp["states"]), list(packed.tensors), 1, packed.activation,
        0.4, inp["state_exp_avg"], inp["state_exp_avg_sq"], inp["action_exp_avg"], inp["action_exp_avg_sq"], 3, 0.1,
        0.05, 0.9, 0.999, 1e-8, 0.05, inp["noise"], 0, 0, 6, inp["low"], inp["high"], "triton")
    assert guard.launched_inside == {"fused_mlp_iteration": [torch.device("cpu")]}


def test_errors():
    B, T, D, A = 2, 3, 4, 2
    model = make_model(D, A, 16, 2)
    inp = make_inputs(B, T, D, A)
    x = {k: v.clone() for k, v in inp.items()}

    def call(m=model, backend="triton", **kw):
        args = dict(states=x["states"], actions=x["actions"], state_exp_avg=x["state_exp_avg"],
                    state_exp_avg_sq=x["state_exp_avg_sq"], action_exp_avg=x["action_exp_avg"],
                    action_exp_avg_sq=x["action_exp_avg_sq"], low=None, high=None)
        args.update(kw)
        hyper = {name: args.pop(name, value) for name, value in ADAM.items()}
        return ops.fused_mlp_iteration_(
            m, args.pop("states"), args.pop("actions"), 0.4, args.pop("state_exp_avg"), args.pop("state_exp_avg_sq"),
            args.pop("action_exp_avg"), args.pop("action_exp_avg_sq"), *hyper.values(), 0.0, args.pop("low"),
            args.pop("high"), backend=backend, **args,
        )

    with pytest.raises(ValueError, match="states_out and states overlap"):
        call(states_out=x["states"])
    with pytest.raises(ValueError, match="states_out.*shape"):
        call(states_out=torch.empty(B, T, D))
    with pytest.raises(ValueError, match="D = 4, A = 2"):
        call(actions=torch.zeros(B, T, 3), action_exp_avg=torch.zeros(B, T, 3), action_exp_avg_sq=torch.ones(B, T, 3))
    with pytest.raises(TypeError, match="states.*float64"):
        call(states=x["states"].double())
    with pytest.raises(ValueError, match="activations SiLU, ReLU, Tanh, got GELU"):
        ops.pack_mlp(MLPDynamics(D, A, hidden=16, depth=2, activation=nn.GELU))
    with pytest.raises(ValueError, match="depth 1..3"):
        ops.pack_mlp(MLPDynamics(D, A, hidden=16, depth=4))
    with pytest.raises(ValueError, match="must be a grasp_kernels.models.MLPDynamics"):
        call(m=lambda s, a: s)
    with pytest.raises(ValueError, match="state_adam.beta2 and action_adam.beta2 must be equal"):
        call(action_adam=AdamHyper(0.05, beta2=0.99))
    with pytest.raises(TypeError, match="matmul_dtype"):
        ops.pack_mlp(model, torch.float16)


# ----------------------------------------------------------------------------------------------
# the planner with GraspConfig(fused_mlp=True)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state_noise,hidden", [(0.0, 32), (0.01, 32), (0.01, 96)])
def test_planner_fused_mlp_plans_like_the_normal_iteration(state_noise, hidden):
    """Same plan with and without the fused kernel on the triton backend (with noise too: the seeds
    and Philox offsets are the unfused path's), through sync phases (moment resets) and particles;
    hidden 96 runs the wide variant."""
    model = make_model(3, 2, hidden, 2)
    config = GraspConfig(horizon=7, iters=12, sync_every=6, sync_steps=2, state_noise=state_noise, init_noise=0.05,
                         backend="triton", particles=2, lr_actions=0.05, goal_weight=0.3)
    plans = plan_pair(config, model)
    for field in ("actions", "states", "energy_history", "final_distance"):
        torch.testing.assert_close(getattr(plans[True], field), getattr(plans[False], field), rtol=1e-4, atol=1e-5)
    assert plans[True].info["backend"] == "triton"
    assert not torch.equal(plans[True].actions, torch.zeros_like(plans[True].actions))


def test_planner_fused_mlp_iteration_swaps_buffers():
    model = make_model(3, 2, 16, 1)
    planner = GraspPlanner(model, 2, GraspConfig(horizon=5, iters=3, sync_every=0, backend="triton", fused_mlp=True))
    state = planner.start(torch.zeros(2, 3), torch.ones(2, 3))
    first, spare = state.states, state.spare_states
    planner.iteration(state)
    assert state.states is spare and state.spare_states is first
    assert torch.isfinite(state.states).all()


def test_planner_fused_mlp_errors_and_fallback():
    model = make_model(3, 2, 16, 2)
    config = GraspConfig(horizon=5, iters=2, sync_every=0, backend="triton", fused_mlp=True)
    with pytest.raises(ValueError, match="fused_mlp=True.*MLPDynamics"):
        GraspPlanner(lambda s, a: s + a.sum(-1, keepdim=True), 2, config)
    with pytest.raises(ValueError, match="fused_mlp=True.*stop_gradient"):
        GraspPlanner(model, 2, config.replace(stop_gradient=False))
    with pytest.raises(ValueError, match="fused_mlp=True.*state_weights"):
        GraspPlanner(model, 2, config, state_weights=torch.ones(3))
    with pytest.raises(ValueError, match="fused_mlp=True.*GELU"):
        GraspPlanner(MLPDynamics(3, 2, hidden=16, activation=nn.GELU), 2, config)
    with pytest.raises(TypeError, match="fused_mlp must be a bool"):
        GraspConfig(fused_mlp=1)
    # the reference backend: the normal iteration, one warning
    s0, goal = torch.zeros(2, 3), torch.ones(2, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fused = GraspPlanner(model, 2, config.replace(backend="reference")).plan(s0, goal)
        GraspPlanner(model, 2, config.replace(backend="reference")).plan(s0, goal)
    messages = [str(w.message) for w in caught if issubclass(w.category, BackendFallbackWarning)]
    assert sum("fused_mlp=True runs the normal iteration" in m for m in messages) <= 1
    plain = GraspPlanner(model, 2, config.replace(backend="reference", fused_mlp=False)).plan(s0, goal)
    assert torch.equal(fused.actions, plain.actions)


# ----------------------------------------------------------------------------------------------
# GPU (native Triton)
# ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,D,A,hidden,depth", [(1, 1, 1, 1, 16, 1), (3, 7, 17, 5, 48, 2), (64, 50, 16, 4, 256, 2),
                                                   (16, 200, 64, 8, 512, 2), (5, 64, 3, 2, 128, 3), (4, 64, 64, 8, 1024, 3)])
def test_gpu_native_matches_reference(B, T, D, A, hidden, depth):
    cuda = torch.device("cuda")
    for act in ACTS:
        check_fused_mlp(B, T, D, A, hidden, depth, act, device=cuda)


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,D,A,hidden", [(3, 7, 17, 5, 48), (64, 50, 16, 4, 256)])
def test_gpu_bf16_matrix_inputs(B, T, D, A, hidden):
    """bfloat16 matrix inputs (float32 accumulation) against the float32 reference: activations and
    weights rounded to 8 mantissa bits per layer (the bound's argument: ``fused_rel_tol``)."""
    check_fused_mlp(B, T, D, A, hidden, 2, device=torch.device("cuda"), matmul_dtype=torch.bfloat16)


# The wide variant's persistent loop on a GPU. The default grid, min(tiles, SMs) programs (132 on an H100),
# gives every program one tile at the shapes above, so no program would loop and the reuse of its scratch
# from tile to tile, behind the CTA barriers, would never run on concurrent warps (the interpreter runs a
# program as one thread: its barriers do nothing). Forced to 2 programs, each loops over 4-32 tiles.
LOOP_CASES = [  # (B, T, D, A, hidden, depth, act, matrix dtype): 64, 64, 8, 10 and 64 tiles
    (64, 50, 16, 4, 256, 2, nn.SiLU, None),
    (16, 200, 64, 8, 512, 2, nn.Tanh, None),
    (4, 64, 64, 8, 1024, 3, nn.Tanh, None),
    (37, 9, 3, 2, 40, 3, nn.ReLU, None),
    (64, 50, 16, 4, 256, 2, nn.SiLU, torch.bfloat16),
]


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,D,A,hidden,depth,act,matmul_dtype", LOOP_CASES,
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_gpu_wide_programs_loop_over_their_tiles(monkeypatch, B, T, D, A, hidden, depth, act, matmul_dtype):
    cuda = torch.device("cuda")
    counts = recorded_programs(monkeypatch, fm)
    bp, bt, n_chunks = fm.mlp_tile_config(B, T, hidden)
    assert -(-B // bp) * n_chunks >= 4  # at least two tiles per program
    with mt.force_wide_programs(2):
        check_fused_mlp(B, T, D, A, hidden, depth, act, device=cuda, matmul_dtype=matmul_dtype)
    assert counts == [2]


@pytest.mark.gpu
def test_gpu_large_batch_loops_at_the_default_grid(monkeypatch):
    """B = 512, T = 64, H = 256 (the shipped world models' width): 512 tiles of 64 rows over min(tiles,
    SMs) programs, about 4 tiles each on an H100."""
    cuda = torch.device("cuda")
    counts = recorded_programs(monkeypatch, fm)
    bp, bt, n_chunks = fm.mlp_tile_config(512, 64, 256)
    n_tiles = -(-512 // bp) * n_chunks
    check_fused_mlp(512, 64, 4, 2, 256, 3, nn.SiLU, device=cuda)
    assert counts == [mt.wide_programs(n_tiles, cuda)] and counts[0] < n_tiles


@pytest.mark.gpu
def test_gpu_planner_fused_mlp():
    model = make_model(16, 4, 256, 2, device=torch.device("cuda"))
    # a converging configuration (the energy falls every few iterations: 2338 -> 2116 over the 20), so that
    # the tolerance measures the kernel; the default rates make this model's energy grow 5x, where a GPU's
    # different rounding is amplified
    config = GraspConfig(horizon=64, iters=20, sync_every=10, sync_steps=2, state_noise=0.0, backend="triton",
                         lr_states=0.01, lr_actions=0.01, goal_weight=0.1)
    g = torch.Generator().manual_seed(0)
    s0, goal = torch.randn(8, 16, generator=g).cuda(), torch.randn(8, 16, generator=g).cuda()
    plans = {f: GraspPlanner(model, 4, config.replace(fused_mlp=f)).plan(s0, goal) for f in (False, True)}
    total = plans[False].energy_history.sum(dim=1)
    assert bool((total[5::5] < total[:-5:5]).all()), total  # converging, as on the CPU reference
    for field in ("actions", "states", "energy_history"):
        torch.testing.assert_close(getattr(plans[True], field), getattr(plans[False], field), rtol=1e-3, atol=1e-4)
