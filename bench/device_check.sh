#!/usr/bin/env bash
# The GPU check of the engine in ONE device call (the device tool allows 600 s a command; run it with
# timeout_s=570, the CALL_LIMIT below): the most valuable steps first, each under its own timeout and
# within a total budget of CALL_LIMIT - MARGIN = 480 s, the 8 minutes the call promises (the margin
# holds what the call spends outside the steps: the last step's 20 s kill grace, the log cut, the
# files' return), one PASS/FAIL/SKIP line per step in the summary. Each step's output is streamed into
# $OUT/device_check.log while it runs, so a call cut off keeps its logs.
#
# Machine kind: nvidia-h100-x1. compute-sanitizer runs there and is refused on the other lent kind
# (nvidia-h200): there the memcheck step is one "SKIP memcheck (compute-sanitizer needs the
# nvidia-h100-x1 kind; ...)" line, not a FAIL, and everything else runs.
#
#   bash bench/device_check.sh              # the default run (<= 8 minutes on one H100 or H200)
#   bash bench/device_check.sh --full       # + racecheck/initcheck/synccheck, the full benchmark grids and
#                                           #   torch.compile providers: over an hour; split with STEPS=...
#   bash bench/device_check.sh --dry-run    # CPU: control flow, timeouts and files, nothing launched
#   STEPS=build,gpu_tests bash bench/device_check.sh   # a subset (op_speed: the op tables, in no default run)
#   STEPS=env,memory bash bench/device_check.sh         # bench/memory.py on the GPU (in no default run)
#
# Steps, in order, with the default timeout and the estimate behind it (16-core host, one H100/H200); the
# timeouts add up to the 480 s budget:
#   env            30 s  versions of python/torch/triton/CUDA, nvidia-smi, the commit (cold imports and the
#                        first CUDA init: ~5-15 s)
#   build          60 s  pip install --no-build-isolation --no-deps -e . with nvcc 13 for sm_90 only
#                        (GRASP_KERNELS_CUDA_ARCHS=90: ~10-20 s on 16 cores), then import grasp_kernels._cuda
#   gpu_tests     180 s  pytest -m gpu over tests/ on 8 workers (-n 8), one Triton cache for all workers:
#                        ~370 tests; compiles: ~40 small-kernel variants (1-2 s each) and ~25 fused-MLP
#                        variants (3-8 s each, sm_90 ptxas) spread over the workers: ~60-120 s
#   planner_speed 130 s  bench/planner_speed.py --device cuda, the headline rows first: fused_mlp vs loop
#                        (and eager/triton/cuda/graph) at B*T = 16384 and 65536 (MLP D=16 H=256, 50
#                        iterations, "% floor" against the floor measured in the same run; the table is
#                        rewritten after each row): ~40-70 s; then one DINO-WM-sized transformer row (196
#                        tokens x 384, history 3) for the share of the iteration outside the world model
#   memcheck       80 s  compute-sanitizer memcheck over bench/sanitize_kernels.py (every Triton and CUDA
#                        kernel once, small odd shapes, the wide fused kernels also on 2 looping programs,
#                        checked against the reference; torch's caching allocator off so that an
#                        out-of-bounds access hits unallocated memory): ~30-60 s
# --full adds: racecheck, initcheck, synccheck (each over sanitize_kernels.py), planner_speed_full (every
#   grid row and provider, torch.compile included), op_speed_full (with torch.compile).
#
# Knobs: PYTHON (python3), OUT (out/device_check), CALL_LIMIT (570: the call's timeout_s), MARGIN (90),
# BUDGET (seconds for the whole run, default CALL_LIMIT - MARGIN, none with --full: every step's timeout is
# cut to what is left, and a step that cannot get MIN_STEP seconds is skipped), STEP_TIMEOUTS
# ("name:seconds,..." overrides), WORKERS (8), SANITIZER_GPU (H100: the compute-sanitizer steps run on a GPU
# whose name contains it). Dry run only: DRY_SLEEP ("name:seconds,...": how long a step pretends to work, to
# exercise the timeouts), DRY_GPU (the GPU name it pretends to have; default an H100), DRY_REFUSED
# ("name,...": sanitizer steps that print compute-sanitizer's refusal of the device).
#
# Files under $OUT (the device tool returns at most 8): summary.txt, device_check.log (every step's output,
# streamed), env.txt, planner_speed.md; --full adds planner_speed_full_mlp.md,
# planner_speed_full_transformer.md, op_speed_full.md (STEPS=op_speed: op_speed.md). Exit status 0 when no
# selected step failed (a SKIP is not a failure), else 1.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
OUT=${OUT:-$ROOT/out/device_check}
MIN_STEP=${MIN_STEP:-20}
WORKERS=${WORKERS:-8}
CALL_LIMIT=${CALL_LIMIT:-570}
MARGIN=${MARGIN:-90}
SANITIZER_GPU=${SANITIZER_GPU:-H100}
FULL=0
DRY=0
for arg in "$@"; do
  case "$arg" in
    --full) FULL=1 ;;
    --dry-run) DRY=1 ;;
    *) echo "device_check.sh: unknown argument '$arg' (--full, --dry-run)" >&2; exit 2 ;;
  esac
