"""Image observations of the real simulators, rendered from planning states, and exploratory pixel data.

Frames are ``[size, size, 3]`` uint8 RGB (default 64x64), a function of the planning state alone (see
:mod:`grasp_kernels.envs.sim` for the state layouts): the goal is *not* drawn, since a planner is given the
goal as an image of its own (:func:`goal_frame`), and rendering never steps the simulator, so the frame of
any state, reachable or not, can be drawn.

Renderers (each the simulator's own):

* PointMaze (UMaze, Medium, Large): MuJoCo's offscreen renderer (``mjr_render`` into an offscreen buffer, as
  ``mujoco.Renderer`` does) on the environment's own model, from an orthographic camera looking straight down
  on the maze (the maze fills the frame's longer side, so wall cells land on a fixed pixel grid), the goal
  marker hidden and the ball (the green site) drawn at least 2 px in radius. Headless it uses EGL (OSMesa
  does not work on these machines; GLFW needs a display): :func:`grasp_kernels.envs.sim.default_mujoco_gl`
  sets ``MUJOCO_GL=egl`` before MuJoCo is first imported, and where another package imported MuJoCo first,
  this module opens the EGL context itself (:func:`_gl_context_class`), so frames do not depend on import
  order.
* Push-T: gym-pusht's own drawing (pymunk's ``debug_draw`` through gym-pusht's pygame ``DrawOptions`` on its
  512x512 canvas, as its ``rgb_array`` rendering does, without the goal overlay), downsampled with area
  averaging (``cv2.INTER_AREA``; gym-pusht's own bilinear resize samples only 4 of the 64 canvas pixels
  behind each 64x64 pixel, so the block's edges would jump rather than move).

Why the simulators' renderers rather than a numpy re-drawing of their geometry: both run headless here
(pygame needs no display for an off-screen surface) and are fast enough for the data sets a 2-core
machine can train on, and a re-drawing would be a second description of the geometry to keep in step with
the simulators. Measured on the 2-vCPU development machine (shared with other work), one process, 64x64,
random states: PointMaze-Medium through MuJoCo/EGL (Mesa, CPU) about 140-155 frames/s, Push-T about 105-110
frames/s, i.e. 20 000 frames in about 2-3 minutes, once: data sets are cached (:func:`collect_pixels`). Frames are deterministic for one machine and
library versions (same state -> same bytes); another OpenGL driver may shade the maze a little differently.

Requires the ``envs`` extra (gymnasium-robotics, mujoco, gym-pusht; gym-pusht brings pygame, pymunk and
opencv-python).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import platform
from typing import Optional, Union

import numpy as np

from .sim import PUSHT_POSITION_SCALE, PointMazeEnv, PushTEnv, check_env_name, default_mujoco_gl

FRAME_SIZE = 64
# Bump when frames of the same state change (camera, colours, resize) or the collection does (2: Push-T keeps
# in-frame trajectories only); cached data sets record it and a
# file with another version is rejected rather than silently mixed with new frames.
RENDER_VERSION = 2
STATE_DIMS = {"pointmaze-umaze": 4, "pointmaze-medium": 4, "pointmaze-large": 4, "pusht": 6}
ACTION_DIM = 2
# gym-pusht's canvas (its world is 512 x 512 px, drawn 1:1).
PUSHT_CANVAS = 512
# Push-T frames whose block centre lies closer than this to the canvas edge are not collected (in_frame).
PUSHT_FRAME_MARGIN = 32.0

PathLike = Union[str, os.PathLike]


# ---------------------------------------------------------------------------------------------- checks


def check_size(size: object, name: str = "size") -> int:
    """A frame side length: a positive int (not a bool)."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {type(size).__name__} {size!r}")
    if size < 1:
        raise ValueError(f"{name} must be a positive int, got {size}")
    return int(size)


