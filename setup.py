"""Build script of grasp_kernels.

The pure-Python package (reference, planner, Triton kernels) installs anywhere with ``pip install -e .``.
"""

from setuptools import find_packages, setup

setup(
    name="grasp_kernels",
    version="0.1.0",
    description="Fused Triton and CUDA kernels for GRASP, a parallel gradient-based planner for world models",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["grasp_kernels", "grasp_kernels.*"]),
    # torch is deliberately unpinned here: `make setup` installs the CPU wheel 2.13.0 only when torch
    # is missing, so that pip never replaces a CUDA torch (or pulls one onto a CPU machine).
    install_requires=["torch>=2.4", "numpy>=1.24", "tqdm>=4.60"],
    extras_require={
        "triton": ["triton>=3.2"],
        "demo": ["matplotlib>=3.7"],
        "bench": ["pytest-benchmark>=4.0", "matplotlib>=3.7"],
        "dev": ["pytest>=7.4", "pytest-benchmark>=4.0", "matplotlib>=3.7", "safetensors>=0.4"],
        "envs": [],
    },
    entry_points={"console_scripts": ["grasp-kernels=grasp_kernels.cli:main"]},
)
