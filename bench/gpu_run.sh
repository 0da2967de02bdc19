#!/usr/bin/env bash
# One scripted command for a GPU machine (issue 6): build grasp_kernels._cuda there, run the GPU
# tests, compute-sanitizer (memcheck + racecheck) over the CUDA op tests, and the op benchmark.
#
#   bash bench/gpu_run.sh                 # logs under $OUT (default out/gpu_run), tables under bench/results/
#
# Works offline (pip --no-build-isolation --no-deps: setuptools, pybind11, cmake and nvcc must already
# be there, as on this workplace's GPU image). Exit status: 0 when every step passed, else 1; each
# step's log is kept either way and summary.txt lists PASS/FAIL per step.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
OUT=${OUT:-$ROOT/out/gpu_run}
mkdir -p "$OUT" bench/results
for d in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer; do [ -d "$d" ] && PATH="$PATH:$d"; done
export PATH PYTHONUNBUFFERED=1
STAMP=$(date -u +%Y-%m-%d)
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
FAILED=0

step() {  # step NAME LOGFILE CMD...: run, record PASS/FAIL and the tail of the log
  local name=$1 logf=$2; shift 2
  local t0=$SECONDS
  "$@" > "$logf" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then echo "PASS $name ($((SECONDS - t0)) s)" | tee -a "$SUMMARY"
  else echo "FAIL $name (rc $rc, $((SECONDS - t0)) s): see $(basename "$logf")" | tee -a "$SUMMARY"; FAILED=1; tail -n 40 "$logf"; fi
  return $rc
}

# 0. what the machine is
{
  date -u
  nvidia-smi || true
  command -v nvcc && nvcc --version
  command -v compute-sanitizer || echo "compute-sanitizer not on PATH"
  "$PY" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
  "$PY" -c "import triton; print('triton', triton.__version__)" || true
} > "$OUT/env.txt" 2>&1
DEVICE=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '_'))" 2>/dev/null || echo unknown)

# 1. build the module here (nvcc required: a missing nvcc is an error)
step build "$OUT/build.log" env GRASP_KERNELS_BUILD_CUDA=1 CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  "$PY" -m pip install --no-build-isolation --no-deps -v -e . || { echo "build failed: nothing else to run"; exit 1; }
"$PY" -c "import grasp_kernels._cuda as c; print(c.__file__, c.compiled_architectures(), c.rng_backend(), c.device_count())" \
  >> "$OUT/env.txt" 2>&1
# registers / spills / shared memory per kernel, as built
SO=$(ls grasp_kernels/_cuda*.so | head -n 1)
command -v cuobjdump > /dev/null && cuobjdump --dump-resource-usage "$SO" > "$OUT/resource_usage.txt" 2>&1

# 2. GPU tests: the CUDA ops first, then every gpu-marked test of the suite
step pytest_cuda_ops "$OUT/pytest_cuda_ops.log" "$PY" -m pytest -q -rs -m gpu tests/test_cuda_ops.py tests/test_cuda_build.py
step pytest_gpu_all "$OUT/pytest_gpu_all.log" "$PY" -m pytest -q -rs -m gpu tests

# 3. compute-sanitizer over the CUDA op tests (trimmed shape grid; no caching allocator for memcheck so
#    that out-of-bounds accesses hit unallocated memory)
if command -v compute-sanitizer > /dev/null; then
  SAN_TESTS=(tests/test_cuda_ops.py -q -x -k "not statistics and not triton")
  step memcheck "$OUT/sanitizer_memcheck.log" env GRASP_CUDA_TESTS_QUICK=1 PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
    compute-sanitizer --tool memcheck --error-exitcode 9 --target-processes all "$PY" -m pytest "${SAN_TESTS[@]}"
  step racecheck "$OUT/sanitizer_racecheck.log" env GRASP_CUDA_TESTS_QUICK=1 \
    compute-sanitizer --tool racecheck --racecheck-report all --error-exitcode 9 --target-processes all \
    "$PY" -m pytest "${SAN_TESTS[@]}"
else
  echo "SKIP compute-sanitizer (not found)" | tee -a "$SUMMARY"; FAILED=1
fi

# 4. op benchmark (bench/op_speed.py, the Triton issue's script with its cuda provider column)
if [ -f bench/op_speed.py ]; then
  TABLE=bench/results/op_speed_${DEVICE}_${STAMP}.md
  step op_speed "$OUT/op_speed.log" "$PY" bench/op_speed.py --out "$TABLE" && cp "$TABLE" "$OUT/" 2>/dev/null
else
  echo "SKIP op_speed (bench/op_speed.py not present)" | tee -a "$SUMMARY"
fi

cp "$SUMMARY" "bench/results/gpu_run_cuda_${DEVICE}_${STAMP}.txt"
echo "logs: $OUT"
exit $FAILED