def check_states(env_name: str, states: object, name: str = "states", batched: bool = True) -> np.ndarray:
    """Planning states of ``env_name`` as float64: ``[N, D]`` (``batched``) or ``[D]``; finite floats only."""
    key = check_env_name(env_name)
    dim = STATE_DIMS[key]
    if not isinstance(states, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of {key} states, got {type(states).__name__}")
    if not np.issubdtype(states.dtype, np.floating):
        raise TypeError(f"{name} must have a floating dtype (float32 or float64), got {states.dtype}")
    expected = (None, dim) if batched else (dim,)
    if states.ndim != len(expected) or states.shape[-1] != dim:
        text = f"[N, {dim}]" if batched else f"[{dim}]"
        raise ValueError(f"{name} must have shape {text} for {key}, got {states.shape}")
    if not np.all(np.isfinite(states)):
        raise ValueError(f"{name} contains {int((~np.isfinite(states)).sum())} NaN/Inf value(s)")
    if key == "pusht":
        # (cos, sin) of the block angle: a zero vector has no angle.
        norm = np.hypot(states[..., 4], states[..., 5])
        if np.any(norm < 1e-6):
            raise ValueError(f"{name}: the block angle's (cos, sin) (columns 4, 5) must not be (0, 0)")
    return states.astype(np.float64, copy=False)


def check_frames(frames: object, size: Optional[int] = None, name: str = "frames") -> np.ndarray:
    """RGB frames ``[..., size, size, 3]`` uint8 (any leading dims); ``size`` None accepts any square size."""
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of RGB frames, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8 (RGB 0-255), got {frames.dtype}")
    side = frames.shape[-2] if frames.ndim >= 3 else None
    want = side if size is None else check_size(size)
    if frames.ndim < 3 or frames.shape[-3:] != (want, want, 3):
        text = "S, S" if size is None else f"{want}, {want}"
        raise ValueError(f"{name} must have shape [..., {text}, 3] (square RGB), got {frames.shape}")
    return frames


# ------------------------------------------------------------------------------------------- renderers


def _gl_context_class() -> type:
    """The OpenGL context class for MuJoCo's offscreen rendering.

    MuJoCo binds its own choice (``MUJOCO_GL``, default GLFW) when it is first imported, which may have happened
    before this module could set ``MUJOCO_GL=egl`` (another package imported mujoco first). On Linux without a
    display, unless the user chose a backend other than EGL, take the EGL context directly so that rendering does
    not depend on import order; otherwise use MuJoCo's own choice.
    """
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    headless = platform.system() == "Linux" and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")
    if chosen == "egl" or (headless and chosen == ""):
        from mujoco.egl import GLContext

        return GLContext
    from mujoco.gl_context import GLContext

    return GLContext


def _load_triton_before_gl() -> None:
    """Import Triton (if installed) before the first GL context. Mesa's EGL driver (llvmpipe) loads its own
    LLVM into the process; Triton's ``libtriton`` loaded after it crashes the process (a segmentation fault
    in ``import triton``, seen with Mesa llvmpipe and triton 3.9), while the other order works. Triton is
    imported lazily by the kernels and by ``torch._dynamo``, so a rendering program could otherwise crash on
    its first compiled or Triton call."""
    if importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton")


class _MazeRenderer:
    """MuJoCo offscreen rendering of one PointMaze layout from a top-down orthographic camera."""

    def __init__(self, key: str, size: int) -> None:
        default_mujoco_gl()
        import mujoco

        self._mujoco = mujoco
        # A simulator of our own: its model is modified (goal marker hidden, buffer size) and never stepped.
        self.env = PointMazeEnv(key.split("-", 1)[1])
        point = self.env._env.point_env
        self.model = point.model
        self.data = mujoco.MjData(self.model)
        target = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, "target")
        if target >= 0:
            # The goal marker would make a frame depend on the goal; the goal is given as its own image.
            self.model.site_rgba[target, 3] = 0.0
        rows, cols = self.env.maze_map.shape
        # Orthographic free camera: MuJoCo reads fovy as the visible height in metres.
        self.extent = max(rows, cols) * self.env.scaling
        # The ball one sees is the green site "particle_site" (radius 0.2; the collision sphere is invisible).
        # At 64 px a Large maze gives it under 2 px of radius; draw it at least 2 px wide in radius so that a
        # model can locate it (this model is only drawn, never stepped: collisions are unaffected).
        ball = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, "particle_site")
        if ball >= 0:
            self.model.site_size[ball, 0] = max(float(self.model.site_size[ball, 0]), 2.0 * self.extent / size)
        self.model.vis.global_.fovy = self.extent
        self.model.vis.global_.offwidth = max(int(self.model.vis.global_.offwidth), size)
        self.model.vis.global_.offheight = max(int(self.model.vis.global_.offheight), size)
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        self.camera.orthographic = 1
        self.camera.lookat[:] = (0.0, 0.0, 0.0)  # gymnasium-robotics centres the maze on the origin
        self.camera.distance = 2.0 * self.extent
        self.camera.elevation = -90.0
        self.camera.azimuth = 90.0  # image right = world +x, image up = world +y
        self.option = mujoco.MjvOption()
        self.scene = mujoco.MjvScene(self.model, maxgeom=1000)
        self.rect = mujoco.MjrRect(0, 0, size, size)
        self._rgb = np.empty((size, size, 3), dtype=np.uint8)
        _load_triton_before_gl()
        try:
            self.gl = _gl_context_class()(size, size)
            self.gl.make_current()
            self.context = mujoco.MjrContext(self.model, mujoco.mjtFontScale.mjFONTSCALE_150)
        except Exception as error:  # the GL backend's own errors (GLFW without a display, EGL missing)
            raise RuntimeError(
                f"MuJoCo cannot render offscreen here ({type(error).__name__}: {error}); on a machine without a "
                f"display it needs EGL (libEGL, e.g. Mesa) and MUJOCO_GL unset or 'egl' "
                f"(now MUJOCO_GL={os.environ.get('MUJOCO_GL')!r})"
            ) from error
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self.context)

    def world_to_pixel(self, xy: np.ndarray, size: int) -> np.ndarray:
        """World ``(x, y) [..., 2]`` -> pixel ``(col, row) [..., 2]`` (continuous, pixel centres at .5)."""
        xy = np.asarray(xy, dtype=np.float64)
        col = (xy[..., 0] / self.extent + 0.5) * size
        row = (0.5 - xy[..., 1] / self.extent) * size
        return np.stack([col, row], axis=-1)

    def render(self, state: np.ndarray, out: np.ndarray) -> None:
        self.data.qpos[:] = state[:2]
        self.data.qvel[:] = state[2:4]
        mujoco = self._mujoco
        mujoco.mj_forward(self.model, self.data)
        # Several renderers may live in one process (one per environment and size): each owns a context.
        self.gl.make_current()
        mujoco.mjv_updateScene(self.model, self.data, self.option, None, self.camera, mujoco.mjtCatBit.mjCAT_ALL,
                               self.scene)
        mujoco.mjr_render(self.rect, self.scene, self.context)
        mujoco.mjr_readPixels(self._rgb, None, self.rect, self.context)
        out[:] = self._rgb[::-1]  # OpenGL's rows run bottom-up

    def close(self) -> None:
        self.gl.make_current()
        self.context.free()
        self.gl.free()
        self.env.close()