done
BUDGET=${BUDGET:-$([ "$FULL" = 1 ] && echo 100000 || echo $((CALL_LIMIT - MARGIN)))}
DEFAULT_STEPS="env build gpu_tests planner_speed memcheck"
[ "$FULL" = 1 ] && DEFAULT_STEPS="$DEFAULT_STEPS racecheck initcheck synccheck planner_speed_full op_speed_full"
STEPS=${STEPS:-$DEFAULT_STEPS}
STEPS=${STEPS//,/ }
declare -A TIMEOUT=([env]=30 [build]=60 [gpu_tests]=180 [planner_speed]=130 [memcheck]=80 [op_speed]=90
                    [racecheck]=300 [initcheck]=300 [synccheck]=300 [planner_speed_full]=3000 [op_speed_full]=1200
                    [memory]=300)
for known in $STEPS; do
  [ -n "${TIMEOUT[$known]:-}" ] || { echo "device_check.sh: unknown step '$known' (known: ${!TIMEOUT[*]})" >&2; exit 2; }
done
STEP_TIMEOUTS=${STEP_TIMEOUTS:-}
for pair in ${STEP_TIMEOUTS//,/ }; do TIMEOUT[${pair%%:*}]=${pair#*:}; done
declare -A SLEEP=()
DRY_SLEEP=${DRY_SLEEP:-}
for pair in ${DRY_SLEEP//,/ }; do SLEEP[${pair%%:*}]=${pair#*:}; done
DRY_REFUSED=${DRY_REFUSED:-}
DRY_REFUSED=" ${DRY_REFUSED//,/ } "
# compute-sanitizer's refusal of a GPU it cannot instrument (its own "=========" lines only: a test's error
# message saying "not supported" stays a FAIL)
REFUSAL="^=+ .*(device not supported|device is not supported|unsupported device|not supported on this device)"

mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
LOG=$OUT/device_check.log
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$TMP/triton-cache}
for d in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer; do [ -d "$d" ] && PATH="$PATH:$d"; done
if [ "$DRY" = 1 ]; then
  GPU=${DRY_GPU:-NVIDIA H100 80GB HBM3 (dry run)}
else
  GPU=$(timeout 15 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
fi
START=$SECONDS
FAILED=0
: > "$LOG"
{
  echo "device_check.sh $(date -u +%FT%TZ)  steps: $STEPS  budget ${BUDGET}s$([ "$DRY" = 1 ] && echo '  DRY RUN (nothing launched)')"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (+ uncommitted changes)')"
  echo "gpu: ${GPU:-unknown (no nvidia-smi)}"
} > "$SUMMARY"
cat "$SUMMARY"

note() { echo "$*" | tee -a "$SUMMARY"; }

tests_ran() {  # pytest passed tests, and skipped none for a missing backend, module or device
  grep -qE "[0-9]+ passed" "$1" || return 1
  ! grep -qE "no tests ran|^SKIPPED .*(unavailable|not built|needs a CUDA device)" "$1"
}

sanitizer_skip() {  # the SKIP line of a sanitizer step on a GPU that compute-sanitizer refuses
  note "SKIP $1 (compute-sanitizer needs the nvidia-h100-x1 kind; this is ${GPU:-an unknown GPU}$2)"
}

step() {  # step NAME KIND CMD...: KIND "pytest" also needs passed tests, "sanitizer" turns a refused
          # device into a SKIP; records PASS/FAIL/SKIP with seconds
  local name=$1 kind=$2; shift 2
  local left=$((BUDGET - (SECONDS - START)))
  local limit=${TIMEOUT[$name]}
  if [ "$left" -lt "$MIN_STEP" ]; then
    note "SKIP $name (budget: ${left}s left of ${BUDGET}s)"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  { echo; echo "================================================================ step $name (timeout ${limit}s)"
    echo "# $(date -u +%FT%TZ)  $*"; } >> "$LOG"
  local t0=$SECONDS rc why="" offset
  offset=$(stat -c %s "$LOG")
  # straight into the log as it comes (no buffer in between): a call cut off mid-step keeps this output
  if [ "$DRY" = 1 ]; then
    local refused=0
    case "$DRY_REFUSED" in *" $name "*) refused=1 ;; esac
    timeout --signal=INT --kill-after=5 "$limit" bash -c 'echo "dry run: $0"
      if [ "$2" = 1 ]; then echo "========= Error: Device not supported"; exit 9; fi
      sleep "$1"; echo "1 passed"' "$*" "${SLEEP[$name]:-0}" "$refused" >> "$LOG" 2>&1
  else
    timeout --signal=INT --kill-after=20 "$limit" "$@" >> "$LOG" 2>&1
  fi
  rc=$?
  tail -c +$((offset + 1)) "$LOG" > "$TMP/$name.log"
  echo "# step $name: rc $rc, $((SECONDS - t0)) s" >> "$LOG"
  if [ "$kind" = sanitizer ] && grep -qiE "$REFUSAL" "$TMP/$name.log"; then
    sanitizer_skip "$name" ", which compute-sanitizer refused: rc $rc, $((SECONDS - t0)) s"
    return 0
  fi
  if [ "$rc" -eq 0 ] && [ "$kind" = pytest ] && ! tests_ran "$TMP/$name.log"; then
    rc=1; why=", no test passed or tests skipped for want of a backend, module or device"
  fi
  [ "$rc" -eq 124 ] && why=", timed out after ${limit}s"
  if [ "$rc" -eq 0 ]; then
    note "PASS $name ($((SECONDS - t0)) s)"
  else
    note "FAIL $name (rc $rc, $((SECONDS - t0)) s$why): see step $name in device_check.log"
    tail -n 25 "$TMP/$name.log"
    FAILED=1
  fi
  return "$rc"
}

selected() { case " $STEPS " in *" $1 "*) return 0;; esac; return 1; }

env_report() {
  date -u
  nvidia-smi || true
  command -v nvcc > /dev/null && nvcc --version | tail -n 2
  command -v compute-sanitizer > /dev/null && compute-sanitizer --version | tail -n 1 || echo "no compute-sanitizer"
  # what the offline build needs (pip install --no-build-isolation): a missing one explains a failed build
  "$PY" -c "import importlib.metadata as m
for name in ('setuptools', 'wheel', 'pybind11', 'cmake', 'ninja', 'pytest', 'pytest-xdist'):
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        print(name, 'MISSING')"
  "$PY" -c "import sys, torch, triton; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__); print(torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).multi_processor_count, 'SMs')"
}

build() {  # sm_90 only (both lent kinds are Hopper), with CUDA 13's nvcc (torch's is cu130)
  local nvcc release  # the nvcc setup.py takes: $CUDACXX, else the PATH's
  nvcc=${CUDACXX:-$(command -v nvcc)}
  release=$("${nvcc:-nvcc}" --version 2>/dev/null | sed -n 's/.*release \([0-9][0-9]*\)\..*/\1/p')
  [ "$release" = 13 ] || { echo "build: needs nvcc from CUDA 13, found '${nvcc:-no nvcc}' (release ${release:-?})"; return 1; }
  env GRASP_KERNELS_BUILD_CUDA=1 GRASP_KERNELS_CUDA_ARCHS=90 CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$PY" -m pip install -q --no-build-isolation --no-deps -e . || return 1
  "$PY" -c "import grasp_kernels._cuda as c; print('built', c.compiled_architectures(), c.rng_backend(), c.device_count(), 'devices')"
}

sanitize() {  # sanitize TOOL CACHING EXTRA...
  local tool=$1 caching=$2; shift 2
  env PYTORCH_NO_CUDA_MEMORY_CACHING=$((1 - caching)) compute-sanitizer --tool "$tool" "$@" --error-exitcode 9 \
    --target-processes all "$PY" bench/sanitize_kernels.py
}

# the headline rows first, the table rewritten after each row (a cut-off step keeps the rows it measured):
# fused_mlp vs loop (and eager/triton/cuda/graph) at B*T = 16384 and 65536 against the floor; then the
# DINO-WM-sized transformer (the planner_speed defaults on CUDA) for the share outside the model
planner_speed() {
  "$PY" bench/planner_speed.py --device cuda --shapes 16,256,256,64 16,256,1024,64 --iters 50 \
    --providers loop eager triton cuda graph fused_mlp --strict --out "$OUT/planner_speed.md" || return 1
  "$PY" bench/planner_speed.py --device cuda --model transformer --shapes 1,16 4,16 --iters 20 \
    --providers eager triton cuda graph --strict --out "$TMP/transformer.md" || return 1
  { echo; cat "$TMP/transformer.md"; } >> "$OUT/planner_speed.md"
}

if selected env; then
  step env plain bash -c "$(declare -f env_report); PY='$PY' env_report"
  [ -f "$TMP/env.log" ] && cp "$TMP/env.log" "$OUT/env.txt"
fi
if selected build; then
  step build plain bash -c "$(declare -f build); PY='$PY' build" || { note "build failed: the CUDA steps will fail too"; }
fi
if selected gpu_tests; then
  step gpu_tests pytest "$PY" -m pytest -q -rs -m gpu -n "$WORKERS" --dist load -p no:cacheprovider tests
fi
if selected planner_speed; then
  step planner_speed plain bash -c "$(declare -f planner_speed); PY='$PY' TMP='$TMP' OUT='$OUT' planner_speed"
fi
sanitizer_step() {  # sanitizer_step TOOL: one SKIP line, without a launch, on a GPU known to be refused
  if [ -n "$GPU" ] && [[ "$GPU" != *"$SANITIZER_GPU"* ]]; then
    sanitizer_skip "$1" ""
    return 0
  fi
  case "$1" in
    # without torch's caching allocator an out-of-bounds access hits unallocated memory, and initcheck
    # sees fresh (uninitialised) allocations
    memcheck|initcheck) step "$1" sanitizer bash -c "$(declare -f sanitize); PY='$PY' sanitize $1 0" ;;
    racecheck) step "$1" sanitizer bash -c "$(declare -f sanitize); PY='$PY' sanitize $1 1 --racecheck-report all" ;;
    synccheck) step "$1" sanitizer bash -c "$(declare -f sanitize); PY='$PY' sanitize $1 1" ;;
  esac
}
selected memcheck && sanitizer_step memcheck
if selected op_speed; then
  step op_speed plain "$PY" bench/op_speed.py --compile-backend none --out "$OUT/op_speed.md"
