"""Test hook (moved out of the package): every Triton kernel in representative configurations, for an
ahead-of-time compile for sm_90 (tests/test_lowering.py runs it in a subprocess WITHOUT
TRITON_INTERPRET: under the interpreter ``@triton.jit`` yields functions that cannot be compiled).

``kernel_specs()`` covers the four ops' kernels and ``sum_partials``; ``fused_mlp_specs()`` the fused MLP
iteration kernel. Each returns dicts with ``name``, ``fn``, ``signature``, ``constexprs``, ``attrs``
(``tt.divisibility`` hints as the JIT would give them: pointers always 16-aligned, sizes when
``D % 16 == 0``) and ``options`` (``num_warps``, and ``maxnreg`` where the launcher sets it); compile
with ``triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", 90, 32),
options=options)``.
"""

from __future__ import annotations


def kernel_specs() -> list[dict]:
    """The ops' kernels (lifted_energy, state_step, action_step, lifted_energy_state_step, sum_partials)."""
    from grasp_kernels.ops._triton_common import (
        GPU_BLOCK,
        NOISE_PHILOX32,
        NOISE_PHILOX64,
        NOISE_TENSOR,
        NUM_WARPS,
        REDUCE_BLOCK,
        sum_partials_kernel,
    )
    from grasp_kernels.ops.action_step.triton_kernel import action_step_kernel
    from grasp_kernels.ops.lifted_energy.triton_kernel import lifted_energy_kernel
    from grasp_kernels.ops.lifted_energy_state_step.triton_kernel import lifted_energy_state_step_kernel
    from grasp_kernels.ops.state_step.triton_kernel import state_step_kernel

    i32, i64, f32, cx = "i32", "i64", "fp32", "constexpr"
    adam = {"lerp_w": f32, "beta2": f32, "one_minus_beta2": f32, "sqrt_bc2": f32, "eps": f32, "neg_step": f32}
    size_names = ("n_inner", "n_virt", "D", "stride_s", "n", "A")

    def spec(name, fn, signature, constexprs, aligned, num_warps=NUM_WARPS):
        attrs = {}
        for i, (arg, kind) in enumerate(signature.items()):
            if kind.startswith("*") or (aligned and arg in size_names):
                attrs[(i,)] = [["tt.divisibility", 16]]
        return {"name": name, "fn": fn, "signature": signature, "constexprs": constexprs, "attrs": attrs,
                "options": {"num_warps": num_warps}}

    def energy_sig(pred_t, idx):
        return {"pred_ptr": pred_t, "states_ptr": "*fp32", "energy_ptr": "*fp32", "grad_pred_ptr": "*fp32",
                "grad_states_ptr": "*fp32", "gamma": f32, "n_plans": i32, "n_inner": idx, "D": idx,
                "stride_s": idx, "n_chunks": i32, "BP": cx, "BC": cx, "WIDE": cx}

    def fused_sig(pred_t):
        return {"pred_ptr": pred_t, "states_ptr": "*fp32", "energy_ptr": "*fp32", "grad_pred_ptr": "*fp32",
                "exp_avg_ptr": "*fp32", "exp_avg_sq_ptr": "*fp32", "noise_ptr": "*fp32", "gamma": f32,
                "n_plans": i32, "n_inner": i32, "D": i32, "stride_s": i32, "n_chunks": i32, **adam,
                "noise_std": f32, "seed": i64, "noise_base": i64, "noise_stride": i64, "BP": cx, "BC": cx, "WIDE": cx, "NOISE": cx}

    state_sig = {"states_ptr": "*fp32", "grad_ptr": "*fp32", "exp_avg_ptr": "*fp32", "exp_avg_sq_ptr": "*fp32",
                 "noise_ptr": "*fp32", "n_plans": i32, "n_virt": i32, "D": i32, "stride_s": i32, "n_chunks": i32,
                 **adam, "noise_std": f32, "seed": i64, "noise_base": i64, "noise_stride": i64, "BP": cx, "BC": cx, "WIDE": cx, "NOISE": cx}
    big = {"BP": 1, "BC": GPU_BLOCK}
    specs = []
    for aligned in (True, False):
        tag = "D%16==0" if aligned else "D odd"
        specs.append(spec(f"lifted_energy f32 {tag}", lifted_energy_kernel, energy_sig("*fp32", i32),
                          {**big, "WIDE": False}, aligned))
        specs.append(spec(f"lifted_energy bf16 {tag}", lifted_energy_kernel, energy_sig("*bf16", i32),
                          {**big, "WIDE": False}, aligned))
        for mode, label in ((NOISE_TENSOR, "noise tensor"), (NOISE_PHILOX32, "philox")):
            specs.append(spec(f"state_step {label} {tag}", state_step_kernel, state_sig,
                              {**big, "WIDE": False, "NOISE": mode}, aligned))
            specs.append(spec(f"lifted_energy_state_step f32 {label} {tag}", lifted_energy_state_step_kernel,
                              fused_sig("*fp32"), {**big, "WIDE": False, "NOISE": mode}, aligned))
    specs.append(spec("lifted_energy f32 wide (plan >= 2^31 elements)", lifted_energy_kernel,
                      energy_sig("*fp32", i64), {**big, "WIDE": True}, False))
    specs.append(spec("lifted_energy f32 small plans (BP=64, BC=32)", lifted_energy_kernel,
                      energy_sig("*fp32", i32), {"BP": 64, "BC": 32, "WIDE": False}, False))
    specs.append(spec("state_step philox64 (B*(T-1)*D >= 2^31)", state_step_kernel, state_sig,
                      {**big, "WIDE": False, "NOISE": NOISE_PHILOX64}, True))
    specs.append(spec("lifted_energy_state_step bf16 philox", lifted_energy_state_step_kernel, fused_sig("*bf16"),
                      {**big, "WIDE": False, "NOISE": NOISE_PHILOX32}, True))
    specs.append(spec("sum_partials", sum_partials_kernel,
                      {"partial_ptr": "*fp32", "energy_ptr": "*fp32", "n_chunks": i32, "BLOCK_R": cx},
                      {"BLOCK_R": REDUCE_BLOCK}, False, num_warps=4))
    action_sig = {"actions_ptr": "*fp32", "grad_ptr": "*fp32", "exp_avg_ptr": "*fp32", "exp_avg_sq_ptr": "*fp32",
                  "low_ptr": "*fp32", "high_ptr": "*fp32", "n": i32, "A": i32, **adam, "BLOCK": cx, "WIDE": cx}
    specs.append(spec("action_step", action_step_kernel, action_sig, {"BLOCK": GPU_BLOCK, "WIDE": False}, False))
    specs.append(spec("action_step wide", action_step_kernel, {**action_sig, "n": i64},
                      {"BLOCK": GPU_BLOCK, "WIDE": True}, False))
    return specs


