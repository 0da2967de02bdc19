"""What the planner-speed table measures: the world models of its rows, the providers, and the timing
of one row.

Providers, measured in this order (a row per shape and provider; "n/a (reason)" where one cannot run here):
  loop       the per-timestep loop as public GRASP ports run it: T world-model calls over B rows
             (planner.iteration(state, per_timestep=True), reference backend)
  eager      the batched reference, eager: ONE world-model call over B*T rows (backend="reference")
  compiled   torch.compile(dynamic=False) of the planner's lifted iteration (:func:`functional_iteration`);
             compilation and warm-up are not timed
  triton     the Triton ops (backend="triton")
  cuda       the CUDA ops (backend="cuda")
  graph      GraspConfig(cuda_graph=True) on the faster of triton and cuda as measured in the same row: the
             plan captured once as CUDA graphs and replayed; per iteration = one replayed plan
             without sync phases (its eager initialisation and final rollout included) / iters
  fused_mlp  the fused MLP iteration kernel (GraspConfig(fused_mlp=True), MLPDynamics only)

Besides the providers, each row measures one sync phase (sync_steps Adam steps through the sequential
rollout, the same code for every provider, so it is timed once with the reference planner) and the world
model's forward + VJP alone over the same B*T rows.
"""

from __future__ import annotations

import _bench_env  # noqa: F401  (first: TRITON_INTERPRET before Triton is imported)

import argparse
import contextlib
import math
import sys
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch._dynamo

from _timing import time_ms
from grasp_kernels import GraspConfig, GraspPlanner
from grasp_kernels.backends import backend_unavailable_reason
from grasp_kernels.compiled import iteration_function, step_tensor
from grasp_kernels.models import MLPDynamics, PatchTransformerDynamics

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
Timed = Callable[[], object]


# ----------------------------------------------------------------------------------------------
# the rows' world models and inputs
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
    """One Shape per ``args.shapes`` entry; MLP rows of the same (D, H) share one model."""
    torch.manual_seed(0)
    if args.model == "transformer":
        model = PatchTransformerDynamics(
            args.patches, args.embed, args.action_dim, history=args.history, width=args.width, depth=args.depth,
            heads=args.heads, mlp_ratio=args.mlp_ratio,
        ).to(device)
        return [Shape(batch, horizon, model, (args.patches, args.embed), args.history, f"P={args.patches} E={args.embed}")
                for batch, horizon in args.shapes]
    shapes = []
    models: dict[tuple[int, int], torch.nn.Module] = {}
    for dim, hidden, batch, horizon in args.shapes:
        if (dim, hidden) not in models:
            models[dim, hidden] = MLPDynamics(dim, args.action_dim, hidden=hidden, depth=args.mlp_depth).to(device)
        shapes.append(Shape(batch, horizon, models[dim, hidden], (dim,), 1, f"D={dim} H={hidden}"))
    return shapes


def describe_model(args: argparse.Namespace, shapes: list[Shape]) -> str:
    """The header's world-model line."""
    if args.model == "transformer":
        parameters = sum(p.numel() for p in shapes[0].model.parameters())
        return (f"PatchTransformerDynamics(patches={args.patches}, embed={args.embed}, action_dim={args.action_dim}, "
                f"history={args.history}, width={args.width}, depth={args.depth}, heads={args.heads}, "
                f"mlp_ratio={args.mlp_ratio}), {parameters} parameters, random weights")
    return f"MLPDynamics(state_dim=D, action_dim={args.action_dim}, hidden=H, depth={args.mlp_depth}, SiLU), random weights"