fi
for tool in racecheck initcheck synccheck; do
  selected "$tool" && sanitizer_step "$tool"
done
if selected planner_speed_full; then
  step planner_speed_full plain bash -c "'$PY' bench/planner_speed.py --device cuda --out '$OUT/planner_speed_full_mlp.md' && '$PY' bench/planner_speed.py --device cuda --model transformer --out '$OUT/planner_speed_full_transformer.md'"
fi
if selected memory; then  # in no default run: STEPS=memory (the GPU rows of bench/results/memory_cpu_*.md)
  step memory plain "$PY" bench/memory.py --out "$OUT/memory.md"
fi
if selected op_speed_full; then
  step op_speed_full plain "$PY" bench/op_speed.py --out "$OUT/op_speed_full.md"
fi

note "overall: $([ "$FAILED" -eq 0 ] && echo PASS || echo FAIL) ($((SECONDS - START)) s)"
# a returned file may hold 16 MiB: keep the log's head and tail when a sanitizer report is long
if [ "$(stat -c %s "$LOG")" -gt $((15 * 1024 * 1024)) ]; then
  { head -c $((3 * 1024 * 1024)) "$LOG"; echo "[... cut ...]"; tail -c $((11 * 1024 * 1024)) "$LOG"; } > "$TMP/cut" && mv "$TMP/cut" "$LOG"
fi
exit "$FAILED"
