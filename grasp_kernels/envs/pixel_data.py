"""The pixel data sets: rendered exploratory trajectories (:func:`collect_pixels`), cached as ``.npz`` files
outside git (:func:`cache_path`), saved and loaded with their shapes and render version checked (never
unpickled); Push-T keeps only trajectories whose block stays in the picture (:func:`in_frame`)."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .exploration import _check_count, check_policy, collect
from .pixels import (
    ACTION_DIM,
    FRAME_SIZE,
    PUSHT_CANVAS,
    PUSHT_FRAME_MARGIN,
    RENDER_VERSION,
    STATE_DIMS,
    PathLike,
    check_size,
    render_states,
)
from .sim import PUSHT_POSITION_SCALE, check_env_name, resolve_action_repeat


@dataclass(frozen=True)
class PixelDataset:
    """Exploratory trajectories with their frames.

    Attributes:
        env_name: the environment.
        seed: the collection seed.
        frames: ``[N, L+1, S, S, 3]`` uint8, ``frames[:, t]`` the frame of ``states[:, t]``.
        states: ``[N, L+1, D]`` float32 planning states.
        actions: ``[N, L, 2]`` float32 in ``[-1, 1]``, ``actions[:, t]`` taken between ``t`` and ``t+1``.
        action_repeat: simulator steps per model step (between ``t`` and ``t+1``).
        policy: the exploration policy (:func:`grasp_kernels.envs.exploration.collect`).
    """

    env_name: str
    seed: int
    frames: np.ndarray
    states: np.ndarray
    actions: np.ndarray
    action_repeat: int
    policy: str

    @property
    def size(self) -> int:
        return int(self.frames.shape[-2])


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/grasp_kernels/pixels`` (default ``~/.cache/grasp_kernels/pixels``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "grasp_kernels" / "pixels"


def cache_path(
    env_name: str, trajectories: int, length: int, seed: int, size: int = FRAME_SIZE,
    action_repeat: Optional[int] = None, policy: str = "mixed",
) -> Path:
    """Default cache file of a data set: ``<cache_dir>/<env>-s<seed>-n<N>-l<L>-<S>px-r<repeat>-<policy>.npz``."""
    key = check_env_name(env_name)
    repeat = resolve_action_repeat(key, action_repeat)
    return cache_dir() / f"{key}-s{int(seed)}-n{int(trajectories)}-l{int(length)}-{int(size)}px-r{repeat}-{policy}.npz"


def _expected(env_name: str, trajectories: int, length: int, size: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    d = STATE_DIMS[env_name]
    return {
        "frames": ((trajectories, length + 1, size, size, 3), np.dtype(np.uint8)),
        "states": ((trajectories, length + 1, d), np.dtype(np.float32)),
        "actions": ((trajectories, length, ACTION_DIM), np.dtype(np.float32)),
    }


_META = ("env_name", "seed", "render_version", "action_repeat", "policy")


def save_dataset(dataset: PixelDataset, path: PathLike) -> Path:
    """Write ``dataset`` to ``path`` (.npz, no pickle), byte-identical for equal data.

    ``np.savez`` stamps each member with the current time; the members here carry a fixed timestamp so
    that the same seed gives the same file. Written to a temporary name and renamed, so an interrupted
    write never leaves a truncated cache file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "frames": dataset.frames,
        "states": dataset.states,
        "actions": dataset.actions,
        "env_name": np.array(dataset.env_name),
        "seed": np.array(dataset.seed, dtype=np.int64),
        "render_version": np.array(RENDER_VERSION, dtype=np.int64),
        "action_repeat": np.array(dataset.action_repeat, dtype=np.int64),
        "policy": np.array(dataset.policy),
    }
    partial = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
    os.replace(partial, path)
    return path


