"""``fused_mlp_sync_step_`` (grasp_kernels/ops/fused_mlp_sync): one Triton kernel per sync-phase step for
MLPDynamics, against its specification :func:`grasp_kernels.sync.sync_step` (one step of
:func:`grasp_kernels.sync.gd_sync`) evaluated in float64 (CPU: TRITON_INTERPRET=1 set by conftest; GPU:
``-m gpu``); the planner's sync phase with ``GraspConfig(fused_mlp=True)``; the op's opcheck and errors.

Fresh random inputs (normalisation statistics, delta scale, moments: never identity or zeros), the loss
and the workspace poisoned with NaN, relative error ``||out - ref|| / ||ref||`` on the loss, the rolled-out
states, the actions, both moments and the action update itself (``out - before``).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import grasp_kernels.ops as ops
from grasp_kernels import GraspConfig
from grasp_kernels.backends import backend_unavailable_reason
from grasp_kernels.rollouts import rollout
from grasp_kernels.ops import AdamHyper
from grasp_kernels.sync import gd_sync, sync_step

from _fused_mlp import ACTS, DEVICE, make_model, plan_pair, recorded_programs, rel
from _kernels import fused_rel_tol

CPU_TRITON_REASON = backend_unavailable_reason("triton", DEVICE)
if CPU_TRITON_REASON is not None and not torch.cuda.is_available():  # pragma: no cover
    pytest.skip(f"triton backend unavailable: {CPU_TRITON_REASON}", allow_module_level=True)

from grasp_kernels.ops import _mlp_triton as mt  # noqa: E402  (after the interpreter check)
from grasp_kernels.ops.fused_mlp_sync import triton_kernel as fs  # noqa: E402

TOL = fused_rel_tol(DEVICE)  # float32 kernel against the float64 specification, under the interpreter
ADAM = dict(step=2, adam=AdamHyper(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8))
MUTATED = ("actions", "exp_avg", "exp_avg_sq")


def make_inputs(B, T, D, A, bounds="tensor", seed=0, device=DEVICE):
    """s0, goal ``[B, D]``, actions and random moments ``[B, T, A]``, bounds that bind on some actions."""
    g = torch.Generator().manual_seed(seed + 7 * T + 13 * D + A)

    def randn(*shape, scale=1.0):
        return (torch.randn(shape, generator=g) * scale).to(device)

    if bounds == "tensor":
        low = (-0.3 - torch.rand(A, generator=g)).to(device)
        high = (0.3 + torch.rand(A, generator=g)).to(device)
        low[::2] = float("-inf")  # unbounded on some dimensions
    elif bounds == "scalar":
        low, high = -0.4, 0.4
    else:
        low, high = None, None
    return dict(
        s0=randn(B, D), goal=randn(B, D), actions=randn(B, T, A, scale=0.8), exp_avg=randn(B, T, A, scale=0.1),
        exp_avg_sq=(torch.rand(B, T, A, generator=g) * 0.01 + 1e-4).to(device), low=low, high=high,
    )


def run_reference(model, inp, step=ADAM["step"]):
    """The specification in float64 (model and inputs), in place on copies; returns (loss, rollout, ref)."""
    model64 = copy.deepcopy(model).double()
    ref = {k: v.double().clone() if isinstance(v, torch.Tensor) else v for k, v in inp.items()}
    with torch.no_grad():
        states = rollout(model64, ref["s0"], ref["actions"])
    loss = sync_step(model64, ref["s0"], ref["goal"], ref["actions"], ref["exp_avg"], ref["exp_avg_sq"], step,
                     ADAM["adam"], ref["low"], ref["high"])
    return loss, states, ref


def run_launcher(model, inp, matmul_dtype=None, step=ADAM["step"]):
    """The launcher on copies with the loss and the workspace poisoned; returns (loss, workspace, out)."""
    out = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inp.items()}
    packed = ops.pack_mlp(model, matmul_dtype)
    B, T = inp["actions"].shape[:2]
    workspace = torch.full((B, T + 1, inp["s0"].shape[1]), float("nan"), device=inp["s0"].device)
    loss = torch.full((B,), float("nan"), device=inp["s0"].device)
    low, high = ops._dispatch.kernel_bounds(out["low"], out["high"], out["actions"])
    fs.launch(out["s0"], out["goal"], out["actions"], out["exp_avg"], out["exp_avg_sq"], workspace, loss,
              list(packed.tensors), packed.depth, packed.activation, step, ADAM["adam"], low, high)
    return loss, workspace, out


def gain_for(T: int) -> float:
    """make_model's gain for a T-step sync step: 2 (saturated activations) up to the CPU cases' T = 9; 1
    beyond, where 2 makes SiLU and ReLU rollouts explode (states ~1e12 and squared gradients past float32's
    range at T = 50) and the adjoint chaotic (bfloat16: 85 % error at T = 50; gain 1: 2 %)."""
    return 2.0 if T <= 9 else 1.0


def check_sync_step(B, T, D, A, hidden, depth, act=nn.SiLU, bounds="tensor", device=DEVICE, matmul_dtype=None,
                    tol=None, gain=None):
    """Errors of one launch against the float64 specification, all below ``tol`` (default: ``fused_rel_tol``
    of the device and matrix dtype), on a model of ``gain`` (default :func:`gain_for`)."""
    tol = fused_rel_tol(device, matmul_dtype) if tol is None else tol
    gain = gain_for(T) if gain is None else gain
    model = make_model(D, A, hidden, depth, act, seed=B + T + D + A + hidden + depth, device=device, gain=gain)
    inp = make_inputs(B, T, D, A, bounds, device=device)
    loss_ref, states_ref, ref = run_reference(model, inp)
    loss, workspace, out = run_launcher(model, inp, matmul_dtype)
    assert torch.equal(out["s0"], inp["s0"]) and torch.equal(out["goal"], inp["goal"]), "s0 and goal are only read"
    errors = {"loss": rel(loss, loss_ref), "workspace": rel(workspace, states_ref)}
    errors.update({name: rel(out[name], ref[name]) for name in MUTATED})
    errors["action update"] = rel(out["actions"] - inp["actions"], ref["actions"] - inp["actions"].double())
    errors["exp_avg update"] = rel(out["exp_avg"] - inp["exp_avg"], ref["exp_avg"] - inp["exp_avg"].double())
    assert max(errors.values()) < tol, errors
    if bounds != "none" and B * T * A >= 6:  # the bounds bind somewhere: the clamp ran
        bound = [torch.as_tensor(ref[side], dtype=torch.float64) for side in ("low", "high")]
        assert ((ref["actions"] == bound[0]) | (ref["actions"] == bound[1])).any(), "the bounds should bind"
    return errors


# odd shapes: B in 1..5, T in 1..9 (T = 1 included), odd D and A, the register widths 5, 16, 24 and the wide
# widths 40, 70 (several 32-wide blocks, padded), depth 1-3, every activation, and each kind of bound
CASES = [  # (B, T, D, A, hidden, depth, act, bounds)
    (1, 1, 1, 1, 5, 1, nn.SiLU, "tensor"),
    (3, 5, 3, 2, 16, 2, nn.ReLU, "scalar"),
    (5, 9, 7, 3, 24, 3, nn.Tanh, "none"),
    (2, 2, 5, 1, 5, 3, nn.SiLU, "scalar"),
    (4, 7, 1, 3, 24, 1, nn.ReLU, "tensor"),
    (1, 9, 3, 5, 16, 1, nn.Tanh, "tensor"),
    (3, 1, 17, 5, 40, 2, nn.SiLU, "tensor"),
    (2, 6, 3, 2, 40, 3, nn.ReLU, "none"),
    (5, 3, 5, 3, 70, 1, nn.Tanh, "scalar"),
    (1, 8, 7, 1, 70, 3, nn.SiLU, "tensor"),
    (4, 4, 1, 2, 70, 2, nn.Tanh, "tensor"),
]


@pytest.mark.parametrize("B,T,D,A,hidden,depth,act,bounds", CASES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_sync_step_matches_reference(B, T, D, A, hidden, depth, act, bounds):
    assert mt.is_wide(hidden) == (hidden > 32)
    check_sync_step(B, T, D, A, hidden, depth, act, bounds)


@pytest.mark.parametrize("hidden", [16, 70])
def test_sync_step_bf16_matrices(hidden):
    """bfloat16 matrix inputs (float32 accumulation) against the float64 reference of the float32 model
    (gain 1: at gain 2 the adjoint amplifies the bf16 roundings to 4-9 %; at 1 they stay at 1.2-1.7 %)."""
    check_sync_step(3, 5, 3, 2, hidden, 2, nn.SiLU, matmul_dtype=torch.bfloat16, gain=1.0)


@pytest.mark.parametrize("hidden", [24, 40])
def test_sync_step_several_programs(monkeypatch, hidden):
    """More plans than one block: several programs (register), persistent programs looping over blocks
    (wide: 3 blocks over 2 programs, one scratch each)."""
    monkeypatch.setattr(fs, "INTERPRET_ROWS", 16)
    assert fs.sync_rows(37) == 16 and mt.wide_programs(3, DEVICE) == 2
    check_sync_step(37, 3, 3, 2, hidden, 2, nn.Tanh)


def test_sync_step_forced_programs_loop_over_the_blocks(monkeypatch):
    """force_wide_programs sets the wide grid (the GPU tests' way into the persistent loop): 5 blocks of
    16 plans over 3 programs (2, 2 and 1 blocks), 3 blocks over 1, then the interpreter's default (2)."""
    monkeypatch.setattr(fs, "INTERPRET_ROWS", 16)
    counts = recorded_programs(monkeypatch, fs)
    with mt.force_wide_programs(3):
        check_sync_step(70, 4, 5, 3, 40, 2, nn.ReLU)
    with mt.force_wide_programs(1):
        check_sync_step(37, 3, 3, 2, 40, 1, nn.SiLU)
    check_sync_step(70, 2, 3, 2, 40, 1, nn.Tanh)
    assert counts == [3, 1, mt.INTERPRET_WIDE_PROGRAMS] and mt.INTERPRET_WIDE_PROGRAMS == 2


@pytest.mark.parametrize("hidden", [16, 40])
def test_consecutive_steps_equal_gd_sync(hidden):
    """Steps 1..3 on fresh zero moments are gd_sync's phase (float64): same actions, same loss."""
    B, T, D, A = 3, 6, 3, 2
    model = make_model(D, A, hidden, 2, nn.SiLU, seed=hidden)
    inp = make_inputs(B, T, D, A, "scalar")
    ref_actions = inp["actions"].double().clone()
    loss_ref = gd_sync(copy.deepcopy(model).double(), inp["s0"].double(), inp["goal"].double(), ref_actions, 3,
                       ADAM["adam"], -0.4, 0.4)
    actions = inp["actions"].clone()
    exp_avg, exp_avg_sq = torch.zeros_like(actions), torch.zeros_like(actions)
    losses = [ops.fused_mlp_sync_step_(model, inp["s0"], inp["goal"], actions, exp_avg, exp_avg_sq, step, ADAM["adam"],
                                       -0.4, 0.4, backend="triton")
              for step in (1, 2, 3)]
    assert rel(losses[-1], loss_ref) < TOL
    assert rel(actions, ref_actions) < TOL
    assert rel(actions - inp["actions"], ref_actions - inp["actions"].double()) < 1e-4


def test_public_op_on_a_model_and_a_packed_model_and_no_reference_backend():
    """The public op, on the module and on its PackedMLP, against the specification (one ``sync_step``); the
    reference backend is refused with an error that says where the op runs."""
    B, T, D, A = 3, 4, 3, 2
    model = make_model(D, A, 16, 2, nn.Tanh)
    inp = make_inputs(B, T, D, A, "scalar")
    ref = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inp.items()}
    loss_ref = sync_step(model, ref["s0"], ref["goal"], ref["actions"], ref["exp_avg"], ref["exp_avg_sq"],
                         *ADAM.values(), ref["low"], ref["high"])
    for m in (model, ops.pack_mlp(model)):
        x = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inp.items()}
        loss = ops.fused_mlp_sync_step_(m, x["s0"], x["goal"], x["actions"], x["exp_avg"], x["exp_avg_sq"],
                                        *ADAM.values(), x["low"], x["high"], backend="triton")
        assert rel(loss, loss_ref) < TOL
        for key in MUTATED:
            assert rel(x[key], ref[key]) < TOL, key
    with pytest.raises(ValueError, match="fused_mlp_sync_step_ runs on the triton backend only.*TRITON_INTERPRET=1"):
        ops.fused_mlp_sync_step_(model, inp["s0"], inp["goal"], inp["actions"].clone(), inp["exp_avg"].clone(),
                                 inp["exp_avg_sq"].clone(), *ADAM.values(), None, None, backend="reference")


