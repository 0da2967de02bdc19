"""The compiled CUDA module ``grasp_kernels._cuda`` and what every op's ``cuda_launch.launch`` shares.

The kernels live in ``csrc/`` (one file per kernel family) and are exposed by the pybind11 module
``grasp_kernels._cuda``, built by CMake through ``setup.py`` when nvcc is found. The module links
only the CUDA runtime, not torch: it takes raw device pointers, sizes, scalars, the device index and
the CUDA stream as ints. The op bodies have validated every tensor (dtype, shape, contiguity, one
CUDA device) and entered the tensors' device before a launch runs.

Noise drawn in-kernel (``noise is None`` and ``noise_std > 0``): element ``n`` of the flattened
``[B, T-1, D]`` noise is lane ``n % 4`` of ``curand_normal4`` after ``curand_init(seed, n // 4, 0)``
(Philox4x32-10; ``grasp_kernels._cuda.rng_backend()`` says whether curand's header or the in-tree
equivalent produced it). The same seed gives the same bits, in ``state_step`` and in the fused op.

Determinism of the energy: ``energy`` is reduced without atomics (fixed warp-shuffle trees, then a
fixed chunk order), so repeated calls give identical bits *on one device with the same pointer
alignment*. The bits are not portable across devices or layouts: the number of chunks a plan is cut
into depends on the device's SM count (``energy_workspace_numel``), and the summation order inside a
block differs between the 16-byte vector path (``D % 4 == 0`` and aligned pointers) and the scalar
fallback. Gradients and the state/action steps are elementwise and depend on neither.

Devices: the compiled module makes the launch's device current only for the duration of the call and
restores the previous one (its static CUDA runtime shares the per-thread driver context with torch's).
"""

from __future__ import annotations

from typing import Optional

import torch

from ._params import NoiseCounters

try:
    from .. import _cuda
except ImportError as _exc:  # optional: built only where nvcc exists
    _cuda = None
    _IMPORT_ERROR: Optional[ImportError] = _exc
else:
    _IMPORT_ERROR = None

SEED_MASK = (1 << 64) - 1


def available() -> bool:
    """True when the compiled module ``grasp_kernels._cuda`` was imported."""
    return _cuda is not None


def module():
    """The compiled module (RuntimeError saying why when it is not built)."""
    if _cuda is None:
        raise RuntimeError(f"the CUDA module grasp_kernels._cuda is not built ({_IMPORT_ERROR})")
    return _cuda


def launch_context(device: torch.device) -> tuple[int, int]:
    """``(device index, current stream handle)`` of a launch on ``device``."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    return index, torch.cuda.current_stream(index).cuda_stream


def noise_args(noise: Optional[torch.Tensor], counters: NoiseCounters, span: int) -> tuple[int, int, int, int]:
    """``(noise pointer or 0, seed as the module's uint64, counter base, counter stride)`` of a launch whose
    plans hold ``span = (T-1)*D`` noisy elements (``counters.stride`` None: ``span``): an explicit noise
    tensor wins over the seed."""
    stride = span if counters.stride is None else counters.stride
    if noise is not None:
        return noise.data_ptr(), 0, counters.base, stride
    return 0, int(counters.seed) & SEED_MASK, counters.base, stride


def energy_workspace(mod, index: int, device: torch.device, b: int, t: int, d: int) -> tuple[Optional[torch.Tensor], int, int]:
    """The per-chunk energy partials of a ``[B, T, D]`` launch: ``(tensor or None, pointer, numel)``."""
    numel = mod.energy_workspace_numel(index, b, t, d)
    if numel == 0:
        return None, 0, 0
    workspace = torch.empty(numel, device=device, dtype=torch.float32)
    return workspace, workspace.data_ptr(), numel
