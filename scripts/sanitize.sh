#!/usr/bin/env bash
# The compiled kernels under AddressSanitizer, without a GPU: fastflow._C (the CPU kernels, every
# ISA variant this processor runs) and fastflow._C_cuda_emu (csrc/cuda compiled for the host, run
# by the tests' CUDA emulator), both built with -fsanitize=address, stand in for the installed
# modules while tests/test_cpu_backend.py and tests/test_cuda_backend.py run. A kernel's read or
# write outside the tensors it was given, at the tests' shapes, stops the run with ASan's report
# (on a GPU, scripts/gpu_check.sh runs compute-sanitizer's memcheck instead). About 5 minutes
# on 2 cores; CI runs it. Extra arguments go to pytest; `--build-only` (first) only builds the
# two modules (CI builds them while the tests run, which keep about one of its two cores busy), with
# CMAKE_BUILD_PARALLEL_LEVEL jobs if set, else one a core.
set -euo pipefail
cd "$(dirname "$0")/.."
build_only=0
if [ "${1:-}" = --build-only ]; then build_only=1; shift; fi
bash scripts/setup.sh >/dev/null
. .venv/bin/activate
B=build/asan
cmake -S . -B "$B" -G Ninja -DFASTFLOW_CUDA=OFF -DFASTFLOW_CUDA_EMULATOR=ON \
  -DFASTFLOW_OUTPUT_DIR="$PWD/$B/out" -DPython_EXECUTABLE="$(command -v python)" \
  -DCMAKE_CXX_FLAGS="-fsanitize=address -fno-omit-frame-pointer" -DCMAKE_MODULE_LINKER_FLAGS=-fsanitize=address >/dev/null
cmake --build "$B" --parallel "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
[ "$build_only" = 1 ] && exit 0
asan=$("${CXX:-c++}" -print-file-name=libasan.so)
stdcxx=$("${CXX:-c++}" -print-file-name=libstdc++.so)  # preloaded too: ASan's throw hook needs it
[ -f "$asan" ] || { echo "sanitize.sh: libasan.so not found ($asan)" >&2; exit 1; }
rm -f "$B"/asan.*
# tests/conftest.py loads FASTFLOW_C_MODULE as fastflow._C, tests/cuda_emulator.py the other one.
# ASan's report goes to $B/asan.<pid> (pytest's capture would swallow it) and is printed here.
# The fibers' stack switches make ASan warn once; leaks would be Python's, not the kernels'.
status=0
# The emulator runs blocks and threads in reverse order here (forward in scripts/test.sh), so a
# read that races a missing barrier is seen from both sides.
LD_PRELOAD="$asan $stdcxx" ASAN_OPTIONS="detect_leaks=0:log_path=$PWD/$B/asan" FASTFLOW_CUDA_EMULATOR_ORDER=reverse \
  FASTFLOW_C_MODULE="$(ls "$PWD/$B"/out/_C.*so)" FASTFLOW_CUDA_EMULATOR_MODULE="$(ls "$PWD/$B"/out/_C_cuda_emu*.so)" \
  python -m pytest -q -p no:cacheprovider tests/test_cpu_backend.py tests/test_cuda_backend.py "$@" || status=$?
if grep -l "ERROR: AddressSanitizer" "$B"/asan.* >/dev/null 2>&1; then
  cat "$B"/asan.* >&2
  echo "sanitize.sh: AddressSanitizer found an error (above)" >&2
  exit 1
fi
exit "$status"
