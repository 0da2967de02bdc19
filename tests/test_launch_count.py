"""The launch counter behind bench/launch_count.py counts what it should, and the fused MLP iteration
stays within its launch target."""

from __future__ import annotations

import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from _launches import count_launches  # noqa: E402
from grasp_kernels import GraspConfig, ops  # noqa: E402
from grasp_kernels.backends import backend_unavailable_reason  # noqa: E402
from grasp_kernels.models import MLPDynamics  # noqa: E402
from grasp_kernels.ops.table import op_entry  # noqa: E402


def test_counts_kernels_not_views():
    x = torch.randn(4, 3)
    with count_launches() as launches:
        y = x.view(3, 4).t()  # views: nothing to launch
        z = torch.empty_like(x)  # no data written
        w = x + 1.0
        w.mul_(2.0)
        z.copy_(w)
    assert dict(launches.aten) == {"aten.add": 1, "aten.mul_": 1, "aten.copy_": 1}, launches.aten
    assert launches.total == 3 and y.shape == (4, 3)


@pytest.mark.skipif(backend_unavailable_reason("triton", torch.device("cpu")) is not None, reason="no Triton here")
def test_counts_triton_launches_and_not_the_custom_op_body():
    actions, grad = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    m, v = torch.zeros_like(actions), torch.zeros_like(actions)
    low, high = torch.full((3,), -1.0), torch.full((3,), 1.0)  # the kernels' bound form: no conversion launched
    with count_launches() as launches:
        ops.action_step_(actions, grad, m, v, 1, ops.AdamHyper(0.1), low, high, backend="triton")
    assert dict(launches.triton) == {op_entry("action_step").triton_kernels[0]: 1} and launches.total == 1, launches


@pytest.mark.skipif(backend_unavailable_reason("triton", torch.device("cpu")) is not None, reason="no Triton here")
def test_launch_count_quick_adds_up_and_fused_iteration_meets_its_target():
    import launch_count

    torch.manual_seed(0)
    model = MLPDynamics(4, 2, hidden=16, depth=2)
    s0, goal = torch.rand(2, 4), torch.rand(2, 4)
    for provider in ("eager", "fused_mlp"):
        counted, summed = launch_count.check_formula(model, provider, s0, goal)
        assert counted == summed > 0, (provider, counted, summed)
    config = GraspConfig(horizon=8, iters=4, sync_every=2, sync_steps=2, backend="triton", fused_mlp=True)
    parts = launch_count.count_plan(model, config, s0, goal, per_timestep=False)
    assert parts["iteration"].total <= launch_count.TARGET_PER_ITERATION, parts["iteration"]
    eager = launch_count.count_plan(model, config.replace(backend="reference", fused_mlp=False), s0, goal, False)
    assert eager["iteration"].total > 10 * parts["iteration"].total