def start_inputs(shape: Shape, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(1)
    frames = (shape.history,) if shape.history > 1 else ()
    s0 = torch.randn(shape.batch, *frames, *shape.state_shape, generator=g).to(device)
    goal = torch.randn(shape.batch, *shape.state_shape, generator=g).to(device)
    return s0, goal


def precision(device: torch.device, model_dtype: Optional[str]) -> contextlib.AbstractContextManager:
    """The world model's autocast (none for float32), as GraspConfig.model_dtype runs it."""
    return torch.autocast(device.type, dtype=DTYPES[model_dtype]) if model_dtype else contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------
# zero-argument callables: one iteration, the world model alone
# ----------------------------------------------------------------------------------------------


def planner_iteration_fn(planner: GraspPlanner, shape: Shape, device: torch.device, per_timestep: bool = False
                         ) -> tuple[Timed, object]:
    """A zero-argument callable running one iteration (the plan state rewound so it never runs out)."""
    state = planner.start(*start_inputs(shape, device))

    def fn():
        planner.iteration(state, per_timestep=per_timestep)
        state.iteration = 0

    return fn, state


def functional_iteration(model: torch.nn.Module, config: GraspConfig, shape: Shape, device: torch.device
                         ) -> Callable[..., torch.Tensor]:
    """One GRASP iteration as a function of tensors, for torch.compile: the planner's own compiled iteration
    (:func:`grasp_kernels.compiled.iteration_function`, i.e. :func:`grasp_kernels.lifted.lifted_iteration` on
    the reference backend) with the Adam step and sigma as 0-d tensors and an explicit noise tensor."""
    iteration = iteration_function(model, config)
    step = step_tensor(1, device)
    sigma = torch.full((), config.state_noise, device=device)

    def run(states, actions, m_s, v_s, m_a, v_a, noise, frames, low, high):
        return iteration(states, actions, m_s, v_s, m_a, v_a, step, sigma, noise, frames, low, high, None,
                         shape.state_shape)

    return run


def model_alone_fn(shape: Shape, action_dim: int, model_dtype: Optional[str], device: torch.device) -> Timed:
    """The world model's forward + VJP to the actions over B*T contiguous rows (nothing else)."""
    g = torch.Generator(device="cpu").manual_seed(2)
    frames = (shape.history,) if shape.history > 1 else ()
    states = torch.randn(shape.rows, *frames, *shape.state_shape, generator=g).to(device)
    actions = torch.randn(shape.rows, action_dim, generator=g).to(device).requires_grad_(True)
    grad_out = torch.randn(shape.rows, *shape.state_shape, generator=g).to(device)
    autocast = precision(device, model_dtype)

    def fn():
        with autocast:
            out = shape.model(states, actions)
        return torch.autograd.grad(out, actions, grad_out.to(out.dtype))

    return fn


# ----------------------------------------------------------------------------------------------
# providers
# ----------------------------------------------------------------------------------------------


class Unavailable(Exception):
    """A provider cannot run here (the message is the reason)."""


@dataclass
class Row:
    """One shape's measurements."""

    shape: Shape
    index: int
    times: dict[str, Optional[float]] = field(default_factory=dict)  # provider -> iteration ms (None: n/a)
    reasons: dict[str, str] = field(default_factory=dict)
    sync_ms: float = float("nan")
    model_ms: Optional[float] = None
    compile_note: str = "not compiled"


@dataclass
class RowRun:
    """What a provider builds its callable from: the row (earlier providers' times in it), the
    command line, the device and the row's planner configuration."""

    row: Row
    args: argparse.Namespace
    device: torch.device

    def __post_init__(self):
        shape, args = self.row.shape, self.args
        self.shape = shape
        self.base = GraspConfig(horizon=shape.horizon, iters=args.iters, sync_every=args.sync_every,
                                sync_steps=args.sync_steps, history=shape.history,
                                model_dtype=None if args.model_dtype == "float32" else args.model_dtype)

    def planner(self, **changes) -> GraspPlanner:
        return GraspPlanner(self.shape.model, self.args.action_dim, self.base.replace(**changes),
                            state_shape=self.shape.state_shape)

    def iteration(self, **changes) -> Timed:
        return planner_iteration_fn(self.planner(**changes), self.shape, self.device)[0]


def require_backend(name: str, device: torch.device) -> None:
    reason = backend_unavailable_reason(name, device)
    if reason is not None:
        raise Unavailable(reason)


def build_loop(run: RowRun) -> Timed:
    return planner_iteration_fn(run.planner(backend="reference"), run.shape, run.device, per_timestep=True)[0]


def build_eager(run: RowRun) -> Timed:
    return run.iteration(backend="reference")


def build_compiled(run: RowRun, warmup: int = 3) -> Timed:
    """torch.compile of :func:`functional_iteration`, updating a reference planner's start state; the
    row's compile note says how many graphs and graph breaks it compiled to."""
    backend = run.args.compile_backend
    if backend == "none":
        raise Unavailable("--compile-backend none")
    shape, device = run.shape, run.device
    state = run.planner(backend="reference").start(*start_inputs(shape, device))
    if hasattr(torch._dynamo.config, "trace_autograd_ops"):  # trace torch.autograd.grad into the graph
        torch._dynamo.config.trace_autograd_ops = True
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(functional_iteration(shape.model, run.base, shape, device), backend=backend, dynamic=False)
    states = state.states
    noise = torch.empty(states.shape[0], states.shape[1] - 2, states.shape[2], device=device, dtype=states.dtype)

    def fn():
        noise.normal_()  # the explicit noise tensor, drawn per iteration (timed)
        return compiled(states, state.actions, *state.state_moments, *state.action_moments, noise, state.frames,
                        state.low, state.high)

    for _ in range(warmup):  # compilation and any recompilation (grad mode, first-call guards): not timed
        fn()
    counters = torch._dynamo.utils.counters
    run.row.compile_note = (f"{counters['stats'].get('unique_graphs', 0)} graph(s), "
                            f"{sum(counters['graph_break'].values())} graph break(s)")
    return fn


def kernel_backend(name: str) -> Callable[[RowRun], Timed]:
    def build(run: RowRun) -> Timed:
        require_backend(name, run.device)
        return run.iteration(backend=name)

    return build


def build_graph(run: RowRun) -> Timed:
    """One replayed plan (the caller divides by iters)."""
    if run.device.type != "cuda":
        raise Unavailable("CUDA graphs need a CUDA device")
    # the faster of triton and cuda as measured in this row; by availability when neither was measured
    times = run.row.times
    measured = [(times[b], b) for b in ("triton", "cuda") if times.get(b) is not None]
    backend = min(measured)[1] if measured else next(
        (b for b in ("cuda", "triton") if backend_unavailable_reason(b, run.device) is None), None)
    if backend is None:
        raise Unavailable("no kernel backend")
    graph_planner = run.planner(backend=backend, cuda_graph=True, sync_every=0)
    inputs = start_inputs(run.shape, run.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph_planner.plan(*inputs)  # captures
    if graph_planner.captured_plans == 0:
        raise Unavailable("capture failed: " + ("; ".join(str(w.message) for w in caught) or "no graph"))
    return lambda: graph_planner.plan(*inputs)


def build_fused_mlp(run: RowRun) -> Timed:
    if not isinstance(run.shape.model, MLPDynamics):
        raise Unavailable("MLP world models only")
    require_backend("triton", run.device)
    try:
        fused_planner = run.planner(backend="triton", fused_mlp=True)
    except ValueError as exc:
        raise Unavailable(str(exc)) from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn, state = planner_iteration_fn(fused_planner, run.shape, run.device)
    if state.fused_mlp is None:
        why = "; ".join(str(w.message) for w in caught) or "the planner ran the normal iteration"
        raise Unavailable(f"fused kernel not used: {why}")
    return fn


@dataclass(frozen=True)
class Provider:
    build: Callable[[RowRun], Timed]
    description: str  # the table header's description (compiled's is written by the renderer: it has notes)
    per_plan: bool = False  # the callable runs a whole plan: its time is divided by iters


# in measuring order: graph runs on the faster of triton and cuda, so those come first
PROVIDERS = {
    "loop": Provider(build_loop, "per-timestep loop, reference (T model calls over B rows, as public GRASP ports run it)"),
    "eager": Provider(build_eager, "batched reference eager (one model call over B*T rows)"),
    "compiled": Provider(build_compiled, "torch.compile of the planner's lifted iteration"),
    "triton": Provider(kernel_backend("triton"), "triton ops"),
    "cuda": Provider(kernel_backend("cuda"), "cuda ops"),
    "graph": Provider(build_graph, "CUDA graph (one plan captured and replayed, on the faster of triton and cuda; "
                                   "per iteration = plan / iters)", per_plan=True),
    "fused_mlp": Provider(build_fused_mlp, "fused MLP iteration kernel (GraspConfig(fused_mlp=True))"),
}
ENGINE = ("eager", "triton", "cuda", "graph", "fused_mlp")  # "best" = the fastest of these (the engine's own paths)
EAGER_MODEL = ("eager", "triton", "cuda")  # the providers that call the eager batched world model
INTERPRETED = ("triton", "fused_mlp")  # Triton providers: the interpreter without CUDA


def measure_row(row: Row, args: argparse.Namespace, device: torch.device) -> None:
    """Times every selected provider's iteration, one sync phase and the world model alone."""
    run = RowRun(row, args, device)
    shape = row.shape
    timing = dict(quick=args.quick, min_run_time=args.min_run_time)
    for key, provider in PROVIDERS.items():
        if key not in args.providers:
            row.times[key], row.reasons[key] = None, "not selected"
            continue
        try:
            fn = provider.build(run)
            row.times[key] = time_ms(fn, device, **timing) / (max(1, args.iters) if provider.per_plan else 1)
        except Unavailable as exc:
            row.times[key], row.reasons[key] = None, str(exc)
        except Exception as exc:  # keep the table going; say why in place
            row.times[key], row.reasons[key] = None, f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            print(f"warning: {key} {shape.text} B={shape.batch} T={shape.horizon} failed: {exc!r}", file=sys.stderr)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if args.iters and args.sync_every and args.sync_steps:
        sync_planner = run.planner(backend="reference")
        state = sync_planner.start(*start_inputs(shape, device))
        sync_planner.iteration(state)
        row.sync_ms = time_ms(lambda: sync_planner.sync(state), device, **timing)
    else:
        row.sync_ms = 0.0
    row.model_ms = time_ms(model_alone_fn(shape, args.action_dim, run.base.model_dtype, device), device, **timing)