def op_args(B=2, T=3, D=3, A=2, hidden=16, depth=1):
    packed = ops.pack_mlp(make_model(D, A, hidden, depth))
    inp = make_inputs(B, T, D, A)
    low, high = ops._dispatch.kernel_bounds(inp["low"], inp["high"], inp["actions"])
    return [inp["s0"], inp["goal"], inp["actions"], inp["exp_avg"], inp["exp_avg_sq"], torch.empty(B, T + 1, D),
            list(packed.tensors), depth, packed.activation, 2, 0.05, 0.9, 0.999, 1e-8, low, high, "triton"]


@pytest.mark.parametrize("hidden", [16, 40])
def test_custom_op_opcheck(hidden):
    torch.library.opcheck(torch.ops.grasp.fused_mlp_sync_step.default, op_args(hidden=hidden),
                          test_utils=("test_schema", "test_faketensor"))


def test_custom_op_launches_inside_its_tensors_device(monkeypatch, device_guard_recorder):
    from grasp_kernels.ops.fused_mlp_sync import op

    guard = device_guard_recorder
    monkeypatch.setattr(op, "on_device", guard)
    monkeypatch.setattr(fs, "launch", guard.launcher("fused_mlp_sync_step"))
    torch.ops.grasp.fused_mlp_sync_step(*op_args())
    assert guard.launched_inside == {"fused_mlp_sync_step": [torch.device("cpu")]}


