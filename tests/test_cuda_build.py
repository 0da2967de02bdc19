"""The optional CUDA module grasp_kernels._cuda: built where nvcc exists, clean errors without a GPU.

CPU tests (they run in CI). A broken build cannot hide behind a skip: where nvcc is present (and
GRASP_KERNELS_BUILD_CUDA is not 0) the module must import. Runtime checks against the reference are
in tests/ops/test_<op>.py and tests/ops/test_cuda_runtime.py (marked gpu); the ops' argument checks
(formerly the CUDA launchers' own) in tests/ops/test_op_checks.py.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

import grasp_kernels
from _cuda_helpers import build_expected, cuda_module, find_nvcc, philox_normal
from grasp_kernels import backends
from grasp_kernels.ops import AdamHyper, NoiseCounters

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_module_built_when_nvcc_present():
    if not build_expected():
        pytest.skip("no nvcc (or GRASP_KERNELS_BUILD_CUDA=0): the CUDA module is not expected")
    mod = cuda_module()
    assert mod.__file__.startswith(os.path.dirname(grasp_kernels.__file__)), mod.__file__
    assert backends.cuda_unavailable_reason() is None


def test_module_metadata():
    mod = cuda_module()
    archs = mod.compiled_architectures().split(";")
    if os.environ.get("GRASP_KERNELS_CUDA_ARCHS"):
        assert archs == os.environ["GRASP_KERNELS_CUDA_ARCHS"].split(";"), archs
    else:  # the default build: Ampere and Hopper machine code
        assert {"80", "90"} <= set(archs), archs
    assert not {"native", "all"} & set(archs), archs
    assert mod.rng_backend() in ("curand", "builtin")
    assert isinstance(mod.device_count(), int) and mod.device_count() >= 0


def _all_entry_points(mod):
    """Each kernel entry point called with harmless arguments (null pointers, small sizes)."""
    return {
        "energy_workspace_numel": lambda: mod.energy_workspace_numel(0, 1, 2, 3),
        "lifted_energy_fwd": lambda: mod.lifted_energy_fwd(0, 0, 0, False, 0, 0, 0, 0, 0, 0, 1, 2, 3, 1.0),
        "state_step": lambda: mod.state_step(0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 1, 0.1, 0.9, 0.999, 1e-8, 0.0, 0, 0, 12),
        "action_step": lambda: mod.action_step(0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 1, 0.1, 0.9, 0.999, 1e-8),
        "lifted_energy_state_step": lambda: mod.lifted_energy_state_step(
            0, 0, 0, False, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 1.0, 1, 0.1, 0.9, 0.999, 1e-8, 0.0, 0, 0, 3
        ),
        "philox_normal": lambda: mod.philox_normal(0, 0, 0, 4, 0, 0),
    }


def test_functions_report_no_device_cleanly():
    mod = cuda_module()
    if mod.device_count() > 0:
        pytest.skip("a CUDA device is present (the no-device path is not reachable)")
    for name, call in _all_entry_points(mod).items():
        with pytest.raises(RuntimeError, match="no CUDA device") as info:
            call()
        assert name in str(info.value), (name, str(info.value))


def test_bad_arguments_raise_value_error_before_launch():
    mod = cuda_module()
    if mod.device_count() == 0:
        pytest.skip("argument checks come after the device check; needs a device")
    with pytest.raises(ValueError):
        mod.lifted_energy_fwd(0, 0, 0, False, 0, 0, 0, 0, 0, 0, 1, 0, 3, 1.0)  # T = 0
    with pytest.raises(ValueError):
        mod.state_step(0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 1, 0.1, 0.9, 0.999, 1e-8, 0.0, 0, 0, 6)  # null pointers


def test_backend_reports_missing_module(monkeypatch):
    """Simulate a machine without the module: the package imports, cuda reports why and falls back."""
    monkeypatch.setitem(sys.modules, "grasp_kernels._cuda", None)  # import -> ImportError
    monkeypatch.delattr(grasp_kernels, "_cuda", raising=False)
    backends.cuda_unavailable_reason.cache_clear()
    try:
        reason = backends.cuda_unavailable_reason()
        assert reason is not None and "not built" in reason
        assert backends.backend_unavailable_reason("cuda", torch.device("cuda", 0)) == reason
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            backends._warned.clear()
            assert backends.resolve_backend("cuda", torch.device("cpu")) in ("reference", "triton")
        assert any("cuda" in str(w.message) for w in caught)

        from grasp_kernels.ops import _cuda_common
        from grasp_kernels.ops.state_step import cuda_launch

        stub = importlib.reload(_cuda_common)
        assert not stub.available()
        with pytest.raises(RuntimeError, match="not built"):
            cuda_launch.launch(None, None, None, None, 1, AdamHyper(0.1), 0.0, None, NoiseCounters(0))
    finally:
        backends.cuda_unavailable_reason.cache_clear()
        monkeypatch.undo()
        backends._warned.clear()
        from grasp_kernels.ops import _cuda_common

        importlib.reload(_cuda_common)


@pytest.mark.parametrize(
    "flag,with_nvcc,ok,message",
    [
        ("0", True, True, "skipping"),
        ("", False, True, "nvcc not found"),
        ("1", False, False, "nvcc was not found"),
    ],
)
def test_setup_build_switch(flag, with_nvcc, ok, message, tmp_path):
    """setup.py's GRASP_KERNELS_BUILD_CUDA logic (metadata only: nothing is compiled)."""
    env = dict(os.environ)
    env["GRASP_KERNELS_BUILD_CUDA"] = flag
    if not with_nvcc:
        env.pop("CUDACXX", None)
        env.pop("CUDA_HOME", None)
        env.pop("CUDA_PATH", None)
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                      if p and not os.path.exists(os.path.join(p, "nvcc")))
    proc = subprocess.run(
        [sys.executable, "setup.py", "--name"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    out = proc.stdout + proc.stderr
    assert (proc.returncode == 0) == ok, out
    assert message in out, out


# ------------------------------------------------------------------------------- Philox known answers

# Random123 (D. E. Shaw Research) tests/kat_vectors, "philox4x32 10" lines: counter words 0-3, key
# words 0-1, expected output words 0-3.
PHILOX_KAT = [
    ("00000000 00000000 00000000 00000000", "00000000 00000000", "6627e8d5 e169c58d bc57ac4c 9b00dbd8"),
    ("ffffffff ffffffff ffffffff ffffffff", "ffffffff ffffffff", "408f276d 41c83b0e a20bc7c6 6d5451fd"),
    ("243f6a88 85a308d3 13198a2e 03707344", "a4093822 299f31d0", "d16cfe09 94fdcceb 5001e420 24126ea1"),
]

KAT_PROGRAM = r"""
#include <cstdio>
#include "philox.cuh"
int main() {  // reads "c0 c1 c2 c3 k0 k1" (hex) lines, prints Philox4x32-10 of each
  unsigned c0, c1, c2, c3, k0, k1;
  while (std::scanf("%x %x %x %x %x %x", &c0, &c1, &c2, &c3, &k0, &k1) == 6) {
    const uint4 r = grasp::Philox4x32::block(make_uint4(c0, c1, c2, c3), make_uint2(k0, k1));
    std::printf("%08x %08x %08x %08x\n", r.x, r.y, r.z, r.w);
  }
  return 0;
}
"""


def _cuda_include_dir():
    """The CUDA include directory (cuda_runtime.h, for the vector types) for a host compiler."""
    roots = [os.environ.get(v) for v in ("CUDA_HOME", "CUDA_PATH")]
    nvcc = find_nvcc()
    if nvcc:
        roots.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    roots.append("/usr/local/cuda")
    for root in roots:
        if root and os.path.isfile(os.path.join(root, "include", "cuda_runtime.h")):
            return os.path.join(root, "include")
    return None


def _kat_compile_command(compiler, src, exe):
    csrc = os.path.join(ROOT, "csrc")
    if compiler == "nvcc":
        nvcc = find_nvcc()
        return None if nvcc is None else [nvcc, "-std=c++17", "-O1", f"-I{csrc}", "-o", exe, src]
    gxx = shutil.which("g++") or shutil.which("c++")
    inc = _cuda_include_dir()
    if gxx is None or inc is None:
        return None
    return [gxx, "-std=c++17", "-O1", "-x", "c++", f"-I{csrc}", f"-I{inc}", "-o", exe, src]


@pytest.mark.parametrize("compiler", ["nvcc", "g++"])
def test_philox_known_answer_vectors(compiler, tmp_path):
    """csrc/philox.cuh's Philox4x32::block (the in-tree generator used when the toolkit has no
    curand_kernel.h) against the Random123 known-answer vectors, compiled as a host program: no GPU."""
    src, exe = str(tmp_path / "kat.cu"), str(tmp_path / "kat")
    with open(src, "w") as f:
        f.write(KAT_PROGRAM)
    cmd = _kat_compile_command(compiler, src, exe)
    if cmd is None:
        pytest.skip(f"{compiler} (with the CUDA headers) not found")
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, f"{' '.join(cmd)}\n{build.stdout}{build.stderr}"
    stdin = "".join(f"{ctr} {key}\n" for ctr, key, _ in PHILOX_KAT)
    run = subprocess.run([exe], input=stdin, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [out for _, _, out in PHILOX_KAT]


# ------------------------------------------------------------------------------- bindings on CPU


def test_launchers_bind_to_the_module_signatures(monkeypatch):
    """The Python launches' calls into the compiled module (each op's ``cuda_launch.launch`` and the
    tests' ``philox_normal``) match its pybind11 signatures (argument count and types), checked without a
    GPU: the device plumbing is stubbed so that each launch reaches its module call, which then stops at the module's own "no CUDA device" check, after pybind11 has bound
    the arguments (a mismatch raises TypeError instead)."""
    mod = cuda_module()
    if mod.device_count() > 0:
        pytest.skip("a CUDA device is present: the gpu tests of tests/ops/ run the launches for real")
    from _kernels import launches
    from grasp_kernels.ops import _cuda_common

    workspace = _cuda_common.energy_workspace
    for module in [_cuda_common] + [importlib.import_module(f"grasp_kernels.ops.{op}.cuda_launch") for op in
                                    ("lifted_energy", "state_step", "action_step", "lifted_energy_state_step")]:
        monkeypatch.setattr(module, "launch_context", lambda device: (0, 0), raising=False)
        if hasattr(module, "energy_workspace"):
            monkeypatch.setattr(module, "energy_workspace", lambda *args: (None, 0, 0))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    cuda = launches("cuda")
    g = torch.Generator().manual_seed(0)
    states = torch.randn(2, 4, 3, generator=g)
    pred, noise = torch.randn(2, 3, 3, generator=g), torch.randn(2, 2, 3, generator=g)
    actions = torch.randn(2, 3, 2, generator=g)
    adam = (1, AdamHyper(0.1, 0.9, 0.999, 1e-8))
    calls = {
        "lifted_energy": lambda: cuda.lifted_energy(
            pred, states, 1.0, torch.empty(2), torch.empty_like(pred), torch.empty_like(states)),
        "state_step (seeded)": lambda: cuda.state_step(
            states, states.clone(), states.clone(), states.clone().abs(), *adam, 0.1, None,
            NoiseCounters(5).for_states(states)),
        "state_step (noise tensor)": lambda: cuda.state_step(
            states, states.clone(), states.clone(), states.clone().abs(), *adam, 0.1, noise,
            NoiseCounters().for_states(states)),
        "action_step": lambda: cuda.action_step(
            actions, actions.clone(), actions.clone(), actions.clone().abs(), *adam, torch.full((2,), -1.0),
            torch.ones(2)),
        "lifted_energy_state_step": lambda: cuda.lifted_energy_state_step(
            pred, states, 1.0, torch.empty(2), torch.empty_like(pred), states.clone(), states.clone().abs(), *adam,
            0.1, None, NoiseCounters(5).for_states(states)),
        "philox_normal": lambda: philox_normal((4, 3), 7, torch.device("cpu")),
        "energy_workspace_numel": lambda: workspace(mod, 0, torch.device("cpu"), 2, 3, 3),
    }
    for name, call in calls.items():
        with pytest.raises(RuntimeError, match="no CUDA device"):  # a binding mismatch is a TypeError
            call()
