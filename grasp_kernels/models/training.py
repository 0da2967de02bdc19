"""Training MLP world models on exploratory data from the real simulators.

``train_world_model`` collects a training split and a held-out split (a different seed), fits the
normalisation buffers of :class:`MLPDynamics` to the data, trains with Adam and cosine learning-rate decay
on the one-step error in normalised delta space plus a short open-loop rollout term, and measures held-out
errors in physical units: one step, and open loop over ``H = 10`` and ``H = 50`` steps (the model rolled
with the recorded actions from the true start state, compared with the true states).

Command line (``--env all`` trains the four environments)::

    python -m grasp_kernels.models.training --env pointmaze-medium --seed 0 --out grasp_kernels/weights
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Optional, Sequence

import numpy as np
import torch

from ..envs.sim import (
    PUSHT_POSITION_SCALE, angle_difference, check_env_name, make_env, pusht_pose, resolve_action_repeat,
)
from .._checks import check_int
from ..rollouts import rollout
from .mlp import MLPDynamics
from ..envs.exploration import check_policy, collect, contact_fraction


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (on 2 cores the defaults train a PointMaze model in about 2-3 minutes
    and Push-T's, :data:`DEFAULTS`, in about 25: 8 minutes of simulation, 17 of training).

    ``rollout_steps`` is the length ``K`` of the open-loop term: windows of ``K`` recorded actions are rolled
    through the model from their true start and the normalised error at every step is penalised with weight
    ``rollout_weight / k`` (errors grow with ``k``; the weight keeps late steps from dominating).

    ``action_repeat`` is the model's time step in simulator steps (``None``: the environment's default) and
    ``policy`` the exploration policy of the data (:func:`grasp_kernels.envs.exploration.collect`).
    """

    trajectories: int = 2000
    length: int = 50
    heldout_trajectories: int = 200
    hidden: int = 256
    depth: int = 3
    steps: int = 10000
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.0
    rollout_steps: int = 8
    rollout_batch: int = 128
    rollout_weight: float = 1.0
    action_repeat: Optional[int] = None
    policy: str = "mixed"


# Per environment. Push-T: contact-rich data (half its trajectories from the contact-heavy policy) and 4x the
# data and steps of 1600 trajectories x 10k steps, which took the 10-step block error from 36 to 31 px; a
# 512-wide net at the small budget gained 1 px for 3-4x the time.
DEFAULTS: dict[str, dict] = {
    "pointmaze-umaze": {},
    "pointmaze-medium": {},
    "pointmaze-large": {"trajectories": 2400},
    "pusht": {"trajectories": 6400, "steps": 40000, "policy": "mixed+pushes"},
}

HELDOUT_SEED_OFFSET = 1_000_003  # held-out data never shares a seed with any training split


def default_config(env_name: str, **overrides) -> TrainConfig:
    """The default :class:`TrainConfig` of ``env_name`` with ``overrides`` (``None`` values ignored); the action
    repeat resolved to the environment's default when neither gives one."""
    name = check_env_name(env_name)
    values = {**DEFAULTS[name], **{k: v for k, v in overrides.items() if v is not None}}
    values["action_repeat"] = resolve_action_repeat(name, values.get("action_repeat"))
    return TrainConfig(**values)


# ------------------------------------------------------------------------------------------ normalisation


def fit_normalisation(model: MLPDynamics, states: np.ndarray, actions: np.ndarray) -> None:
    """Set the model's buffers from ``states [N, L+1, D]`` and ``actions [N, L, A]``.

    ``delta_scale`` is the per-component std of ``s' - s`` so that the network's output is O(1).
    """
    s = torch.as_tensor(states[:, :-1].reshape(-1, states.shape[-1]), dtype=torch.float64)
    a = torch.as_tensor(actions.reshape(-1, actions.shape[-1]), dtype=torch.float64)
    d = torch.as_tensor((states[:, 1:] - states[:, :-1]).reshape(-1, states.shape[-1]), dtype=torch.float64)
    # The floors keep a constant component (e.g. an unused action axis) from dividing by zero.
    with torch.no_grad():
        model.state_mean.copy_(s.mean(0).float())
        model.state_std.copy_(s.std(0).clamp_min(1e-6).float())
        model.action_mean.copy_(a.mean(0).float())
        model.action_std.copy_(a.std(0).clamp_min(1e-6).float())
        model.delta_scale.copy_(d.std(0).clamp_min(1e-6).float())