class _PushTRenderer:
    """gym-pusht's own pygame drawing of the pymunk scene, set to a planning state, downsampled by area."""

    def __init__(self, size: int) -> None:
        import cv2
        import pygame
        from gym_pusht.envs.pymunk_override import DrawOptions

        self._cv2, self._pygame = cv2, pygame
        self.size = size
        self.env = PushTEnv()
        self.sim = self.env._env  # the unwrapped gym-pusht environment: its pymunk space and bodies
        self.surface = pygame.Surface((PUSHT_CANVAS, PUSHT_CANVAS))
        self.options = DrawOptions(self.surface)

    def render(self, state: np.ndarray, out: np.ndarray) -> None:
        s = PUSHT_POSITION_SCALE
        sim = self.sim
        # Angle before position, as PushTEnv.reset_to does (pymunk turns a body about its centre of gravity).
        sim.block.angle = math.atan2(state[5], state[4])
        sim.block.position = (state[2] * s, state[3] * s)
        sim.agent.position = (state[0] * s, state[1] * s)
        # pymunk draws shapes from their cached world vertices, which a space step would refresh; refresh them
        # without stepping, since a step would resolve contacts and move the bodies away from the state.
        for body in (sim.block, sim.agent):
            for shape in body.shapes:
                shape.cache_bb()
        self.surface.fill((255, 255, 255))
        sim.space.debug_draw(self.options)
        canvas = self._pygame.surfarray.array3d(self.surface).transpose(1, 0, 2)
        if self.size == PUSHT_CANVAS:
            out[:] = canvas
        else:
            out[:] = self._cv2.resize(canvas, (self.size, self.size), interpolation=self._cv2.INTER_AREA)

    def close(self) -> None:
        self.env.close()


