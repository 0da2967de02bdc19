#!/usr/bin/env bash
# The GPU checks of issue 6 as one scripted command, splittable into steps: build grasp_kernels._cuda
# on the GPU machine, run the CPU build tests and every gpu-marked test, compute-sanitizer (memcheck,
# racecheck, initcheck, synccheck) over the CUDA op tests, and the op and planner benchmarks.
#
#   bash bench/gpu_run.sh                                    # every step
#   STEPS=build,tests bash bench/gpu_run.sh                  # some steps (one call of <= 600 s each, e.g.)
#   STEPS=memcheck,racecheck bash bench/gpu_run.sh
#   STEPS=initcheck,synccheck bash bench/gpu_run.sh
#   STEPS=bench bash bench/gpu_run.sh
#
# Steps (STEPS, comma-separated, default "all"):
#   build        pip install -e . (nvcc required) + per-kernel resource usage (cuobjdump)
#   tests        = build_tests,gpu_tests
#     build_tests  tests/test_cuda_build.py WITHOUT -m gpu (its tests are CPU tests; some need a device)
#     gpu_tests    pytest -m gpu tests/  (CUDA and Triton GPU tests, the whole suite)
#   sanitizer    = memcheck,racecheck,initcheck,synccheck  (compute-sanitizer over tests/test_cuda_ops.py,
#                  trimmed grid GRASP_CUDA_TESTS_QUICK=1, which still includes shapes whose grids loop;
#                  memcheck and initcheck then also run the fused MLP kernel's GPU tests, as the sub-steps
#                  memcheck_fused_mlp / initcheck_fused_mlp of the same call: not timed on a GPU yet, so
#                  split them into separate calls if one exceeds 600 s)
#   bench        = op_speed,planner_speed
#     op_speed       bench/op_speed.py (reference / Triton / CUDA / torch.compile table)
#     planner_speed  = planner_speed_mlp,planner_speed_transformer: bench/planner_speed.py --device cuda, every
#                    provider (a)-(g) in one table with floors and the issue-7 targets
#       planner_speed_mlp          --model mlp (MLPDynamics grid, B*T 1e3..1e6; several torch.compile runs)
#       planner_speed_transformer  --model transformer (DINO-WM shape, 196 tokens x 384, history 3)
# A step that needs the module builds it first when it is missing or older than csrc/, python/ or
# CMakeLists.txt (a fresh machine), so any subset runs on its own.
#
# Other knobs: PYTHON (default python3), OUT (default out/gpu_run), STEP_TIMEOUT (seconds per step,
# 0 = none; a step over it is stopped and marked FAIL so the summary is still written), BENCH_ARGS
# (extra arguments for both benchmarks, e.g. "--quick"), PLANNER_ARGS (extra arguments for planner_speed only,
# e.g. "--model-dtype bfloat16" or "--shapes 16,512,256,64 --providers loop eager triton fused_mlp").
#
# Output, few files (the device tool returns at most 8 from $OUT), names carrying device and date:
#   $OUT/gpu_run_<device>_<date>_summary.txt  PASS/FAIL per step, machine header
#   $OUT/gpu_run_<device>_<date>.log          every step's full output, in order, with headers
#   $OUT/op_speed_<device>_<date>.md          also bench/results/op_speed_<device>_<date>.md
#   $OUT/planner_speed_<device>_<date>.md     the mlp and transformer tables (also one file per model
#                                             under bench/results/)
# bench/results/gpu_run_cuda_<device>_<date>.txt accumulates the summaries of the day's calls.
#
# Works offline (pip --no-build-isolation --no-deps: setuptools, pybind11, cmake and nvcc must already
# be there, as on this workplace's GPU image). Exit status: 0 when every selected step passed, else 1.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
OUT=${OUT:-$ROOT/out/gpu_run}
STEPS=${STEPS:-all}
STEP_TIMEOUT=${STEP_TIMEOUT:-0}
BENCH_ARGS=${BENCH_ARGS:-}
PLANNER_ARGS=${PLANNER_ARGS:-}
mkdir -p "$OUT" bench/results
for d in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer; do [ -d "$d" ] && PATH="$PATH:$d"; done
export PATH PYTHONUNBUFFERED=1
STAMP=$(date -u +%Y-%m-%d)
DEVICE=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '_'))" 2>/dev/null || echo unknown)
DEVICE=${DEVICE//[^A-Za-z0-9_.-]/_}
BASE=gpu_run_${DEVICE}_${STAMP}
SUMMARY=$OUT/${BASE}_summary.txt
LOG=$OUT/${BASE}.log
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
FAILED=0

# ---------------------------------------------------------------- step selection
expand() {  # the selected steps, aliases expanded, in the canonical order
  local want=",$(echo "$STEPS" | tr -d ' '),"
  want=${want//,all,/,build,tests,sanitizer,bench,}
  want=${want//,tests,/,build_tests,gpu_tests,}
  want=${want//,sanitizer,/,memcheck,racecheck,initcheck,synccheck,}
  want=${want//,bench,/,op_speed,planner_speed,}
  want=${want//,planner_speed,/,planner_speed_mlp,planner_speed_transformer,}
  local known=" build build_tests gpu_tests memcheck racecheck initcheck synccheck op_speed planner_speed_mlp planner_speed_transformer "
  local s
  for s in ${want//,/ }; do
    case "$known" in *" $s "*) ;; *) echo "unknown step '$s' (known:$known, all, tests, sanitizer, bench, planner_speed)" >&2; exit 2;; esac
  done
  for s in $known; do case "$want" in *",$s,"*) echo "$s";; esac; done
}
SELECTED=$(expand) || exit 2
SELECTED=$(echo $SELECTED)
selected() { case " $SELECTED " in *" $1 "*) return 0;; esac; return 1; }

# ---------------------------------------------------------------- helpers
note() { echo "$*" | tee -a "$SUMMARY"; }

step() {  # step NAME CMD...: run (live into the combined log), record PASS/FAIL, print the tail on failure
  local name=$1; shift
  local t0=$SECONDS rc
  {
    echo
    echo "================================================================ step $name"
    echo "# $(date -u +%FT%TZ)  $*"
  } >> "$LOG"
  if [ "$STEP_TIMEOUT" != "0" ]; then
    timeout --signal=INT --kill-after=30 "$STEP_TIMEOUT" "$@" 2>&1 | tee "$TMP/$name.log" >> "$LOG"
  else
    "$@" 2>&1 | tee "$TMP/$name.log" >> "$LOG"
  fi
  rc=${PIPESTATUS[0]}
  local why=""
  if [ "$rc" -eq 0 ] && [ "${PYTEST_STEP:-0}" = 1 ] && ! tests_ran "$TMP/$name.log"; then
    rc=1
    why=", pytest exited 0 but ran no test or skipped tests for want of a backend, the module or the device: see its skip summary"
  fi
  echo "# step $name: rc $rc, $((SECONDS - t0)) s" >> "$LOG"
  if [ "$rc" -eq 0 ]; then
    note "PASS $name ($((SECONDS - t0)) s)"
  else
    [ "$rc" -eq 124 ] && why=", stopped after STEP_TIMEOUT=$STEP_TIMEOUT s"
    grep -q "Device not supported" "$TMP/$name.log" 2>/dev/null && why="$why, compute-sanitizer refused the device (runtime without sanitizer support?)"
    note "FAIL $name (rc $rc, $((SECONDS - t0)) s$why): see step $name in $(basename "$LOG")"
    FAILED=1
    tail -n 40 "$TMP/$name.log"
  fi
  return "$rc"
}

module_fresh() {  # the compiled module imports and is newer than its sources
  local so
  so=$(ls grasp_kernels/_cuda*.so 2>/dev/null | head -n 1)
  [ -n "$so" ] || return 1
  [ -z "$(find csrc python CMakeLists.txt setup.py -newer "$so" -type f 2>/dev/null | head -n 1)" ] || return 1
  "$PY" -c "import grasp_kernels._cuda" > /dev/null 2>&1
}

build() {
  step build env GRASP_KERNELS_BUILD_CUDA=1 CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$PY" -m pip install --no-build-isolation --no-deps -v -e . || return 1
  {
    echo
    echo "================================================================ module"
    "$PY" -c "import grasp_kernels._cuda as c; print(c.__file__, c.compiled_architectures(), c.rng_backend(), c.device_count())" 2>&1
    local so
    so=$(ls grasp_kernels/_cuda*.so | head -n 1)
    if command -v cuobjdump > /dev/null; then
      echo "================================================================ resource usage (cuobjdump)"
      cuobjdump --dump-resource-usage "$so" 2>&1
    fi
  } >> "$LOG"
}

tests_ran() {  # tests_ran LOG: pytest passed tests, and skipped none for a missing backend, module or device
  # (on the GPU machine those skips mean the run did not test what it is for; pytest runs with -rs)
  grep -qE "[0-9]+ passed" "$1" || return 1
  ! grep -qE "no tests ran|^SKIPPED .*(unavailable|not built|needs a CUDA device)" "$1"
}

need_module() {  # build once if a later step needs the module and it is missing or stale
  module_fresh && return 0
  echo "grasp_kernels._cuda missing or older than its sources: building it first" | tee -a "$LOG"
  build
}

# ---------------------------------------------------------------- header
{
  echo "gpu_run.sh  device=$DEVICE  date=$STAMP  steps: $SELECTED"
  if git rev-parse --short HEAD > /dev/null 2>&1; then
    echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (+ uncommitted changes)')"
  else
    echo "commit: unknown (not a git checkout)"
  fi
} > "$SUMMARY"
{
  cat "$SUMMARY"
  echo "================================================================ machine"
  date -u
  nvidia-smi 2>&1 || true
  command -v nvcc && nvcc --version
  command -v compute-sanitizer && compute-sanitizer --version 2>&1 | tail -n 2 || echo "compute-sanitizer not on PATH"
  "$PY" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).multi_processor_count, 'SMs')" 2>&1
  "$PY" -c "import triton; print('triton', triton.__version__)" 2>&1 || true
} > "$LOG"
cat "$SUMMARY"

# ---------------------------------------------------------------- build
if selected build; then
  build || { note "build failed: nothing else to run"; cp "$SUMMARY" "bench/results/gpu_run_cuda_${DEVICE}_${STAMP}.txt"; exit 1; }
fi

# ---------------------------------------------------------------- tests
if selected build_tests; then
  need_module && step build_tests "$PY" -m pytest -q -rs tests/test_cuda_build.py
fi
if selected gpu_tests; then
  need_module && PYTEST_STEP=1 step gpu_tests "$PY" -m pytest -q -rs -m gpu tests
fi

# ---------------------------------------------------------------- compute-sanitizer
SAN_TESTS=(tests/test_cuda_ops.py -q -x -p no:cacheprovider -k "not statistics and not triton")
# the fused MLP kernel (Triton; its wide variant writes a per-program scratch): memcheck and initcheck
SAN_FUSED_TESTS=(tests/test_fused_mlp.py -q -x -p no:cacheprovider -m gpu -k "native or bf16")
sanitize() {  # sanitize TOOL CACHING(0|1) EXTRA_ARGS...
  local tool=$1 caching=$2; shift 2
  PYTEST_STEP=1 step "$tool" env GRASP_CUDA_TESTS_QUICK=1 PYTORCH_NO_CUDA_MEMORY_CACHING=$((1 - caching)) \
    compute-sanitizer --tool "$tool" "$@" --error-exitcode 9 --target-processes all "$PY" -m pytest -rs "${SAN_TESTS[@]}"
  case "$tool" in memcheck|initcheck)
    PYTEST_STEP=1 step "${tool}_fused_mlp" env PYTORCH_NO_CUDA_MEMORY_CACHING=$((1 - caching)) \
      compute-sanitizer --tool "$tool" "$@" --error-exitcode 9 --target-processes all "$PY" -m pytest -rs "${SAN_FUSED_TESTS[@]}" ;;
  esac
}
for tool in memcheck racecheck initcheck synccheck; do
  selected "$tool" || continue
  if ! command -v compute-sanitizer > /dev/null; then
    note "FAIL $tool (compute-sanitizer not found)"; FAILED=1; continue
  fi
  need_module || continue
  case "$tool" in
    # memcheck/initcheck without torch's caching allocator: an out-of-bounds access then hits
    # unallocated memory, and torch.empty hands out fresh (uninitialised) memory for initcheck
    memcheck) sanitize memcheck 0 ;;
    racecheck) sanitize racecheck 1 --racecheck-report all ;;
    initcheck) sanitize initcheck 0 ;;
    synccheck) sanitize synccheck 1 ;;
  esac
