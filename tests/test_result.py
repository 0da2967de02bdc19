"""PlanResult's repr: one short line with shapes, dtype/device, the distance summary, iterations, backend."""

from __future__ import annotations

import torch

from grasp_kernels import GraspConfig, GraspPlanner, PlanResult


def test_repr_of_a_plan_is_short_and_says_what_matters():
    config = GraspConfig(horizon=6, iters=4, sync_every=0, backend="reference")
    result = GraspPlanner(lambda s, a: s + 0.1 * a, action_dim=2, config=config).plan(torch.zeros(3, 2), torch.ones(3, 2))
    text = repr(result)
    assert len(text) < 400, text
    assert "\n" not in text
    for part in ("actions=[3, 6, 2]", "states=[3, 7, 2]", "rollout=[3, 7, 2]", "dtype=float32", "device=cpu",
                 "iterations=4", "backend='reference'"):
        assert part in text, (part, text)
    distance = result.final_distance
    assert f"min {distance.min().item():.4g}" in text and f"max {distance.max().item():.4g}" in text
    assert str(result) == text


def test_repr_reports_non_finite_distances():
    nan = torch.full((2,), float("nan"))
    result = PlanResult(torch.zeros(2, 3, 1), torch.zeros(2, 4, 5), torch.zeros(2, 4, 5), nan, torch.zeros(0, 2))
    text = repr(result)
    assert "final_distance=[holds NaN/Inf]" in text and "iterations=0" in text and "backend" not in text
