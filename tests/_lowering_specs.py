"""Test hook (moved out of the package): every Triton kernel of the op table in representative configurations,
for an ahead-of-time compile for sm_90 (tests/test_lowering.py runs it in a subprocess WITHOUT
TRITON_INTERPRET: under the interpreter ``@triton.jit`` yields functions that cannot be compiled).

The kernels are the op table's (``OpEntry.triton_kernels``, grasp_kernels/ops/table.py) and the energy kernels'
second pass ``sum_partials_kernel``. :data:`CONFIGS` holds each kernel's configurations; a kernel of the table
without one is an error naming it. ``kernel_specs()`` covers every op but the fused MLP ones (an op added to the
table lands there) and ``sum_partials``; ``fused_mlp_specs()`` and ``fused_mlp_sync_specs()`` the fused MLP
kernels, whose compiles take seconds each.

Each spec is a dict with ``name`` (the op's name first), ``fn``, ``signature`` (read from the kernel's own
parameters: :func:`signature`), ``constexprs``, ``attrs`` (``tt.divisibility`` hints as the JIT would give them:
pointers always 16-aligned, sizes when ``D % 16 == 0``) and ``options`` (``num_warps``, and ``maxnreg`` where the
launcher sets it); compile with ``triton.compile(ASTSource(fn, signature, constexprs, attrs),
target=GPUTarget("cuda", 90, 32), options=options)``.
"""

from __future__ import annotations

from typing import Callable

from grasp_kernels.ops.table import OP_TABLE, OpEntry, op_entry

F32, I32, I64, PTR = "fp32", "i32", "i64", "*fp32"
# Scalar parameters by name, the same in every kernel: gamma and the Adam and noise scalars are float32, the
# Philox key and counters 64-bit; any other scalar (a size) is i32 unless a configuration says otherwise.
SCALAR_TYPES = {
    **dict.fromkeys(("gamma", "lerp_w", "beta2", "one_minus_beta2", "sqrt_bc2", "eps", "neg_step", "neg_step_s",
                     "neg_step_a", "noise_std"), F32),
    **dict.fromkeys(("seed", "noise_base", "noise_stride"), I64),
}
SIZE_NAMES = ("n_inner", "n_virt", "D", "stride_s", "n", "A")  # 16-divisible in the aligned configurations
MATRICES = ("w1_ptr", "w2_ptr", "w3_ptr", "wo_ptr")  # the fused MLP kernels' packed matrices
FUSED_MLP_OPS = ("fused_mlp_iteration", "fused_mlp_sync")
Spec = dict
Configs = Callable[[object], list[Spec]]


def signature(fn, **types: str) -> dict[str, str]:
    """The parameters of the ``@triton.jit`` function ``fn``, in order, with their Triton types: ``constexpr`` as
    declared; ``types`` where given (bfloat16 pointers, 64-bit sizes); pointers (``*_ptr``) ``*fp32``; scalars by
    :data:`SCALAR_TYPES`, else ``i32``."""
    out = {}
    for param in fn.params:
        name = param.name
        if param.is_constexpr:
            out[name] = "constexpr"
        else:
            out[name] = types.get(name, PTR if name.endswith("_ptr") else SCALAR_TYPES.get(name, I32))
    unknown = sorted(set(types) - set(out))
    if unknown:
        raise KeyError(f"{fn.__name__} has no parameters {unknown}")
    return out


def spec(name: str, fn, constexprs: dict, aligned: bool = False, options: dict | None = None, **types: str) -> Spec:
    """One configuration of ``fn``: its :func:`signature` with ``types``, ``constexprs``, the divisibility hints
    (pointers; the sizes of :data:`SIZE_NAMES` too when ``aligned``) and the compile ``options`` (default: the
    elementwise kernels' ``num_warps``)."""
    from grasp_kernels.ops._triton_common import NUM_WARPS

    sig = signature(fn, **types)
    attrs = {(i,): [["tt.divisibility", 16]] for i, (arg, kind) in enumerate(sig.items())
             if kind.startswith("*") or (aligned and arg in SIZE_NAMES)}
    return {"name": name, "fn": fn, "signature": sig, "constexprs": constexprs, "attrs": attrs,
            "options": {"num_warps": NUM_WARPS} if options is None else options}


def _noise_modes() -> tuple[tuple[int, str], ...]:
    from grasp_kernels.ops._triton_common import NOISE_PHILOX32, NOISE_TENSOR

    return (NOISE_TENSOR, "noise tensor"), (NOISE_PHILOX32, "philox")


def _big() -> dict:
    """One plan per tile in chunks of the GPU block (the launchers' choice for large plans)."""
    from grasp_kernels.ops._triton_common import GPU_BLOCK

    return {"BP": 1, "BC": GPU_BLOCK, "WIDE": False}


def _aligned() -> tuple[tuple[bool, str], ...]:
    return (True, "D%16==0"), (False, "D odd")


