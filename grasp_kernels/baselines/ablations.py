"""GRASP ablations a user asks about, as config transformations of :class:`GraspConfig`."""

from __future__ import annotations

from ..config import GraspConfig

ABLATIONS: dict[str, dict[str, object]] = {
    "grasp": {},
    "no_noise": {"state_noise": 0.0, "init_noise": 0.0},
    "no_stopgrad": {"stop_gradient": False},
    "no_sync": {"sync_every": 0},
}


def ablation_config(config: GraspConfig, name: str) -> GraspConfig:
    """``config`` with ablation ``name`` applied: one of ``grasp`` (unchanged), ``no_noise`` (lifted
    without Langevin noise), ``no_stopgrad`` (gradients also flow through the world model's state
    input) and ``no_sync`` (no full-rollout sync phases)."""
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; expected one of {tuple(ABLATIONS)}")
    return config.replace(**ABLATIONS[name])
