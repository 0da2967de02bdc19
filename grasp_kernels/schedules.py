"""Per-iteration scalars of a GRASP plan: the noise sigma, the goal weight gamma and the kernels' noise
seed, as host floats and ints (no device sync), shared by the planner and the time-sharded planner.

Both schedules run on one clock (docs/design.md, section 1): iteration ``i`` of a plan whose sync
phases are ``P`` iterations apart is the ``j = i mod P``-th iteration of its phase (``P = iters``
without sync), and ``j / P`` is how far the annealing has gone.
"""

from __future__ import annotations

from .config import GraspConfig

# Kernel backends draw the noise from a seed that changes every iteration (never a growing offset);
# seeds stay below 2**31 so every backend takes them as a plain int32 argument.
SEED_STRIDE = 0x9E3779B9
SEED_MODULUS = (1 << 31) - 1

__all__ = ["SEED_MODULUS", "SEED_STRIDE", "anneal_fraction", "goal_weight", "iteration_seed", "noise_std"]


def iteration_seed(seed: int, iteration: int) -> int:
    """The kernels' noise seed of one iteration: ``(seed * 0x9E3779B9 + iteration + 1) mod (2^31 - 1)``."""
    return (seed * SEED_STRIDE + iteration + 1) % SEED_MODULUS


def anneal_fraction(config: GraspConfig, iteration: int, sync_every: int) -> float:
    """``j / P`` in ``[0, 1)``: iteration ``iteration`` (0-based) is the ``j``-th of a period of ``P``
    iterations, ``P = sync_every`` (the plan's sync period; 0 = no sync) or ``config.iters``."""
    period = sync_every or config.iters
    return (iteration % period) / period


def noise_std(config: GraspConfig, iteration: int, sync_every: int) -> float:
    """Sigma of the Langevin noise: ``state_noise``, or with ``anneal_noise`` falling linearly to 0
    within each period (:func:`anneal_fraction`)."""
    if not config.anneal_noise:
        return config.state_noise
    return config.state_noise * (1.0 - anneal_fraction(config, iteration, sync_every))


def goal_weight(config: GraspConfig, iteration: int, sync_every: int) -> float:
    """Gamma: ``goal_weight``, or with ``goal_weight_final`` the linear decay towards it, within each
    period (``goal_weight_schedule="phase"``) or over the whole plan (``"plan"``: ``i / iters``)."""
    if config.goal_weight_final is None:
        return config.goal_weight
    if config.goal_weight_schedule == "phase":
        fraction = anneal_fraction(config, iteration, sync_every)
    else:
        fraction = iteration / config.iters
    return config.goal_weight + (config.goal_weight_final - config.goal_weight) * fraction