def lifted_energy_configs(fn) -> list[Spec]:
    specs = []
    for aligned, tag in _aligned():
        specs.append(spec(f"lifted_energy f32 {tag}", fn, _big(), aligned))
        specs.append(spec(f"lifted_energy bf16 {tag}", fn, _big(), aligned, pred_ptr="*bf16"))
    specs.append(spec("lifted_energy f32 wide (plan >= 2^31 elements)", fn, {**_big(), "WIDE": True}, n_inner=I64,
                      D=I64, stride_s=I64))
    specs.append(spec("lifted_energy f32 small plans (BP=64, BC=32)", fn, {"BP": 64, "BC": 32, "WIDE": False}))
    return specs


def state_step_configs(fn) -> list[Spec]:
    from grasp_kernels.ops._triton_common import NOISE_PHILOX64

    specs = [spec(f"state_step {label} {tag}", fn, {**_big(), "NOISE": mode}, aligned)
             for aligned, tag in _aligned() for mode, label in _noise_modes()]
    specs.append(spec("state_step philox64 (B*(T-1)*D >= 2^31)", fn, {**_big(), "NOISE": NOISE_PHILOX64}, True))
    return specs


def lifted_energy_state_step_configs(fn) -> list[Spec]:
    from grasp_kernels.ops._triton_common import NOISE_PHILOX32

    specs = [spec(f"lifted_energy_state_step f32 {label} {tag}", fn, {**_big(), "NOISE": mode}, aligned)
             for aligned, tag in _aligned() for mode, label in _noise_modes()]
    specs.append(spec("lifted_energy_state_step bf16 philox", fn, {**_big(), "NOISE": NOISE_PHILOX32}, True,
                      pred_ptr="*bf16"))
    return specs


def action_step_configs(fn) -> list[Spec]:
    from grasp_kernels.ops._triton_common import GPU_BLOCK

    return [spec("action_step", fn, {"BLOCK": GPU_BLOCK, "WIDE": False}),
            spec("action_step wide", fn, {"BLOCK": GPU_BLOCK, "WIDE": True}, n=I64)]


def sum_partials_configs(fn) -> list[Spec]:
    from grasp_kernels.ops._triton_common import REDUCE_BLOCK

    return [spec("sum_partials", fn, {"BLOCK_R": REDUCE_BLOCK}, options={"num_warps": 4})]


def _mlp_spec(kernel: str, fn, mdt: str, constexprs: dict, tag: str, launch_options, hidden: int) -> Spec:
    """A fused MLP kernel's spec: the packed matrices ``*mdt`` (vectors float32), compiled with the launcher's
    ``launch_options(hidden, matrix_dtype)``."""
    import torch

    from grasp_kernels.ops._mlp_triton import is_wide, wide_block

    variant = f"wide BH={wide_block(hidden)}" if is_wide(hidden) else "register"
    options = launch_options(hidden, torch.bfloat16 if mdt == "bf16" else torch.float32)
    return spec(f"{kernel} {variant} {tag}", fn, constexprs, options=options, **dict.fromkeys(MATRICES, f"*{mdt}"))


def fused_mlp_iteration_configs(fn) -> list[Spec]:
    from grasp_kernels.ops._mlp_triton import is_wide, pad_dim, padded_hidden, wide_block
    from grasp_kernels.ops._triton_common import NOISE_PHILOX32, NOISE_TENSOR
    from grasp_kernels.ops.fused_mlp_iteration.triton_kernel import gpu_rows, launch_options, mlp_tile_config

    # every width the tests and benchmarks run: the register variant (padded width <= 32) and the blocked
    # one; the shipped world models are D=4 A=2 H=256 depth 3
    configs = [  # (label, D, A, H, depth, act, matrix dtype, noise)
        ("D=16 A=4 H=16 depth2 SiLU f32 philox", 16, 4, 16, 2, 0, "fp32", NOISE_PHILOX32),
        ("D=16 A=4 H=32 depth3 SiLU bf16 philox", 16, 4, 32, 3, 0, "bf16", NOISE_PHILOX32),
        ("D=3 A=2 H=24 depth2 Tanh f32 noise-tensor", 3, 2, 24, 2, 2, "fp32", NOISE_TENSOR),
        ("D=17 A=5 H=48 depth1 ReLU f32 noise-tensor", 17, 5, 48, 1, 1, "fp32", NOISE_TENSOR),
        ("D=16 A=4 H=64 depth2 SiLU f32 philox", 16, 4, 64, 2, 0, "fp32", NOISE_PHILOX32),
        ("D=16 A=4 H=64 depth2 SiLU bf16 philox", 16, 4, 64, 2, 0, "bf16", NOISE_PHILOX32),
        ("D=4 A=2 H=256 depth3 SiLU f32 philox", 4, 2, 256, 3, 0, "fp32", NOISE_PHILOX32),
        ("D=16 A=4 H=512 depth2 SiLU bf16 philox", 16, 4, 512, 2, 0, "bf16", NOISE_PHILOX32),
        ("D=64 A=8 H=1024 depth3 Tanh f32 philox", 64, 8, 1024, 3, 2, "fp32", NOISE_PHILOX32),
        ("D=64 A=8 H=1024 depth3 Tanh bf16 philox", 64, 8, 1024, 3, 2, "bf16", NOISE_PHILOX32),
    ]
    specs = []
    for label, dim, action_dim, hidden, depth, act, mdt, noise in configs:
        bp, bt, _ = mlp_tile_config(1 << 20, 64, hidden, rows=gpu_rows(hidden))
        constexprs = {"BP": bp, "BT": bt, "DP": pad_dim(dim), "AP": pad_dim(action_dim), "HP": padded_hidden(hidden),
                      "DEPTH": depth, "ACT": act, "NOISE": noise, "WIDE": is_wide(hidden), "BH": wide_block(hidden)}
        specs.append(_mlp_spec("fused_mlp_iteration", fn, mdt, constexprs, f"{label} BM={bp * bt}", launch_options,
                               hidden))
    return specs