def _mlp_spec(kernel: str, fn, ptrs: list[str], mdt: str, scalars: dict, constexprs: dict, tag: str, launch_options,
              hidden: int) -> dict:
    """A fused MLP kernel's spec: the pointers ``ptrs``, the packed model (matrices ``*mdt``, vectors
    float32), the scratch, ``scalars`` and ``constexprs`` in the kernel's argument order, compiled with
    the launcher's ``launch_options(hidden, matrix_dtype)``."""
    import torch

    from grasp_kernels.ops._mlp_triton import is_wide, wide_block

    signature = {f"{n}_ptr": "*fp32" for n in ptrs}
    for n in ("w1", "b1", "w2", "b2", "w3", "b3", "wo", "bo"):
        signature[f"{n}_ptr"] = f"*{mdt}" if n.startswith("w") else "*fp32"
    signature["scratch_ptr"] = "*fp32"
    signature.update(scalars)
    signature.update({name: "constexpr" for name in constexprs})
    attrs = {(i,): [["tt.divisibility", 16]] for i, kind in enumerate(signature.values()) if kind.startswith("*")}
    variant = f"wide BH={wide_block(hidden)}" if is_wide(hidden) else "register"
    options = launch_options(hidden, torch.bfloat16 if mdt == "bf16" else torch.float32)
    return {"name": f"{kernel} {variant} {tag}", "fn": fn, "signature": signature, "constexprs": constexprs,
            "attrs": attrs, "options": options}


