#!/usr/bin/env bash
# The GPU check, prepared for one call of the device tool (its time is short and a fresh
# machine is bare): on a machine with an NVIDIA GPU and no network, build fastflow._C with
# CUDA for that machine's Python and GPU, run the GPU tests (CUDA kernels, compiled Triton),
# then the benchmark table. Logs and results go to $OUT (at most 7 files: the tool brings
# back 8).
#
# Here, once (flow_matching is pure Python and missing from the device image):
#     pip download flow_matching==1.0.10 --no-deps -d .whl
# then, through the device tool, with carry [".whl"] and a timeout near 540 s:
#     bash scripts/gpu_check.sh
# Time budget on an H200 (16 cores): build ~1-2 min (one architecture), tests <= TEST_S,
# compute-sanitizer <= SAN_S + RACE_S, benchmarks <= 2 x BENCH_S. Each stage runs even if an earlier one
# failed, so one call says as much as it can.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT/results"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
TEST_S=${TEST_S:-150}
BENCH_S=${BENCH_S:-100}  # each of the two benchmark runs

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  $PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  git log -1 --format='commit %H %cd' 2>/dev/null || true
  if [ -d .whl ]; then $PY -m pip install --no-index --no-deps .whl/*.whl; fi
  ARCH=$($PY -c "import torch; c = torch.cuda.get_device_capability(); print(f'{c[0]}{c[1]}')")
  echo "building for sm_$ARCH"
  FASTFLOW_CUDA=1 FASTFLOW_CUDA_ARCHS="$ARCH" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    $PY -m pip install --no-build-isolation --no-deps -e .
  $PY -c "import fastflow._C as C; print('fastflow._C: cuda', C.has_cuda(), '|', C.cuda_problem() or 'runs here')"
  $PY -c "import fastflow; print('backends', fastflow.available_backends())"
} > "$OUT/build.log" 2>&1
echo "build: $(tail -2 "$OUT/build.log" | tr '\n' ' ')"

FASTFLOW_TEST_GPU=1 timeout "$TEST_S" $PY -m pytest -q -p no:cacheprovider \
  tests/test_cuda_backend.py tests/test_large.py tests/test_triton_parity.py tests/test_triton_ops.py tests/test_triton_random.py \
  > "$OUT/tests.log" 2>&1
echo "tests (rc $?): $(tail -1 "$OUT/tests.log")"

# memory errors the tests cannot see: the split-row and loss kernels under compute-sanitizer,
# with torch's caching allocator off so a buffer freed too early is really unmapped (works on
# the Firecracker machines only; on gVisor it refuses the device and this stage says so)
if command -v compute-sanitizer > /dev/null; then
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 FASTFLOW_TEST_GPU=1 timeout "${SAN_S:-50}" compute-sanitizer --tool memcheck \
    --error-exitcode 3 $PY -m pytest -q -x -p no:cacheprovider tests/test_cuda_backend.py -k "split or row_loss or path_loss" \
    > "$OUT/sanitizer.tmp" 2>&1
  rc=$?
  { echo; echo "== compute-sanitizer memcheck (rc $rc)"; tail -40 "$OUT/sanitizer.tmp"; } >> "$OUT/tests.log"
  rm -f "$OUT/sanitizer.tmp"
  echo "sanitizer (rc $rc)"
  # shared-memory hazards (a read racing a write without a barrier between), which the CPU
  # emulator's fiber order cannot show: the block reductions of the row losses and the jump race
  FASTFLOW_TEST_GPU=1 timeout "${RACE_S:-40}" compute-sanitizer --tool racecheck --error-exitcode 3 \
    $PY -m pytest -q -x -p no:cacheprovider tests/test_cuda_backend.py \
    -k "row_losses_in_place or jump_step_split_rows or jump_step_generated_noise or scale_rows" \
    > "$OUT/sanitizer.tmp" 2>&1
  rc=$?
  { echo; echo "== compute-sanitizer racecheck (rc $rc)"; tail -40 "$OUT/sanitizer.tmp"; } >> "$OUT/tests.log"
  rm -f "$OUT/sanitizer.tmp"
  echo "racecheck (rc $rc)"
fi

# the table in two runs, each saving its rows (a run cut by its timeout saves nothing): the
# continuous and ODE rows first, then the discrete ones merged in; no torch.compile peers (a
# dozen compilations would not fit, and no GPU goal compares with them)
timeout "$BENCH_S" $PY -m benchmarks --device cuda --no-compile --groups continuous,ode --out "$OUT/results" \
  > "$OUT/bench.log" 2>&1
echo "benchmarks continuous (rc $?): $(tail -1 "$OUT/bench.log")"
timeout "$BENCH_S" $PY -m benchmarks --device cuda --no-compile --groups discrete --merge --out "$OUT/results" \
  >> "$OUT/bench.log" 2>&1
echo "benchmarks discrete (rc $?): $(tail -1 "$OUT/bench.log")"