def fused_mlp_sync_configs(fn) -> list[Spec]:
    from grasp_kernels.ops._mlp_triton import is_wide, pad_dim, padded_hidden, wide_block
    from grasp_kernels.ops.fused_mlp_sync.triton_kernel import SYNC_ROWS, launch_options

    configs = [  # (label, D, A, H, depth, act, matrix dtype): both variants, f32 and bf16, up to H = 1024
        ("D=16 A=4 H=16 depth2 SiLU f32", 16, 4, 16, 2, 0, "fp32"),
        ("D=5 A=3 H=24 depth3 Tanh f32", 5, 3, 24, 3, 2, "fp32"),
        ("D=16 A=4 H=32 depth3 SiLU bf16", 16, 4, 32, 3, 0, "bf16"),
        ("D=17 A=5 H=48 depth1 ReLU f32", 17, 5, 48, 1, 1, "fp32"),
        ("D=4 A=2 H=256 depth3 SiLU f32", 4, 2, 256, 3, 0, "fp32"),
        ("D=4 A=2 H=256 depth3 SiLU bf16", 4, 2, 256, 3, 0, "bf16"),
        ("D=16 A=4 H=512 depth2 SiLU bf16", 16, 4, 512, 2, 0, "bf16"),
        ("D=64 A=8 H=1024 depth3 Tanh f32", 64, 8, 1024, 3, 2, "fp32"),
        ("D=64 A=8 H=1024 depth3 Tanh bf16", 64, 8, 1024, 3, 2, "bf16"),
    ]
    specs = []
    for label, dim, action_dim, hidden, depth, act, mdt in configs:
        constexprs = {"BP": SYNC_ROWS, "DP": pad_dim(dim), "AP": pad_dim(action_dim), "HP": padded_hidden(hidden),
                      "DEPTH": depth, "ACT": act, "WIDE": is_wide(hidden), "BH": wide_block(hidden)}
        specs.append(_mlp_spec("fused_mlp_sync", fn, mdt, constexprs, f"{label} BP={SYNC_ROWS}", launch_options,
                               hidden))
    return specs


# each Triton kernel's configurations, by the kernel's name (OpEntry.triton_kernels)
CONFIGS: dict[str, Configs] = {
    "lifted_energy_kernel": lifted_energy_configs,
    "state_step_kernel": state_step_configs,
    "action_step_kernel": action_step_configs,
    "lifted_energy_state_step_kernel": lifted_energy_state_step_configs,
    "sum_partials_kernel": sum_partials_configs,
    "_fused_mlp_iteration_kernel": fused_mlp_iteration_configs,
    "_fused_mlp_sync_kernel": fused_mlp_sync_configs,
}


def specs_of(op: OpEntry) -> list[Spec]:
    """The specs of every Triton kernel of ``op`` (KeyError naming a kernel without configurations)."""
    specs = []
    for name, fn in zip(op.triton_kernels, op.triton_kernel_functions()):
        if name not in CONFIGS:
            raise KeyError(f"no lowering configuration for the Triton kernel {name} of op {op.name}: add it to "
                           "CONFIGS in tests/_lowering_specs.py")
        specs += CONFIGS[name](fn)
    return specs


def kernel_ops() -> list[OpEntry]:
    """The ops of :func:`kernel_specs`: every op of the table but the fused MLP ones."""
    return [op for op in OP_TABLE if op.name not in FUSED_MLP_OPS]


def kernel_specs() -> list[Spec]:
    """The kernels of every op but the fused MLP ones, and ``sum_partials``."""
    from grasp_kernels.ops._triton_common import sum_partials_kernel

    return [s for op in kernel_ops() for s in specs_of(op)] + sum_partials_configs(sum_partials_kernel)


def fused_mlp_specs() -> list[Spec]:
    """The fused MLP iteration kernel (same dict format as :func:`kernel_specs`), at the launcher's tiles."""
    return specs_of(op_entry("fused_mlp_iteration"))


def fused_mlp_sync_specs() -> list[Spec]:
    """The fused MLP sync-step kernel (same dict format as :func:`kernel_specs`), at the launcher's tiles."""
    return specs_of(op_entry("fused_mlp_sync"))
