"""The README's ten-line API example runs as written."""

from __future__ import annotations

import os
import re

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_api_example_runs():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("## The API in ten lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = code.replace("iters=300", "iters=20")  # same code, a shorter plan
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.actions.shape == (4, 64, 2)
    assert result.states.shape == result.rollout.shape == (4, 65, 2)
    assert result.final_distance.shape == (4,) and result.energy_history.shape == (20, 4)
    assert torch.isfinite(result.final_distance).all()