done

# ---------------------------------------------------------------- benchmarks
if selected op_speed; then
  TABLE=bench/results/op_speed_${DEVICE}_${STAMP}.md
  # shellcheck disable=SC2086
  need_module && step op_speed "$PY" bench/op_speed.py $BENCH_ARGS --out "$TABLE" && cp "$TABLE" "$OUT/"
fi
for model in mlp transformer; do
  selected "planner_speed_$model" || continue
  need_module || continue
  COMBINED=$OUT/planner_speed_${DEVICE}_${STAMP}.md  # appended to by each model's step (separate calls too)
  [ -f "$COMBINED" ] || echo "# planner_speed on $DEVICE, $STAMP (bench/planner_speed.py --device cuda)" > "$COMBINED"
  TABLE=bench/results/planner_speed_${model}_${DEVICE}_${STAMP}.md
  # shellcheck disable=SC2086
  if step "planner_speed_$model" "$PY" bench/planner_speed.py --device cuda --model "$model" $BENCH_ARGS $PLANNER_ARGS \
      --out "$TABLE"; then
    { echo; echo "## --model $model"; echo; sed 's/^#/##/' "$TABLE"; } >> "$COMBINED"
  fi
done

# ---------------------------------------------------------------- wrap up
# keep the combined log under the 16 MiB a returned file may have (sanitizer reports can be long)
if [ "$(stat -c %s "$LOG")" -gt $((15 * 1024 * 1024)) ]; then
  { head -c $((3 * 1024 * 1024)) "$LOG"; echo; echo "[... middle of the log cut to stay under 16 MiB ...]"; echo
    tail -c $((11 * 1024 * 1024)) "$LOG"; } > "$TMP/log.cut" && mv "$TMP/log.cut" "$LOG"
fi
note "overall: $([ $FAILED -eq 0 ] && echo PASS || echo FAIL)"
{ echo; cat "$SUMMARY"; } >> "bench/results/gpu_run_cuda_${DEVICE}_${STAMP}.txt"
echo "files: $OUT"
exit $FAILED
