"""Build script of grasp_kernels.

The pure-Python package (reference, planner, Triton kernels) installs anywhere with ``pip install -e .``.

The optional CUDA module ``grasp_kernels._cuda`` (csrc/ kernels + python/ pybind11 bindings) is built by
CMake (CMakeLists.txt) when nvcc is found, and placed inside the ``grasp_kernels`` package (in the
source tree for editable installs). ``GRASP_KERNELS_BUILD_CUDA``:

* unset: build it when nvcc is found (``$CUDACXX``, ``PATH``, ``$CUDA_HOME/bin``), skip cleanly otherwise;
* ``0``: never build it;
* ``1``: build it; a missing nvcc, CMake or pybind11 is an error.

``GRASP_KERNELS_CUDA_ARCHS`` (default ``80;90``) sets ``CMAKE_CUDA_ARCHITECTURES``; ``CMAKE_BUILD_PARALLEL_LEVEL``
the build jobs (default: all cores). The build needs CMake >= 3.22 and pybind11, never torch.
Without the module the ``cuda`` backend reports itself unavailable with a reason.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
FLAG = "GRASP_KERNELS_BUILD_CUDA"


def _flag() -> str:
    value = os.environ.get(FLAG, "").strip().lower()
    if value in ("", "auto"):
        return "auto"
    if value in ("0", "false", "no", "off"):
        return "off"
    if value in ("1", "true", "yes", "on"):
        return "on"
    raise SystemExit(f"{FLAG} must be 0, 1 or unset, got {os.environ[FLAG]!r}")


def _find_nvcc():
    candidates = [os.environ.get("CUDACXX"), shutil.which("nvcc")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", "nvcc"))
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _say(message: str) -> None:
    print(f"grasp_kernels: {message}", file=sys.stderr, flush=True)


def _cuda_extensions():
    mode = _flag()
    if mode == "off":
        _say(f"{FLAG}=0: skipping the CUDA module grasp_kernels._cuda")
        return []
    if _find_nvcc() is None:
        if mode == "on":
            raise SystemExit(f"grasp_kernels: {FLAG}=1 but nvcc was not found (set CUDACXX, PATH or CUDA_HOME)")
        _say("nvcc not found: skipping the CUDA module grasp_kernels._cuda (the cuda backend will be unavailable)")
        return []
    if _find_cmake() is None and mode == "auto":
        _say("nvcc found but CMake is missing: skipping the CUDA module grasp_kernels._cuda (install cmake to build it)")
        return []
    return [CMakeExtension("grasp_kernels._cuda")]


def _find_cmake():
    """The cmake executable: on PATH, else from the `cmake` PyPI package; None if neither."""
    cmake = shutil.which("cmake")
    if cmake is None:
        try:
            import cmake as cmake_pkg  # type: ignore

            cmake = os.path.join(cmake_pkg.CMAKE_BIN_DIR, "cmake")
        except ImportError:
            return None
    return cmake


class CMakeExtension(Extension):
    """An extension built by CMakeLists.txt rather than by setuptools' compiler."""

    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Runs CMake for CMakeExtension; a failure names the fix (GRASP_KERNELS_BUILD_CUDA=0 skips the module)."""

    def build_extension(self, ext):
        if not isinstance(ext, CMakeExtension):
            return super().build_extension(ext)
        nvcc = _find_nvcc()
        cmake = _find_cmake()
        if cmake is None:
            raise SystemExit(f"grasp_kernels: nvcc found but CMake is missing (install cmake, or set {FLAG}=0)")
        try:
            import pybind11
        except ImportError:
            raise SystemExit(f"grasp_kernels: nvcc found but pybind11 is missing (pip install pybind11, or set {FLAG}=0)")

        out_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        tag = f"{sys.implementation.cache_tag}-{sysconfig.get_platform()}"
        build_dir = ROOT / "build" / f"cuda-{tag}"  # persistent: rebuilds are incremental
        build_dir.mkdir(parents=True, exist_ok=True)
        archs = os.environ.get("GRASP_KERNELS_CUDA_ARCHS", "80;90")
        args = [
            f"-DCMAKE_CUDA_COMPILER={nvcc}",
            f"-DCMAKE_CUDA_ARCHITECTURES={archs}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        if not (build_dir / "CMakeCache.txt").exists() and shutil.which("ninja"):
            args.append("-GNinja")
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 2)
        start = time.time()
        _say(f"building grasp_kernels._cuda with {nvcc} for CUDA architectures {archs} ({jobs} jobs) in {build_dir}")
        try:
            subprocess.run([cmake, "-S", str(ROOT), "-B", str(build_dir), *args], check=True)
            subprocess.run([cmake, "--build", str(build_dir), "--config", "Release", "-j", jobs], check=True)
        except subprocess.CalledProcessError as exc:
            raise SystemExit(f"grasp_kernels: building the CUDA module failed ({exc}); set {FLAG}=0 to skip it")
        _say(f"built grasp_kernels._cuda in {time.time() - start:.1f} s -> {out_dir}")


setup(
    name="grasp_kernels",
    version="0.1.0",
    description="Fused Triton and CUDA kernels for GRASP, a parallel gradient-based planner for world models",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["grasp_kernels", "grasp_kernels.*"]),
    package_data={"grasp_kernels": ["weights/*.safetensors", "weights/*.json"]},
    # torch is deliberately unpinned here: `make setup` installs the CPU wheel 2.13.0 only when torch
    # is missing, so that pip never replaces a CUDA torch (or pulls one onto a CPU machine).
    install_requires=["torch>=2.4", "numpy>=1.24", "tqdm>=4.60", "safetensors>=0.4"],  # safetensors: the shipped world models
    extras_require={
        "triton": ["triton>=3.4"],  # 3.4: tl.randn on int64 offsets is the int32 stream (lo/hi words)
        "demo": ["matplotlib>=3.7"],
        "bench": ["pytest-benchmark>=4.0", "matplotlib>=3.7"],
        "dev": ["pytest>=7.4", "pytest-benchmark>=4.0", "pytest-xdist>=3.5", "matplotlib>=3.7", "hypothesis>=6.0"],
        # The real simulators (PointMaze on MuJoCo, Push-T on pymunk); none of them depends on torch.
        "envs": ["gymnasium-robotics>=1.4", "mujoco>=3.1", "gym-pusht>=0.1.5"],
        # torch-free dependencies of the adapters' host libraries; the libraries themselves
        # (stable-worldmodel, torchrl, tensordict) depend on torch and are installed with --no-deps by
        # `make integrations` so that pip never replaces torch.
        "integrations": ["gymnasium>=1.0", "loguru>=0.7", "einops>=0.8", "pyvers>=0.2.3", "cloudpickle>=2.0"],
    },
    entry_points={"console_scripts": ["grasp-kernels=grasp_kernels.cli:main"]},
    ext_modules=_cuda_extensions(),
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
