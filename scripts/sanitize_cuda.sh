#!/usr/bin/env bash
# The CUDA kernels under AddressSanitizer, without a GPU: csrc/cuda compiled for the host with
# -fsanitize=address and run by the tests' CUDA emulator (csrc/cuda/emulator) through
# tests/test_cuda_backend.py. A kernel's read or write outside the tensors it was given, at the
# tests' shapes, stops the run with ASan's report (on a GPU, scripts/gpu_check.sh runs
# compute-sanitizer's memcheck instead). About 6 minutes on 2 cores; CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
. .venv/bin/activate
B=build/cuda-emulator-asan
cmake -S . -B "$B" -G Ninja -DFASTFLOW_CUDA=OFF -DFASTFLOW_CUDA_EMULATOR=ON -DFASTFLOW_CPU_AVX2=OFF \
  -DFASTFLOW_OUTPUT_DIR="$PWD/$B/out" -DPython_EXECUTABLE="$(command -v python)" \
  -DCMAKE_CXX_FLAGS="-fsanitize=address -fno-omit-frame-pointer" -DCMAKE_MODULE_LINKER_FLAGS=-fsanitize=address >/dev/null
cmake --build "$B" -j "$(nproc)" --target _C_cuda_emu
module=$(ls "$PWD/$B"/out/_C_cuda_emu*.so)
asan=$("${CXX:-c++}" -print-file-name=libasan.so)
[ -f "$asan" ] || { echo "sanitize_cuda.sh: libasan.so not found ($asan)" >&2; exit 1; }
# the fibers' stack switches make ASan print one warning; leaks are Python's, not the kernels'
LD_PRELOAD="$asan" ASAN_OPTIONS=detect_leaks=0 FASTFLOW_CUDA_EMULATOR_MODULE="$module" \
  python -m pytest -q -p no:cacheprovider tests/test_cuda_backend.py "$@"