class FrameRenderer:
    """Renders planning states of one environment as RGB frames; keep one for repeated calls (an MPC loop).

    Args:
        env_name: ``pointmaze-umaze|medium|large`` or ``pusht``.
        size: frame side ``S`` in pixels (a positive int).
    """

    def __init__(self, env_name: str, size: int = FRAME_SIZE) -> None:
        self.env_name = check_env_name(env_name)
        self.size = check_size(size)
        self.state_dim = STATE_DIMS[self.env_name]
        if self.env_name == "pusht":
            self._impl: Union[_MazeRenderer, _PushTRenderer] = _PushTRenderer(self.size)
        else:
            self._impl = _MazeRenderer(self.env_name, self.size)

    def render(self, states: np.ndarray, progress: bool = False) -> np.ndarray:
        """``states [N, D]`` float -> frames ``[N, S, S, 3]`` uint8."""
        states = check_states(self.env_name, states)
        frames = np.empty((len(states), self.size, self.size, 3), dtype=np.uint8)
        indices = range(len(states))
        if progress:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc=f"render {self.env_name}", unit="frame", leave=False)
        for i in indices:
            self._impl.render(states[i], frames[i])
        return frames

    def close(self) -> None:
        """Release the simulator (and the GL context)."""
        self._impl.close()


# One renderer per (environment, size) for the module-level functions: building one costs a simulator and,
# for PointMaze, a GL context (~0.1-0.7 s).
_RENDERERS: dict[tuple[str, int], FrameRenderer] = {}


def _renderer(env_name: str, size: int) -> FrameRenderer:
    key = (check_env_name(env_name), check_size(size))
    if key not in _RENDERERS:
        _RENDERERS[key] = FrameRenderer(*key)
    return _RENDERERS[key]


def render_states(env_name: str, states: np.ndarray, size: int = FRAME_SIZE, progress: bool = False) -> np.ndarray:
    """Frames of planning states.

    Args:
        env_name: ``pointmaze-umaze|medium|large`` or ``pusht``.
        states: ``[N, D]`` float32/float64 planning states (``D`` = 4 for PointMaze, 6 for Push-T).
        size: frame side ``S`` (a positive int).
        progress: show a tqdm bar.

    Returns:
        ``[N, S, S, 3]`` uint8 RGB frames; equal states give equal frames.
    """
    check_states(env_name, states)
    return _renderer(env_name, size).render(states, progress=progress)


def goal_frame(env_name: str, goal: np.ndarray, size: int = FRAME_SIZE) -> np.ndarray:
    """The goal image of one goal state ``goal [D]`` -> ``[S, S, 3]`` uint8 (the frame of that state)."""
    goal = check_states(env_name, goal, name="goal", batched=False)
    return render_states(env_name, goal[None], size=size)[0]


def pointmaze_world_to_pixel(env_name: str, xy: np.ndarray, size: int = FRAME_SIZE) -> np.ndarray:
    """PointMaze world ``(x, y) [..., 2]`` -> continuous pixel ``(col, row) [..., 2]`` of its frames."""
    key = check_env_name(env_name)
    if key == "pusht":
        raise ValueError("env_name must be a PointMaze environment for pointmaze_world_to_pixel, got 'pusht'")
    return _renderer(key, size)._impl.world_to_pixel(xy, check_size(size))


# ------------------------------------------------------------------------------------------------ data