def test_errors():
    B, T, D, A = 2, 3, 4, 2
    model = make_model(D, A, 16, 2)
    inp = make_inputs(B, T, D, A)

    def call(m=model, backend="triton", **kw):
        args = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inp.items()}
        args.update(kw)
        return ops.fused_mlp_sync_step_(
            m, args.pop("s0"), args.pop("goal"), args.pop("actions"), args.pop("exp_avg"), args.pop("exp_avg_sq"),
            *ADAM.values(), args.pop("low"), args.pop("high"), backend=backend, **args,
        )

    with pytest.raises(TypeError, match="s0.*float64"):
        call(s0=inp["s0"].double())
    with pytest.raises(ValueError, match="goal.*shape"):
        call(goal=torch.zeros(B, D + 1))
    with pytest.raises(ValueError, match="actions.*shape"):
        call(actions=torch.zeros(B + 1, T, A))
    with pytest.raises(ValueError, match="T >= 1"):
        call(actions=torch.zeros(B, 0, A), exp_avg=torch.zeros(B, 0, A), exp_avg_sq=torch.zeros(B, 0, A))
    with pytest.raises(ValueError, match="exp_avg_sq.*shape"):
        call(exp_avg_sq=torch.zeros(B, T, A + 1))
    with pytest.raises(ValueError, match="workspace.*shape"):
        call(workspace=torch.empty(B, T, D))
    buffer = torch.zeros(B * (T + 1) * D)
    with pytest.raises(ValueError, match="exp_avg and workspace overlap"):
        call(exp_avg=buffer[: B * T * A].view(B, T, A), workspace=buffer.view(B, T + 1, D))
    with pytest.raises(ValueError, match="D = 4, A = 2"):
        call(actions=torch.zeros(B, T, 3), exp_avg=torch.zeros(B, T, 3), exp_avg_sq=torch.ones(B, T, 3), low=None,
             high=None)
    with pytest.raises(ValueError, match="step must be an int >= 1"):
        ops.fused_mlp_sync_step_(model, inp["s0"], inp["goal"], inp["actions"].clone(), inp["exp_avg"].clone(),
                                 inp["exp_avg_sq"].clone(), 0, ADAM["adam"], None, None, backend="triton")
    with pytest.raises(ValueError, match="must be a grasp_kernels.models.MLPDynamics"):
        call(m=lambda s, a: s)
    with pytest.raises(ValueError, match="runs on the triton backend only"):
        call(m=lambda s, a: s, backend="reference")
    with pytest.raises(ValueError, match="params W1\\^T"):
        args = op_args(D=3)
        args[6] = [p.t() if p.dim() == 2 and i == 5 else p for i, p in enumerate(args[6])]
        torch.ops.grasp.fused_mlp_sync_step(*args)


