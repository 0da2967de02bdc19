"""Shared by the pixel tests: skip where MuJoCo cannot render offscreen at all."""

from __future__ import annotations

import numpy as np
import pytest


def skip_without_offscreen_gl(env_name: str = "pointmaze-medium") -> None:
    """Render one frame of ``env_name``; skip the calling test (with the reason) if no offscreen GL context
    can be opened, re-raise any other error."""
    from grasp_kernels.envs.pixels import render_states

    try:
        render_states(env_name, np.zeros((1, 4), np.float32))
    except RuntimeError as error:
        if "cannot render offscreen" in str(error):
            pytest.skip(str(error))
        raise
