"""Planner configuration.

The field names of :class:`GraspConfig` are the public contract of the project (docs/design.md, section 1);
new fields may be added, existing ones are never renamed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal, Optional, Union

from ._checks import check_int as _check_int
from .backends import BACKENDS
from .memory import MemoryBudget, check_max_transitions, parse_memory_budget
from .ops import AdamHyper
from .presets import preset_fields
from .sync import SYNC_RULES

Backend = Literal["auto", "reference", "triton", "cuda"]
MODEL_DTYPES: tuple[Optional[str], ...] = (None, "bfloat16", "float16")
SyncMode = Literal["gd", "cem"]
GoalWeightSchedule = Literal["phase", "plan"]
GOAL_WEIGHT_SCHEDULES: tuple[str, ...] = ("phase", "plan")

Bound = Optional[Union[float, Sequence[float]]]


@dataclasses.dataclass
class GraspConfig:
    """Hyper-parameters of one GRASP plan (paper arXiv 2602.00475, Eq. 10).

    Defaults follow the authors' released solver. ``goal_weight`` (gamma) of 1 is the authors' value;
    on detour tasks 0.01-0.1 often plans better (docs/design.md, section 6).

    Attributes:
        horizon: ``T``, number of world-model steps (>= 1).
        iters: number of lifted iterations.
        lr_states: Adam learning rate of the virtual states ``s_1 .. s_{T-1}``.
        lr_actions: Adam learning rate of the actions ``a_0 .. a_{T-1}``.
        state_noise: standard deviation ``sigma`` of the Langevin noise added to the virtual states
            after each Adam step.
        goal_weight: ``gamma``, weight of the dense goal term ``sum_t ||p_t - g||^2``.
        sync_every: run a sync phase after every ``sync_every`` lifted iterations (0 disables it). Make
            ``iters`` a multiple of it: lifted iterations after the last phase move the actions unchecked by
            any rollout (from pixels that cost up to 36 points of success in ``bench/anytime.py``).
        sync_steps: Adam steps (``sync="gd"``) or CEM iterations (``sync="cem"``) on the actions through
            the full rollout per sync phase.
        sync_lr: learning rate of the sync phase's Adam (fresh moments each phase; ``sync="gd"`` only).
        sync: "gd" (Adam on the shooting loss, :func:`grasp_kernels.sync.gd_sync`) or "cem" (the
            authors' released solver's CEM sync, :func:`grasp_kernels.sync.cem_sync`): ``sync_steps``
            CEM iterations over the actions through the full rollout, ``cem_sync_samples`` candidates
            per chain around the current actions, whose per-time-step variance is
            ``cem_sync_var_scale * dev_t + cem_sync_var_min`` with ``dev_t`` the mean squared deviation
            of virtual state ``s_t`` from its straight-line position ``s_0 + t/T (g - s_0)`` (``t = 0``
            takes the mean over ``t = 1..T-1``); each iteration refits mean and variance to the
            ``cem_sync_elites`` lowest shooting losses and the final mean becomes the actions. Its
            random numbers come from the chains' generators (shard-invariant). Runs on the plain path:
            the GD sync's fused kernel, compiled step and CUDA-graph capture are not used (one warning
            where they were asked for); time sharding rejects it.
        cem_sync_samples: candidate action sequences per chain and CEM iteration (``sync="cem"``).
        cem_sync_elites: the lowest-loss candidates each refit uses (2 .. ``cem_sync_samples``: the
            refit variance is the elites' unbiased variance).
        cem_sync_var_scale: factor on the virtual states' deviation in the initial sampling variance.
        cem_sync_var_min: variance floor added to the initial and every refit variance (> 0: keeps the
            distribution from collapsing).
        init_noise: ``eps`` of the initial virtual states, drawn around the straight line s0 -> g.
        action_low: lower action bound, a float or one value per action dimension (None: unbounded).
        action_high: upper action bound, likewise.
        seed: seed of every random draw of a plan (initialisation, noise, particles).
        backend: "auto" | "reference" | "triton" | "cuda" (docs/design.md, section 3).
        particles: independent chains per problem; the chain whose true rollout ends closest to the
            goal is returned (docs/design.md, section 6).
        stop_gradient: detach the world model's state input (the reshaped gradient). False is the
            "without stop-gradient" ablation.
        beta1, beta2, adam_eps: Adam constants shared by every Adam step of the planner.
        anneal_noise: let the state noise decay linearly from ``state_noise`` to 0 within each sync
            phase (over the whole plan without sync), as the authors' released solver does.
        goal_weight_final: None (gamma stays ``goal_weight``) or the value gamma decays to linearly
            within each sync phase (over the whole plan without sync), on the schedule of
            ``anneal_noise``: the ``j``-th iteration of a phase of ``P`` iterations uses
            ``goal_weight + (goal_weight_final - goal_weight) * j / P`` (the authors' solver decays
            both with its ``schedule_decay``). Not combined with ``compile`` (the iteration runs eagerly,
            one warning) since the compiled iteration bakes gamma in.
        goal_weight_schedule: where ``goal_weight_final`` is reached: "phase" (within each sync phase, as
            above) or "plan" (a schedule across phases: iteration ``i`` of ``iters`` uses
            ``goal_weight + (goal_weight_final - goal_weight) * i / iters``, so gamma falls from phase to
            phase instead of restarting each phase). The noise's ``anneal_noise`` keeps the per-phase schedule.
        init_cem_steps: 0, or initialise every chain from a short CEM before the lifted iterations: each
            chain runs ``init_cem_steps`` CEM iterations over the actions through the full rollout
            (:func:`grasp_kernels.sync.cem_sync` with the initial variance ``init_cem_var`` everywhere,
            ``cem_sync_samples`` candidates, ``cem_sync_elites`` elites, floor ``cem_sync_var_min``), drawing
            from the chain's own generator (after its initial noise), from the initial actions; the final
            mean becomes the chain's actions and its model rollout the chain's virtual states (plus
            ``init_noise``; an ``init_states`` warm start is then not used). Chains differ by their draws.
        init_cem_var: the initial sampling variance of that CEM (> 0; ``init_cem_steps > 0`` only).
        check_finite: verify after each sync phase and at the end that no NaN/Inf appeared.
            The check is one host sync per sync phase, never one per iteration.
        history: ``h``, frames per world-model input. 1: ``F(s_t, a_t)`` on ``[N, *S]``; ``h > 1``:
            ``F(s_{t-h+1} .. s_t, a_t)`` on windows ``[N, h, *S]`` (DINO-WM: 3), with ``s0`` carrying
            the last ``h`` observed frames ``[B, h, *S]``.
        model_dtype: None, or "bfloat16" / "float16": run the world model under ``torch.autocast`` in
            that dtype (lifted calls, sync and final rollouts) while the states, actions, Adam moments
            and the energy stay in the states' dtype; the kernels read a low-precision ``pred``
            directly. With ``fused_mlp`` the kernel's matrix inputs use bfloat16.
        cuda_graph: capture the plan once per input shape as CUDA graphs (one per run of lifted
            iterations, one sync phase replayed for every phase) and replay them on later calls
            (:mod:`grasp_kernels.graphs`); same results as the eager loop. Needs
            CUDA states and a kernel backend (else one warning and the eager loop); a world model that
            cannot be captured also falls back with one warning. Off by default until replay == eager
            is shown on a GPU (``bench/results/``).
        fused_mlp: run each lifted iteration as ONE fused Triton kernel (MLP forward, energy, VJP to the
            actions, both Adam steps; :mod:`grasp_kernels.ops.fused_mlp_iteration`). Needs an
            :class:`~grasp_kernels.models.MLPDynamics` world model (SiLU/ReLU/Tanh, depth 1-3),
            ``stop_gradient=True``, ``history=1`` and no ``state_weights`` (else a ValueError when the
            planner is built); on the reference backend or with float64 states it falls back to the
            normal iteration with one warning. Same results as the normal iteration.
        compile: ``torch.compile`` the lifted iteration (on the reference backend) and one sync step
            (every backend), any device (:mod:`grasp_kernels.compiled`; backend
            ``grasp_kernels.compiled.COMPILE_BACKEND``, default inductor). One graph per input shape serves
            every iteration; the first plan of a shape pays the compilation. Same results as the eager
            planner up to float rounding. If compiling fails (e.g. no C++ compiler for inductor, a world
            model dynamo cannot trace) the plan runs eagerly after one warning. With a kernel backend the
            iteration stays the kernels' (one warning), with ``cuda_graph`` nothing is compiled (one
            warning); the fused MLP kernel, when it runs, replaces the compiled iteration.
        max_transitions: None, or evaluate the world model and its VJP over chunks of at most this many
            transitions of the ``B*K*T`` lifted batch (whole chains, or time windows of one chain), one
            chunk's activations alive at a time; the Adam steps, noise and counters are the unchunked ones,
            so the plan is the same (bitwise on the reference backend for a world model whose rows do not
            depend on the batch size, to rounding otherwise). The GD sync then differentiates
            ``max_transitions // T`` chains at a time (with ``activation_checkpointing``, ``max_transitions``
            chains), and the forward-only rollouts (final rollout, CEM sync, CEM start) roll at most
            ``max_transitions`` rows at a time. docs/design.md, "Bounded memory".
        memory_budget: None, or the memory a plan may use, in bytes (an int) or a string such as
            ``"8GiB"``, ``"512MiB"``, ``"2GB"``: the planner measures one lifted iteration's peak at a few
            chunk sizes (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the tensor storages alive at once,
            which the process's resident set exceeds by 1.4-3.4x in ``bench/memory.py``), once per input
            shape, and plans with the largest ``max_transitions`` whose peak plus the plan's own tensors
            fits (``PlanResult.info["memory"]`` reports it). A budget below one transition is a
            ValueError naming the bytes one transition needs. With ``max_transitions`` also given, that
            chunk size is used and checked against the budget (a ValueError if it does not fit).
            The world model's weights are not part of the budget.
        activation_checkpointing: None (automatic: when one chain's ``T`` rollout steps exceed
            ``max_transitions``), True or False: the GD sync's backward through the ``T``-step rollout
            recomputes each step's forward instead of keeping its activations (``torch.utils.checkpoint``;
            about one more forward per step).
        stop_tolerance: 0 (off), or stop the plan at the first sync phase (from the second on) at which no
            chain's mean energy over the iterations since the previous phase fell by more than this
            fraction of its mean over the phase before: the energy has stopped falling, and the remaining
            iterations would not change the plan much (``PlanResult.info["iterations"]`` says how many
            ran). One host read per sync phase. Needs sync phases (``sync_every``, ``sync_steps`` > 0);
            not with ``cuda_graph`` (a replay runs the whole plan).
    """

    horizon: int = 50
    iters: int = 300
    lr_states: float = 0.1
    lr_actions: float = 0.01
    state_noise: float = 0.005
    goal_weight: float = 1.0
    sync_every: int = 50
    sync_steps: int = 10
    sync_lr: float = 0.05
    init_noise: float = 0.01
    action_low: Bound = -1.0
    action_high: Bound = 1.0
    seed: int = 0
    backend: Backend = "auto"
    particles: int = 1
    stop_gradient: bool = True
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8
    check_finite: bool = True
    anneal_noise: bool = False
    history: int = 1
    fused_mlp: bool = False
    model_dtype: Optional[str] = None
    cuda_graph: bool = False
    compile: bool = False
    sync: SyncMode = "gd"
    cem_sync_samples: int = 64
    cem_sync_elites: int = 10
    cem_sync_var_scale: float = 1.0
    cem_sync_var_min: float = 0.01
    goal_weight_final: Optional[float] = None
    goal_weight_schedule: GoalWeightSchedule = "phase"
    init_cem_steps: int = 0
    init_cem_var: float = 1.0
    max_transitions: Optional[int] = None
    memory_budget: Optional[MemoryBudget] = None
    activation_checkpointing: Optional[bool] = None
    stop_tolerance: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def preset(cls, env: str, horizon: int, budget: Optional[float] = 1.0, observation: str = "states",
               **changes: object) -> "GraspConfig":
        """GRASP's setting for a shipped task at a time budget (:func:`grasp_kernels.presets.preset_fields`):
        ``budget`` is a multiple of CEM's own time on the task (default 1: CEM's time), read from the committed
        anytime profiles, e.g. ``GraspConfig.preset("pointmaze-medium", 25, budget=0.5)``;
        ``observation="pixels"`` plans in the shipped pixel model's latent; ``budget=None`` is the quality
        sweep's choice; ``changes`` override any field."""
        return cls(**preset_fields(env, horizon, budget, observation, **changes))

    def adam(self, lr: float) -> AdamHyper:
        """Adam's constants of this config (``beta1``, ``beta2``, ``adam_eps``) with learning rate ``lr``:
        ``config.adam(config.lr_states)``, ``config.adam(config.lr_actions)``, ``config.adam(config.sync_lr)``."""
        return AdamHyper(lr, self.beta1, self.beta2, self.adam_eps)

    def replace(self, **changes: object) -> "GraspConfig":
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Raise ``ValueError``/``TypeError`` naming the first field that is out of range."""
        _check_int("horizon", self.horizon, minimum=1)
        _check_int("iters", self.iters, minimum=0)
        _check_int("sync_every", self.sync_every, minimum=0)
        _check_int("sync_steps", self.sync_steps, minimum=0)
        _check_int("particles", self.particles, minimum=1)
        _check_int("seed", self.seed, minimum=0)
        _check_int("history", self.history, minimum=1)
        for name in ("lr_states", "lr_actions", "sync_lr"):
            _check_float(name, getattr(self, name), positive=True)
        for name in ("state_noise", "goal_weight", "init_noise", "adam_eps"):
            _check_float(name, getattr(self, name), positive=False)
        for name in ("beta1", "beta2"):
            value = _check_float(name, getattr(self, name), positive=False)
            if not value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.sync not in SYNC_RULES:
            raise ValueError(f"sync must be one of {tuple(SYNC_RULES)}, got {self.sync!r}")
        _check_int("cem_sync_samples", self.cem_sync_samples, minimum=2)
        _check_int("cem_sync_elites", self.cem_sync_elites, minimum=2)
        if self.cem_sync_elites > self.cem_sync_samples:
            raise ValueError(
                f"cem_sync_elites must be <= cem_sync_samples = {self.cem_sync_samples}, got {self.cem_sync_elites}"
            )
        _check_float("cem_sync_var_scale", self.cem_sync_var_scale, positive=False)
        _check_float("cem_sync_var_min", self.cem_sync_var_min, positive=True)
        if self.goal_weight_final is not None:
            _check_float("goal_weight_final", self.goal_weight_final, positive=False)
        if self.goal_weight_schedule not in GOAL_WEIGHT_SCHEDULES:
            raise ValueError(
                f"goal_weight_schedule must be one of {GOAL_WEIGHT_SCHEDULES}, got {self.goal_weight_schedule!r}"
            )
        _check_int("init_cem_steps", self.init_cem_steps, minimum=0)
        _check_float("init_cem_var", self.init_cem_var, positive=True)
        if self.model_dtype not in MODEL_DTYPES:
            raise ValueError(f"model_dtype must be one of {MODEL_DTYPES}, got {self.model_dtype!r}")
        for name in ("fused_mlp", "stop_gradient", "anneal_noise", "check_finite", "cuda_graph", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {type(getattr(self, name)).__name__}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        for name in ("action_low", "action_high"):
            _check_bound(name, getattr(self, name))
        check_max_transitions(self.max_transitions)
        if self.memory_budget is not None:
            parse_memory_budget(self.memory_budget)
        if _check_float("stop_tolerance", self.stop_tolerance, positive=False) > 0:
            if not (self.sync_every and self.sync_steps):
                raise ValueError(f"stop_tolerance > 0 needs sync phases (sync_every and sync_steps > 0), got "
                                 f"sync_every={self.sync_every}, sync_steps={self.sync_steps}")
            if self.cuda_graph:
                raise ValueError("stop_tolerance > 0 and cuda_graph=True: a captured plan is replayed whole, so it "
                                 "cannot stop after a phase; set one of them off")
        if self.activation_checkpointing is not None and not isinstance(self.activation_checkpointing, bool):
            raise TypeError(f"activation_checkpointing must be None or a bool, got "
                            f"{type(self.activation_checkpointing).__name__}")


def _check_float(name: str, value: object, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite {'positive' if positive else 'non-negative'} number, got {value}")
    return value


def _check_bound(name: str, value: object) -> None:
    if value is None:
        return
    values = [value] if isinstance(value, (int, float)) else value
    try:
        values = [float(v) for v in values]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be None, a float or a sequence of floats, got {value!r}") from None
    if any(math.isnan(v) for v in values):
        raise ValueError(f"{name} contains NaN: {value!r}")