# ----------------------------------------------------------------------------------------------
# the planner's sync phase with GraspConfig(fused_mlp=True)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", [24, 40])
def test_planner_fused_mlp_sync_plans_like_the_normal_iteration(hidden):
    """The fused iteration and fused sync phase plan what the normal iteration and gd_sync plan, through
    two sync phases, on a configuration that converges (reachable goals: the energy of every plan falls);
    hidden 40 runs the wide variant."""
    model = make_model(3, 2, hidden, 2, nn.Tanh, seed=3)
    with torch.no_grad():
        for p in model.net.parameters():  # a gentler model than make_model's
            p.mul_(0.5)
    config = GraspConfig(horizon=6, iters=20, sync_every=7, sync_steps=3, state_noise=0.0, init_noise=0.05,
                         backend="triton", particles=2, lr_states=0.02, lr_actions=0.05, sync_lr=0.05,
                         goal_weight=0.3)
    plans = plan_pair(config, model, reachable=True)
    for field in ("actions", "states", "energy_history", "final_distance"):
        torch.testing.assert_close(getattr(plans[True], field), getattr(plans[False], field), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(plans[True].info["sync_loss"], plans[False].info["sync_loss"], rtol=1e-4, atol=1e-6)
    plan = plans[True]
    assert plan.info["sync_loss"].shape[0] == 2
    assert (plan.energy_history[-1] < plan.energy_history[0]).all(), plan.energy_history[[0, -1]]


# ----------------------------------------------------------------------------------------------
# GPU (native Triton)
# ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,D,A,hidden,depth", [(1, 1, 1, 1, 16, 1), (5, 9, 7, 3, 24, 3), (64, 50, 4, 2, 256, 3),
                                                   (40, 20, 16, 4, 512, 2), (17, 16, 64, 8, 1024, 3)])