def fused_mlp_specs() -> list[dict]:
    """The fused MLP iteration kernel (same dict format as :func:`kernel_specs`)."""
    from grasp_kernels.ops._triton_common import NOISE_PHILOX32, NOISE_TENSOR
    from grasp_kernels.ops._mlp_triton import is_wide, pad_dim, padded_hidden, wide_block
    from grasp_kernels.ops.fused_mlp_iteration.triton_kernel import (
        _fused_mlp_iteration_kernel,
        gpu_rows,
        launch_options,
        mlp_tile_config,
    )

    i32, i64, f32 = "i32", "i64", "fp32"
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
        ptrs = ["states", "actions", "out", "energy", "s_avg", "s_avg_sq", "a_avg", "a_avg_sq", "noise", "low",
                "high", "mean", "std", "amean", "astd", "delta"]
        scalars = {"gamma": f32, "n_plans": i32, "T": i32, "D": i32, "A": i32, "H": i32, "n_chunks": i32,
                   "n_tiles": i32, "lerp_w": f32, "beta2": f32, "one_minus_beta2": f32, "sqrt_bc2": f32,
                   "eps": f32, "neg_step_s": f32, "neg_step_a": f32, "noise_std": f32, "seed": i64, "noise_base": i64, "noise_stride": i64}
        constexprs = {"BP": bp, "BT": bt, "DP": pad_dim(dim), "AP": pad_dim(action_dim), "HP": padded_hidden(hidden),
                      "DEPTH": depth, "ACT": act, "NOISE": noise, "WIDE": is_wide(hidden), "BH": wide_block(hidden)}
        specs.append(_mlp_spec("fused_mlp_iteration", _fused_mlp_iteration_kernel, ptrs, mdt, scalars, constexprs,
                               f"{label} BM={bp * bt}", launch_options, hidden))
    return specs


def fused_mlp_sync_specs() -> list[dict]:
    """The fused MLP sync-step kernel (same dict format as :func:`kernel_specs`), at the launcher's tiles."""
    from grasp_kernels.ops._mlp_triton import is_wide, pad_dim, padded_hidden, wide_block
    from grasp_kernels.ops.fused_mlp_sync.triton_kernel import SYNC_ROWS, _fused_mlp_sync_kernel, launch_options

    i32, f32 = "i32", "fp32"
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
        ptrs = ["s0", "goal", "actions", "a_avg", "a_avg_sq", "ws", "loss", "low", "high", "mean", "std", "amean",
                "astd", "delta"]
        scalars = {"n_plans": i32, "T": i32, "D": i32, "A": i32, "H": i32, "n_blocks": i32, "lerp_w": f32,
                   "beta2": f32, "one_minus_beta2": f32, "sqrt_bc2": f32, "eps": f32, "neg_step": f32}
        constexprs = {"BP": SYNC_ROWS, "DP": pad_dim(dim), "AP": pad_dim(action_dim), "HP": padded_hidden(hidden),
                      "DEPTH": depth, "ACT": act, "WIDE": is_wide(hidden), "BH": wide_block(hidden)}
        specs.append(_mlp_spec("fused_mlp_sync", _fused_mlp_sync_kernel, ptrs, mdt, scalars, constexprs,
                               f"{label} BP={SYNC_ROWS}", launch_options, hidden))
    return specs
