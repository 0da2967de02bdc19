"""Every ```python block of README.md runs verbatim; blocks marked ``# fragment: needs ...`` (the
adapters, which need their host objects) are listed and skipped with that reason."""

from __future__ import annotations

import os
import re

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAGMENT = "# fragment: "


def readme_blocks() -> list[str]:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    return re.findall(r"```python\n(.*?)```", text, re.S)


BLOCKS = readme_blocks()


def test_the_readme_has_runnable_blocks_and_marks_its_fragments():
    runnable = [b for b in BLOCKS if not b.startswith(FRAGMENT)]
    assert len(runnable) >= 2 and len(BLOCKS) - len(runnable) == 3  # the three adapter snippets


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs_verbatim(code):
    if code.startswith(FRAGMENT):
        pytest.skip(code.splitlines()[0][len(FRAGMENT):])
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    for value in namespace.values():  # every plan of a block ends finite
        if hasattr(value, "final_distance") and isinstance(value.final_distance, torch.Tensor):
            assert torch.isfinite(value.final_distance).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_api_example_plans_well(seed):
    """The ten-line example's configuration plans: energy falls, the rollout reaches the goals, and
    the paths are not zig-zags. Its goals come from the global generator: seeded here, so that the
    goals do not depend on the tests that ran before."""
    torch.manual_seed(seed)
    namespace: dict = {}
    exec(compile(BLOCKS[0], "README.md", "exec"), namespace)
    result, s0, goal = namespace["result"], namespace["s0"], namespace["goal"]
    assert result.actions.shape == (4, 20, 2) and result.rollout.shape == (4, 21, 2)
    energy = result.energy_history.mean(dim=1)
    assert energy[-1] < energy[0]
    assert (result.final_distance < 0.1).all()
    path = (result.rollout[:, 1:] - result.rollout[:, :-1]).norm(dim=-1).sum(dim=1)
    assert (path < 2.0 * (goal - s0).norm(dim=1) + 0.1).all()
