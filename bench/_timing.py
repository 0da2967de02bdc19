"""Timing helpers shared by the benchmark scripts (bench/op_speed.py, bench/planner_speed.py).

Medians only: ``triton.testing.do_bench`` on a GPU (CUDA events, warm-up), on
the CPU either the wall clock (a few repetitions) or ``torch.utils.benchmark`` when a minimum run time
is given. The physical rates every floor divides by are measured here, in the same run: the device
copy bandwidth (``dst.copy_(src)``, read + write) and a large matmul's FLOP rate.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable, Optional

import torch


def time_ms(fn: Callable[[], object], device: torch.device, quick: bool = False,
            min_run_time: Optional[float] = None) -> float:
    """Median milliseconds of ``fn``: triton.testing.do_bench on a GPU; on the CPU
    torch.utils.benchmark (``blocked_autorange(min_run_time)``) when ``min_run_time`` is given, else
    the wall clock over 3 (``quick``) or 10 repetitions after one warm-up call."""
    if torch.device(device).type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    fn()  # warm-up
    if min_run_time is not None:
        from torch.utils import benchmark

        timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
        return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3
    reps = 3 if quick else 10
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def copy_bandwidth_gbs(device: torch.device, quick: bool) -> float:
    """Device copy bandwidth, ``dst.copy_(src)``: bytes read + written per second (GB/s)."""
    n = (1 << 20) if quick else (1 << 27)  # 4 MB on the CPU smoke run, 512 MB on a GPU
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, quick)
    return 2 * n * 4 / (ms * 1e-3) / 1e9


def matmul_tflops(device: torch.device, dtype: torch.dtype, quick: bool) -> tuple[float, int]:
    """``(TFLOP/s, n)`` of one ``n x n @ n x n`` matmul in ``dtype`` (2 n^3 FLOPs), under the current
    precision settings (e.g. ``torch.backends.cuda.matmul.allow_tf32``)."""
    n = 512 if quick else 8192
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    ms = time_ms(lambda: torch.matmul(a, b, out=out), device, quick)
    return 2 * n**3 / (ms * 1e-3) / 1e12, n


def device_name(device: torch.device, interpreter_note: bool = True) -> str:
    """The GPU's name, or the CPU's (cores, threads, and whether Triton runs in its interpreter)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    extra = ", Triton interpreter" if interpreter_note and os.environ.get("TRITON_INTERPRET") == "1" else ""
    return (f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} threads{extra})")


def versions() -> str:
    """``torch X, triton Y, CUDA Z`` (triton "not installed" when missing)."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    return f"torch {torch.__version__}, triton {triton_version}, CUDA {torch.version.cuda}"


def write_report(text: str, out) -> None:
    """Write a benchmark's markdown ``text`` to ``out`` (a Path; its folder is created) and say so."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