def test_gpu_native_matches_reference(B, T, D, A, hidden, depth):
    for act in ACTS:
        check_sync_step(B, T, D, A, hidden, depth, act, device=torch.device("cuda"))


@pytest.mark.gpu
@pytest.mark.parametrize("hidden", [24, 256])
def test_gpu_bf16_matrix_inputs(hidden):
    check_sync_step(64, 50, 4, 2, hidden, 3, device=torch.device("cuda"), matmul_dtype=torch.bfloat16)


# The wide variant's persistent loop on a GPU: at the default grid, min(blocks, SMs) programs, every
# program runs one block of 16 plans at the shapes above; forced to 2 programs, each loops over 2-3 blocks
# with one scratch, through the T-step rollout and adjoint of every block (tests/ops/test_fused_mlp_iteration.py
# says why the interpreter cannot test this).
SYNC_LOOP_CASES = [  # (B, T, D, A, hidden, depth, act, matrix dtype): 4, 3, 5, 3 and 4 blocks
    (64, 50, 4, 2, 256, 3, nn.SiLU, None),
    (40, 20, 16, 4, 512, 2, nn.Tanh, None),
    (70, 8, 5, 3, 40, 2, nn.ReLU, None),
    (40, 16, 64, 8, 1024, 3, nn.Tanh, None),
    (64, 50, 4, 2, 256, 3, nn.SiLU, torch.bfloat16),
]


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,D,A,hidden,depth,act,matmul_dtype", SYNC_LOOP_CASES,
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_gpu_wide_programs_loop_over_their_blocks(monkeypatch, B, T, D, A, hidden, depth, act, matmul_dtype):
    counts = recorded_programs(monkeypatch, fs)
    assert -(-B // fs.sync_rows(B)) >= 3
    with mt.force_wide_programs(2):
        check_sync_step(B, T, D, A, hidden, depth, act, device=torch.device("cuda"), matmul_dtype=matmul_dtype)
    assert counts == [2]


@pytest.mark.gpu
def test_gpu_large_batch_loops_at_the_default_grid(monkeypatch):
    """B = 4096 plans, H = 256 (the shipped world models' width): 256 blocks over min(blocks, SMs)
    programs, about 2 blocks each on an H100."""
    cuda = torch.device("cuda")
    counts = recorded_programs(monkeypatch, fs)
    n_blocks = -(-4096 // fs.sync_rows(4096))
    check_sync_step(4096, 16, 4, 2, 256, 3, nn.SiLU, device=cuda)
    assert counts == [mt.wide_programs(n_blocks, cuda)] and counts[0] < n_blocks
