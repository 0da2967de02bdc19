"""``GraspConfig(compile=True)``: ``torch.compile`` of the planner's two hot functions.

* one lifted iteration: :func:`iteration_function`, which is :func:`grasp_kernels.lifted.lifted_iteration`
  on the reference math (the planner's iteration and the benchmark's ``compiled`` provider call it);
* one sync step: :func:`grasp_kernels.sync.sync_step` itself (shooting loss through the unrolled
  rollout, its gradient w.r.t. the actions, Adam + clamp).

The per-iteration values enter as tensors: the Adam step as a 0-d float64 tensor, the noise sigma as a
0-d tensor and the Langevin noise as a tensor drawn outside (from the chains' generators, so the compiled
plan draws the same noise as the eager one). Nothing the graph depends on changes between iterations,
so one graph per input shape serves the whole plan (``dynamic=False``: a new shape compiles anew).

If compiling or a compiled call fails (no C++ compiler for inductor, a world model dynamo cannot
trace), :class:`CompiledFunction` warns once, naming what failed, and runs the eager function from
then on.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch

from .backends import warn_once
from .config import GraspConfig
from .lifted import WorldModel, lifted_iteration
from .plan_state import PlanState

# The torch.compile backend of every CompiledFunction built after a change: "inductor" generates fused
# kernels (the fast one); "aot_eager" compiles in a fraction of the time and needs no C++ compiler.
COMPILE_BACKEND: str = "inductor"

# dtype of the Adam step tensor: its bias corrections 1 - beta**step need more than float32 at step 1
STEP_DTYPE = torch.float64

__all__ = ["COMPILE_BACKEND", "CompiledFunction", "Fallback", "compiled_iteration", "iteration_function", "step_tensor"]


def step_tensor(step: int, device: torch.device) -> torch.Tensor:
    """The 1-based Adam step as the 0-d tensor the compiled functions take (a fill, no host copy)."""
    return torch.full((), step, dtype=STEP_DTYPE, device=device)


def iteration_function(world_model: WorldModel, config: GraspConfig) -> Callable[..., torch.Tensor]:
    """One lifted GRASP iteration on the reference math as a function of tensors only, for torch.compile.

    The returned ``iteration(states, actions, m_s, v_s, m_a, v_a, step, noise_std, noise, frames, low,
    high, sqrt_weights, state_shape, max_transitions=None)`` updates its tensors in place like
    :func:`lifted_iteration` and returns the energy ``[B]``; ``step`` and ``noise_std`` are 0-d tensors and
    ``noise [B, T-1, D]`` is explicit, so every iteration of a plan runs the same graph (``max_transitions``,
    the chunk size of bounded memory, is a constant of the graph: its chunk loop is unrolled).
    ``config.model_dtype`` is applied as ``torch.autocast`` inside it.
    """
    gamma, state_adam, action_adam = config.goal_weight, config.adam(config.lr_states), config.adam(config.lr_actions)
    stop_gradient, history = config.stop_gradient, config.history
    model_dtype = None if config.model_dtype is None else getattr(torch, config.model_dtype)

    def iteration(states, actions, m_s, v_s, m_a, v_a, step, noise_std, noise, frames, low, high, sqrt_weights,
                  state_shape, max_transitions=None):
        precision = (contextlib.nullcontext() if model_dtype is None
                     else torch.autocast(states.device.type, dtype=model_dtype))
        energy, _, _ = lifted_iteration(
            world_model, states, actions, (m_s, v_s), (m_a, v_a), step=step, gamma=gamma, state_adam=state_adam,
            action_adam=action_adam, noise_std=noise_std, low=low, high=high, state_shape=state_shape,
            backend="reference", stop_gradient=stop_gradient, history=history, frames=frames,
            sqrt_weights=sqrt_weights, noise=noise, model_precision=precision, max_transitions=max_transitions,
        )
        return energy

    return iteration


def compiled_iteration(
    iteration: "CompiledFunction", state: PlanState, step: int, sigma: float, noise: Optional[torch.Tensor],
    max_transitions: Optional[int] = None,
) -> torch.Tensor:
    """One lifted iteration of ``state`` through the compiled :func:`iteration_function`: the Adam step
    and sigma as 0-d tensors and ``noise [B*K, T-1, D]`` drawn by the caller from the chains' generators,
    exactly as the eager reference draws it (None: the eager reference draws nothing, zeros go in), so
    that one graph serves every iteration; ``max_transitions``: the chunk size (bounded memory).
    Returns the energy ``[B*K]``."""
    states = state.states
    batch, rows, dim = states.shape
    if noise is None:
        noise = states.new_zeros((batch, rows - 2, dim))
    return iteration(
        states, state.actions, *state.state_moments, *state.action_moments, step_tensor(step, states.device),
        torch.full((), sigma, dtype=states.dtype, device=states.device), noise, state.frames, state.low,
        state.high, state.sqrt_weights, state.chains.state_shape, max_transitions,
    )


class CompiledFunction:
    """``fn`` under ``torch.compile`` (compiled on its first call), with an eager fallback.

    If compiling or a compiled call raises, one :class:`~grasp_kernels.backends.BackendFallbackWarning`
    names ``what`` and the error, that call runs ``fn`` eagerly with the same arguments, and
    ``fallback.failed`` turns True: every function sharing ``fallback`` runs eagerly from then on (one
    warning for the plan, not one per function). A failure happens before the compiled graph runs
    (tracing and code generation precede execution), so the arguments are still unmodified when the
    eager call gets them.

    Args:
        fn: the function to compile (tensors in, tensors out; it may update its arguments in place).
        what: what ``fn`` is, for the warning ("the lifted iteration").
        fallback: the flag shared by the functions that fall back together (default: its own).
        backend: the torch.compile backend (default :data:`COMPILE_BACKEND` when this object is built).
    """

    def __init__(self, fn: Callable[..., torch.Tensor], what: str, fallback: Optional["Fallback"] = None,
                 backend: Optional[str] = None) -> None:
        self.fn = fn
        self.what = what
        self.fallback = Fallback() if fallback is None else fallback
        self.backend = COMPILE_BACKEND if backend is None else backend
        self._compiled: Optional[Callable[..., torch.Tensor]] = None

    @property
    def failed(self) -> bool:
        """Compilation failed here or in a function sharing the fallback: calls run ``fn`` eagerly."""
        return self.fallback.failed

    def __call__(self, *args: object) -> torch.Tensor:
        """``fn(*args)``, compiled unless compiling failed before."""
        if self.failed:
            return self.fn(*args)
        try:
            if self._compiled is None:
                self._compiled = torch.compile(self.fn, backend=self.backend, dynamic=False)
            with _trace_autograd():
                return self._compiled(*args)
        except Exception as exc:  # any failure of torch.compile: the eager function still plans
            self.fallback.failed = True
            detail = (str(exc).strip().splitlines() or [""])[0][:200]
            warn_once(f"grasp_kernels: compile=True runs eagerly: torch.compile (backend {self.backend!r}) of "
                      f"{self.what} failed: {type(exc).__name__}: {detail}")
            return self.fn(*args)


class Fallback:
    """Whether the compiled functions sharing this object run eagerly (set on their first failure)."""

    def __init__(self) -> None:
        self.failed = False


def _trace_autograd() -> contextlib.AbstractContextManager:
    """Let dynamo trace ``torch.autograd.grad`` into the graph (else each one is a graph break), for the
    calls that trace; no global setting is changed. Dynamo is imported here, on first use: importing it
    costs seconds, which ``import grasp_kernels`` does not pay."""
    import torch._dynamo

    if hasattr(torch._dynamo.config, "trace_autograd_ops"):
        return torch._dynamo.config.patch(trace_autograd_ops=True)
    return contextlib.nullcontext()