# ------------------------------------------------------------------------------------------------ metrics


def _group_distances(env_name: str, predicted: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
    """Per sample error of each component group of ``predicted, true [..., D]`` in physical units (Euclidean for
    2-d groups)."""
    if env_name == "pusht":
        s = PUSHT_POSITION_SCALE
        return {
            "agent_px": np.linalg.norm(predicted[..., 0:2] - true[..., 0:2], axis=-1) * s,
            "block_px": np.linalg.norm(predicted[..., 2:4] - true[..., 2:4], axis=-1) * s,
            "block_angle_deg": np.degrees(angle_difference(pusht_pose(predicted)[..., 2], pusht_pose(true)[..., 2])),
        }
    return {
        "position": np.linalg.norm(predicted[..., 0:2] - true[..., 0:2], axis=-1),
        "velocity": np.linalg.norm(predicted[..., 2:4] - true[..., 2:4], axis=-1),
    }


def _group_errors(env_name: str, predicted: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """RMSE per component group of ``predicted, true [..., D]`` (:func:`_group_distances`)."""
    return {k: float(np.sqrt(np.mean(v**2))) for k, v in _group_distances(env_name, predicted, true).items()}


def _group_medians(env_name: str, predicted: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Median per component group: beside the RMSE, which rare large errors (wall contacts) dominate."""
    return {k: float(np.median(v)) for k, v in _group_distances(env_name, predicted, true).items()}


def _error_summary(env_name: str, predicted: np.ndarray, true: np.ndarray) -> dict:
    """RMSE per component group with the medians under ``"median"``."""
    return {**_group_errors(env_name, predicted, true), "median": _group_medians(env_name, predicted, true)}


def _window_starts(length: int, horizon: int) -> list[int]:
    """The starts ``t = 0, H, 2H, ...`` of the ``H``-step windows that fit in trajectories of ``length`` steps."""
    return list(range(0, length - horizon + 1, horizon))


def _trajectories(states, actions) -> tuple[np.ndarray, np.ndarray]:
    """``states [N, L+1, D]`` and ``actions [N, L, A]`` as arrays, or a ValueError naming both."""
    states, actions = np.asarray(states), np.asarray(actions)
    if (states.ndim != 3 or actions.ndim != 3 or states.shape[0] < 1
            or states.shape[:2] != (actions.shape[0], actions.shape[1] + 1)):
        raise ValueError(
            f"states must be [N, L+1, D] and actions [N, L, A] of the same N >= 1 and L, got {states.shape} and "
            f"{actions.shape}"
        )
    return states, actions


def replay_windows(
    env_name: str, states: np.ndarray, actions: np.ndarray, horizon: int, action_repeat: Optional[int] = None,
    velocities: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The simulator restarted exactly from the recorded start of every ``horizon``-step window of ``states
    [N, L+1, D]`` (:meth:`~grasp_kernels.envs.sim.SimEnv.restore`, with ``velocities [N, L+1, V]`` where given)
    replaying the recorded ``actions [N, L, A]`` (recorded at ``action_repeat``; ``None``: the environment's
    default). Returns its end states and the recorded ones, ``[W, D]`` each: :func:`evaluate`'s windows (starts
    ``0, H, 2H, ...``), those of trajectory 0 first, then trajectory 1's, ..."""
    name = check_env_name(env_name)
    horizon = check_int("horizon", horizon, minimum=1)
    states, actions = _trajectories(states, actions)
    if velocities is not None and np.shape(velocities)[:2] != states.shape[:2]:
        raise ValueError(f"velocities must be [N, L+1, V] with states' N, L+1 = {states.shape[:2]}, got {np.shape(velocities)}")
    length = actions.shape[1]
    if horizon > length:
        raise ValueError(f"horizon must be <= the trajectories' {length} steps, got {horizon}")
    env = make_env(name, action_repeat=action_repeat)
    final, target = [], []
    try:
        for i in range(states.shape[0]):
            for t in _window_starts(length, horizon):
                state = env.restore(states[i, t], None if velocities is None else velocities[i, t])
                for k in range(horizon):
                    state = env.step(actions[i, t + k])
                final.append(state)
                target.append(states[i, t + horizon])
    finally:
        env.close()
    return np.stack(final), np.stack(target)


REPLAY_EXACT_PX = 1e-3  # a replay reproduces its recorded Push-T positions to this (px, every step) ...
REPLAY_EXACT_COS_SIN = 1e-6  # ... and the cosine and sine of the block's angle to this


def replay_velocities(
    states: np.ndarray, actions: np.ndarray, action_repeat: Optional[int] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Push-T's velocities along recorded trajectories: every trajectory of ``states [N, L+1, 6]``, ``actions [N,
    L, 2]`` (recorded at ``action_repeat``) replayed from its start, restored at rest as its recording began after
    a reset. Returns ``velocities [N, L+1, 5]`` (:meth:`~grasp_kernels.envs.sim.PushTEnv.velocities` after every
    step of the replay) and ``exact [N]``: whether the replay reproduced the recording at every step (positions to
    :data:`REPLAY_EXACT_PX` px, the angle's cosine and sine to :data:`REPLAY_EXACT_COS_SIN`); the velocities of a
    trajectory that is not exact are those of its replay, not of its recording."""
    states, actions = _trajectories(states, actions)
    n, length = actions.shape[:2]
    velocities = np.zeros((n, length + 1, 5))
    exact = np.ones(n, dtype=bool)
    env = make_env("pusht", action_repeat=action_repeat)
    try:
        for i in range(n):
            state = env.restore(states[i, 0])
            for t in range(length + 1):
                if t > 0:
                    state = env.step(actions[i, t - 1])
                velocities[i, t] = env.velocities()
                off = np.abs(state - states[i, t])
                if np.max(off[:4]) * PUSHT_POSITION_SCALE > REPLAY_EXACT_PX or np.max(off[4:]) > REPLAY_EXACT_COS_SIN:
                    exact[i] = False
    finally:
        env.close()
    return velocities, exact


def simulator_replay(
    env_name: str, states: np.ndarray, actions: np.ndarray, horizons: Sequence[int] = (10, 50),
    action_repeat: Optional[int] = None, velocities: Optional[np.ndarray] = None,
) -> dict[str, dict]:
    """The simulator itself as a model of the planning state, on :func:`evaluate`'s windows.

    For every ``H``-step window of ``states [N, L+1, D]``, ``actions [N, L, A]`` (recorded at ``action_repeat``)
    the simulator is restarted exactly from the recorded start state, at rest (or with ``velocities [N, L+1,
    V]``), and replays the recorded actions (:func:`replay_windows`). Its error against the recorded end state
    is what restarting from that state alone loses: PointMaze's state is the simulator's whole state, so 0;
    Push-T's leaves out the velocities and the contact solver's state, and its contacts amplify that. A
    reference for a world model of that state, not a bound: a predictor that averages over what is left out
    can beat one restart in RMSE.

    Returns ``{"hH": {group: RMSE, ..., "median": {group: median}}}`` for every horizon that fits in the
    trajectories (the groups of :func:`evaluate`).
    """
    states, actions = _trajectories(states, actions)
    result: dict[str, dict] = {}
    for horizon in horizons:
        if check_int("horizons", horizon, minimum=1) > actions.shape[1]:
            continue
        final, target = replay_windows(env_name, states, actions, horizon, action_repeat, velocities)
        result[f"h{horizon}"] = _error_summary(env_name, final, target)
    return result


@torch.no_grad()
def evaluate(
    model: MLPDynamics, env_name: str, states: np.ndarray, actions: np.ndarray, horizons: Sequence[int] = (10, 50),
    action_repeat: Optional[int] = None, replay: bool = False,
) -> dict:
    """Held-out errors of ``model`` on ``states [N, L+1, D]``, ``actions [N, L, A]``.

    Returns ``{"one_step": {...}, "h10": {...}, "h50": {...}, "one_step_normalised_rmse": float}``: per
    component group RMSE (PointMaze ``position`` in maze units and ``velocity``; Push-T ``agent_px``,
    ``block_px``, ``block_angle_deg``). ``hH`` is the error after ``H`` open-loop steps from the true state,
    over every start ``t = 0, H, 2H, ...`` that fits in the trajectories; horizons longer than ``L`` are
    skipped. Each ``hH`` also holds the error of the constant model ``s' = s`` under ``"constant"`` for scale, and
    every entry the median error per group under ``"median"``. With ``replay`` each ``hH`` holds the error of
    the simulator restarted from the recorded states under ``"simulator"`` (:func:`simulator_replay`, the data
    recorded at ``action_repeat``; ``None``: the environment's default).
    """
    name = check_env_name(env_name)
    states, actions = _trajectories(states, actions)
    model = model.eval()
    s = torch.as_tensor(states, dtype=torch.float32)
    a = torch.as_tensor(actions, dtype=torch.float32)
    n, length, dim = a.shape[0], a.shape[1], s.shape[-1]
    pred = model(s[:, :-1].reshape(-1, dim), a.reshape(n * length, -1)).reshape(n, length, dim)
    true = s[:, 1:]
    scale = model.delta_scale.cpu()
    normalised = float(torch.sqrt(torch.mean(((pred - true) / scale) ** 2)))
    result: dict = {
        "one_step": _error_summary(name, pred.numpy(), true.numpy()),
        "one_step_normalised_rmse": normalised,
    }
    for horizon in horizons:
        if horizon > length:
            continue
        starts = _window_starts(length, horizon)
        start = torch.cat([s[:, t] for t in starts])
        acts = torch.cat([a[:, t : t + horizon] for t in starts])
        target = torch.cat([s[:, t + horizon] for t in starts]).numpy()
        final = rollout(model, start, acts)[:, -1].numpy()
        errors = _error_summary(name, final, target)
        errors["constant"] = _group_errors(name, start.numpy(), target)
        result[f"h{horizon}"] = errors
    if replay:
        for key, errors in simulator_replay(name, states, actions, horizons, action_repeat).items():
            result[key]["simulator"] = errors
    return result


def format_metrics(name: str, metrics: dict) -> str:
    """One line of :func:`train_world_model`'s held-out errors for ``name``."""
    parts = []
    for key in ("one_step", "h10", "h50"):
        if key in metrics:
            values = ", ".join(f"{k}={v:.4g}" for k, v in metrics[key].items() if not isinstance(v, dict))
            parts.append(f"{key}: {values}")
    return f"{name}: " + "; ".join(parts) + f" (train {metrics['train_seconds']} s)"


# ----------------------------------------------------------------------------------------------- training


def adam_steps(
    params, loss_fn, steps: int, lr: float, desc: str, progress: bool, weight_decay: float = 0.0
) -> float:
    """``steps`` Adam steps on ``loss_fn()`` with the learning rate decayed from ``lr`` to 0 on a cosine; returns
    the running (exponential moving average) loss. A tqdm bar named ``desc`` with ``progress``; ``weight_decay``
    is Adam's L2 term (default 0)."""
    from tqdm.auto import tqdm

    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    )
    running = None
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, mininterval=1.0)
    for step in bar:
        loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{running:.5f}")
    return float(running)


def rollout_loss(
    model: torch.nn.Module,
    states: torch.Tensor,
    actions: torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator,
    scale: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One-step MSE (teacher forcing) in normalised delta space plus the weighted ``K``-step open-loop term.

    ``model(states [N, D], actions [N, A]) -> [N, D]`` on trajectories ``states [N, L+1, D]``,
    ``actions [N, L, A]``; errors are divided by ``scale [D]`` (default ``model.delta_scale``)."""
    n, length = actions.shape[0], actions.shape[1]
    scale = model.delta_scale if scale is None else scale
    traj = torch.randint(0, n, (config.batch_size,), generator=generator)
    t = torch.randint(0, length, (config.batch_size,), generator=generator)
    pred = model(states[traj, t], actions[traj, t])
    loss = torch.mean(((pred - states[traj, t + 1]) / scale) ** 2)
    k = min(config.rollout_steps, length)
    if k >= 2 and config.rollout_weight > 0:
        traj = torch.randint(0, n, (config.rollout_batch,), generator=generator)
        t0 = torch.randint(0, length - k + 1, (config.rollout_batch,), generator=generator)
        steps = t0[:, None] + torch.arange(k)
        predicted = rollout(model, states[traj, t0], actions[traj[:, None], steps])[:, 1:]
        error = ((predicted - states[traj[:, None], steps + 1]) / scale) ** 2
        weights = 1.0 / torch.arange(1, k + 1, dtype=error.dtype)
        loss = loss + config.rollout_weight * torch.mean(error.mean(dim=(0, 2)) * weights)
    return loss


def train_world_model(
    env_name: str,
    seed: int = 0,
    trajectories: Optional[int] = None,
    length: Optional[int] = None,
    hidden: Optional[int] = None,
    depth: Optional[int] = None,
    steps: Optional[int] = None,
    batch_size: Optional[int] = None,
    lr: Optional[float] = None,
    progress: bool = True,
    rollout_steps: Optional[int] = None,
    heldout_trajectories: Optional[int] = None,
    data: Optional[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = None,
    action_repeat: Optional[int] = None,
    policy: Optional[str] = None,
) -> tuple[MLPDynamics, dict]:
    """Collect data, fit and train an :class:`MLPDynamics` for ``env_name``; measure held-out errors.

    Arguments left ``None`` take the environment's default (:data:`DEFAULTS`, :class:`TrainConfig`).

    Args:
        env_name: ``pointmaze-umaze|medium|large`` or ``pusht``.
        seed: seeds the training data (``seed``), the held-out data (``seed + 1000003``), the initial weights
            and the minibatches.
        trajectories, length: training split size, ``[trajectories, length + 1, D]`` states.
        hidden, depth: the MLP's width and number of hidden layers.
        steps, batch_size, lr: Adam steps (cosine decay to 0), one-step minibatch size, peak learning rate.
        progress: tqdm bars for collection and training.
        rollout_steps: length of the open-loop loss term (0 or 1: one-step loss only).
        heldout_trajectories: held-out split size (trajectories of the same length).
        data: ``(train_states, train_actions, heldout_states, heldout_actions)`` to use instead of collecting
            (collected with ``action_repeat`` and ``policy``, which the card records).
        action_repeat: simulator steps per model step (the frame skip, >= 1); default the environment's.
        policy: the exploration policy of both splits (see :func:`~grasp_kernels.envs.exploration.collect`).

    Returns:
        The trained model (CPU, eval mode) and a metrics dict: :func:`evaluate`'s errors plus ``"config"``,
        ``"seed"``, ``"data"`` (sizes, wall contact / block motion fraction), ``"train_seconds"``,
        ``"collect_seconds"`` and ``"final_loss"``.
    """
    name = check_env_name(env_name)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    config = default_config(
        name, trajectories=trajectories, length=length, hidden=hidden, depth=depth, steps=steps,
        batch_size=batch_size, lr=lr, rollout_steps=rollout_steps, heldout_trajectories=heldout_trajectories,
        action_repeat=action_repeat, policy=policy,
    )
    for field in ("trajectories", "length", "heldout_trajectories", "hidden", "depth", "steps", "batch_size"):
        value = getattr(config, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{field} must be an int >= 1, got {value!r}")
    if not (isinstance(config.lr, (int, float)) and config.lr > 0):
        raise ValueError(f"lr must be a positive number, got {config.lr!r}")
    check_policy(name, config.policy)

    start = time.perf_counter()
    if data is None:
        sampling = {"action_repeat": config.action_repeat, "policy": config.policy, "progress": progress}
        train_states, train_actions = collect(name, config.trajectories, config.length, seed, **sampling)
        held_states, held_actions = collect(
            name, config.heldout_trajectories, config.length, seed + HELDOUT_SEED_OFFSET, **sampling
        )
    else:
        train_states, train_actions, held_states, held_actions = data
    collect_seconds = time.perf_counter() - start

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    dim, adim = train_states.shape[-1], train_actions.shape[-1]
    model = MLPDynamics(dim, adim, hidden=config.hidden, depth=config.depth)
    fit_normalisation(model, train_states, train_actions)
    states = torch.as_tensor(train_states, dtype=torch.float32)
    actions = torch.as_tensor(train_actions, dtype=torch.float32)

    start = time.perf_counter()
    model.train()
    running = adam_steps(
        model.parameters(), lambda: rollout_loss(model, states, actions, config, generator), config.steps,
        config.lr, f"train {name}", progress, weight_decay=config.weight_decay,
    )
    train_seconds = time.perf_counter() - start
    model.eval()

    metrics = evaluate(model, name, held_states, held_actions, action_repeat=config.action_repeat, replay=True)
    metrics.update(
        config=dataclasses.asdict(config),
        seed=seed,
        data={
            "train_transitions": int(train_actions.shape[0] * train_actions.shape[1]),
            "heldout_transitions": int(held_actions.shape[0] * held_actions.shape[1]),
            "train_seed": seed,
            "heldout_seed": seed + HELDOUT_SEED_OFFSET,
            "contact_fraction": contact_fraction(name, train_states),
            "action_repeat": config.action_repeat,
            "policy": config.policy,
        },
        train_seconds=round(train_seconds, 1),
        collect_seconds=round(collect_seconds, 1),
        final_loss=running,
    )
    return model, metrics


if __name__ == "__main__":  # the command the shipped state models' cards name: the CLI's train command
    from ..cli import main_train

    sys.exit(main_train())
