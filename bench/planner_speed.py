"""The planner-speed table (issue 7 item 5, DESIGN.md section 5): time per GRASP iteration and per full
plan for every provider, against the physical floor measured in the same run.

Providers (a row per shape and provider; "n/a (reason)" where one cannot run here):
  (a) loop      the per-timestep loop as public GRASP ports run it: T world-model calls over B rows
                (planner.iteration(state, per_timestep=True), reference backend)
  (b) ref       the batched reference, eager: ONE world-model call over B*T rows (backend="reference")
  (c) compile   torch.compile(dynamic=False) of a functional iteration built from the reference
                functions (one batched model call, lifted_energy_ref + autograd for the gradients,
                state_step_ref with an explicit noise tensor drawn per call, action_step_ref); the Adam
                step count is a compile-time constant; compilation and warm-up are not timed
  (d) triton    the Triton ops (backend="triton")
  (e) cuda      the CUDA ops (backend="cuda")
  (f) graph     GraspConfig(cuda_graph=True) on the fastest kernel backend: the whole plan captured once as
                one CUDA graph (grasp_kernels.graphs) and replayed; per iteration = one replayed plan
                without sync phases (its eager initialisation and final rollout included) / iters
  (g) fused     the fused MLP iteration kernel (GraspConfig(fused_mlp=True), MLPDynamics only)

Per plan = iters x (one iteration) + (iters / sync_every) x (one sync phase); the sync phase
(sync_steps Adam steps through the sequential rollout, the same code for every provider) is measured
once per shape with the reference planner.

Floor per iteration = max(FLOP floor, byte floor): the FLOPs of one world-model forward plus the
action-input backward (activation gradients only) over B*T rows, counted analytically, over a large
matmul's rate in the model's dtype measured in this run; and the minimum bytes of the GRASP update
(states read + written, state and action Adam moments read + written, actions read + written, the
energy, the weights once; predictions and activations never in global memory, as in the fused path)
over the copy bandwidth measured in this run. "% floor" = floor / time.

    python bench/planner_speed.py --device cuda --out bench/results/planner_speed_mlp.md             # MLP grid
    python bench/planner_speed.py --device cuda --model transformer --out ...                         # DINO-WM shape
    python bench/planner_speed.py --quick                        # CPU smoke run (tiny shapes, interpreter)
    python bench/planner_speed.py                                # without CUDA: a small CPU grid (minutes)
    python bench/planner_speed.py --shapes 16,512,256,64 --providers a b d g     # MLP rows D,H,B,T
    python bench/planner_speed.py --model transformer --shapes 1,64 4,64         # transformer rows B,T

Timing: triton.testing.do_bench medians on CUDA, torch.utils.benchmark medians on the CPU. Without a
CUDA device the script sets TRITON_INTERPRET=1 (before any grasp_kernels import) so that the Triton
providers (d) and (g) run under the Triton interpreter: a smoke test of the code path, never a speed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

if not torch.cuda.is_available():  # before any Triton kernel is defined: Triton runs in its interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch._dynamo  # noqa: E402  (after TRITON_INTERPRET: it imports Triton)

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "bench")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from _timing import copy_bandwidth_gbs, device_name, matmul_tflops, time_ms, versions  # noqa: E402
from grasp_kernels import GraspConfig, GraspPlanner  # noqa: E402
from grasp_kernels.backends import backend_unavailable_reason  # noqa: E402
from grasp_kernels.models import MLPDynamics, PatchTransformerDynamics  # noqa: E402
from grasp_kernels.reference import (  # noqa: E402
    action_step_ref,
    lifted_energy_ref,
    lifted_predictions_ref,
    state_step_ref,
)

PROVIDERS = {
    "a": "(a) loop",
    "b": "(b) ref",
    "c": "(c) compile",
    "d": "(d) triton",
    "e": "(e) cuda",
    "f": "(f) graph",
    "g": "(g) fused",
}
ENGINE = ("b", "d", "e", "f", "g")  # "best" = the fastest of these (the engine's own paths)
# MLP rows (D, H, B, T): state dims 4..64, hidden 256..1024, B*T from 1e3 to 1e6; T >= 64 but one row
GPU_MLP_SHAPES = [(4, 256, 16, 64), (16, 256, 64, 16), (16, 512, 256, 64), (64, 1024, 1024, 256),
                  (16, 512, 16384, 64), (64, 1024, 4096, 256)]
QUICK_MLP_SHAPES = [(4, 32, 2, 8), (8, 64, 4, 16)]
CPU_MLP_SHAPES = [(4, 64, 1, 16), (16, 256, 1, 64), (16, 256, 16, 64), (16, 256, 16, 256)]  # no CUDA, no --quick
# transformer rows (B, T) for the DINO-WM-shaped predictor (196 tokens x 384, history 3)
GPU_TRANSFORMER_SHAPES = [(1, 16), (1, 64), (4, 64)]
QUICK_TRANSFORMER_SHAPES = [(1, 4), (2, 8)]
CPU_TRANSFORMER_SHAPES = [(1, 16), (1, 64), (4, 64)]
# transformer sizes (patches, embed, history, width, depth, heads): DINO-WM-like on CUDA, tiny on the CPU
GPU_TRANSFORMER = (196, 384, 3, 384, 6, 16)
CPU_TRANSFORMER = (16, 32, 3, 64, 2, 4)
QUICK_TRANSFORMER = (4, 8, 2, 16, 1, 2)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# ----------------------------------------------------------------------------------------------
# world models, FLOPs and bytes
# ----------------------------------------------------------------------------------------------


@dataclass
class Shape:
    batch: int
    horizon: int
    model: torch.nn.Module
    state_shape: tuple[int, ...]
    history: int
    text: str  # the shape column: "D=16 H=512" or "P=196 E=384"

    @property
    def rows(self) -> int:
        return self.batch * self.horizon

    @property
    def state_numel(self) -> int:
        return math.prod(self.state_shape)


def make_shapes(args: argparse.Namespace, device: torch.device) -> list[Shape]:
    torch.manual_seed(0)
    shapes = []
    if args.model == "transformer":
        model = PatchTransformerDynamics(
            args.patches, args.embed, args.action_dim, history=args.history, width=args.width, depth=args.depth,
            heads=args.heads, mlp_ratio=args.mlp_ratio,
        ).to(device)
        for spec in args.shapes:
            batch, horizon = spec
            shapes.append(Shape(batch, horizon, model, (args.patches, args.embed), args.history,
                                f"P={args.patches} E={args.embed}"))
        return shapes
    models: dict[tuple[int, int], torch.nn.Module] = {}
    for spec in args.shapes:
        dim, hidden, batch, horizon = spec
        if (dim, hidden) not in models:
            models[dim, hidden] = MLPDynamics(dim, args.action_dim, hidden=hidden, depth=args.mlp_depth).to(device)
        shapes.append(Shape(batch, horizon, models[dim, hidden], (dim,), 1, f"D={dim} H={hidden}"))
    return shapes


def model_flops(shape: Shape, action_dim: int) -> float:
    """FLOPs of one forward + action-input backward (activation gradients, no weight gradients) over
    the B*T rows. Elementwise work (activations, norms, softmax) is not counted."""
    n, model = shape.rows, shape.model
    if isinstance(model, MLPDynamics):
        linears = [m for m in model.net if isinstance(m, torch.nn.Linear)]
        forward = sum(2 * n * m.in_features * m.out_features for m in linears)
        return 2.0 * forward  # the input-gradient backward: one matmul of the same size per layer
    h, p, e = model.history, model.num_patches, model.embed_dim
    tokens = h * p
    width = model.token_in.out_features
    encoder = 0.0
    attention = 0.0
    for layer in model.encoder.layers:
        ff = layer.linear1.out_features
        encoder += 2 * tokens * (4 * width * width + 2 * width * ff)  # qkv + out projection, the MLP
        attention += 2 * 2 * tokens * tokens * width  # QK^T and PV over all h*P tokens (the mask is applied, not skipped)
    token_in = 2 * tokens * e * width
    token_out = 2 * p * width * e
    action_in = 2 * (action_dim * width + width * width)
    forward = encoder + attention + token_in + token_out + action_in
    # backward to the action input: every encoder matmul once more (input gradients), attention twice
    # (dQ, dK, dV, dP), token_out and action_in once; token_in has no gradient (detached states)
    backward = encoder + 2 * attention + token_out + action_in
    return float(n * (forward + backward))


def grasp_bytes(shape: Shape, action_dim: int) -> float:
    """Minimum bytes of the GRASP update of one iteration (float32 states, actions, moments)."""
    b, t, d, a = shape.batch, shape.horizon, shape.state_numel, action_dim
    inner = b * max(t - 1, 0) * d
    elements = (
        b * (t + 1) * d  # states read (s_0 .. s_T, incl. the goal row)
        + inner  # virtual states written
        + 4 * inner  # state moments read + written
        + b * (shape.history - 1) * d  # older observed frames (history windows)
        + 2 * b * t * a  # actions read + written
        + 4 * b * t * a  # action moments read + written
        + b  # energy
    )
    weights = sum(p.numel() * p.element_size() for p in shape.model.parameters())
    return 4.0 * elements + weights


# ----------------------------------------------------------------------------------------------
# providers
# ----------------------------------------------------------------------------------------------


@dataclass
class Row:
    shape: Shape
    index: int
    times: dict[str, Optional[float]] = field(default_factory=dict)  # provider -> iteration ms (None: n/a)
    reasons: dict[str, str] = field(default_factory=dict)
    sync_ms: float = float("nan")
    model_ms: Optional[float] = None
    compile_note: str = "not compiled"
    flops: float = 0.0
    nbytes: float = 0.0


def start_inputs(shape: Shape, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(1)
    frames = (shape.history,) if shape.history > 1 else ()
    s0 = torch.randn(shape.batch, *frames, *shape.state_shape, generator=g).to(device)
    goal = torch.randn(shape.batch, *shape.state_shape, generator=g).to(device)
    return s0, goal


def planner_iteration_fn(planner: GraspPlanner, shape: Shape, device: torch.device, per_timestep: bool = False
                         ) -> tuple[Callable[[], object], object]:
    """A zero-argument callable running one iteration (the plan state rewound so it never runs out)."""
    state = planner.start(*start_inputs(shape, device))

    def fn():
        planner.iteration(state, per_timestep=per_timestep)
        state.iteration = 0

    return fn, state


def compiled_iteration_fn(config: GraspConfig, shape: Shape, action_dim: int, device: torch.device,
                          compile_backend: str, warmup: int = 3) -> tuple[Callable[[], object], object]:
    """(c): torch.compile of one functional iteration made of the reference functions; returns the
    callable and the plan state it updates (a reference planner's start state)."""
    model, horizon, history = shape.model, config.horizon, shape.history
    state = GraspPlanner(model, action_dim, config.replace(backend="reference"), state_shape=shape.state_shape).start(
        *start_inputs(shape, device))
    lead = None if state.frames is None else state.frames[:, : history - 1].clone()
    step = 1  # a host int: a compile-time constant (dynamic=False); the work is the same for every step
    precision = (torch.autocast(device.type, dtype=DTYPES[config.model_dtype]) if config.model_dtype
                 else contextlib.nullcontext())

    def iteration(states, actions, m_s, v_s, m_a, v_a, noise, lead, low, high):
        state_input = states[:, :horizon].detach()
        if lead is not None:
            state_input = torch.cat([lead, state_input], dim=1)
        action_leaf = actions.detach().requires_grad_(True)
        state_leaf = states.detach().requires_grad_(True)
        with torch.enable_grad():
            with precision:
                pred = lifted_predictions_ref(model, state_input, action_leaf, shape.state_shape, True, False, history)
            energy = lifted_energy_ref(pred, state_leaf, config.goal_weight)
            action_grad, state_grad = torch.autograd.grad(energy.sum(), (action_leaf, state_leaf))
        with torch.no_grad():
            state_step_ref(states, state_grad, m_s, v_s, step, config.lr_states, config.beta1, config.beta2,
                           config.adam_eps, config.state_noise, noise=noise)
            action_step_ref(actions, action_grad, m_a, v_a, step, config.lr_actions, config.beta1, config.beta2,
                            config.adam_eps, low, high)
        return energy.detach()

    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(iteration, backend=compile_backend, dynamic=False)
    states = state.states
    noise = torch.empty(states.shape[0], states.shape[1] - 2, states.shape[2], device=device, dtype=states.dtype)

    def fn():
        noise.normal_()  # the explicit noise tensor, drawn per iteration (timed)
        return compiled(states, state.actions, *state.state_moments, *state.action_moments, noise, lead,
                        state.low, state.high)

    for _ in range(warmup):  # compilation and any recompilation (grad mode, first-call guards): not timed
        fn()
    counters = torch._dynamo.utils.counters
    fn.compile_note = (f"{counters['stats'].get('unique_graphs', 0)} graph(s), "
                       f"{sum(counters['graph_break'].values())} graph break(s)")
    return fn, state


def model_alone_fn(shape: Shape, action_dim: int, model_dtype: Optional[str], device: torch.device
                   ) -> Callable[[], object]:
    """The world model's forward + VJP to the actions over B*T contiguous rows (nothing else)."""
    g = torch.Generator(device="cpu").manual_seed(2)
    frames = (shape.history,) if shape.history > 1 else ()
    states = torch.randn(shape.rows, *frames, *shape.state_shape, generator=g).to(device)
    actions = torch.randn(shape.rows, action_dim, generator=g).to(device).requires_grad_(True)
    grad_out = torch.randn(shape.rows, *shape.state_shape, generator=g).to(device)
    precision = (torch.autocast(device.type, dtype=DTYPES[model_dtype]) if model_dtype else contextlib.nullcontext())

    def fn():
        with precision:
            out = shape.model(states, actions)
        return torch.autograd.grad(out, actions, grad_out.to(out.dtype))

    return fn


def measure_row(row: Row, args: argparse.Namespace, device: torch.device) -> None:
    shape = row.shape
    base = GraspConfig(horizon=shape.horizon, iters=args.iters, sync_every=args.sync_every, sync_steps=args.sync_steps,
                       history=shape.history, model_dtype=None if args.model_dtype == "float32" else args.model_dtype)
    timing = dict(quick=args.quick, min_run_time=args.min_run_time)
    cuda_device = device.type == "cuda"

    def planner(**changes) -> GraspPlanner:
        return GraspPlanner(shape.model, args.action_dim, base.replace(**changes), state_shape=shape.state_shape)

    def attempt(key: str, build: Callable[[], Callable[[], object]], calls_per_iteration: float = 1.0) -> None:
        if key not in args.providers:
            row.times[key], row.reasons[key] = None, "not selected"
            return
        try:
            fn = build()
            row.times[key] = time_ms(fn, device, **timing) * calls_per_iteration
        except Unavailable as exc:
            row.times[key], row.reasons[key] = None, str(exc)
        except Exception as exc:  # keep the table going; say why in place
            row.times[key], row.reasons[key] = None, f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            print(f"warning: {PROVIDERS[key]} {shape.text} B={shape.batch} T={shape.horizon} failed: {exc!r}",
                  file=sys.stderr)
        if cuda_device:
            torch.cuda.empty_cache()

    def kernel_backend(name: str) -> Callable[[], Callable[[], object]]:
        def build():
            reason = backend_unavailable_reason(name, device)
            if reason is not None:
                raise Unavailable(reason)
            return planner_iteration_fn(planner(backend=name), shape, device)[0]
        return build

    def compiled():
        if args.compile_backend == "none":
            raise Unavailable("--compile-backend none")
        fn = compiled_iteration_fn(base, shape, args.action_dim, device, args.compile_backend)[0]
        row.compile_note = fn.compile_note
        return fn

    def fused():
        if not isinstance(shape.model, MLPDynamics):
            raise Unavailable("MLP world models only")
        reason = backend_unavailable_reason("triton", device)
        if reason is not None:
            raise Unavailable(reason)
        try:
            fused_planner = planner(backend="triton", fused_mlp=True)
        except ValueError as exc:
            raise Unavailable(str(exc)) from None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn, state = planner_iteration_fn(fused_planner, shape, device)
        if state.fused_mlp is None:
            why = "; ".join(str(w.message) for w in caught) or "the planner ran the normal iteration"
            raise Unavailable(f"fused kernel not used: {why}")
        return fn

    def graphed():
        if not cuda_device:
            raise Unavailable("CUDA graphs need a CUDA device")
        # the faster of (d) and (e) as measured in this row; by availability when neither was measured
        measured = [(row.times[k], b) for k, b in (("d", "triton"), ("e", "cuda")) if row.times.get(k) is not None]
        backend = min(measured)[1] if measured else next(
            (b for b in ("cuda", "triton") if backend_unavailable_reason(b, device) is None), None)
        if backend is None:
            raise Unavailable("no kernel backend")
        graph_planner = planner(backend=backend, cuda_graph=True, sync_every=0)
        inputs = start_inputs(shape, device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            graph_planner.plan(*inputs)  # captures
        if graph_planner.captured_plans == 0:
            raise Unavailable("capture failed: " + ("; ".join(str(w.message) for w in caught) or "no graph"))
        return lambda: graph_planner.plan(*inputs)

    attempt("a", lambda: planner_iteration_fn(planner(backend="reference"), shape, device, per_timestep=True)[0])
    attempt("b", lambda: planner_iteration_fn(planner(backend="reference"), shape, device)[0])
    attempt("c", compiled)
    attempt("d", kernel_backend("triton"))
    attempt("e", kernel_backend("cuda"))
    attempt("f", graphed, calls_per_iteration=1.0 / max(1, args.iters))
    attempt("g", fused)

    # one sync phase, the same code for every provider (reference planner, full sequential rollout)
    if args.iters and args.sync_every and args.sync_steps:
        sync_planner = planner(backend="reference")
        state = sync_planner.start(*start_inputs(shape, device))
        sync_planner.iteration(state)
        row.sync_ms = time_ms(lambda: sync_planner.sync(state), device, **timing)
    else:
        row.sync_ms = 0.0
    row.model_ms = time_ms(model_alone_fn(shape, args.action_dim, base.model_dtype, device), device, **timing)
    row.flops = model_flops(shape, args.action_dim)
    row.nbytes = grasp_bytes(shape, args.action_dim)


class Unavailable(Exception):
    """A provider cannot run here (the message is the reason)."""


# ----------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------


def fmt(x: Optional[float], digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def provider_text(key: str, args: argparse.Namespace, rows: list[Row]) -> str:
    """What provider ``key`` runs, for the table's header."""
    if key == "c":
        return (f"(c) torch.compile(backend={args.compile_backend!r}, dynamic=False) of a functional reference "
                "iteration (compile and warm-up not timed; trace_autograd_ops on so that autograd.grad is traced; "
                "compiled per shape: " + "; ".join(f"#{r.index} {r.compile_note}" for r in rows) + ")")
    return {
        "a": "(a) per-timestep loop, reference (T model calls over B rows, as public GRASP ports run it)",
        "b": "(b) batched reference eager (one model call over B*T rows)",
        "d": "(d) triton ops",
        "e": "(e) cuda ops",
        "f": "(f) CUDA graph",
        "g": "(g) fused MLP iteration kernel (GraspConfig(fused_mlp=True))",
    }[key]


def render(rows: list[Row], args: argparse.Namespace, device: torch.device, tflops: float, matmul_n: int,
           copy_gbs: float, model_text: str) -> str:
    syncs = args.iters // args.sync_every if args.sync_every and args.sync_steps else 0
    cuda_device = device.type == "cuda"
    tf32 = torch.backends.cuda.matmul.allow_tf32 if cuda_device else False
    interpreted = not cuda_device and bool({"d", "g"} & set(args.providers))
    selected = {key: label for key, label in PROVIDERS.items() if key in args.providers}
    lines = [
        f"# GRASP planner speed — {device_name(device, interpreter_note=interpreted)}",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- {versions()}",
        f"- world model: {model_text}",
        f"- dtype: states, actions, Adam moments and energy float32; world model {args.model_dtype}"
        + (f" (float32 matmul TF32 {'on' if tf32 else 'off'})" if cuda_device and args.model_dtype == "float32" else ""),
        f"- shapes: {'; '.join(f'#{r.index} {r.shape.text} B={r.shape.batch} T={r.shape.horizon}' for r in rows)}",
        "- timing: " + ("triton.testing.do_bench median (CUDA events, warm-up)" if cuda_device else
                        "torch.utils.benchmark median (CPU run: not a GPU number"
                        + ("; the Triton providers run in the interpreter: not a speed)" if interpreted else ")")),
        f"- per plan = iters x iteration + (iters / sync_every) x sync = {args.iters} x iteration + {syncs} x sync "
        f"(sync_steps = {args.sync_steps}; one sync phase measured per shape with the reference planner, the same "
        "code for every provider)",
        "- providers: " + "; ".join(provider_text(key, args, rows) for key in selected),
        f"- measured in this run: matmul {tflops:.4g} TFLOP/s ({matmul_n}x{matmul_n} @ {matmul_n}x{matmul_n}, "
        f"{args.model_dtype}); copy bandwidth {copy_gbs:.4g} GB/s (dst.copy_(src), read + write)",
        "- floor = max(FLOPs of one forward + action-input backward over B*T rows / matmul rate, minimum GRASP bytes "
        "per iteration (states, moments, actions, energy, weights once; no pred or activations) / copy bandwidth); "
        "% floor = floor / time",
        f"- best = fastest of {', '.join(f'({k})' for k in ENGINE if k in selected) or 'none selected'}; targets "
        "(issue 7): best >= 20x faster than (a) at T >= 64, >= 3x faster than (c)",
        "- outside WM = (iteration - world model forward + VJP alone over the same B*T rows) / iteration, for the "
        "providers that call the eager batched model ("
        + (', '.join(f'({k})' for k in ("b", "d", "e") if k in selected) or 'none selected') + ")",
        "",
        "## Shapes and floors",
        "",
        "| # | shape | B | T | B*T | GFLOP/iter | FLOP floor ms | MB/iter | byte floor ms | floor ms | bound "
        "| sync ms | model fwd+VJP ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    floors = {}
    for r in rows:
        flop_ms = r.flops / (tflops * 1e12) * 1e3
        byte_ms = r.nbytes / (copy_gbs * 1e9) * 1e3
        floors[r.index] = max(flop_ms, byte_ms)
        lines.append(
            f"| {r.index} | {r.shape.text} | {r.shape.batch} | {r.shape.horizon} | {r.shape.rows} | {fmt(r.flops / 1e9)} "
            f"| {fmt(flop_ms)} | {fmt(r.nbytes / 1e6)} | {fmt(byte_ms)} | {fmt(floors[r.index])} "
            f"| {'FLOPs' if flop_ms >= byte_ms else 'bytes'} | {fmt(r.sync_ms)} | {fmt(r.model_ms)} |"
        )
    lines += [
        "",
        "## Time per iteration and per plan",
        "",
        "| # | B | T | provider | iter ms | plan ms | % floor | (a)/this | outside WM % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        loop = r.times.get("a")
        for key, label in selected.items():
            ms = r.times.get(key)
            if ms is None:
                lines.append(f"| {r.index} | {r.shape.batch} | {r.shape.horizon} | {label} "
                             f"| n/a ({r.reasons.get(key, 'not run')}) | n/a | n/a | n/a | n/a |")
                continue
            plan = args.iters * ms + syncs * r.sync_ms
            outside = (100 * (ms - r.model_ms) / ms) if key in ("b", "d", "e") and r.model_ms is not None else None
            lines.append(
                f"| {r.index} | {r.shape.batch} | {r.shape.horizon} | {label} | {fmt(ms)} | {fmt(plan)} "
                f"| {fmt(100 * floors[r.index] / ms, 3)} | {fmt(loop / ms if loop else None, 4)} | {fmt(outside, 3)} |"
            )
    lines += [
        "",
        "## Targets",
        "",
        "| # | B | T | best | best ms | (a)/best | 20x vs (a) (T >= 64) | (c)/best | 3x vs (c) | best % floor |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        measured = {k: r.times[k] for k in ENGINE if r.times.get(k) is not None}
        if not measured:
            lines.append(f"| {r.index} | {r.shape.batch} | {r.shape.horizon} | n/a | n/a | n/a | n/a | n/a | n/a | n/a |")
            continue
        key = min(measured, key=measured.get)
        best = measured[key]
        loop, comp = r.times.get("a"), r.times.get("c")
        vs_loop = loop / best if loop else None
        vs_comp = comp / best if comp else None

        def verdict(ratio, goal, applies=True):
            if not applies:
                return "n/a (T < 64)"
            if ratio is None:
                return "n/a"
            return "met" if ratio >= goal else "not met"

        lines.append(
            f"| {r.index} | {r.shape.batch} | {r.shape.horizon} | {PROVIDERS[key]} | {fmt(best)} | {fmt(vs_loop)} "
            f"| {verdict(vs_loop, 20, r.shape.horizon >= 64)} | {fmt(vs_comp)} | {verdict(vs_comp, 3)} "
            f"| {fmt(100 * floors[r.index] / best, 3)} |"
        )
    if not cuda_device:
        lines += ["", "CPU run: the targets are GPU targets; these verdicts say nothing about them."]
    return "\n".join(lines)


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r}: comma-separated ints expected") from None
    if len(values) not in (2, 4) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"shape {text!r}: D,H,B,T (mlp) or B,T (transformer), all >= 1")
    return values


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="mlp", choices=("mlp", "transformer"),
                        help="mlp: MLPDynamics rows D,H,B,T; transformer: PatchTransformerDynamics rows B,T "
                             "(its sizes default to DINO-WM-like 196 x 384 on CUDA, tiny on the CPU)")
    parser.add_argument("--shapes", type=parse_shape, nargs="+",
                        help="rows: D,H,B,T for mlp, B,T for transformer (default: the GPU grid, or tiny with --quick)")
    parser.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=list(PROVIDERS),
                        help="subset of the providers a..g (default all)")
    parser.add_argument("--model-dtype", default="float32", choices=tuple(DTYPES),
                        help="world-model dtype (GraspConfig.model_dtype; states and moments stay float32)")
    parser.add_argument("--action-dim", type=int, default=4)
    parser.add_argument("--mlp-depth", type=int, default=2, help="mlp: hidden layers (1-3 for the fused kernel)")
    parser.add_argument("--patches", type=int, help="transformer: patch tokens P")
    parser.add_argument("--embed", type=int, help="transformer: token width E")
    parser.add_argument("--history", type=int, help="transformer: frames per input h")
    parser.add_argument("--width", type=int, help="transformer: model width")
    parser.add_argument("--depth", type=int, help="transformer: encoder layers")
    parser.add_argument("--heads", type=int, help="transformer: attention heads")
    parser.add_argument("--mlp-ratio", type=float, default=2.0, help="transformer: feed-forward width / width")
    parser.add_argument("--iters", type=int, default=300, help="iterations per plan (GraspConfig.iters)")
    parser.add_argument("--sync-every", type=int, default=50)
    parser.add_argument("--sync-steps", type=int, default=10)
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend of (c): default inductor (on the CPU when a C++ compiler is found and "
                             "not --quick, else aot_eager); none skips (c)")
    parser.add_argument("--min-run-time", type=float, default=None,
                        help="CPU: seconds of torch.utils.benchmark per cell (default 0.2, 0.02 with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and short timing (CPU smoke run)")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    size = "quick" if args.quick else ("gpu" if device.type == "cuda" else "cpu")
    sizes = {"quick": QUICK_TRANSFORMER, "gpu": GPU_TRANSFORMER, "cpu": CPU_TRANSFORMER}[size]
    for name, value in zip(("patches", "embed", "history", "width", "depth", "heads"), sizes):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.shapes is None:
        if args.model == "transformer":
            args.shapes = {"quick": QUICK_TRANSFORMER_SHAPES, "gpu": GPU_TRANSFORMER_SHAPES, "cpu": CPU_TRANSFORMER_SHAPES}[size]
        else:
            args.shapes = {"quick": QUICK_MLP_SHAPES, "gpu": GPU_MLP_SHAPES, "cpu": CPU_MLP_SHAPES}[size]
    want = 2 if args.model == "transformer" else 4
    if any(len(s) != want for s in args.shapes):
        parser.error(f"--model {args.model} takes {'B,T' if want == 2 else 'D,H,B,T'} shapes")
    if args.min_run_time is None:
        args.min_run_time = 0.02 if args.quick else 0.2
    if args.compile_backend is None:
        # inductor compiles C++ on the CPU: used there when a compiler is found, except in the --quick smoke run
        cpu_inductor = not args.quick and shutil.which(os.environ.get("CXX", "g++")) is not None
        args.compile_backend = "inductor" if device.type == "cuda" or cpu_inductor else "aot_eager"
    if hasattr(torch._dynamo.config, "trace_autograd_ops"):  # (c): trace torch.autograd.grad into the graph
        torch._dynamo.config.trace_autograd_ops = True

    shapes = make_shapes(args, device)
    if args.model == "transformer":
        m = shapes[0].model
        model_text = (f"PatchTransformerDynamics(patches={args.patches}, embed={args.embed}, action_dim={args.action_dim}, "
                      f"history={args.history}, width={args.width}, depth={args.depth}, heads={args.heads}, "
                      f"mlp_ratio={args.mlp_ratio}), {sum(p.numel() for p in m.parameters())} parameters, random weights")
    else:
        model_text = (f"MLPDynamics(state_dim=D, action_dim={args.action_dim}, hidden=H, depth={args.mlp_depth}, SiLU), "
                      "random weights")
    tflops, matmul_n = matmul_tflops(device, DTYPES[args.model_dtype], args.quick)
    copy_gbs = copy_bandwidth_gbs(device, args.quick)
    rows = []
    for index, shape in enumerate(shapes, 1):
        row = Row(shape, index)
        measure_row(row, args, device)
        rows.append(row)
        print(f"# measured #{index} {shape.text} B={shape.batch} T={shape.horizon}", file=sys.stderr, flush=True)
    table = render(rows, args, device, tflops, matmul_n, copy_gbs, model_text)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