def load_dataset(
    path: PathLike,
    env_name: Optional[str] = None,
    trajectories: Optional[int] = None,
    length: Optional[int] = None,
    size: Optional[int] = None,
    seed: Optional[int] = None,
    action_repeat: Optional[int] = None,
    policy: Optional[str] = None,
) -> PixelDataset:
    """Read a data set written by :func:`save_dataset`, without pickle; every array's shape and dtype is
    checked (against the given expectations where given), else ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pixel data set {str(path)!r} does not exist")
    # np.load reads anything that is not a zip or .npy as a pickle (and refuses); say what is wrong instead.
    if not zipfile.is_zipfile(path):
        raise ValueError(f"pixel data set {str(path)!r} is not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            wanted = {"frames", "states", "actions", *_META}
            if keys != wanted:
                raise ValueError(f"holds arrays {sorted(keys)}, expected exactly {sorted(wanted)}")
            arrays = {key: archive[key] for key in wanted}
    except ValueError as error:
        raise ValueError(f"pixel data set {str(path)!r}: {error}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"pixel data set {str(path)!r} is not a readable .npz file ({error})") from None

    def bad(text: str) -> ValueError:
        return ValueError(f"pixel data set {str(path)!r}: {text}")

    name = arrays["env_name"]
    if name.shape != () or name.dtype.kind != "U":
        raise bad(f"env_name must be a 0-d string array, got shape {name.shape} dtype {name.dtype}")
    try:
        stored_env = check_env_name(str(name))
    except ValueError as error:
        raise bad(str(error)) from None
    if env_name is not None and stored_env != check_env_name(env_name):
        raise bad(f"holds {stored_env!r} frames, expected {check_env_name(env_name)!r}")
    for key in ("seed", "render_version", "action_repeat"):
        if arrays[key].shape != () or arrays[key].dtype != np.int64:
            raise bad(f"{key} must be a 0-d int64 array, got shape {arrays[key].shape} dtype {arrays[key].dtype}")
    if arrays["policy"].shape != () or arrays["policy"].dtype.kind != "U":
        raise bad(f"policy must be a 0-d string array, got shape {arrays['policy'].shape} dtype {arrays['policy'].dtype}")
    stored_repeat, stored_policy = int(arrays["action_repeat"]), str(arrays["policy"])
    if action_repeat is not None and stored_repeat != int(action_repeat):
        raise bad(f"was collected with action_repeat {stored_repeat}, expected action_repeat {int(action_repeat)}")
    if policy is not None and stored_policy != policy:
        raise bad(f"was collected with exploration policy {stored_policy!r}, expected policy {policy!r}")
    if int(arrays["render_version"]) != RENDER_VERSION:
        raise bad(f"was rendered by renderer version {int(arrays['render_version'])}, this is version "
                  f"{RENDER_VERSION}; delete it to re-render")
    if seed is not None and int(arrays["seed"]) != int(seed):
        raise bad(f"was collected with seed {int(arrays['seed'])}, expected seed {int(seed)}")
    frames = arrays["frames"]
    if frames.ndim != 5:
        raise bad(f"frames must be [N, L+1, S, S, 3], got shape {frames.shape}")
    n = frames.shape[0] if trajectories is None else int(trajectories)
    l = frames.shape[1] - 1 if length is None else int(length)
    s = frames.shape[2] if size is None else int(size)
    for key, (shape, dtype) in _expected(stored_env, n, l, s).items():
        if arrays[key].shape != shape or arrays[key].dtype != dtype:
            raise bad(f"{key} must have shape {shape} and dtype {dtype}, got shape {arrays[key].shape} "
                      f"and dtype {arrays[key].dtype}")
    return PixelDataset(stored_env, int(arrays["seed"]), frames, arrays["states"], arrays["actions"], stored_repeat,
                        stored_policy)


def in_frame(env_name: str, states: np.ndarray) -> np.ndarray:
    """``[...]`` bool: the frame of each state shows what the planner needs. Push-T: the block's centre lies
    at least :data:`PUSHT_FRAME_MARGIN` px inside the canvas (the kinematic agent can push the block through
    the walls, out of the picture, where a frame no longer determines the state); PointMaze: always."""
    key = check_env_name(env_name)
    states = np.asarray(states)
    if key != "pusht":
        return np.ones(states.shape[:-1], dtype=bool)
    block = states[..., 2:4].astype(np.float64) * PUSHT_POSITION_SCALE
    return np.all((block >= PUSHT_FRAME_MARGIN) & (block <= PUSHT_CANVAS - PUSHT_FRAME_MARGIN), axis=-1)


def _collect_in_frame(
    key: str, trajectories: int, length: int, seed: int, progress: bool, action_repeat: int, policy: str
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`collect`'s trajectories whose every state is :func:`in_frame`, the first ``trajectories`` of
    them: trajectory ``i`` of :func:`collect` depends on ``(seed, i)`` only, so collecting more and keeping
    the visible ones in order is deterministic."""
    extra = 0 if key != "pusht" else max(4, trajectories // 8)
    while True:
        states, actions = collect(key, trajectories + extra, length, seed, progress=progress,
                                  action_repeat=action_repeat, policy=policy)
        keep = np.flatnonzero(in_frame(key, states).all(axis=1))
        if len(keep) >= trajectories:
            keep = keep[:trajectories]
            return states[keep], actions[keep]
        extra = 2 * extra + trajectories


def collect_pixels(
    env_name: str,
    trajectories: int,
    length: int,
    seed: int,
    size: int = FRAME_SIZE,
    path: Union[PathLike, None, bool] = None,
    progress: bool = False,
    action_repeat: Optional[int] = None,
    policy: str = "mixed",
) -> PixelDataset:
    """Exploratory trajectories (:func:`grasp_kernels.envs.exploration.collect`) with the frames of their
    states, cached. Push-T keeps only trajectories whose block stays in the picture (:func:`in_frame`).

    Args:
        env_name: ``pointmaze-umaze|medium|large`` or ``pusht``.
        trajectories: ``N`` (>= 1).
        length: ``L`` model steps per trajectory (>= 1).
        seed: equal seeds give equal data (and byte-identical cache files).
        size: frame side ``S``.
        path: the cache file; ``None`` uses :func:`cache_path`, ``False`` does not cache. An existing file is
            loaded (and checked against these arguments) instead of collecting again.
        progress: tqdm bars for the collection and the rendering.
        action_repeat: simulator steps per model step (>= 1); default the environment's.
        policy: the exploration policy (:func:`grasp_kernels.envs.exploration.collect`).

    Returns:
        A :class:`PixelDataset`: ``frames [N, L+1, S, S, 3]`` uint8, ``states [N, L+1, D]`` float32,
        ``actions [N, L, 2]`` float32.
    """
    key = check_env_name(env_name)
    trajectories = _check_count(trajectories, "trajectories")
    length = _check_count(length, "length")
    size = check_size(size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    action_repeat = resolve_action_repeat(key, action_repeat)
    policy = check_policy(key, policy)
    if path is None or path is True:
        path = cache_path(key, trajectories, length, int(seed), size, action_repeat, policy)
    if path is not False and Path(path).is_file():
        return load_dataset(path, env_name=key, trajectories=trajectories, length=length, size=size, seed=int(seed),
                            action_repeat=action_repeat, policy=policy)
    states, actions = _collect_in_frame(key, trajectories, length, int(seed), progress, action_repeat, policy)
    flat = states.reshape(-1, states.shape[-1])
    frames = render_states(key, flat, size=size, progress=progress).reshape(*states.shape[:2], size, size, 3)
    dataset = PixelDataset(key, int(seed), frames, states, actions, action_repeat, policy)
    if path is not False:
        save_dataset(dataset, path)
    return dataset
